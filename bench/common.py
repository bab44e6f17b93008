"""Shared helpers for the benchmarks: CPU accounting from /proc, a throw-away PostgreSQL database, the
durability settings the store uses, the py-spy profile of a running server, the in-process step timers
and what-if experiments, and the per-step costs measured in isolation.

Benchmarks are measurements, not tests: ``signer`` never imports this, and the service runs unchanged
unless a benchmark asks otherwise. The load generator and the server share the machine's cores, so
every figure a benchmark prints comes with the CPU each party used (ours, the server's, and everybody
else's) read from ``/proc``; without those, a requests-per-second figure on a 2-core machine cannot be
judged. The probe (``install_probe``) is the one piece that runs inside a server: it is loaded only
through a ``sitecustomize.py`` the benchmark generates in a temporary directory for the server it
started, it only wraps functions with timers (and applies the experiments the command line names,
which the output then announces), and it records timings and thread names, never request contents,
tokens or keys. py-spy attaches only to the worker processes of that server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import linecache
import math
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import sysconfig
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
for _path in (str(REPO), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

_TICKS = os.sysconf("SC_CLK_TCK")


# -- CPU accounting -----------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (0.0 once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    with open("/proc/stat", encoding="ascii") as handle:
        parts = [int(v) for v in handle.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already inside user
    return (total - idle) / _TICKS, total / _TICKS


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def server_worker_pids(supervisor: int) -> list[int]:
    """The serving processes of ``signer serve``: the supervisor itself with one worker, else its
    spawned children (the resource tracker, also a child, is left out)."""
    spawned = [p for p in children(supervisor) if "spawn_main" in cmdline(p)]
    return spawned or [supervisor]


@dataclass
class CpuSnapshot:
    at: float
    machine_busy: float
    machine_total: float
    client: float
    server: float
    database: dict[int, float] = field(default_factory=dict)


def database_backends(name: str | None) -> list[int]:
    """PostgreSQL backend processes serving database ``name`` (their title names it)."""
    if not name:
        return []
    marker = f" {name} ".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                title = (entry / "cmdline").read_bytes()
                if title.startswith(b"postgres:") and marker in title:
                    found.append(int(entry.name))
    return found


def cpu_snapshot(server_pids: list[int], database: str | None = None) -> CpuSnapshot:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy, total = machine_cpu_seconds()
    return CpuSnapshot(
        at=time.perf_counter(),
        machine_busy=busy,
        machine_total=total,
        client=usage.ru_utime + usage.ru_stime,
        server=sum(process_cpu_seconds(p) for p in server_pids),
        database={p: process_cpu_seconds(p) for p in database_backends(database)},
    )


@dataclass
class CpuShare:
    """Cores used on average over a window (1.0 = one core fully busy)."""

    wall: float
    cores: int
    client: float
    server: float
    other: float
    idle: float
    database: float = 0.0  # PostgreSQL backends of the service's database (SQLite runs in-process)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in vars(self).items() if k not in ("cores",)}


def cpu_share(start: CpuSnapshot, end: CpuSnapshot) -> CpuShare:
    wall = end.at - start.at
    cores = os.cpu_count() or 1
    busy = (end.machine_busy - start.machine_busy) / wall
    client = (end.client - start.client) / wall
    server = (end.server - start.server) / wall
    # Backends present at both ends; one that came or went in between is counted as others' work.
    database = sum(end.database[p] - start.database[p] for p in end.database if p in start.database) / wall
    return CpuShare(
        wall=wall,
        cores=cores,
        client=client,
        server=server,
        other=max(0.0, busy - client - server - database),
        idle=max(0.0, cores - busy),
        database=database,
    )


def background_load(seconds: float = 1.0) -> float:
    """Cores busy on this machine right now (nothing of ours running): other people's work."""
    busy0, _ = machine_cpu_seconds()
    start = time.perf_counter()
    time.sleep(seconds)  # a measurement window, not synchronisation
    busy1, _ = machine_cpu_seconds()
    return (busy1 - busy0) / (time.perf_counter() - start)


def wait_for_quiet(limit: float, threshold: float = 0.3) -> float:
    """Wait up to ``limit`` seconds for other people's work to drop below ``threshold`` cores; returns
    the last background load seen. On a shared 2-core machine this is the difference between measuring
    the service and measuring somebody's test suite."""
    deadline = time.monotonic() + limit
    load = background_load()
    while load > threshold and time.monotonic() < deadline:
        load = background_load()
    return load


def fsync_times_ms(directory: Path, count: int) -> list[float]:
    """``count`` 4 KiB appends to a new file in ``directory``, each followed by ``os.fdatasync``: the
    fdatasync's time of each (ms, in order). What one durable commit costs the disk."""
    path = directory / f".fsync-probe-{secrets.token_hex(4)}"
    block = b"\0" * 4096
    timings: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, block)
            start = time.perf_counter()
            os.fdatasync(fd)
            timings.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return timings


def fsync_latency_ms(directory: Path, count: int = 50) -> float:
    """Median time of one 4 KiB append's fdatasync in ``directory``: what one durable commit costs."""
    return statistics.median(fsync_times_ms(directory, count))


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


# -- databases ----------------------------------------------------------------------------------------


def _asyncpg_dsn(url: str) -> str:
    return re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)


