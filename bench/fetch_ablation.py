"""Where a secret fetch's server CPU goes: one part at a time left out, next to a bare aiohttp app.

A measurement, not a test. ``bench/secrets_fetch.py``'s installation (100 secrets, one fetchable by a
service principal; SQLite, SoftHSM), ``signer serve --workers N`` with ``bench/ablation_probe/
sitecustomize.py`` loaded into the server's processes, and wrk (``--connections`` keep-alive
connections) on ``POST /v1/secrets/{id}/fetch`` for ``--seconds`` per case. Each case sends an
``X-Ablate`` header naming the parts its requests leave out (the probe's docstring lists them; the
``full`` case sends none and runs the service untouched), all cases against the same server, rounds
interleaving the cases so that other people's load drifts over all of them. Per case: fetches/s and
server CPU per fetch (``/proc`` of the server's processes), and the difference to ``full``: what that
part costs a fetch. The floor is a bare aiohttp app on the same loop (uvloop), the same number of
processes (``reuse_port``), answering the same request with a fixed body of the same size.

Cases whose requests are not committed write no audit event, so there is no audit check here (the
answers must all be 200); read the figures as attribution, and ``secrets_fetch.py`` for the rate.

    PYTHONPATH=$PWD .venv/bin/python bench/fetch_ablation.py [--rounds 2] [--seconds 6] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from secrets_fetch import SignerTarget
from vs_openbao import run_wrk

PROBE = Path(__file__).resolve().parent / "ablation_probe"

CASES: list[tuple[str, str]] = [
    ("full", ""),
    ("no access line", "access_log"),
    ("no request metrics", "metrics"),
    ("no body parsing", "body"),
    ("no anomaly detection", "anomalies"),
    ("commit without judging again", "judge_again"),
    ("commit without the audit event", "audit"),
    ("commit without last-fetched", "settle"),
    ("no commit (nothing written)", "commit"),
    ("no service (HTTP and auth)", "service"),
    ("no service, no auth (HTTP)", "service,auth"),
]

_BARE_APP = """
import sys, uvloop
from aiohttp import web
VALUES = b'"values":{"STRIPE_SECRET":"%s"}' % (b"v" * 40)
BODY = b'{"secret_id":"%s","name":"bench","version":1,%s}' % (b"s" * 26, VALUES)
async def fetch(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/secrets/{secret_id}/fetch", fetch)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), reuse_port=True, access_log=None, print=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BareApp:
    """``processes`` copies of the bare app on one port (``SO_REUSEPORT``)."""

    def __init__(self, directory: Path, processes: int) -> None:
        self.port = _free_port()
        script = directory / "bare_app.py"
        script.write_text(_BARE_APP, encoding="utf-8")
        self.processes = [
            subprocess.Popen([sys.executable, str(script), str(self.port)]) for _ in range(processes)
        ]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    # One accepted connection says one process listens; give each its own try.
                    time.sleep(0.5)  # start-up of the other processes, polled once, not a synchronisation
                    return
            except OSError:
                time.sleep(0.1)  # polling for the port with a hard deadline
        self.stop()
        raise RuntimeError("the bare app did not start")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for p in self.processes:
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _line(round_no: int, name: str, row: dict[str, Any]) -> None:
    print(
        f"round {round_no}  {name:32s} {row['per_s']:8,.0f}/s  {row['server_cpu_us']:6.1f} us/fetch  "
        f"others {row['others_cores']:.2f} cores"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("no wrk: apt-get install -y wrk (or scripts/setup --bench)")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in CASES}
    samples["bare aiohttp (floor)"] = []
    with tempfile.TemporaryDirectory(prefix="fetch-ablation-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["ABLATION_PROBE"] = "1"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(PROBE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        )
        target = SignerTarget(tmp / "signer", 100, args.workers)
        del os.environ["ABLATION_PROBE"]
        bare = BareApp(tmp, args.workers)
        try:
            header = ("Authorization", f"Bearer {target.token}")
            body = {"workload": "bench"}
            run_wrk(target.url, body, header, 2, args.connections, target.pids, tmp)  # warm-up
            print(f"# fetch_ablation: workers={args.workers} connections={args.connections}", end="")
            print(f" seconds={args.seconds}")
            for round_no in range(1, args.rounds + 1):
                for name, parts in CASES:
                    more = {"X-Ablate": parts} if parts else None
                    row = run_wrk(
                        target.url,
                        body,
                        header,
                        args.seconds,
                        args.connections,
                        target.pids,
                        tmp,
                        more_headers=more,
                    )
                    if row["errors"]:
                        print(
                            f"{name}: {row['errors']} answers were not 200: {row['error_lines']}",
                            file=sys.stderr,
                        )
                        return 1
                    samples[name].append((row["per_s"], row["server_cpu_us"]))
                    _line(round_no, name, row)
                bare_url = f"http://127.0.0.1:{bare.port}/v1/secrets/{'s' * 26}/fetch"
                row = run_wrk(bare_url, body, header, args.seconds, args.connections, bare.pids, tmp)
                samples["bare aiohttp (floor)"].append((row["per_s"], row["server_cpu_us"]))
                _line(round_no, "bare aiohttp (floor)", row)
        finally:
            bare.stop()
            target.stop()
    full = statistics.median(cpu for _, cpu in samples["full"])
    print()
    print(f"{'case (median of rounds)':34s} {'per s':>8s} {'us/fetch':>9s} {'saves':>7s}")
    for name, values in samples.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:34s} {rate:8,.0f} {cpu:9.1f} {full - cpu:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
