"""CPU per signature by server thread (event loop, PKCS#11, SQLite), under ``vs_openbao.py``'s wrk load.

A measurement, not a test. The wall-clock rate is meaningless on a shared machine; the CPU each thread
of the server spends per request much less so (it still moves with others' load: caches, hand-offs
that wait for a core), so compare trees in alternated runs and take medians. Starts the signer as
``vs_openbao.py`` does (``signer init``, one Ed25519 and one P-256 key, a service granted
``sign_message``), reads ``/proc/<pid>/task/*/stat`` of every worker process before and after
``--seconds`` of wrk with ``--connections`` keep-alive connections, and prints one line per thread
that ran (its name, user and system CPU per request) and the total.

    PYTHONPATH=$PWD .venv/bin/python bench/thread_cpu.py [--curve ed25519|p256] [--workers 1]
        [--connections 16] [--seconds 8]

Run it from each tree (the server runs the working directory's code) to compare commits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vs_openbao

_TICK = os.sysconf("SC_CLK_TCK")


def snapshot(pid: str) -> dict[str, tuple[str, int, int]]:
    """thread id -> (name, user ticks, system ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:  # the thread ended between listing and reading
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[tid] = (name, int(fields[11]), int(fields[12]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--curve", choices=("ed25519", "p256"), default="ed25519")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="thread-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        with vs_openbao.signer_service(tmp, args.workers) as (server, token, keys):
            url = f"{server.url}/v1/keys/{keys[args.curve]['id']}/sign/message"
            body = {"message": vs_openbao.MESSAGE.hex(), "encoding": "hex"}
            children = subprocess.run(
                ["pgrep", "-P", str(server.process.pid)], capture_output=True, text=True, check=False
            ).stdout.split()
            pids = children or [str(server.process.pid)]
            before = {pid: snapshot(pid) for pid in pids}
            result = vs_openbao.run_wrk(
                url,
                body,
                ("Authorization", f"Bearer {token}"),
                args.seconds,
                args.connections,
                [server.process.pid],
                tmp,
            )
            after = {pid: snapshot(pid) for pid in pids}
    requests = result["requests"]
    scale = 1e6 / _TICK / requests
    print(f"{args.curve}: {requests} requests, {result['per_s']}/s, p50 {result['p50_ms']} ms")
    total = 0.0
    for pid in pids:
        for tid, (name, user, system) in after[pid].items():
            _, user0, system0 = before[pid].get(tid, (name, 0, 0))
            spent = (user - user0) + (system - system0)
            if spent > 0:
                total += spent * scale
                print(
                    f"  {pid} {tid} {name:20s} {spent * scale:7.1f} us/req "
                    f"(user {(user - user0) * scale:6.1f} sys {(system - system0) * scale:6.1f})"
                )
    print(f"total {total:.1f} us/req")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