@contextlib.contextmanager
def throwaway_postgres(base_url: str) -> Iterator[str]:
    """Create a fresh database next to ``base_url``'s and drop it afterwards; yields its SQLAlchemy URL."""
    import asyncpg  # the benchmark's own admin connection; the service reaches PG through the store

    name = f"signer_bench_{secrets.token_hex(4)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(base_url))
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    from sqlalchemy.engine import make_url

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def kept_postgres(base_url: str, name: str) -> str:
    """A database ``name`` next to ``base_url``'s, created if it does not exist and never dropped (for
    benchmarks that seed once and measure many times); yields its SQLAlchemy URL."""
    import asyncpg

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"not a plain database name: {name}")

    async def ensure() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(base_url))
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    from sqlalchemy.engine import make_url

    asyncio.run(ensure())
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def analyse_postgres(url: str) -> None:
    """``ANALYZE`` the database behind ``url``: after a bulk seed, the planner's statistics a running
    installation gets from autovacuum (which may be off on a test machine; then every plan assumes
    near-empty tables)."""
    import asyncpg

    async def analyse() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(url))
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(analyse())


def _pg_settings(url: str) -> dict[str, str]:
    import asyncpg

    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(_asyncpg_dsn(url))
        try:
            return {
                name: str(await conn.fetchval(f"SHOW {name}"))
                for name in ("synchronous_commit", "fsync", "wal_sync_method", "full_page_writes")
            }
        finally:
            await conn.close()

    return asyncio.run(read())


def durability(backend: str, database_url: str, sqlite_file: Path | None) -> dict[str, Any]:
    """What makes an audit commit durable, read from the store's code and from the database itself."""
    engine_src = (REPO / "signer" / "store" / "engine.py").read_text(encoding="utf-8")
    store_src = "".join(p.read_text(encoding="utf-8") for p in (REPO / "signer" / "store").glob("*.py"))
    if backend == "sqlite":
        sync = re.search(r"PRAGMA synchronous\s*=\s*(\w+)", engine_src)
        journal = re.search(r"PRAGMA journal_mode\s*=\s*(\w+)", engine_src)
        on_disk = None
        if sqlite_file is not None and sqlite_file.exists():
            import sqlite3

            with contextlib.closing(sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)) as conn:
                on_disk = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        synchronous = sync.group(1).upper() if sync else "default (FULL)"
        mode = journal.group(1).upper() if journal else "default (DELETE)"
        durable = synchronous in ("FULL", "EXTRA") and (on_disk or mode).upper() == "WAL"
        return {
            "backend": "sqlite",
            "source": "signer/store/engine.py",
            "journal_mode": mode,
            "journal_mode_in_file": on_disk,
            "synchronous": synchronous,
            "durable": durable,
            "why": f"WAL + synchronous={synchronous}: every COMMIT fsyncs the WAL before it returns"
            if durable
            else "a COMMIT may return before the WAL reaches the disk",
        }
    override = re.search(r"synchronous_commit\s*(?:=|TO)\s*'?(\w+)", store_src, re.IGNORECASE)
    server = _pg_settings(database_url)
    effective = override.group(1).lower() if override else server["synchronous_commit"]
    durable = effective in ("on", "remote_write", "remote_apply") and server["fsync"] == "on"
    return {
        "backend": "postgresql",
        "source": "signer/store/ (no synchronous_commit override)"
        if not override
        else "signer/store/ overrides synchronous_commit",
        "synchronous_commit": effective,
        "fsync": server["fsync"],
        "wal_sync_method": server["wal_sync_method"],
        "durable": durable,
        "why": f"synchronous_commit={effective}, fsync={server['fsync']}: COMMIT returns after the WAL flush"
        if durable
        else "a COMMIT may return before the WAL reaches the disk",
    }


# -- profiling with py-spy ----------------------------------------------------------------------------

PY_SPY = Path(sys.executable).with_name("py-spy")


