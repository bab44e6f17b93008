"""How long the SQLite write gate is held, and what that does to the secret-fetch rate with two workers.

A measurement, not a test. With two workers every group commit takes the write gate (``signer.store.
gate``), so the gate's hold per batch bounds how many batches both workers can commit per second
together: when the gate is held most of the time, the workers wait for each other and part of the two
cores stays idle however cheap a request is. This runs ``bench/secrets_fetch.py``'s installation (100
secrets, one fetchable by a service principal; SQLite, SoftHSM), ``signer serve --workers N`` with
``bench/gate_probe/sitecustomize.py`` loaded into the server's processes (it times every hold, from the
grant to the let-go, and counts batches run ahead of the lock or the ordinary way), and drives ``POST
/v1/secrets/{id}/fetch`` with wrk for ``--rounds`` windows. Per window: fetches/s, server CPU per fetch
(``/proc``), each worker's connections and cores, the mean batch (the service's own
``signer_audit_commit_batch_size`` histogram), and per worker the holds' count, p50/p90/p99 and the
share of the window the gate was held. Any answer but 200 fails the run, and afterwards the audit log
must hold one allowed ``secret.fetch`` per answered fetch. Run each tree from its own directory:

    PYTHONPATH=$PWD .venv/bin/python bench/gate_hold.py --rounds 3 --seconds 8 --connections 32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import process_cpu_seconds, server_worker_pids
from secrets_fetch import SignerTarget
from vs_openbao import run_wrk

PROBE = Path(__file__).resolve().parent / "gate_probe"


def batch_totals(url: str, token: str) -> tuple[float, float]:
    """(sum, count) of ``signer_audit_commit_batch_size`` over every worker."""
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("signer_audit_commit_batch_size_sum"):
            total += float(line.split()[-1])
        elif line.startswith("signer_audit_commit_batch_size_count"):
            count += float(line.split()[-1])
    return total, count


def connections(port: int, pids: list[int]) -> list[int]:
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    counts = dict.fromkeys(pids, 0)
    for match in re.finditer(r"pid=(\d+)", out):
        pid = int(match.group(1))
        if pid in counts:
            counts[pid] += 1
    return [counts[p] for p in pids]


def sample_connections(into: list[int], after: float, port: int, pids: list[int]) -> None:
    time.sleep(after)
    into.extend(connections(port, pids))


def read_holds(directory: Path, pids: list[int], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for pid in pids:
        path = directory / f"{pid}.txt"
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not path.exists():
            rows.append({"pid": pid, "holds": 0})
            continue
        line = path.read_text(encoding="ascii").strip().splitlines()[-1].split()
        path.unlink()
        n, total, p50, p90, p99 = int(line[0]), *map(float, line[1:5])
        ahead, missed, ordinary = map(int, line[5:8])
        rows.append(
            {
                "pid": pid,
                "holds": n,
                "held_share": round(total / seconds, 3),
                "p50_ms": round(p50 * 1e3, 2),
                "p90_ms": round(p90 * 1e3, 2),
                "p99_ms": round(p99 * 1e3, 2),
                "mean_ms": round(total / n * 1e3, 2),
                "ahead": ahead,
                "missed": missed,
                "ordinary": ordinary,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("no wrk: apt-get install -y wrk (or scripts/setup --bench)")
    with tempfile.TemporaryDirectory(prefix="gate-hold-") as tmp_name:
        tmp = Path(tmp_name)
        probe_dir = tmp / "probe"
        probe_dir.mkdir()
        os.environ["GATE_PROBE_DIR"] = str(probe_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(PROBE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        target = SignerTarget(tmp / "signer", 100, args.workers)
        answered = 0
        results = []
        try:
            workers = server_worker_pids(target.server.process.pid)
            port = int(target.server.url.rsplit(":", 1)[1])
            header = ("Authorization", f"Bearer {target.token}")
            body = {"workload": "bench"}
            every = [target.server.process.pid, *workers]
            answered += run_wrk(target.url, body, header, 2, args.connections, every, tmp)["requests"]
            print(
                f"# gate_hold: workers={args.workers} connections={args.connections} seconds={args.seconds}"
            )
            for round_no in range(1, args.rounds + 1):
                seen: list[int] = []
                sampler = threading.Thread(
                    target=sample_connections, args=(seen, min(3, args.seconds / 2), port, workers)
                )
                sampler.start()
                for pid in workers:
                    os.kill(pid, signal.SIGUSR2)
                for pid in workers:
                    for stale in probe_dir.glob(f"{pid}.txt"):
                        stale.unlink()
                batches0 = batch_totals(target.server.url, target.installation.admin_token)
                cpu0 = {p: process_cpu_seconds(p) for p in workers}
                started = time.perf_counter()
                row = run_wrk(target.url, body, header, args.seconds, args.connections, every, tmp)
                for pid in workers:
                    os.kill(pid, signal.SIGUSR2)
                window = time.perf_counter() - started
                cpu1 = {p: process_cpu_seconds(p) for p in workers}
                batches1 = batch_totals(target.server.url, target.installation.admin_token)
                sampler.join()
                answered += row["requests"]
                if row["errors"]:
                    print(f"round {round_no}: {row['errors']} answers were not 200", file=sys.stderr)
                    return 1
                count = batches1[1] - batches0[1]
                holds = read_holds(probe_dir, workers, window)
                result = {
                    "per_s": row["per_s"],
                    "server_cpu_us": row["server_cpu_us"],
                    "p50_ms": row["p50_ms"],
                    "p99_ms": row["p99_ms"],
                    "connections": seen,
                    "cores": [round((cpu1[p] - cpu0[p]) / window, 2) for p in workers],
                    "mean_batch": round((batches1[0] - batches0[0]) / count, 2) if count else None,
                    "holds": holds,
                }
                results.append(result)
                print(
                    f"round {round_no}: {row['per_s']:,.0f}/s  "
                    f"server CPU {row['server_cpu_us']:.0f} us/fetch  "
                    f"p50 {row['p50_ms']:.2f} p99 {row['p99_ms']:.2f} ms  connections {seen}  "
                    f"cores {result['cores']}  mean batch {result['mean_batch']}"
                )
                for h in holds:
                    if h["holds"]:
                        print(
                            f"    worker {h['pid']}: {h['holds']} holds, p50 {h['p50_ms']} p90 {h['p90_ms']} "
                            f"p99 {h['p99_ms']} mean {h['mean_ms']} ms, "
                            f"held {h['held_share']:.0%} of the window; "
                            f"batches ahead {h['ahead']} missed {h['missed']} ordinary {h['ordinary']}"
                        )
        finally:
            target.stop()
        audited = target.audited_fetches()
        # wrk drops the requests in flight when a window ends (at most one per connection), which the
        # service may still have answered and audited.
        cut = args.connections * (args.rounds + 1)
        if not answered <= audited <= answered + cut:
            print(f"audit: {audited} allowed secret.fetch events for {answered} answered", file=sys.stderr)
            return 1
        print(f"audit: {audited} allowed secret.fetch events for {answered} answered (+ <= {cut} cut off)")
        print(json.dumps({"bench": "gate_hold", "rounds": results}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
