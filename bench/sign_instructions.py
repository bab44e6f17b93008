"""Instructions per message signature in the real server, counted by callgrind: steadier than CPU time.

A measurement, not a test; ``fetch_instructions.py``'s method applied to ``POST /v1/keys/{id}/sign/message``
(the request ``vs_openbao.py`` sends). On a shared machine the CPU time of a request moves with
everybody else's work; the number of instructions it executes much less. In a temporary directory:
``signer init``, one ``--curve`` key (Ed25519 or P-256) and a service principal granted
``sign_message`` on it, then ``signer serve --workers 1`` under ``valgrind --tool=callgrind
--instr-atstart=no``. ``--warmup`` signatures run uninstrumented, then ``callgrind_control -i on``,
``--connections`` keep-alive clients ask for ``--signatures`` in all (each answer must be a 200 with a
signature), a dump; then the server idles as long as the load took, a second dump, and the server
stops. ``instructions_per_signature`` is the first dump's total (every thread: event loop, SQLite,
PKCS#11 and SoftHSM inside it) over the signatures; ``net_instructions_per_signature`` subtracts the idle
dump. The run checks that the audit log holds one allowed ``sign.message`` event per signature. The
counts move by a few per cent between runs of one tree (batching follows timing): compare trees in
alternated runs with the same ``--connections``.

    PYTHONPATH=$PWD .venv/bin/python bench/sign_instructions.py [--curve ed25519|p256] [--signatures 600]

Run it from each tree (``python -m signer.cli`` runs the working directory's code) to compare commits.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.service_harness as harness

MESSAGE = b"bench message: the same bytes for every signature"


def setup(directory: Path, curve: str) -> tuple[harness.Installation, str, str]:
    installation = harness.init_installation(directory)
    server = harness.start_server(installation, workers=1, ready_timeout=120)
    try:
        service = harness.make_service(server, "bench-sign")
        key = harness.make_key(server, curve, f"bench-{curve}")
        harness.grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    finally:
        server.stop()
    return installation, key["id"], service["credentials"]["access_token"]


def load(port: int, key_id: str, token: str, total: int, connections: int) -> None:
    body = json.dumps({"message": MESSAGE.hex(), "encoding": "hex"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    failures: list[str] = []

    def client(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            for _ in range(count):
                conn.request("POST", f"/v1/keys/{key_id}/sign/message", body, headers)
                response = conn.getresponse()
                answer = json.loads(response.read())
                if response.status != 200 or "signature" not in answer:
                    failures.append(str(response.status))
        finally:
            conn.close()

    share = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
    threads = [threading.Thread(target=client, args=(n,)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} signatures failed: {sorted(set(failures))}")


def batches(port: int) -> tuple[float, float]:
    """(group commits, units committed) so far, from the server's metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("signer_audit_commit_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("signer_audit_commit_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signatures", type=int, default=600)
    parser.add_argument("--curve", choices=("ed25519", "p256"), default="ed25519")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not 1 <= args.connections <= 64 or not 1 <= args.signatures <= 100_000:
        parser.error("--connections 1-64, --signatures 1-100000")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind (callgrind) is not installed")
    with tempfile.TemporaryDirectory(prefix="sign-instr-") as tmp_name:
        tmp = Path(tmp_name)
        installation, key_id, token = setup(tmp / "signer", args.curve)
        out = tmp / "callgrind.out"
        harness.SIGNER = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}.%p",
            sys.executable,
            "-m",
            "signer.cli",
        ]
        # Under valgrind a request runs ~50x slower: the deadlines (request 5 s, HSM call 2 s, write lock
        # 2 s) would cut the queued ones.
        slow = {
            "SIGNER_REQUEST_DEADLINE_SECONDS": "300",
            "SIGNER_HSM_DEADLINE_SECONDS": "60",
            "SIGNER_DB_LOCK_TIMEOUT_SECONDS": "60",
            "SIGNER_DB_POOL_TIMEOUT_SECONDS": "60",
        }
        server = harness.start_server(installation, workers=1, ready_timeout=600, env=slow)
        try:
            pid = server.process.pid

            def control(*options: str) -> None:
                subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)

            load(server.port, key_id, token, args.warmup, args.connections)
            before = batches(server.port)
            control("-i", "on")
            started = time.monotonic()
            load(server.port, key_id, token, args.signatures, args.connections)
            loaded_seconds = time.monotonic() - started
            control("-d")  # the load's dump (counters start again from zero)
            after = batches(server.port)
            # The same length of time idle: what the server does per second whatever the load (gauges,
            # the checkpoint timer). Under valgrind on a busy machine the load takes several times
            # longer, so that share of the gross figure moves with the load; the net one does not.
            time.sleep(loaded_seconds)
            control("-d")
            control("-i", "off")
        finally:
            server.stop()

        def total(name: str) -> int | None:
            path = Path(name)
            if not path.exists():
                return None
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
            return None

        # <out>.<pid>.1: the load; <out>.<pid>.2: the idle period (<out>.<pid>: the exit's, after both).
        totals, idle = total(f"{out}.{pid}.1"), total(f"{out}.{pid}.2")
        if totals is None or idle is None:
            print(f"callgrind dumps missing: {sorted(glob.glob(f'{out}.*'))}", file=sys.stderr)
            return 1
        db = sqlite3.connect(installation.data_dir / "signer.db")
        try:
            rows = db.execute("SELECT event FROM audit_events WHERE kind = 'sign.message'").fetchall()
        finally:
            db.close()
        allowed = sum(1 for (event,) in rows if '"allowed"' in event)
        expected = args.warmup + args.signatures
        if allowed != expected:
            print(f"audit: {allowed} allowed sign.message events for {expected} signatures", file=sys.stderr)
            return 1
    print(
        json.dumps(
            {
                "bench": "sign_instructions",
                "curve": args.curve,
                "signatures": args.signatures,
                "connections": args.connections,
                "load_seconds": round(loaded_seconds, 1),
                "instructions": totals,
                "instructions_per_signature": round(totals / args.signatures),
                "idle_instructions": idle,
                "net_instructions_per_signature": round((totals - idle) / args.signatures),
                "audited": allowed,
                # How many signatures shared a group commit moves with timing, and the count with it.
                "group_commits": round(after[0] - before[0]),
                "mean_batch": round((after[1] - before[1]) / max(1.0, after[0] - before[0]), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
