"""What blocks a worker's event loop, holds the write gate or stalls a commit, counted under a fixed load.

A long tail at moderate load (p99 tens of milliseconds at half the saturated rate) comes from stalls
that block a worker for milliseconds at a time, not from the per-request cost. Wall-clock latency on a
shared machine cannot tell those apart from other people's work, so this bench counts the stalls
themselves, by thread CPU time where it can (``time.thread_time``: what the thread itself spent, which
load on the other core does not inflate):

- **loop callbacks**: every event-loop callback or task step whose thread CPU exceeds ``--threshold-ms``
  (or whose wall time exceeds twice that), with what it was (the task's name and coroutine, or the
  callback) and, for the longer ones, where the loop thread was (stacks sampled every millisecond by a
  watchdog thread while a callback runs long). This needs asyncio's own loop (uvloop's handles are
  compiled), so the server runs with it; the periodic work it finds is the same under uvloop.
- **garbage collections** (``gc.callbacks``): count, generation, wall and CPU time of each.
- **SQLite commits** (the driver's job on the connection's thread that ends in COMMIT): wall and CPU
  time, and whether the commit ran a WAL checkpoint (the WAL index's backfill count moved during it).
- **write gate**: how long each batch held the gate (every other worker waits that long).

The server is the real one (``signer serve --workers N`` on a fresh installation, SQLite), the load is
``e2e_sign.drive_rate``'s open loop at ``--rate`` per second; the recorder loads through a generated
``sitecustomize.py`` in the server's processes only (signer/ knows nothing of it). Before the measured
window the recorder is reset (SIGUSR1), after it each worker writes its records (SIGUSR2).

    .venv/bin/python bench/loop_stalls.py --rate 300 --seconds 20
    .venv/bin/python bench/loop_stalls.py --rate 300 --seconds 20 --json bench/results/stalls.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
STALLS_ENV = "SIGNER_BENCH_STALLS"
THRESHOLD_ENV = "SIGNER_BENCH_STALL_MS"
GC_DETAIL_ENV = "SIGNER_BENCH_STALL_GC_DETAIL"
SWITCH_ENV = "SIGNER_BENCH_STALL_SWITCH_INTERVAL"
GC_THRESHOLD_ENV = "SIGNER_BENCH_STALL_GC_THRESHOLDS"


# -- inside the server's workers --------------------------------------------------------------------------


def install_recorder(out_dir: str) -> None:
    import gc
    import sys as _sys
    import threading
    import traceback

    threshold = float(os.environ.get(THRESHOLD_ENV, "1.0")) / 1000
    if os.environ.get(SWITCH_ENV):
        _sys.setswitchinterval(float(os.environ[SWITCH_ENV]))
    if os.environ.get(GC_THRESHOLD_ENV):
        import signer.app as app_module

        # signer.app.run() sets the thresholds from this module global.
        thresholds = tuple(int(v) for v in os.environ[GC_THRESHOLD_ENV].split(","))
        setattr(app_module, "GC_THRESHOLDS", thresholds)  # noqa: B010 - what-if patch
    perf, thread_time = time.perf_counter, time.thread_time
    long_calls: list[dict[str, Any]] = []
    gcs: list[tuple[int, float, float, int]] = []
    commits: list[tuple[float, float, int]] = []  # wall, cpu, frames SQLite's own checkpoint copied in it
    holds: list[float] = []
    early: list[float] = []  # per batch: from the gate's release after COMMIT to the block's end
    loop_cpu = [0.0, 0]  # CPU of every callback, number of callbacks
    # What the loop thread runs now: (started, handle) and the stacks the watchdog sampled meanwhile.
    current: list[Any] = [0.0, None]
    samples: list[str] = []
    loop_thread: list[int] = [0]

    import signer.app

    setattr(signer.app, "new_event_loop", lambda prefer_uvloop=True: asyncio.new_event_loop())  # noqa: B010

    def describe(handle: Any) -> str:
        callback = getattr(handle, "_callback", None)
        task = getattr(callback, "__self__", None)
        if isinstance(task, asyncio.Task):
            coro = task.get_coro()
            name = getattr(coro, "__qualname__", type(coro).__name__)
            # aiohttp's request tasks are "Task-<n>": one name for all of them.
            label = "Task" if task.get_name().startswith("Task-") else task.get_name()
            return f"task {label}: {name}"
        return f"callback {getattr(callback, '__qualname__', repr(callback))[:80]}"

    original_run = asyncio.events.Handle._run

    def timed_run(self: Any) -> None:
        if not loop_thread[0]:
            loop_thread[0] = threading.get_ident()
        start, start_cpu = perf(), thread_time()
        current[0], current[1] = start, self
        try:
            original_run(self)
        finally:
            cpu = thread_time() - start_cpu
            wall = perf() - start
            current[1] = None
            loop_cpu[0] += cpu
            loop_cpu[1] += 1
            if cpu > threshold or wall > 2 * threshold:
                long_calls.append(
                    {"what": describe(self), "cpu": cpu, "wall": wall, "where": list(samples), "at": start}
                )
            if samples:
                samples.clear()

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def watchdog() -> None:
        while True:
            time.sleep(0.001)
            handle, started = current[1], current[0]
            if handle is None or perf() - started < threshold or not loop_thread[0]:
                continue
            frame = _sys._current_frames().get(loop_thread[0])
            if frame is None or current[1] is not handle:
                continue
            stack = traceback.extract_stack(frame)[-14:]
            # The innermost frames, signer's and the libraries', innermost last.
            samples.append(
                " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
            )

    threading.Thread(target=watchdog, name="stall-watchdog", daemon=True).start()

    gc_start = [0.0, 0.0]

    young: list[Any] = [None]
    # --gc-detail: what each collection is about to traverse (slow: the stalls it adds are its own).
    detail = os.environ.get(GC_DETAIL_ENV) == "1"

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and not detail:
            gc_start[0], gc_start[1] = perf(), thread_time()
        elif phase == "start":
            # What the collection is about to traverse: its objects by type, and the largest containers
            # (a young container is traversed whole). Counted before the clock starts.
            objects = gc.get_objects(int(info.get("generation", 0)))
            kinds: dict[str, int] = defaultdict(int)
            sized = []
            for o in objects:
                kinds[type(o).__qualname__] += 1
                with contextlib.suppress(Exception):
                    if isinstance(o, (list, dict, set, tuple)) and len(o) > 100:
                        sized.append((len(o), type(o).__qualname__, repr(o)[:80]))
            cycles = []
            for o in objects:
                if type(o).__name__ in ("Writer", "AuditRecord", "Reader") and len(cycles) < 3:
                    chain = []
                    for r in gc.get_referrers(o):
                        if r is objects:
                            continue
                        desc = type(r).__qualname__
                        if isinstance(r, dict):
                            owners = [type(x).__qualname__ for x in gc.get_referrers(r) if x is not objects][
                                :3
                            ]
                            keys = [k for k, v in r.items() if v is o][:2]
                            desc += f"{keys} of {owners}"
                        elif type(r).__name__ == "cell":
                            owners = [
                                getattr(x, "__qualname__", type(x).__qualname__)
                                for x in gc.get_referrers(r)
                                if x is not objects
                            ][:3]
                            desc += f" of {owners}"
                        chain.append(desc)
                    cycles.append((type(o).__name__, chain[:6]))
            young[0] = {
                "referrers": cycles,
                "objects": len(objects),
                "types": sorted(kinds.items(), key=lambda kv: -kv[1])[:8],
                "largest": sorted(sized, reverse=True)[:5],
            }
            del objects
            gc_start[0], gc_start[1] = perf(), thread_time()
        else:
            gcs.append(
                (
                    int(info.get("generation", 0)),
                    perf() - gc_start[0],
                    thread_time() - gc_start[1],
                    int(info.get("collected", 0)),
                    young[0],
                )
            )

    gc.callbacks.append(on_gc)

    import signer.store.driver as driver

    original_jobs = driver._run_jobs
    autocheckpoint: list[int] = []  # the connection's wal_autocheckpoint, read once

    def backfill(connection: Any) -> tuple[int, int]:
        # WAL-index header: two copies of 48 bytes (mxFrame, the frames in the WAL, at offset 16), then
        # the checkpoint info whose first u32 is nBackfill (frames already copied back into the
        # database); native byte order.
        path = connection.execute("PRAGMA database_list").fetchone()[2] + "-shm"
        with open(path, "rb") as shm:
            head = shm.read(100)
        if len(head) < 100:
            return 0, 0
        return int.from_bytes(head[96:100], sys.byteorder), int.from_bytes(head[16:20], sys.byteorder)

    def timed_jobs(connection: Any, jobs: Any, commit: bool, *rest: Any) -> Any:
        if not commit:
            return original_jobs(connection, jobs, commit, *rest)
        before, _ = backfill(connection)
        start, start_cpu = perf(), thread_time()
        try:
            return original_jobs(connection, jobs, commit, *rest)
        finally:
            wall, cpu = perf() - start, thread_time() - start_cpu
            after, frames = backfill(connection)
            # SQLite's own checkpoint runs inside the COMMIT that takes the WAL to wal_autocheckpoint
            # frames; a checkpoint of another connection (a background one) may also move
            # nBackfill meanwhile, but with a short WAL.
            if not autocheckpoint:
                autocheckpoint.append(connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
            inline = after > before and frames >= autocheckpoint[0]
            commits.append((wall, cpu, after - before if inline else 0))

    driver._run_jobs = timed_jobs

    import signer.store.gate as gate

    original_held = gate.WriteGate.held

    @contextlib.asynccontextmanager
    async def timed_held(self: Any, *, rested: bool = False) -> Any:
        async with original_held(self, rested=rested) as release:
            start = perf()
            released: list[float] = []

            def timed_release() -> None:
                # The store may let the gate go on the connection's thread right after COMMIT.
                released.append(perf())
                if release is not None:
                    release()

            try:
                yield timed_release
            finally:
                end = perf()
                holds.append((released[0] if released else end) - start)
                if released:
                    # How much longer the gate would have been held had it gone only here.
                    early.append(end - released[0])

    gate.WriteGate.held = timed_held  # type: ignore[method-assign]

    def reset(_signum: int, _frame: Any) -> None:
        for records in (long_calls, gcs, commits, holds, early):
            records.clear()
        loop_cpu[0], loop_cpu[1] = 0.0, 0

    def dump(_signum: int, _frame: Any) -> None:
        data = {
            "long_calls": long_calls,
            "gc": gcs,
            "commits": commits,
            "holds": holds,
            "early": early,
            "loop_cpu": loop_cpu[0],
            "callbacks": loop_cpu[1],
            "gc_threshold": list(gc.get_threshold()),
            "gc_frozen": gc.get_freeze_count(),
        }
        target = Path(out_dir) / f"stalls-{os.getpid()}.json"
        partial = target.with_suffix(".part")
        partial.write_text(json.dumps(data), encoding="utf-8")
        partial.rename(target)

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, dump)
    (Path(out_dir) / f"ready-{os.getpid()}").touch()


def site_dir(parent: Path) -> Path:
    site = parent / "stalls-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import os\n"
        f"if os.environ.get({STALLS_ENV!r}):\n"
        "    import importlib.util, sys\n"
        f"    spec = importlib.util.spec_from_file_location('signer_bench_stalls', {str(Path(__file__))!r})\n"
        "    module = sys.modules['signer_bench_stalls'] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        f"    module.install_recorder(os.environ[{STALLS_ENV!r}])\n",
        encoding="utf-8",
    )
    return site


# -- the bench ----------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(data: list[dict[str, Any]], seconds: float, requests: int, threshold_ms: float) -> dict[str, Any]:
    """Per source: count, total and worst thread CPU; ranked by total (count x duration)."""
    by_what: dict[str, list[float]] = defaultdict(list)
    wall_by_what: dict[str, list[float]] = defaultdict(list)
    where: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for worker in data:
        for call in worker["long_calls"]:
            by_what[call["what"]].append(call["cpu"])
            wall_by_what[call["what"]].append(call["wall"])
            for stack in call["where"]:
                where[call["what"]][stack] += 1
    print(
        f"\nloop callbacks over {threshold_ms} ms CPU (or {2 * threshold_ms} ms wall), "
        f"{len(data)} workers, {seconds:.0f} s, {requests} requests answered"
    )
    print(f"{'count':>6} {'CPU total ms':>13} {'CPU max ms':>11} {'wall max ms':>12}  what")
    ranked = sorted(by_what, key=lambda w: -sum(by_what[w]))
    for what in ranked:
        cpu, worst_wall = by_what[what], max(wall_by_what[what])
        print(f"{len(cpu):6d} {_ms(sum(cpu)):>13} {_ms(max(cpu)):>11} {_ms(worst_wall):>12}  {what}")
        for stack, count in sorted(where[what].items(), key=lambda kv: -kv[1])[:3]:
            print(f"{'':>8}{count:4d} x {stack[:220]}")
        longest = max((c for w in data for c in w["long_calls"] if c["what"] == what), key=lambda c: c["cpu"])
        for stack in longest["where"][:3]:
            print(f"{'':>8}longest: {stack[:220]}")
    gcs = [g for worker in data for g in worker["gc"]]
    print("\ngarbage collections (gc.callbacks)")
    gc_summary = {}
    for generation in (0, 1, 2):
        rows = [g for g in gcs if g[0] == generation]
        if rows:
            gc_summary[generation] = {
                "count": len(rows),
                "cpu_total_ms": round(sum(r[2] for r in rows) * 1000, 2),
                "cpu_max_ms": round(max(r[2] for r in rows) * 1000, 2),
                "wall_max_ms": round(max(r[1] for r in rows) * 1000, 2),
            }
            print(f"  gen {generation}: {gc_summary[generation]}")
            worst = max(rows, key=lambda r: r[2])
            print(f"    longest: {worst[2] * 1000:.1f} ms CPU, collected {worst[3]}, before it: {worst[4]}")
    commits = [c for worker in data for c in worker["commits"]]
    checkpoints = [c for c in commits if c[2] > 0]
    plain = sorted(c[0] for c in commits if c[2] == 0)
    commit_summary: dict[str, Any] = {"count": len(commits)}
    if plain:
        commit_summary["plain_wall_p50_ms"] = round(plain[len(plain) // 2] * 1000, 2)
        commit_summary["plain_wall_p99_ms"] = round(plain[int(len(plain) * 0.99)] * 1000, 2)
    if checkpoints:
        commit_summary["with_checkpoint"] = {
            "count": len(checkpoints),
            "frames": sum(c[2] for c in checkpoints),
            "wall_total_ms": round(sum(c[0] for c in checkpoints) * 1000, 1),
            "wall_max_ms": round(max(c[0] for c in checkpoints) * 1000, 1),
            "cpu_total_ms": round(sum(c[1] for c in checkpoints) * 1000, 1),
        }
    print(f"\nSQLite commit jobs: {commit_summary}")
    holds = sorted(h for worker in data for h in worker["holds"])
    hold_summary: dict[str, Any] = {"count": len(holds)}
    if holds:
        hold_summary.update(
            p50_ms=round(holds[len(holds) // 2] * 1000, 2),
            p99_ms=round(holds[int(len(holds) * 0.99)] * 1000, 2),
            max_ms=round(holds[-1] * 1000, 2),
            over_5ms=sum(h > 0.005 for h in holds),
        )
    print(f"write gate held per batch: {hold_summary}")
    early = sorted(e for worker in data for e in worker.get("early", []))
    if early:
        print(
            f"  let go on the connection's thread after COMMIT: {len(early)} batches, the block ended "
            f"{early[len(early) // 2] * 1000:.2f} ms (p50) / {early[int(len(early) * 0.99)] * 1000:.2f} ms "
            f"(p99) / {sum(early) * 1000:.0f} ms (total) later"
        )
    loop_cpu = sum(w["loop_cpu"] for w in data)
    print(
        f"loop CPU in callbacks: {loop_cpu / max(requests, 1) * 1e6:.0f} us per request; "
        f"gc thresholds {data[0]['gc_threshold'] if data else '?'}, frozen {[w['gc_frozen'] for w in data]}"
    )
    return {
        "long_calls": {
            w: {
                "count": len(by_what[w]),
                "cpu_total_ms": round(sum(by_what[w]) * 1000, 2),
                "cpu_max_ms": round(max(by_what[w]) * 1000, 2),
            }
            for w in ranked
        },
        "gc": gc_summary,
        "commits": commit_summary,
        "gate": hold_summary,
        "loop_cpu_us_per_request": round(loop_cpu / max(requests, 1) * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=300.0, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threshold-ms", type=float, default=1.0)
    parser.add_argument(
        "--gc-detail",
        action="store_true",
        help="before each collection, count its objects by type and find what refers to a Writer/Reader "
        "(expensive: measures what is garbage, not how long collections take)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="what-if: sys.setswitchinterval(S) in the workers (the interpreter's default is 0.005)",
    )
    parser.add_argument(
        "--gc-thresholds",
        help="what-if: G0,G1,G2 instead of signer.app.GC_THRESHOLDS in the workers (e.g. 5000,10,10)",
    )
    parser.add_argument("--json", type=Path, help="write the summary here too")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server (settings)")
    args = parser.parse_args()

    sys.path.insert(0, str(BENCH.parent))
    sys.path.insert(0, str(BENCH))
    from common import cpu_share, cpu_snapshot, server_worker_pids  # type: ignore[import-not-found]
    from e2e_sign import drive_rate  # type: ignore[import-not-found]

    from tests.service_harness import grant, init_installation, make_key, make_service, start_server

    with tempfile.TemporaryDirectory(prefix="signer-stalls-") as tmp:
        root = Path(tmp)
        out = root / "out"
        out.mkdir()
        installation = init_installation(root / "data")
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site_dir(root)), os.environ.get("PYTHONPATH")])),
            STALLS_ENV: str(out),
            THRESHOLD_ENV: str(args.threshold_ms),
            GC_DETAIL_ENV: "1" if args.gc_detail else "0",
            SWITCH_ENV: str(args.switch_interval) if args.switch_interval else "",
            GC_THRESHOLD_ENV: args.gc_thresholds or "",
        }
        for item in args.env:
            name, _, value = item.partition("=")
            env[name] = value
        server = start_server(installation, workers=args.workers, env=env, ready_timeout=120)
        try:
            service = make_service(server, "stalls-relayer")
            key = make_key(server, "secp256k1", "stalls")
            grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
            token = service["credentials"]["access_token"]
            workers = server_worker_pids(server.process.pid)
            if not all((out / f"ready-{p}").exists() for p in workers):
                raise RuntimeError("the recorder did not load in every worker")
            url = f"{server.url}/v1/keys/{key['id']}/sign/transaction"
            pids = sorted({server.process.pid, *workers})
            # Warm-up at the same rate, then reset and measure.
            asyncio.run(
                drive_rate(url, token, args.rate, args.connections, 0.0, args.warmup, 10**9, pids, None, 1)
            )
            for pid in workers:
                os.kill(pid, signal.SIGUSR1)
            load_before = os.getloadavg()
            before = cpu_snapshot(pids, None)
            run = asyncio.run(
                drive_rate(
                    url, token, args.rate, args.connections, 0.0, args.seconds, 2 * 10**9, pids, None, 1
                )
            )
            after = cpu_snapshot(pids, None)
            for pid in workers:
                os.kill(pid, signal.SIGUSR2)
            deadline = time.monotonic() + 20
            files = [out / f"stalls-{pid}.json" for pid in workers]
            while not all(f.exists() for f in files) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling for the files the workers write on the signal, with a deadline
            data = [json.loads(f.read_text(encoding="utf-8")) for f in files if f.exists()]
            wal_bytes = sum(w.stat().st_size for w in (root / "data").rglob("*-wal"))
        finally:
            server.stop()
    summary = run.summary()
    share = cpu_share(before, after)
    print(
        f"rate {args.rate:.0f}/s: achieved {summary['achieved_per_s']}/s, p50 {summary['p50_ms']} p99 "
        f"{summary['p99_ms']} ms, errors {summary['errors']}, late {summary['late_sends']}, server CPU "
        f"{summary['server_cpu_us_per_request']} us/request, others' cores {share.other:.2f}, load average "
        f"{load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    print(f"WAL file(s) at the end: {wal_bytes / 2**20:.1f} MiB")
    result = report(data, args.seconds, summary["ok"], args.threshold_ms)
    result["run"] = summary
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
