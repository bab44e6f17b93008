"""Instructions a request costs in the real server, counted by callgrind: the window both
``fetch_instructions.py`` and ``sign_instructions.py`` measure in.

``signer serve --workers 1`` runs under ``valgrind --tool=callgrind --instr-atstart=no`` with deadlines
long enough for valgrind's ~50x slowdown. The caller's warm-up load runs uninstrumented, then
``callgrind_control -i on``, the measured load, a dump; then the server idles as long as the load took
and a second dump is taken, so the per-second background work (gauges, timers) can be subtracted
(``net``). The server's group-commit metrics before and after the load give the batches it formed.
"""

from __future__ import annotations

import glob
import http.client
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tests.service_harness as harness

# Under valgrind a request runs ~50x slower: the deadlines (request 5 s, HSM call 2 s, write lock
# 2 s) would cut the queued ones.
SLOW = {
    "SIGNER_REQUEST_DEADLINE_SECONDS": "300",
    "SIGNER_HSM_DEADLINE_SECONDS": "60",
    "SIGNER_DB_LOCK_TIMEOUT_SECONDS": "60",
    "SIGNER_DB_POOL_TIMEOUT_SECONDS": "60",
}


@dataclass(frozen=True)
class Counted:
    instructions: int  # every thread, during the measured load
    idle_instructions: int  # the same length of time idle, after it
    load_seconds: float
    group_commits: float
    units_committed: float

    def per_request(self, requests: int) -> tuple[int, int]:
        """(gross, net of the idle period) instructions per request."""
        net = self.instructions - self.idle_instructions
        return round(self.instructions / requests), round(net / requests)

    @property
    def mean_batch(self) -> float:
        return round(self.units_committed / max(1.0, self.group_commits), 2)


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


def _total(name: str) -> int | None:
    path = Path(name)
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def count_instructions(
    installation: harness.Installation,
    tmp: Path,
    warmup: Callable[[int], None],
    load: Callable[[int], None],
) -> Counted | None:
    """Serve ``installation`` under callgrind; ``warmup(port)`` uninstrumented, then ``load(port)``
    counted. None (and the reason on stderr) when callgrind's dumps are missing."""
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
    server = harness.start_server(installation, workers=1, ready_timeout=600, env=SLOW)
    try:
        pid = server.process.pid

        def control(*options: str) -> None:
            subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)

        warmup(server.port)
        before = batches(server.port)
        control("-i", "on")
        started = time.monotonic()
        load(server.port)
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
    # <out>.<pid>.1: the load; <out>.<pid>.2: the idle period (<out>.<pid>: the exit's, after both).
    totals, idle = _total(f"{out}.{pid}.1"), _total(f"{out}.{pid}.2")
    if totals is None or idle is None:
        print(f"callgrind dumps missing: {sorted(glob.glob(f'{out}.*'))}", file=sys.stderr)
        return None
    return Counted(totals, idle, loaded_seconds, after[0] - before[0], after[1] - before[1])


def allowed_events(installation: harness.Installation, kind: str) -> int:
    """How many ``kind`` audit events with outcome allowed the installation's SQLite file holds."""
    db = sqlite3.connect(installation.data_dir / "signer.db")
    try:
        rows = db.execute("SELECT event FROM audit_events WHERE kind = ?", (kind,)).fetchall()
    finally:
        db.close()
    return sum(1 for (event,) in rows if '"allowed"' in event)


def post_load(
    port: int,
    path: str,
    body: dict[str, Any],
    token: str,
    total: int,
    connections: int,
    answered: Callable[[int, dict[str, Any]], bool],
    what: str,
) -> None:
    """``total`` POSTs of ``body`` to ``path`` over ``connections`` keep-alive connections (one thread
    each); ``answered(status, json)`` says whether an answer is the expected one, and any other fails."""
    data = json.dumps(body)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    failures: list[str] = []

    def client(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            for _ in range(count):
                conn.request("POST", path, data, headers)
                response = conn.getresponse()
                if not answered(response.status, json.loads(response.read())):
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
        raise RuntimeError(f"{len(failures)} {what} failed: {sorted(set(failures))}")
