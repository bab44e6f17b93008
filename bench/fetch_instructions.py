"""Instructions per secret fetch in the real server, counted by callgrind: steadier than CPU time.

A measurement, not a test. On a shared machine the CPU time of a request moves with everybody else's
work (caches, frequency, hand-offs that wait for a core); the number of instructions it executes much
less. In a temporary directory: ``signer init``, one secret and a service principal granted
``read_value`` on it (as ``secrets_fetch.py`` makes them), then ``signer serve --workers 1`` under
``valgrind --tool=callgrind --instr-atstart=no``. ``--warmup`` fetches run uninstrumented, then
``callgrind_control -i on``, ``--connections`` keep-alive clients send ``--fetches`` in all (each answer
must be the 200 with the value), a dump; then the server idles as long as the load took, a second dump,
``callgrind_control -i off``, and the server stops. ``instructions_per_fetch`` is the first dump's total
(every thread: event loop, SQLite, PKCS#11) over the fetches; ``net_instructions_per_fetch`` subtracts
the idle dump, i.e. the per-second background work (gauges, timers) that valgrind's slowdown on a busy
machine would otherwise spread over the fetches. Each fetch is judged and its ``secret.fetch`` event
committed as in production (WAL, ``synchronous=FULL``); the run checks that the audit log holds one
allowed event per fetch and reports the group commits and mean batch of the load (from the server's
metrics). Batching still depends on timing (valgrind runs one thread at a time) and the counts still
move by +-15 % between runs of one tree on a busy machine: compare trees in alternated runs with the
same ``--connections``.

    PYTHONPATH=$PWD .venv/bin/python bench/fetch_instructions.py [--fetches 600] [--connections 8]

Run it from each tree (``python -m signer.cli`` runs the working directory's code) to compare commits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callgrind_window import allowed_events, count_instructions, post_load

import tests.service_harness as harness

VALUE = "sk_live_" + "b" * 32


def setup(directory: Path) -> tuple[harness.Installation, str, str]:
    installation = harness.init_installation(directory)
    server = harness.start_server(installation, workers=1, ready_timeout=120)
    try:
        admin = installation.admin_token
        service = harness.make_service(server, "bench-fetch")
        status, _, body = server.call(
            "POST",
            "/v1/grants",
            {
                "principal_id": installation.admin["principal"]["id"],
                "scope": "acme",
                "operations": ["create"],
            },
            admin,
        )
        assert status == 201, body
        status, _, body = server.call(
            "POST",
            "/v1/secrets",
            {
                "folder": "acme/bench",
                "name": "stripe",
                "owner_group": "payments",
                "category": "api_key",
                "fields": {"STRIPE_SECRET": VALUE},
            },
            admin,
        )
        assert status == 201, body
        secret_id = body["id"]
        status, _, body = server.call(
            "POST",
            "/v1/grants",
            {
                "principal_id": service["principal"]["id"],
                "secret_id": secret_id,
                "operations": ["read_value"],
            },
            admin,
        )
        assert status == 201, body
    finally:
        server.stop()
    return installation, secret_id, service["credentials"]["access_token"]


def load(port: int, secret_id: str, token: str, total: int, connections: int) -> None:
    post_load(
        port,
        f"/v1/secrets/{secret_id}/fetch",
        {"workload": "bench"},
        token,
        total,
        connections,
        lambda status, answer: status == 200 and answer.get("values") == {"STRIPE_SECRET": VALUE},
        "fetches",
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fetches", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if not 1 <= args.connections <= 64 or not 1 <= args.fetches <= 100_000:
        parser.error("--connections 1-64, --fetches 1-100000")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind (callgrind) is not installed")
    with tempfile.TemporaryDirectory(prefix="fetch-instr-") as tmp_name:
        tmp = Path(tmp_name)
        installation, secret_id, token = setup(tmp / "signer")
        counted = count_instructions(
            installation,
            tmp,
            lambda port: load(port, secret_id, token, args.warmup, args.connections),
            lambda port: load(port, secret_id, token, args.fetches, args.connections),
        )
        if counted is None:
            return 1
        allowed = allowed_events(installation, "secret.fetch")
        expected = args.warmup + args.fetches
        if allowed != expected:
            print(f"audit: {allowed} allowed secret.fetch events for {expected} fetches", file=sys.stderr)
            return 1
    gross, net = counted.per_request(args.fetches)
    print(
        json.dumps(
            {
                "bench": "fetch_instructions",
                "fetches": args.fetches,
                "connections": args.connections,
                "load_seconds": round(counted.load_seconds, 1),
                "instructions": counted.instructions,
                "instructions_per_fetch": gross,
                "idle_instructions": counted.idle_instructions,
                "net_instructions_per_fetch": net,
                "audited": allowed,
                # How many fetches shared a group commit moves with timing, and the count with it.
                "group_commits": round(counted.group_commits),
                "mean_batch": counted.mean_batch,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