def start_py_spy(pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample the thread holding the GIL into a collapsed-stack file, without pausing the process.

    GIL-holder samples, not "on-CPU" ones: py-spy counts a thread as active when the kernel says it is
    runnable, and on a saturated machine a runnable thread mostly waits for a core, so on-CPU samples
    pile up wherever threads hand work to each other. Holding the GIL means running Python (or being
    preempted at a random point while doing so), so these samples split a thread's CPU fairly. Work
    done without the GIL (C_Sign, SQLite statements) is not sampled; /proc accounts for it per thread.
    """
    return subprocess.Popen(
        [
            str(PY_SPY),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--threads",
            "--gil",
            "--idle",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# A stack is attributed to the first step it entered, scanning from the root: a sample inside
# keccak called by parse_transaction belongs to "eth parse", the same keccak called while recovering a
# signature belongs to "recovery". Frames that merely contain everything (process start-up, the
# middlewares, the route handler, the signing pipeline) are skipped. A few steps are recognised
# anywhere in the stack because they run inside another's frames (the audit event inside the commit).
_ANYWHERE: list[tuple[str, str]] = [
    (
        r"^(canonical_json|chain_hash) \(signer/audit\.py|^Writer\.append_audit ",
        "audit event: canonical JSON + hash",
    ),
    (r"^JsonFormatter\.format |^Logger\.(info|_log) \(logging/", "access log line"),
]
_CONTAINERS = re.compile(
    r"\(signer/(app|cli)\.py|\(signer/http/errors\.py"  # start-up, middlewares, the error mapping
    r"|^(sign_transaction|sign_message|sign_typed_data|sign_digest) \(signer/http/routes/signing\.py"
    r"|^SigningService\.(_sign|sign_transaction|sign_message|sign_typed_data|sign_digest) "
    r"|^SigningService\.sign_\w+\.<locals>\.prepare "
)
_ENTRY: list[tuple[str, str]] = [
    (
        r"^(signing_context|context) \(signer/http|\(signer/services/auth\.py|\(signer/identity\.py",
        "auth: bearer token",
    ),
    (r"\(signer/http/body\.py|\(signer/http/models\.py", "JSON: request body + pydantic"),
    (
        r"\(signer/services/facts\.py|\(signer/services/authorization\.py"
        r"|^SigningService\._(precheck|cached_facts|read_facts) |\(policy/",
        "facts cache + grant decision",
    ),
    (
        r"^(parse_transaction|decode_unsigned_transaction|_rpc_fields|_unhex) \(",
        "eth: parse, RLP, keccak digest",
    ),
    (r"^_tx_summary \(", "eth: audit summary of the tx"),
    (r"\(signer/hsm/", "HSM hand-off (queue, futures, deliver)"),
    (
        r"^_finish_transaction \(|\(signer/eth/signatures\.py"
        r"|^SigningService\.sign_\w+\.<locals>\.prepare\.<locals>\.<lambda> ",
        "recovery + assemble",
    ),
    (
        r"\(signer/store/|^SigningService\._record_refusal |^SigningService\._sign\.<locals>\.unit ",
        "group commit (SQLAlchemy, driver)",
    ),
    (r"^json_response \(signer/http/routes/common\.py", "JSON: response"),
    (r"\(signer/eth/", "eth: other"),
    (
        r"\(signer/services/context\.py|^SigningService\._sign\.<locals>\.",
        "handlers, middlewares, pipeline (own code)",
    ),
    (r"\(signer/", "signer: other"),
]
_LIBRARY_RULES: list[tuple[str, str]] = [
    (r"\(aiohttp/", "aiohttp: HTTP parse, routing, response write"),
    (r"\(sqlalchemy/|\(aiosqlite/|\(asyncpg/|\(sqlite3/|\(greenlet", "group commit (SQLAlchemy, driver)"),
    (r"\(asyncio/|\(selectors\.py", "asyncio: event loop, tasks, futures"),
]
_COMPILED_ANYWHERE = [(re.compile(p), c) for p, c in _ANYWHERE]
_COMPILED_ENTRY = [(re.compile(p), c) for p, c in _ENTRY]
_COMPILED_LIB = [(re.compile(p), c) for p, c in _LIBRARY_RULES]


def _normalise(frame: str) -> str:
    # py-spy prints absolute paths; rules are written against repo-relative and package paths.
    frame = frame.replace(str(REPO) + "/", "")
    return re.sub(r"\(/\S*/site-packages/", "(", re.sub(r"\(/\S*/lib/python3\.\d+/", "(", frame))


_FRAME = re.compile(r"\((?P<path>[^():]+):(?P<line>\d+)\)$")
_BLOCKING = re.compile(r"\.get\(|\.poll\(|\.select\(|\.wait\(|\.acquire\(")


def _is_idle(leaf: str) -> bool:
    """A leaf frame parked on a queue get, a selector poll or a lock: py-spy counts a thread that is
    runnable as active, so on a busy machine such samples are waiting, not working."""
    match = _FRAME.search(leaf)
    if match is None:
        return False
    path = _resolve(match.group("path"))
    return path is not None and bool(_BLOCKING.search(linecache.getline(path, int(match.group("line")))))


_ROOTS = [REPO, *(Path(p) for p in dict.fromkeys(sysconfig.get_paths()[k] for k in ("stdlib", "purelib")))]


@functools.lru_cache(maxsize=4096)
def _resolve(path: str) -> str | None:
    """py-spy shortens paths relative to the interpreter's search path; find the file again."""
    if path.startswith("/"):
        return path
    for root in _ROOTS:
        if (root / path).exists():
            return str(root / path)
    return None


def thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name == "signer-hsm-pkcs11":
        return "PKCS#11 thread"
    if "_connection_worker_thread" in name:
        return "SQLite threads"
    return "other threads"


# Threads whose work is mostly C without the GIL: their /proc CPU is reported whole, not split.
WHOLE_THREADS = {
    "PKCS#11 thread": "C_Sign (SoftHSM ECDSA) + job bookkeeping",
    "SQLite threads": "SQLite statements, COMMIT + fsync",
    "other threads": "other",
}


def _category(frames: list[str], kind: str) -> str:
    """``frames`` run from the root to the leaf."""
    if kind in WHOLE_THREADS:
        return WHOLE_THREADS[kind]
    for pattern, category in _COMPILED_ANYWHERE:
        if any(pattern.search(frame) for frame in frames):
            return category
    for frame in frames:
        if ("(signer/" in frame or "(policy/" in frame) and not _CONTAINERS.search(frame):
            for pattern, category in _COMPILED_ENTRY:
                if pattern.search(frame):
                    return category
    if frames and ("(signer/" in frames[-1] or "(policy/" in frames[-1]):
        return "handlers, middlewares, pipeline (own code)"
    # No step entered: the server's own machinery. The innermost library decides.
    for frame in reversed(frames):
        for pattern, category in _COMPILED_LIB:
            if pattern.search(frame):
                return category
    return "other" if frames else "unattributed (no Python stack)"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (tid -> seconds), from /proc: the ground truth that the
    sampled profile is scaled to."""
    result: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        result[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return result


@dataclass
class ThreadSamples:
    name: str
    busy: Counter[str] = field(default_factory=Counter)
    idle: int = 0


def read_py_spy(path: Path) -> dict[int, ThreadSamples]:
    """Fold a py-spy collapsed-stack file (recorded with --threads) into tid -> samples by component."""
    threads: dict[int, ThreadSamples] = {}
    if not path.exists():
        return threads
    header = re.compile(r"^thread \((?P<tid>\d+)\): (?P<name>.*)$")
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        match = header.match(parts[0])
        if match is None:
            continue
        tid, name = int(match.group("tid")), match.group("name")
        entry = threads.setdefault(tid, ThreadSamples(name))
        if _is_idle(parts[-1]):
            entry.idle += int(count)
            continue
        frames = [_normalise(f) for f in parts[1:]]
        entry.busy[_category(frames, thread_kind(name))] += int(count)
    return threads


@dataclass
class Breakdown:
    """Server CPU per request by (thread kind, component): /proc thread CPU split by py-spy samples."""

    requests: int
    wall: float
    rows: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    threads: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # us/request
    utilisation: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    samples: int = 0


def breakdown(
    profiles: list[tuple[int, dict[int, float], dict[int, float], Path]],
    requests: int,
    wall: float,
    names: dict[int, str] | None = None,
) -> Breakdown:
    """``profiles``: per worker (pid, thread CPU at start, at end, py-spy file); ``names``: thread
    names by native id (from the probe), for threads py-spy never caught holding the GIL."""
    result = Breakdown(requests, wall)
    for _pid, before, after, path in profiles:
        sampled = read_py_spy(path)
        per_kind_wall: defaultdict[str, float] = defaultdict(float)
        for tid, end in after.items():
            cpu = end - before.get(tid, 0.0)
            info = sampled.get(tid)
            name = (names or {}).get(tid) or (info.name if info else "")
            kind = thread_kind(name) if name else "other threads"
            micro = cpu / max(requests, 1) * 1e6
            result.threads[kind] += micro
            per_kind_wall[kind] += cpu / wall
            busy = sum(info.busy.values()) if info else 0
            result.samples += busy + (info.idle if info else 0)
            if kind in WHOLE_THREADS or not busy:
                result.rows[(kind, WHOLE_THREADS.get(kind, "unsampled"))] += micro
                continue
            assert info is not None
            for category, count in info.busy.items():
                result.rows[(kind, category)] += micro * count / busy
        for kind, share in per_kind_wall.items():
            result.utilisation[kind] = max(result.utilisation[kind], share)
    return result


# -- in-process probe (wall-clock spans per request) ----------------------------------------------------

PROBE_ENV = "SIGNER_BENCH_PROBE"
EXPERIMENTS_ENV = "SIGNER_BENCH_EXPERIMENTS"
TIMERS_ENV = "SIGNER_BENCH_TIMERS"  # "0": experiments only, no timers (they cost ~1-2 us per step)

# What-if changes the probe can apply inside the server processes, to measure a proposal before anyone
# changes signer/ (each mirrors one proposal in bench/README.md).
EXPERIMENTS = {
    "no_access_log": "no access-log line per request (the audit log already records every decision)",
    "gc_freeze": "gc.collect() + gc.freeze() once the app is warm (startup objects never scanned again)",
    "uvloop": "uvloop's event loop instead of asyncio's (the service picks it itself when installed)",
    "asyncio_loop": "asyncio's own event loop even when uvloop is installed (signer.app.new_event_loop)",
    "gc_default_thresholds": "the interpreter's default GC thresholds, not signer.app.GC_THRESHOLDS",
    "cache_keys": "memoise public-key validation and EIP-55 checksums (the same key signs every time)",
    "switch_interval": "sys.setswitchinterval(0.0005): a thread waits at most ~0.5 ms (not 5) for the GIL",
}

# (label, module, attribute path, kind) in pipeline order; each is wrapped with a timer. Module
# globals are patched where the caller looks them up at call time, class attributes for methods.
PROBE_POINTS: list[tuple[str, str, str, str]] = [
    ("request: whole (request_context middleware)", "signer.app", "request_context", "async"),
    ("auth: authenticate (cached)", "signer.services.auth", "AuthService.authenticate", "async"),
    ("auth: token check (_check, HMAC)", "signer.services.auth", "AuthService._check", "sync"),
    ("body: read + strict JSON + pydantic", "signer.http.routes.signing", "parse_body", "async"),
    ("body: strict JSON (loads_strict)", "signer.http.body", "loads_strict", "sync"),
    ("body: pydantic model (validate)", "signer.http.body", "validate", "sync"),
    (
        "facts + policy before the HSM (precheck)",
        "signer.services.pipeline",
        "DecisionPipeline.precheck",
        "async",
    ),
    ("policy: evaluate", "signer.services.pipeline", "evaluate", "sync"),
    ("eth: parse_transaction + digest", "signer.services.payloads", "parse_transaction", "sync"),
    ("eth: audit summary of the tx", "signer.services.payloads", "_tx_summary", "sync"),
    ("HSM: await hsm.sign (queue + C_Sign + hand-off)", "signer.hsm.worker", "Hsm.sign", "async"),
    ("HSM: C_Sign on the PKCS#11 thread", "signer.hsm.token", "TokenSession.sign", "sync"),
    ("recovery: low-s, recovery id, assemble", "signer.services.payloads", "_finish_transaction", "sync"),
    ("commit: await store.submit (wait + batch)", "signer.store.commit", "Store.submit", "async"),
    ("commit: one batch BEGIN..COMMIT", "signer.store.commit", "Store._run_batch", "batch"),
    # SQLite: BEGIN IMMEDIATE waits here for the write lock (another process's batch holds it).
    (
        "commit: BEGIN (SQLite: write-lock wait)",
        "sqlalchemy.ext.asyncio.engine",
        "AsyncTransaction.start",
        "async",
    ),
    ("commit: COMMIT (WAL fsync)", "sqlalchemy.ext.asyncio.engine", "AsyncConnection.commit", "async"),
    ("audit: append_audit (canonical JSON + hash)", "signer.store.tx", "WriteTx.append_audit", "sync"),
    ("JSON: response", "signer.http.routes.signing", "json_response", "sync"),
    ("access log: one line (record + format + write)", "signer.app", "access", "sync"),
]


def probe_site_dir(parent: Path) -> Path:
    """A directory with a ``sitecustomize.py`` that installs the probe in every Python process started
    with it on PYTHONPATH and ``SIGNER_BENCH_PROBE`` naming an output directory. Nothing in signer/
    knows about it; without the variable it does nothing."""
    site = parent / "probe-site"
    site.mkdir(parents=True, exist_ok=True)
    source = str(BENCH / "common.py")
    (site / "sitecustomize.py").write_text(
        "import os\n"
        f"if os.environ.get({PROBE_ENV!r}):\n"
        "    import importlib.util\n"
        f"    spec = importlib.util.spec_from_file_location('signer_bench_common', {source!r})\n"
        "    import sys\n"
        "    module = sys.modules['signer_bench_common'] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        f"    module.install_probe(os.environ[{PROBE_ENV!r}])\n",
        encoding="utf-8",
    )
    return site


def install_probe(out_dir: str) -> None:
    """Wrap the pipeline's steps with timers; SIGUSR1 clears, SIGUSR2 writes probe-<pid>.json.

    Every step gets its wall-clock time; synchronous steps also get the CPU time of the thread that
    ran them (``time.thread_time``), which other people's load does not inflate. Garbage collections
    are timed through ``gc.callbacks``.
    """
    import gc
    import importlib
    import json
    import signal
    import threading

    spans: dict[str, list[float]] = {label: [] for label, *_ in PROBE_POINTS}
    cpu: dict[str, list[float]] = {label: [] for label, *_ in PROBE_POINTS}
    batch_sizes: list[int] = []
    collections: dict[str, list[float]] = {"0": [], "1": [], "2": []}
    missing: list[str] = []
    perf, thread_time = time.perf_counter, time.thread_time

    def timed_async(original: Any, label: str) -> Any:
        sink = spans[label]

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = perf()
            try:
                return await original(*args, **kwargs)
            finally:
                sink.append(perf() - start)

        return wrapper

    def timed_batch(original: Any, label: str) -> Any:
        sink = spans[label]

        @functools.wraps(original)
        async def wrapper(self: Any, batch: Any) -> Any:
            start = perf()
            try:
                return await original(self, batch)
            finally:
                sink.append(perf() - start)
                batch_sizes.append(len(batch))

        return wrapper

    def timed_sync(original: Any, label: str) -> Any:
        sink, cpu_sink = spans[label], cpu[label]

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start, start_cpu = perf(), thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                cpu_sink.append(thread_time() - start_cpu)
                sink.append(perf() - start)

        return wrapper

    makers = {"async": timed_async, "sync": timed_sync, "batch": timed_batch}
    timed = os.environ.get(TIMERS_ENV, "1") != "0"
    for label, module_name, path, kind in PROBE_POINTS if timed else []:
        try:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            setattr(owner, name, makers[kind](getattr(owner, name), label))
        except (ImportError, AttributeError):
            # The code moved on since these points were written: measure the rest.
            missing.append(label)

    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = perf()
        else:
            collections[str(info.get("generation", 0))].append(perf() - gc_started[0])

    if timed:
        gc.callbacks.append(on_gc)
    experiments = {e for e in os.environ.get(EXPERIMENTS_ENV, "").split(",") if e}
    _apply_experiments(experiments)

    def reset(_signum: int, _frame: Any) -> None:
        for values in (*spans.values(), *cpu.values(), *collections.values()):
            values.clear()
        batch_sizes.clear()
        if "gc_freeze" in experiments:
            # The app is warm when the benchmark resets the probe: everything alive now is start-up state.
            gc.collect()
            gc.freeze()

    def dump(_signum: int, _frame: Any) -> None:
        data = {
            "spans": {k: list(v) for k, v in spans.items()},
            "cpu": {k: list(v) for k, v in cpu.items() if v},
            "batch_sizes": list(batch_sizes),
            "gc": {k: list(v) for k, v in collections.items()},
            "gc_thresholds": list(gc.get_threshold()),
            "gc_frozen": gc.get_freeze_count(),
            "missing": missing,
            "threads": {str(t.native_id): t.name for t in threading.enumerate()},
        }
        target = Path(out_dir) / f"probe-{os.getpid()}.json"
        partial = target.with_suffix(".part")
        partial.write_text(json.dumps(data), encoding="utf-8")
        partial.rename(target)

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, dump)
    # Proof for the benchmark that the signals are handled here: unhandled, SIGUSR1 would kill us.
    (Path(out_dir) / f"probe-ready-{os.getpid()}").touch()


def _apply_experiments(experiments: set[str]) -> None:
    unknown = experiments - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"unknown experiments: {sorted(unknown)}")
    if "switch_interval" in experiments:
        sys.setswitchinterval(0.0005)
    if "no_access_log" in experiments:
        import logging

        logging.getLogger("signer.access").setLevel(logging.WARNING)
    if "asyncio_loop" in experiments or "gc_default_thresholds" in experiments:
        import signer.app

        if "asyncio_loop" in experiments:
            setattr(signer.app, "new_event_loop", asyncio.new_event_loop)  # noqa: B010 - what-if patch
        if "gc_default_thresholds" in experiments:
            setattr(signer.app, "GC_THRESHOLDS", (700, 10, 10))  # noqa: B010 - what-if patch
    if "uvloop" in experiments:
        import uvloop

        # run_app creates its loop through the policy.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "cache_keys" in experiments:
        import signer.eth.primitives as primitives
        import signer.eth.signatures as signatures

        checksum = functools.lru_cache(maxsize=4096)(primitives.to_checksum_address)
        validate = functools.lru_cache(maxsize=4096)(primitives.validate_public_key)
        for module in (primitives, signatures):
            setattr(module, "to_checksum_address", checksum)  # noqa: B010 - patching a module global
            setattr(module, "validate_public_key", validate)  # noqa: B010


def read_probes(directory: Path, pids: list[int], deadline: float = 20.0) -> dict[str, Any] | None:
    """Merge the workers' probe dumps (waiting for them to appear, with a deadline)."""
    import json

    files = [directory / f"probe-{pid}.json" for pid in pids]
    limit = time.monotonic() + deadline
    while not all(f.exists() for f in files):
        if time.monotonic() > limit:
            return None
        time.sleep(0.05)  # polling for files the workers write on a signal, with a hard deadline
    merged: dict[str, Any] = {
        "spans": {},
        "cpu": {},
        "gc": {},
        "batch_sizes": [],
        "threads": {},
        "missing": [],
    }
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        for part in ("spans", "cpu", "gc"):
            for label, values in data.get(part, {}).items():
                merged[part].setdefault(label, []).extend(values)
        merged["batch_sizes"].extend(data["batch_sizes"])
        merged["threads"].update(data["threads"])
        merged["missing"] = sorted(set(merged["missing"]) | set(data.get("missing", [])))
        merged["gc_thresholds"] = data.get("gc_thresholds")
        merged["gc_frozen"] = data.get("gc_frozen")
    return merged


def probe_report(data: dict[str, Any], requests: int) -> tuple[list[str], dict[str, Any]]:
    lines = [
        f"  {'step (all workers)':<46} {'calls/req':>9} {'wall ms':>8} {'p50':>7} {'p99':>8} {'CPU us':>7}"
    ]
    summary: dict[str, Any] = {}
    per_request = max(requests, 1)
    for label, *_ in PROBE_POINTS:
        values = sorted(data["spans"].get(label, []))
        if not values:
            continue
        mean = statistics.fmean(values) * 1000
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        cpu_values = data.get("cpu", {}).get(label)
        cpu_us = statistics.fmean(cpu_values) * 1e6 if cpu_values else None
        calls = len(values) / per_request
        summary[label] = {
            "calls_per_request": round(calls, 3),
            "wall_mean_ms": round(mean, 3),
            "wall_p50_ms": round(p50, 3),
            "wall_p99_ms": round(p99, 3),
            "cpu_us": None if cpu_us is None else round(cpu_us, 1),
        }
        cpu_text = f"{cpu_us:7.1f}" if cpu_us is not None else f"{'-':>7}"
        lines.append(f"  {label:<46} {calls:9.3f} {mean:8.3f} {p50:7.3f} {p99:8.3f} {cpu_text}")
    sizes = sorted(data["batch_sizes"])
    if sizes:
        floats = [float(s) for s in sizes]
        summary["batches"] = {
            "count": len(sizes),
            "mean_size": round(statistics.fmean(sizes), 2),
            "p50_size": percentile(floats, 0.5),
            "max_size": sizes[-1],
        }
        lines.append(
            f"  group commit: {len(sizes)} batches, {statistics.fmean(sizes):.2f} units per batch "
            f"(p50 {percentile(floats, 0.5):.0f}, max {sizes[-1]}), "
            f"{len(sizes) / per_request:.3f} COMMITs per request"
        )
    gc_data = data.get("gc", {})
    if gc_data:
        total = sum(sum(v) for v in gc_data.values())
        counts = {k: len(v) for k, v in sorted(gc_data.items())}
        summary["gc"] = {
            "collections": counts,
            "us_per_request": round(total / per_request * 1e6, 1),
            "max_pause_ms": round(max((max(v) for v in gc_data.values() if v), default=0.0) * 1000, 2),
            "thresholds": data.get("gc_thresholds"),
            "frozen": data.get("gc_frozen"),
        }
        lines.append(
            f"  garbage collector: {total / per_request * 1e6:.0f} us per request; collections by "
            f"generation {counts}, longest pause {summary['gc']['max_pause_ms']} ms, "
            f"thresholds {data.get('gc_thresholds')}"
        )
    if data.get("missing"):
        lines.append("  not found in this tree (skipped): " + ", ".join(data["missing"]))
    return lines, summary


# -- component costs in isolation -----------------------------------------------------------------------


def cpu_per_call(fn: Any, minimum: float = 0.3) -> float:
    """Process CPU microseconds per call of ``fn()`` (all threads), repeated for ``minimum`` seconds."""
    fn()
    calls, start = 0, time.process_time()
    batch = 1
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        spent = time.process_time() - start
        if spent >= minimum:
            return spent / calls * 1e6
        batch = min(batch * 2, 4096)


def pipeline_costs() -> list[tuple[str, float]]:
    """CPU per call of each in-process step of a signing request, outside any server (one process,
    one thread, warm caches): what each step costs when nothing else competes."""
    import hashlib
    import json
    import logging
    from datetime import UTC, datetime

    import coincurve

    from policy import PolicySet, TransactionView, evaluate
    from signer.audit import canonical_json, chain_hash
    from signer.eth import parse_transaction, recoverable_signature
    from signer.eth.primitives import address_from_public_key
    from signer.http.body import loads_strict, validate
    from signer.http.models import SignTransactionBody
    from signer.identity import Role, TokenKind, bearer_from_header, mint_token, token_matches
    from signer.logs import JsonFormatter, access
    from signer.services import payloads as signing
    from signer.services.authorization import Subject, optimistic_facts, policy_request, to_grant
    from signer.services.context import Caller, RequestContext, iso
    from signer.services.resources import key_ref
    from signer.store.records import GrantRecord, KeyRecord

    body = (
        b'{"transaction":{"type":2,"chainId":11155111,"nonce":7,"gas":21000,'
        b'"to":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","value":1000000000000007,'
        b'"maxFeePerGas":30000000000,"maxPriorityFeePerGas":1000000000}}'
    )
    fields = json.loads(body)["transaction"]
    private = coincurve.PrivateKey(hashlib.sha256(b"bench component key").digest())
    public = private.public_key.format(compressed=False)
    now = datetime.now(UTC)
    key = KeyRecord(
        id="key_bench",
        label="bench",
        curve="secp256k1",
        public_key=public.hex(),
        address=address_from_public_key(public),
        scope="default",
        tags=[],
        state="active",
        hsm_id="00" * 16,
        attributes={},
        created_by=None,
        created_at=now,
        updated_at=now,
    )
    grants = [
        GrantRecord("grt_bench", "prn_bench", "key", key.id, ["sign_transaction"], None, None, now, None)
    ]
    ctx = RequestContext("req", Caller("prn_bench", "relayer", Role.SERVICE, "tok"), 1)
    subject = Subject("prn_bench", frozenset(), tuple(grants), PolicySet(tuple(to_grant(g) for g in grants)))
    no_usage = optimistic_facts(lambda key, since: 0)
    tx = parse_transaction(fields)
    compact = private.sign_recoverable(tx.digest, hasher=None)
    r, s = int.from_bytes(compact[:32], "big"), int.from_bytes(compact[32:64], "big")
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    # SoftHSM returns a high s half of the time; make this one high so the normalisation runs too.
    raw_rs = r.to_bytes(32, "big") + max(s, n - s).to_bytes(32, "big")
    signature = recoverable_signature(tx.digest, raw_rs, public)
    response = signing._finish_transaction(tx, key, raw_rs)
    event = {
        "kind": "sign.transaction",
        "operation": "sign_transaction",
        "request_id": "0123456789abcdef",
        "at": iso(now),
        "actor": ctx.actor(),
        "key_id": key.id,
        "request": signing._tx_summary(tx, tx.as_json()),
        "reasons": [{"source": "grants", "code": "granted", "message": "grant grt_bench allows it"}],
        "result": {"signer": key.address, "transaction_hash": response["transaction_hash"]},
        "outcome": "allowed",
    }
    token_key = b"k" * 32
    minted = mint_token(token_key, TokenKind.ACCESS)
    header = f"Bearer {minted.value}"
    formatter = JsonFormatter()
    record = logging.LogRecord("signer.access", logging.INFO, __file__, 1, "request", None, None)
    for name, value in {
        "request_id": "0123456789abcdef",
        "method": "POST",
        "route": "/v1/keys/{key_id}/sign/transaction",
        "status": 200,
        "duration_ms": 1.23,
    }.items():
        setattr(record, name, value)
    sink = open(os.devnull, "w", encoding="utf-8")
    # The access logger as the server configures it (signer.logs.configure_logging), writing nowhere.
    access_logger = logging.getLogger("signer.bench-access")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(formatter)
    access_logger.handlers[:] = [handler]
    access_logger.propagate = False
    access_logger.setLevel(logging.INFO)
    line = {
        "request_id": "0123456789abcdef",
        "principal": "prn_bench",
        "method": "POST",
        "route": "/v1/keys/{key_id}/sign/transaction",
        "status": 200,
        "duration_ms": 1.23,
    }
    try:
        steps = [
            ("body: strict JSON + pydantic model", lambda: validate(SignTransactionBody, loads_strict(body))),
            (
                "auth: bearer parse + HMAC compare",
                lambda: token_matches(token_key, bearer_from_header(header), minted.digest),
            ),
            (
                "policy: request + evaluate (grants only)",
                lambda: evaluate(
                    policy_request(
                        subject,
                        key_ref(key),
                        "sign_transaction",
                        {"transaction": TransactionView.from_decoded(tx.fields)},
                    ),
                    subject.policy_set,
                    no_usage,
                    now=now,
                ),
            ),
            (
                "eth: parse_transaction (fields, RLP, keccak)",
                lambda: parse_transaction(signing._rpc_fields(fields, key)),
            ),
            ("eth: _tx_summary (audit view)", lambda: signing._tx_summary(tx, tx.as_json())),
            ("recovery: recoverable_signature", lambda: recoverable_signature(tx.digest, raw_rs, public)),
            ("recovery: tx.assemble (re-encode, re-hash)", lambda: tx.assemble(signature)),
            (
                "recovery + assemble: _finish_transaction",
                lambda: signing._finish_transaction(tx, key, raw_rs),
            ),
            ("audit: canonical_json + chain_hash", lambda: chain_hash("0" * 64, canonical_json(event))),
            ("JSON: response json.dumps", lambda: json.dumps(response)),
            ("access log: JsonFormatter + write", lambda: sink.write(formatter.format(record) + "\n")),
            (
                "access log: signer.logs.access (record + handler)",
                lambda: access(access_logger, "request", time.time(), **line),
            ),
        ]
        rows: list[tuple[str, float]] = []
        for name, fn in steps:
            try:
                rows.append((name, cpu_per_call(fn)))
            except (AttributeError, ImportError, TypeError):
                # The service's code moved on since this step was written: measure the others.
                rows.append((f"{name} (n/a: moved)", math.nan))
        return rows
    finally:
        sink.close()


async def _commit_costs(url: str, batch: int, rounds: int) -> float:
    """CPU per unit of group commit (all threads of this process) with ``batch`` concurrent units."""
    from datetime import UTC, datetime

    from signer.store import open_store

    store = await open_store(url)
    try:
        event = {
            "kind": "sign.transaction",
            "request_id": "0123456789abcdef",
            "outcome": "allowed",
            "pad": "x" * 600,
        }

        async def unit(writer: Any) -> None:
            writer.append_audit({**event, "at": datetime.now(UTC)})

        await store.submit(unit)
        start = time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(store.submit(unit) for _ in range(batch)))
        return (time.process_time() - start) / (rounds * batch) * 1e6
    finally:
        await store.close()


