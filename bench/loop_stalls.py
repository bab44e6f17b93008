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
CYCLES_ENV = "SIGNER_BENCH_STALL_CYCLES"
ROOTS_ENV = "SIGNER_BENCH_STALL_ROOTS"


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
    # The records are kept as strings and floats, which the collector does not track: a record per
    # commit or per long step kept as a tuple or dict would itself fill the young generation and set
    # off the collections this bench counts (it did: ~1 tracked object per batch and 2 per long step).
    from array import array

    long_calls: list[str] = []  # each a JSON object
    gcs: list[tuple[int, float, float, int]] = []
    commits = array("d")  # wall, cpu, frames SQLite's own checkpoint copied in it; three per commit
    holds: list[float] = []
    early: list[float] = []  # per batch: from the gate's release after COMMIT to the block's end
    loop_cpu = [0.0, 0]  # CPU of every callback, number of callbacks
    # Every step of each named task (the periodic ones: webhooks, metrics, checkpoints, ...), however
    # short: [CPU total, steps, CPU max]. aiohttp's request tasks ("Task-<n>") are not named.
    named: dict[str, list[float]] = {}
    # While this worker holds the write gate: [held now, callbacks of others run meanwhile, their CPU,
    # the batcher's own steps, their CPU]: the loop's turns that the other workers wait through.
    under_gate = [0, 0, 0.0, 0, 0.0]
    # The others' callbacks split by when they ran: [before the batcher's first step after the one
    # that took the gate (waiting for BEGIN), CPU; after it (waiting for the COMMIT), CPU]; and the
    # batcher steps seen in the current holding.
    phases = [0, 0.0, 0, 0.0]
    hold_steps = [0]
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
            task = getattr(getattr(self, "_callback", None), "__self__", None)
            if under_gate[0]:
                if isinstance(task, asyncio.Task) and task.get_name() == "signer-store-batcher":
                    under_gate[3] += 1
                    under_gate[4] += cpu
                    hold_steps[0] += 1
                else:
                    under_gate[1] += 1
                    under_gate[2] += cpu
                    at = 0 if hold_steps[0] <= 1 else 2
                    phases[at] += 1
                    phases[at + 1] += cpu
            if isinstance(task, asyncio.Task):
                name = task.get_name()
                if not name.startswith("Task-"):
                    entry = named.get(name)
                    if entry is None:
                        entry = named[name] = [0.0, 0, 0.0]
                    entry[0] += cpu
                    entry[1] += 1
                    if cpu > entry[2]:
                        entry[2] = cpu
            if cpu > threshold or wall > 2 * threshold:
                long_calls.append(
                    json.dumps(
                        {"what": describe(self), "cpu": cpu, "wall": wall, "where": samples, "at": start}
                    )
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
            # The innermost frames, signer's and the libraries', innermost first; without the source
            # lines (linecache would keep every file it read in the young generation, and the
            # collections this bench counts would traverse them).
            stack = traceback.StackSummary.extract(traceback.walk_stack(frame), limit=14, lookup_lines=False)
            samples.append(" < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack))

    threading.Thread(target=watchdog, name="stall-watchdog", daemon=True).start()

    gc_start = [0.0, 0.0]

    young: list[Any] = [None]
    # --gc-detail: what each collection is about to traverse (slow: the stalls it adds are its own).
    detail = os.environ.get(GC_DETAIL_ENV) == "1"

    roots_at_gc: list[Any] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if (
            phase == "start"
            and os.environ.get(ROOTS_ENV) == "1"
            and roots_at_gc == [None]
            and int(info.get("generation", 0)) == 0
        ):
            # --roots: the first young collection of the window, seen from what holds its objects.
            roots_at_gc[0] = young_roots(generations=(0,))
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
            commits.extend((wall, cpu, after - before if inline else 0))

    driver._run_jobs = timed_jobs

    import signer.store.gate as gate

    original_held = gate.WriteGate.held

    @contextlib.asynccontextmanager
    async def timed_held(self: Any, *, rested: bool = False) -> Any:
        async with original_held(self, rested=rested) as release:
            start = perf()
            released: list[float] = []
            under_gate[0] = 1
            # The step that took the gate is still running: counted as the first when it ends.
            hold_steps[0] = 0

            def timed_release() -> None:
                # The store may let the gate go on the connection's thread right after COMMIT.
                under_gate[0] = 0
                released.append(perf())
                if release is not None:
                    release()

            try:
                yield timed_release
            finally:
                under_gate[0] = 0
                end = perf()
                holds.append((released[0] if released else end) - start)
                if released:
                    # How much longer the gate would have been held had it gone only here.
                    early.append(end - released[0])

    gate.WriteGate.held = timed_held  # type: ignore[method-assign]

    # --cycles: every object the collector finds unreachable in the window is kept (DEBUG_SAVEALL)
    # and counted by type at the end: what the requests leave behind in reference cycles, which is
    # what fills the young generation (objects freed by reference counting never count towards it).
    cycles = os.environ.get(CYCLES_ENV) == "1"

    def reset(_signum: int, _frame: Any) -> None:
        # Armed for the window only (during start-up it would hold up the HSM's self-test).
        roots_at_gc[:] = [None]
        for records in (long_calls, gcs, holds, early):
            records.clear()
        del commits[:]
        loop_cpu[0], loop_cpu[1] = 0.0, 0
        named.clear()
        under_gate[1:] = [0, 0.0, 0, 0.0]
        phases[:] = [0, 0.0, 0, 0.0]
        if cycles:
            gc.collect()
            gc.garbage.clear()
            live_before.clear()
            live_before.update(live_kinds())
            gc.set_debug(gc.DEBUG_SAVEALL)

    live_before: dict[str, int] = {}

    def live_kinds() -> dict[str, int]:
        # After a full collection every live object made since start-up (gc.freeze) is in the oldest
        # generation: its growth over the window is what the requests keep, not garbage.
        kinds: dict[str, int] = defaultdict(int)
        for o in gc.get_objects(2):
            kinds[f"{type(o).__module__}.{type(o).__qualname__}"] += 1
        return kinds

    def young_roots(samples: int = 400, generations: tuple[int, ...] = (0, 1)) -> list[tuple[str, int]]:
        # --roots: what holds the objects in the young generations at the end of the window (what a
        # young collection traverses and promotes). A sample of them, each followed up its referrers to
        # the first container outside the young generations; the frozen start-up heap is unfrozen
        # first, or its containers would not be found (slow; once, at the end).
        import random

        young = [o for g in generations for o in gc.get_objects(g)]
        ids = {id(o) for o in young}
        picked = random.sample(young, min(samples, len(young)))
        del young
        gc.unfreeze()
        found: dict[str, int] = defaultdict(int)

        def label(o: Any) -> str:
            kind = f"{type(o).__module__}.{type(o).__qualname__}"
            if isinstance(o, dict):
                owners = [r for r in gc.get_referrers(o) if hasattr(r, "__dict__") and r.__dict__ is o]
                if owners:
                    return f"__dict__ of {type(owners[0]).__module__}.{type(owners[0]).__qualname__}"
                return f"dict({len(o)}) keys {[repr(k)[:30] for k in list(o)[:2]]}"
            if isinstance(o, (list, tuple, set)):
                return f"{kind}({len(o)}) {repr(o)[:60]}"
            return kind

        for o in picked:
            path = [label(o)]
            current = o
            for _ in range(4):
                referrers = [
                    r for r in gc.get_referrers(current) if r is not picked and type(r).__name__ != "frame"
                ]
                if not referrers:
                    path.append("(none)")
                    break
                outside = [r for r in referrers if id(r) not in ids]
                current = outside[0] if outside else referrers[0]
                path.append(label(current))
                if outside:
                    break
            found[" < ".join(path)[:300]] += 1
        return sorted(found.items(), key=lambda kv: -kv[1])[:40]

    def cyclic_garbage() -> dict[str, Any]:
        gc.collect()
        gc.set_debug(0)
        garbage = list(gc.garbage)
        gc.garbage.clear()
        kinds: dict[str, int] = defaultdict(int)
        for o in garbage:
            kind = type(o)
            kinds[f"{kind.__module__}.{kind.__qualname__}"] += 1
            if kind.__name__ == "function":
                kinds[f"  function {getattr(o, '__qualname__', '?')}"] += 1
            elif kind.__name__ == "frame":
                kinds[f"  frame {o.f_code.co_filename.rsplit('/', 1)[-1]}:{o.f_code.co_name}"] += 1
            elif kind.__name__ == "coroutine":
                kinds[f"  coroutine {getattr(o, '__qualname__', '?')}"] += 1
        del garbage
        gc.collect()  # the cycles just dropped from gc.garbage are not "kept"
        grown = {k: v - live_before.get(k, 0) for k, v in live_kinds().items()}
        return {
            "objects": sum(kinds[k] for k in kinds if not k.startswith(" ")),
            "types": sorted(kinds.items(), key=lambda kv: -kv[1])[:60],
            "grown": sorted(((k, v) for k, v in grown.items() if v), key=lambda kv: -abs(kv[1]))[:30],
        }

    def dump(_signum: int, _frame: Any) -> None:
        data = {
            "long_calls": [json.loads(c) for c in long_calls],
            "gc": gcs,
            "commits": [commits[i : i + 3].tolist() for i in range(0, len(commits), 3)],
            "holds": holds,
            "early": early,
            "loop_cpu": loop_cpu[0],
            "callbacks": loop_cpu[1],
            "named": named,
            "under_gate": under_gate[1:],
            "gate_phases": phases,
            "gc_threshold": list(gc.get_threshold()),
            "gc_frozen": gc.get_freeze_count(),
        }
        if cycles:
            data["cycles"] = cyclic_garbage()
        if os.environ.get(ROOTS_ENV) == "1":
            taken = roots_at_gc[0] if roots_at_gc else None
            data["roots"] = taken if taken is not None else young_roots()
            data["roots_at"] = "a young collection" if taken is not None else "the end of the window"
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
    if any("cycles" in w for w in data):
        total = sum(w["cycles"]["objects"] for w in data)
        print(f"\ncyclic garbage: {total} objects, {total / max(requests, 1):.1f} per request")
        merged: dict[str, int] = defaultdict(int)
        for w in data:
            for kind, count in w["cycles"]["types"]:
                merged[kind] += count
        for kind, count in sorted(merged.items(), key=lambda kv: -kv[1])[:40]:
            print(f"  {count:7d}  {count / max(requests, 1):6.2f}/req  {kind}")
        grown: dict[str, int] = defaultdict(int)
        for w in data:
            for kind, count in w["cycles"]["grown"]:
                grown[kind] += count
        print(f"live objects kept over the window (after a full collection): {sum(grown.values())}")
        for kind, count in sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:25]:
            print(f"  {count:7d}  {count / max(requests, 1):6.2f}/req  {kind}")
    for w in data:
        if "roots" in w:
            print(
                f"\nwhat holds the young generations' objects at {w['roots_at']} (a sample, followed to an "
                "older container):"
            )
            for path, count in w["roots"]:
                print(f"  {count:4d}  {path}")
    gated = [sum(w.get("under_gate", [0, 0, 0, 0])[i] for w in data) for i in range(4)]
    if holds:
        print(
            f"  while held, per batch: {gated[0] / len(holds):.2f} other callbacks on the loop "
            f"({gated[1] / len(holds) * 1e6:.0f} us CPU), {gated[2] / len(holds):.2f} batcher steps "
            f"({gated[3] / len(holds) * 1e6:.0f} us CPU)"
        )
        split = [sum(w.get("gate_phases", [0, 0, 0, 0])[i] for w in data) for i in range(4)]
        n = len(holds)
        print(
            f"    of them waiting for BEGIN's result: {split[0] / n:.2f} ({split[1] / n * 1e6:.0f} us CPU); "
            f"waiting for the COMMIT: {split[2] / n:.2f} ({split[3] / n * 1e6:.0f} us)"
        )
        hold_summary["others_per_batch"] = round(gated[0] / len(holds), 3)
        hold_summary["others_us_per_batch"] = round(gated[1] / len(holds) * 1e6, 1)
        hold_summary["batcher_us_per_batch"] = round(gated[3] / len(holds) * 1e6, 1)
    tasks: dict[str, list[float]] = {}
    for w in data:
        for name, (cpu, steps, longest) in w.get("named", {}).items():
            entry = tasks.setdefault(name, [0.0, 0, 0.0])
            entry[0] += cpu
            entry[1] += steps
            entry[2] = max(entry[2], longest)
    print("\nnamed tasks, every step (CPU total ms, steps, longest step ms), all workers:")
    for name, (cpu, steps, longest) in sorted(tasks.items(), key=lambda kv: -kv[1][0]):
        print(f"  {cpu * 1000:9.1f} {int(steps):7d} {longest * 1000:7.2f}  {name}")
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
        "named_tasks": {
            k: [round(v[0] * 1000, 2), int(v[1]), round(v[2] * 1000, 2)] for k, v in tasks.items()
        },
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
        "--cycles",
        action="store_true",
        help="keep what the collector finds unreachable in the window (gc.DEBUG_SAVEALL) and count it by "
        "type: the reference cycles the requests leave behind (changes GC timings; count only)",
    )
    parser.add_argument(
        "--roots",
        action="store_true",
        help="at the end, follow a sample of the young generations' objects to what holds them (slow)",
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
            CYCLES_ENV: "1" if args.cycles else "0",
            ROOTS_ENV: "1" if args.roots else "0",
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
            deadline = time.monotonic() + (300 if args.roots else 20)
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