def commit_costs(url: str) -> list[tuple[str, float]]:
    return [
        (
            f"group commit: CPU per unit, batches of {batch}",
            asyncio.run(_commit_costs(url, batch, max(20, 600 // batch))),
        )
        for batch in (1, 16)
    ]


def hsm_costs(module: str, conf: str, pin: Any, hsm_id: str, count: int = 1500) -> list[tuple[str, float]]:
    """In a fresh process: CPU per signature of the bare python-pkcs11 call and of ``Hsm.sign`` with 32
    concurrent callers (the worker thread, the queue, the futures and the hand-off to the loop)."""
    os.environ["SOFTHSM2_CONF"] = conf
    import hashlib

    from signer.hsm import Curve, Hsm

    digest = hashlib.sha256(b"bench").digest()

    async def run() -> list[tuple[str, float]]:
        hsm = Hsm(module, "bench", pin, deadline_seconds=60.0, queue_size=4096)
        await hsm.start()
        try:
            await hsm.sign(hsm_id, Curve.SECP256K1, digest)

            def bare() -> None:
                hsm._token.sign(hsm_id, Curve.SECP256K1, digest)

            # The token session belongs to the worker thread: measure the bare call there.
            bare_us = await hsm._run_on_worker(lambda _ctx: cpu_per_call(bare, 1.0), deadline=60.0)
            start = time.process_time()
            for _ in range(count // 32):
                await asyncio.gather(*(hsm.sign(hsm_id, Curve.SECP256K1, digest) for _ in range(32)))
            worker_us = (time.process_time() - start) / (count // 32 * 32) * 1e6
            return [
                ("HSM: C_Sign via python-pkcs11 (TokenSession.sign)", bare_us),
                ("HSM: await hsm.sign, 32 callers (incl. C_Sign)", worker_us),
            ]
        finally:
            await hsm.close()

    return asyncio.run(run())


def http_floor_server(port: int) -> None:
    """A bare aiohttp app answering the same POST with a canned body: the HTTP floor per request."""
    from aiohttp import web

    canned = b'{"raw_transaction":"0x' + b"ab" * 110 + b'","transaction_hash":"0x' + b"cd" * 32 + b'"}'

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=canned, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/keys/{key_id}/sign/transaction", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serving_floor_server(port: int, workdir: str, tree: str | None, without: list[str]) -> None:
    """The service's serving layer around a stub signing handler, in one process: the middlewares that
    ``signer.app.create_app`` installs, the access log as ``signer serve`` configures it (to a file),
    the metrics in multi-process mode (as with several workers), the event loop and GC settings of
    ``signer.app.run``, the route's unknown-query check, the strict body parser with the request
    model, and the response JSON of ``signer.http.routes``; no HSM, no database, no services.

    ``tree``: a checkout whose ``signer/`` is served instead of this one (to compare commits).
    ``without``: "uvloop" and/or "gc_thresholds" to leave out what the service does by default.
    """
    if tree:
        sys.path.insert(0, tree)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(workdir) / "metrics")
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    sys.stderr = open(Path(workdir) / "floor.log", "a", encoding="utf-8")

    import gc

    from aiohttp import web

    import signer.app as service
    from signer.config import Settings
    from signer.http.body import parse_body
    from signer.http.contract import _refuse_unknown_query
    from signer.http.models import SignTransactionBody
    from signer.http.routes.common import json_response as _json
    from signer.http.state import SETTINGS
    from signer.logs import configure_logging

    configure_logging()
    settings = Settings(data_dir=Path(workdir))
    template = service.create_app(settings)  # only for its middlewares: never started
    app = web.Application(middlewares=list(template.middlewares), client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.on_response_prepare.append(service._hide_server_header)
    canned = {
        "key_id": "key_0123456789abcdef0123",
        "signer": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "type": 2,
        "chain_id": 11155111,
        "raw_transaction": "0x02" + "ab" * 114,
        "transaction_hash": "0x" + "cd" * 32,
        "r": "0x" + "ef" * 32,
        "s": "0x" + "12" * 32,
        "v": 1,
        "y_parity": 1,
    }

    async def sign(request: web.Request) -> web.Response:
        request["principal"] = "prn_floor"
        await parse_body(request, SignTransactionBody, settings.max_body_bytes)
        return _json(canned)

    app.router.add_post("/v1/keys/{key_id}/sign/transaction", _refuse_unknown_query(sign, ()))
    new_loop = getattr(service, "new_event_loop", None)
    thresholds = getattr(service, "GC_THRESHOLDS", None)
    if thresholds is not None and "gc_thresholds" not in without:
        gc.set_threshold(*thresholds)
    gc.collect()
    gc.freeze()  # as signer.app does once started
    loop = new_loop(prefer_uvloop="uvloop" not in without) if new_loop is not None else None
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)
