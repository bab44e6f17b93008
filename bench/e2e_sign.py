"""End-to-end signing throughput of the real service, next to the raw HSM rate, in one run.

    .venv/bin/python bench/e2e_sign.py [--workers N] [--clients C] [--seconds S]
                                       [--database sqlite|postgres] [--profile P]

1. raw: N spawned processes each sign with python-pkcs11 in a tight loop (``bench/hsm_raw.py``), on a
   throw-away token; one round before and one after the end-to-end run, so drifting background load
   hits both sides of the ratio;
2. end-to-end: ``signer init`` in a fresh data directory, ``signer serve --workers N``, a service
   principal, a secp256k1 key and a grant made through the API; then C concurrent aiohttp clients
   (keep-alive, a new nonce and value per request) POST EIP-1559 transactions for a warm-up and then S
   measured seconds. Reports requests/s, p50/p90/p99 latency, errors (anything but 200), and checks a
   random sample of responses with eth-account (recover == the key's address, the decoded fields are
   the ones sent, keccak(raw) == transaction_hash). Afterwards the whole audit log is read back and
   its hash chain verified, and it must hold exactly one "allowed" event per 200 response;
3. the ratio end-to-end / raw with the same number of processes (target >= 0.5) and whether the audit
   commit is durable (the setting read from the store's code and, for PostgreSQL, from the server).

With ``--profile P`` the load keeps running for P more seconds after the measured window while py-spy
samples every worker (not pausing them); the figures above come from the clean window only. The
profile is folded into CPU time per request by component; the collapsed stacks are kept in
bench/results/ for flame graphs.

The load generator runs on the same cores as the server: its own CPU (getrusage), the server's and
everybody else's (from /proc) are printed for each window so the figures can be judged. Writes nothing
in the repository except bench/results/ (gitignored), and only with --profile or --results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import random
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    EXPERIMENTS,
    EXPERIMENTS_ENV,
    PROBE_ENV,
    REPO,
    TIMERS_ENV,
    CpuShare,
    CpuSnapshot,
    background_load,
    breakdown,
    commit_costs,
    cpu_share,
    cpu_snapshot,
    durability,
    fsync_latency_ms,
    hsm_costs,
    http_floor_server,
    percentile,
    pipeline_costs,
    probe_report,
    probe_site_dir,
    process_cpu_seconds,
    read_probes,
    server_worker_pids,
    serving_floor_server,
    start_py_spy,
    thread_cpu,
    throwaway_postgres,
    wait_for_quiet,
)

RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
CHAIN_ID = 11155111
EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def realistic_policy() -> dict[str, Any]:
    """Ten rules a relayer's operator would write, two of them stateful (a spend and a rate window),
    all of which the benchmark's transactions pass, so every request evaluates all of them."""
    return {
        "id": "bench-realistic",
        "rules": [
            {"id": "chains", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1, 10, CHAIN_ID]},
            {"id": "recipients", "kind": "recipient_allowlist", "effect": "deny", "addresses": [RECIPIENT]},
            {
                "id": "sanctioned",
                "kind": "recipient_denylist",
                "effect": "deny",
                "addresses": ["0x" + f"{i:040x}" for i in range(1, 51)],
            },
            {"id": "per-tx-cap", "kind": "value_cap", "effect": "deny", "max_value": str(10**21)},
            {"id": "gas", "kind": "gas_cost_cap", "effect": "deny", "max_value": str(10**17)},
            {
                "id": "selectors",
                "kind": "selector_allowlist",
                "effect": "deny",
                "selectors": ["0xa9059cbb", "0x095ea7b3"],
                "allow_empty_calldata": True,
            },
            {
                "id": "hours",
                "kind": "time_window",
                "effect": "deny",
                "windows": [{"days": EVERY_DAY, "start": "00:00", "end": "24:00"}],
            },
            {
                "id": "daily-spend",
                "kind": "spend_limit",
                "effect": "deny",
                "max_value": str(10**30),
                "window_seconds": 86400,
                "per": "key",
            },
            {
                "id": "burst",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 10**9,
                "window_seconds": 60,
                "per": "principal",
            },
            {
                "id": "big-needs-approval",
                "kind": "value_cap",
                "effect": "require_approval",
                "max_value": str(10**24),
                "approval": {"quorum": 2, "group": "treasury", "expires_in_seconds": 3600},
            },
        ],
    }


DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
RESULTS = REPO / "bench" / "results"


# -- 1. raw HSM -----------------------------------------------------------------------------------------


@dataclass
class RawRound:
    rate: float
    cpu_used: float  # cores the signing processes used on average
    other: float  # cores everybody else used meanwhile


class RawHsm:
    """A throw-away token with one secp256k1 key, measured with bench/hsm_raw.py's signing loop.

    The loop (``hsm_raw._raw_child``) and the key set-up are hsm_raw's; only the orchestration of a
    round is done here, because ``hsm_raw.measure_raw`` waits for ever when one of its processes dies
    before the start barrier (SoftHSM occasionally fails ``C_GetTokenInfo`` in one of two processes
    starting at once: NoSuchToken / GeneralError). Here the barrier has a timeout, a failed child ends
    the round at once, and the round is retried.
    """

    def __init__(self, processes: int, seconds: float) -> None:
        self.processes = processes
        self.seconds = seconds
        self.rounds: list[RawRound] = []
        self.failures = 0

    def __enter__(self) -> RawHsm:
        import hsm_raw

        from signer.hsm.provision import provision_softhsm

        self._hsm_raw = hsm_raw
        self._ctx = multiprocessing.get_context("spawn")
        self._tmp = tempfile.TemporaryDirectory(prefix="hsm-bench-")
        (self._token,) = provision_softhsm(Path(self._tmp.name), [hsm_raw.LABEL])
        # Key generation in a spawned child too: this process never loads PKCS#11.
        with self._ctx.Pool(1) as pool:
            self._hsm_id, _ = pool.apply(
                hsm_raw._setup_key,
                (self._token.module_path, str(self._token.conf_path), self._token.user_pin),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def _children_cpu(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def _round_once(self, seconds: float) -> tuple[float, float]:
        """(signatures/s over all processes, the processes' CPU seconds)."""
        token = self._token
        cpu_before = self._children_cpu()
        barrier = self._ctx.Barrier(self.processes, timeout=60)
        out = self._ctx.Queue()
        children = [
            self._ctx.Process(
                target=self._hsm_raw._raw_child,
                args=(
                    token.module_path,
                    str(token.conf_path),
                    token.user_pin,
                    self._hsm_id,
                    seconds,
                    barrier,
                    out,
                ),
            )
            for _ in range(self.processes)
        ]
        for child in children:
            child.start()
        results: list[tuple[int, float]] = []
        deadline = time.monotonic() + seconds + 120
        try:
            while len(results) < len(children):
                try:
                    results.append(out.get(timeout=0.5))
                except queue.Empty:
                    if any(c.exitcode not in (None, 0) for c in children) or time.monotonic() > deadline:
                        raise RuntimeError("a raw HSM signing process failed") from None
        finally:
            for child in children:
                if child.is_alive() and len(results) < len(children):
                    child.terminate()
                child.join(timeout=30)
        return sum(count / elapsed for count, elapsed in results), self._children_cpu() - cpu_before

    def _round(self, seconds: float) -> tuple[float, float]:
        for attempt in range(3):
            try:
                return self._round_once(seconds)
            except RuntimeError:
                self.failures += 1
                print("raw HSM round failed (a signing process died); retrying", flush=True)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def startup_cpu(self) -> float:
        """CPU the processes of one round spend outside the timed loop (spawn, imports, login)."""
        return self._round(0.0)[1]

    def measure(self, startup_cpu: float) -> RawRound:
        start = cpu_snapshot([])
        rate, children = self._round(self.seconds)
        end = cpu_snapshot([])
        share = cpu_share(start, end)
        # Cores the signing loops used while timed: the children's CPU minus their start-up.
        used = max(0.0, children - startup_cpu) / self.seconds
        others = max(0.0, share.other - children / share.wall)
        result = RawRound(rate, used, others)
        self.rounds.append(result)
        return result


# -- 2. end to end --------------------------------------------------------------------------------------


@dataclass
class Window:
    name: str
    start: CpuSnapshot
    end: CpuSnapshot | None = None


@dataclass
class LoadResult:
    t1: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("i"))
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    ok_total: int = 0
    sample: list[tuple[int, int, bytes]] = field(default_factory=list)
    seen_ok: int = 0
    windows: dict[str, Window] = field(default_factory=dict)
    profiles: list[tuple[int, Path, Any]] = field(default_factory=list)
    threads_before: dict[int, dict[int, float]] = field(default_factory=dict)
    threads_after: dict[int, dict[int, float]] = field(default_factory=dict)
    probed: list[int] = field(default_factory=list)
    # --load wrk: per window, the status counts, the wall time and wrk's latency percentiles (ms),
    # instead of one entry per request; and the ids of requests wrk sent but dropped unanswered.
    counted: dict[str, tuple[Counter[int], float, dict[float, float]]] = field(default_factory=dict)
    unanswered: set[str] = field(default_factory=set)
    # Cores each worker used in the measured window (wrk load): with few clients the supervisor's
    # socket may hand every connection to one worker, and its CPU per request is then not the same.
    worker_cores: dict[int, float] = field(default_factory=dict)

    def in_window(self, name: str) -> tuple[list[float], Counter[int], float]:
        if name in self.counted:
            counts, seconds, _ = self.counted[name]
            return [], counts, seconds
        window = self.windows[name]
        assert window.end is not None
        lo, hi = window.start.at, window.end.at
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        for t1, latency, status in zip(self.t1, self.latency, self.status, strict=True):
            if lo <= t1 < hi:
                statuses[status] += 1
                if status == 200:
                    latencies.append(latency)
        latencies.sort()
        return latencies, statuses, hi - lo


def _body_parts() -> tuple[bytes, bytes, bytes]:
    fields = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": 0,
        "gas": 21000,
        "to": RECIPIENT,
        "value": 1,
        "maxFeePerGas": 30_000_000_000,
        "maxPriorityFeePerGas": 1_000_000_000,
    }
    text = json.dumps({"transaction": fields}, separators=(",", ":")).encode()
    # Cut the template around nonce and value so each request costs the client two int-to-bytes only.
    head, rest = text.split(b'"nonce":0', 1)
    middle, tail = rest.split(b'"value":1', 1)
    return head + b'"nonce":', middle + b'"value":', tail


async def drive(
    url: str,
    token: str,
    clients: int,
    warmup: float,
    seconds: float,
    profile_seconds: float,
    sample_size: int,
    server_pids: list[int],
    worker_pids: list[int],
    database: str | None,
    profile_dir: Path | None,
    rate: int,
    probe_dir: Path | None = None,
) -> LoadResult:
    import aiohttp

    result = LoadResult()
    head, middle, tail = _body_parts()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(1)
    nonce = 0
    begin = time.perf_counter()
    stop_at = begin + warmup + seconds + profile_seconds

    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            nonlocal nonce
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                n = nonce
                nonce += 1
                value = 10**15 + n
                body = head + str(n).encode() + middle + str(value).encode() + tail
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        payload = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, payload = -1, type(exc).__name__.encode()
                t1 = time.perf_counter()
                result.t1.append(t1)
                result.latency.append(t1 - t0)
                result.status.append(status)
                if status == 200:
                    result.ok_total += 1
                    # Reservoir sample over every 200 of the run, verified after the load stops.
                    result.seen_ok += 1
                    if len(result.sample) < sample_size:
                        result.sample.append((n, value, payload))
                    else:
                        slot = rng.randrange(result.seen_ok)
                        if slot < sample_size:
                            result.sample[slot] = (n, value, payload)
                else:
                    code = _error_code(status, payload)
                    result.errors[code] += 1
                    if len(result.error_examples) < 5:
                        result.error_examples.append(payload[:300].decode(errors="replace"))

        async def timer() -> None:
            # Measurement windows, not synchronisation: snapshots are taken when each window opens.
            await asyncio.sleep(warmup)
            if probe_dir is not None:
                for pid in worker_pids:
                    if (probe_dir / f"probe-ready-{pid}").exists():
                        os.kill(pid, signal.SIGUSR1)  # warm now: experiments such as gc_freeze apply
            result.windows["measure"] = Window("measure", cpu_snapshot(server_pids, database))
            await asyncio.sleep(begin + warmup + seconds - time.perf_counter())
            snap = cpu_snapshot(server_pids, database)
            result.windows["measure"].end = snap
            if profile_seconds > 0 and profile_dir is not None:
                for pid in worker_pids:
                    if (profile_dir / f"probe-ready-{pid}").exists():
                        os.kill(pid, signal.SIGUSR1)  # the probe starts counting afresh
                        result.probed.append(pid)
                    out = profile_dir / f"py-spy-{pid}.txt"
                    result.profiles.append((pid, out, start_py_spy(pid, profile_seconds, out, rate)))
                    result.threads_before[pid] = thread_cpu(pid)
                result.windows["profile"] = Window("profile", snap)
                await asyncio.sleep(stop_at - time.perf_counter())
                result.windows["profile"].end = cpu_snapshot(server_pids, database)
                for pid in worker_pids:
                    result.threads_after[pid] = thread_cpu(pid)
                for pid in result.probed:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGUSR2)  # the probe writes its figures

        await asyncio.gather(timer(), *(client() for _ in range(clients)))
    for _, _, process in result.profiles:
        process.wait(timeout=120)
    return result


@dataclass
class RateRun:
    """One fixed-rate window: what was asked, what came back, and what it cost."""

    target: float
    sent: int = 0
    latency: list[float] = field(default_factory=list)  # every answer, from its scheduled send time
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sample: list[tuple[int, int, bytes]] = field(default_factory=list)
    wall: float = 0.0
    share: CpuShare | None = None
    late: int = 0  # sends that left more than 1 ms after their scheduled time (generator behind)
    ok_all: int = 0  # 200s of the whole run, warm-up included (the audit check counts them all)

    def summary(self) -> dict[str, Any]:
        ok = self.statuses.get(200, 0)
        ordered = sorted(self.latency)
        share = self.share
        assert share is not None
        per_request = self.wall / max(ok, 1) * 1e6
        return {
            "target_per_s": round(self.target, 1),
            "achieved_per_s": round(ok / self.wall, 1) if self.wall else 0.0,
            "sent": self.sent,
            "ok": ok,
            "errors": sum(self.errors.values()),
            "p50_ms": round(percentile(ordered, 0.5) * 1000, 2) if ordered else None,
            "p90_ms": round(percentile(ordered, 0.9) * 1000, 2) if ordered else None,
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 2) if ordered else None,
            "server_cpu_us_per_request": round((share.server + share.database) * per_request, 1),
            "client_cpu_us_per_request": round(share.client * per_request, 1),
            "late_sends": self.late,
            "cpu_cores": share.as_dict(),
        }


async def drive_rate(
    url: str,
    token: str,
    rate: float,
    connections: int,
    warmup: float,
    seconds: float,
    first_nonce: int,
    server_pids: list[int],
    database: str | None,
    sample_size: int,
) -> RateRun:
    """Open-loop load at a constant ``rate`` (wrk2-style): request i is due at start + i / rate
    whatever happened to the earlier ones, over at most ``connections`` keep-alive connections. A
    request's latency runs from when it was due, not from when it left, so time spent queued behind
    a slow answer (for a free connection) counts: a closed-loop generator would instead send less
    and hide it. Only answers to requests due inside the measured window are counted; the CPU
    snapshots bracket that window (after ``warmup`` seconds at the same rate)."""
    import aiohttp

    run = RateRun(target=rate)
    head, middle, tail = _body_parts()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(2)
    seen_ok = 0
    interval = 1.0 / rate
    total = int((warmup + seconds) * rate)
    measured_from = int(warmup * rate)
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, due: float) -> None:
            nonlocal seen_ok
            n = first_nonce + index
            value = 10**15 + n
            body = head + str(n).encode() + middle + str(value).encode() + tail
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, payload = -1, type(exc).__name__.encode()
            run.ok_all += status == 200
            if index < measured_from:
                return
            run.latency.append(loop.time() - due)
            run.statuses[status] += 1
            if status == 200:
                seen_ok += 1
                if len(run.sample) < sample_size:
                    run.sample.append((n, value, payload))
                else:
                    slot = rng.randrange(seen_ok)
                    if slot < sample_size:
                        run.sample[slot] = (n, value, payload)
            else:
                run.errors[_error_code(status, payload)] += 1

        start = loop.time()
        snapshot = None
        for index in range(total):
            due = start + index * interval
            if index == measured_from:
                snapshot = cpu_snapshot(server_pids, database)
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the open-loop schedule, not synchronisation
            elif delay < -0.001 and index >= measured_from:
                run.late += 1
            task = loop.create_task(one(index, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            run.sent += index >= measured_from
        # The window closes when the last due request is answered (or fails: 30 s client timeout).
        await asyncio.gather(*pending)
        end = cpu_snapshot(server_pids, database)
    assert snapshot is not None
    run.wall = end.at - snapshot.at
    run.share = cpu_share(snapshot, end)
    return run


@dataclass
class WrkRateRun:
    """One fixed-rate window driven by paced wrk connections (``--rate-load wrk``): the rate is what
    the pauses gave (reported next to the target), latencies are wrk's, from each request's send."""

    target: float
    pace_ms: float
    warm: WrkRun
    done: WrkRun
    share: CpuShare
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def sample(self) -> list[tuple[int, int, bytes]]:
        return self.done.samples

    @property
    def ok_all(self) -> int:
        """200s of the warm-up and the window (the audit check counts them all)."""
        return self.warm.statuses.get(200, 0) + self.done.statuses.get(200, 0)

    @property
    def unanswered(self) -> set[str]:
        return self.warm.unanswered | self.done.unanswered

    def summary(self) -> dict[str, Any]:
        ok = self.done.statuses.get(200, 0)
        wall = self.share.wall
        per_request = wall / max(ok, 1) * 1e6
        p = self.done.percentiles_ms
        return {
            "target_per_s": round(self.target, 1),
            "achieved_per_s": round(ok / wall, 1) if wall else 0.0,
            "sent": self.done.sent,
            "ok": ok,
            "errors": sum(self.errors.values()),
            "p50_ms": p.get(0.5),
            "p90_ms": p.get(0.9),
            "p99_ms": p.get(0.99),
            "server_cpu_us_per_request": round((self.share.server + self.share.database) * per_request, 1),
            "client_cpu_us_per_request": round(self.done.cpu / max(ok, 1) * 1e6, 1),
            "late_sends": 0,
            "pace_ms": round(self.pace_ms, 2),
            "cpu_cores": self.share.as_dict(),
        }


def drive_rate_wrk(
    url: str,
    token: str,
    rate: float,
    connections: int,
    threads: int,
    warmup: float,
    seconds: float,
    first_nonce: int,
    server_pids: list[int],
    database: str | None,
    workdir: Path,
) -> WrkRateRun:
    """A fixed-rate window from wrk (about 25 us of CPU per request, against 600-900 us for the
    aiohttp generator, which shares the same two cores with the server): ``connections`` connections,
    each pausing a random time after every answer so that together they ask ``rate`` requests a
    second. The warm-up at a first guess of the pause measures how long an answer takes at this rate,
    and the measured window corrects the pause by it. A connection's next request waits for its
    previous answer, so a stall longer than one connection's pause (``connections / rate``: 40 ms at
    800/s over 32 connections) would delay sends instead of showing in latency; at rates where an
    answer takes a few ms that is rare, and the achieved rate shows it when it happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = paced_script(workdir)
    period_ms = connections / rate * 1000  # each connection's time from one request to the next
    guess = max(0.0, period_ms - 1.0)
    warm = run_wrk(
        url,
        token,
        connections,
        threads,
        warmup,
        first_nonce,
        10**9,
        workdir / "rate-warmup",
        script=script,
        pace_ms=guess,
    )
    got = warm.statuses.get(200, 0) / max(warm.wall, 1e-9)
    answer_ms = max(0.0, connections / max(got, 1e-9) * 1000 - guess) if got else 1.0
    pace = max(0.0, period_ms - answer_ms)
    start = cpu_snapshot(server_pids, database)
    done = run_wrk(
        url,
        token,
        connections,
        threads,
        seconds,
        first_nonce + WRK_NONCE_STRIDE // 2,
        5,
        workdir / "rate-measure",
        script=script,
        pace_ms=pace,
    )
    end = cpu_snapshot(server_pids, database)
    run = WrkRateRun(target=rate, pace_ms=pace, warm=warm, done=done, share=cpu_share(start, end))
    for status, count in done.statuses.items():
        if status != 200:
            run.errors[f"{status}"] += count
    for kind, count in done.socket_errors.items():
        run.errors[f"-1 {kind}"] += count
    return run


RATE_LOADS = {
    "aiohttp": "open loop, aiohttp in this process, latency from each request's due time",
    "wrk": "paced wrk connections, latency from each request's send",
}


def fixed_rates(args: argparse.Namespace, saturated: float) -> list[float]:
    """The rates of ``--rate`` and ``--rate-fraction`` (fractions of ``saturated``, the closed-loop
    window's rate), in the order given."""
    rates = [float(r) for r in args.rate.split(",")] if args.rate else []
    if args.rate_fraction:
        rates += [float(f) * saturated for f in args.rate_fraction.split(",")]
    return [r for r in rates if r > 0]


def _error_code(status: int, payload: bytes) -> str:
    try:
        code = json.loads(payload).get("code", "?")
    except (ValueError, AttributeError):
        code = payload[:40].decode(errors="replace")
    return f"{status} {code}"


WRK_SCRIPT = Path(__file__).with_name("e2e_sign.lua")
# Nonces of successive wrk runs (warm-up, measured, profile) start this far apart: never sent twice.
WRK_NONCE_STRIDE = 10**9


@dataclass
class WrkRun:
    statuses: Counter[int]
    socket_errors: Counter[str]
    percentiles_ms: dict[float, float]
    sent: int
    unanswered: set[str]
    samples: list[tuple[int, int, bytes]]
    error_examples: list[str]
    cpu: float  # wrk's own CPU seconds (user + system), from the kernel's accounting when it exits
    wall: float


def wrk_available() -> str | None:
    import shutil

    return shutil.which("wrk")


# A connection of a paced run waits a random time after each answer (exponential, mean ``pace`` ms)
# before its next request: many connections, each idle most of the time, add up to Poisson arrivals
# at a chosen rate. wrk calls delay() after each answer and before each next request.
_PACED_DELAY = """
function delay()
   return math.floor(-pace * math.log(1 - math.random()) + 0.5)
end
"""


def paced_script(directory: Path) -> Path:
    """bench/e2e_sign.lua with a delay() (wrk only looks for one at start-up, so it is a second file)."""
    path = directory / "e2e_sign_paced.lua"
    path.write_text(WRK_SCRIPT.read_text(encoding="utf-8") + _PACED_DELAY, encoding="utf-8")
    return path


def run_wrk(
    url: str,
    token: str,
    clients: int,
    threads: int,
    seconds: float,
    first: int,
    every: int,
    prefix: Path,
    *,
    script: Path = WRK_SCRIPT,
    pace_ms: float = 0.0,
) -> WrkRun:
    """One wrk process for ``seconds`` (whole seconds: wrk's unit), with bench/e2e_sign.lua (or the
    paced copy of it, ``script``, whose connections pause ``pace_ms`` on average between requests)."""
    head, middle, tail = _body_parts()
    argv = [
        "wrk",
        f"--threads={threads}",
        f"--connections={clients}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=30s",
        f"--script={script}",
        url,
        "--",
        token,
        str(first),
        str(threads),  # the nonce stride
        str(every),
        str(prefix),
        *(part.decode() for part in (head, middle, tail)),
        f"{pace_ms:.3f}",
    ]
    with open(prefix.with_suffix(".out"), "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        # wait4: the CPU of exactly this process, all its threads, once it has exited.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"wrk failed ({process.returncode}): {prefix.with_suffix('.out').read_text()[-500:]}"
        )
    statuses: Counter[int] = Counter()
    socket_errors: Counter[str] = Counter()
    percentiles: dict[float, float] = {}
    unanswered: set[str] = set()
    sent = 0
    for line in Path(f"{prefix}-summary.txt").read_text(encoding="utf-8").splitlines():
        kind, *values = line.split()
        if kind == "status":
            statuses[int(values[0])] += int(values[1])
        elif kind == "socket_error" and int(values[1]):
            socket_errors[values[0]] += int(values[1])
        elif kind == "percentile_us":
            percentiles[int(values[0]) / 100] = int(values[1]) / 1000
        elif kind == "sent":
            sent += int(values[0])
        elif kind == "unanswered":
            unanswered.add(values[0])
    samples: list[tuple[int, int, bytes]] = []
    examples: list[str] = []
    for thread in range(threads):
        path = Path(f"{prefix}-{thread}.txt")
        records: list[bytes] = path.read_bytes().splitlines() if path.exists() else []
        for record in records:
            rid, _, body = record.partition(b"\t")
            if rid.startswith(b"E"):
                examples.append(f"{rid[1:].decode()} {body[:300].decode(errors='replace')}")
            elif rid.startswith(b"n"):
                nonce = int(rid[1:])
                samples.append((nonce, 10**15 + nonce, body))
            else:
                samples.append((-1, -1, body))  # no request id echoed: fails verification
    return WrkRun(
        statuses,
        socket_errors,
        percentiles,
        sent,
        unanswered,
        samples,
        examples,
        usage.ru_utime + usage.ru_stime,
        wall,
    )


def drive_wrk(
    url: str,
    token: str,
    clients: int,
    threads: int,
    warmup: float,
    seconds: float,
    profile_seconds: float,
    sample_size: int,
    server_pids: list[int],
    worker_pids: list[int],
    database: str | None,
    profile_dir: Path | None,
    rate: int,
    probe_dir: Path | None,
    workdir: Path,
) -> LoadResult:
    """The same windows as ``drive`` with wrk as the load: one wrk run per window (warm-up, measured,
    profile), CPU snapshots around each, wrk's own CPU added to the client's."""
    result = LoadResult()
    workdir.mkdir(parents=True, exist_ok=True)
    every = 5  # every 5th 200 body is kept; the sample is drawn from those
    runs: list[WrkRun] = []

    def run(name: str, length: float) -> WrkRun:
        index = len(runs)
        done = run_wrk(url, token, clients, threads, length, index * WRK_NONCE_STRIDE, every, workdir / name)
        runs.append(done)
        return done

    def window(name: str, length: float) -> None:
        workers_before = {pid: process_cpu_seconds(pid) for pid in worker_pids}
        start = cpu_snapshot(server_pids, database)
        done = run(name, length)
        end = cpu_snapshot(server_pids, database)
        if name == "measure":
            result.worker_cores = {
                pid: round((process_cpu_seconds(pid) - before) / max(end.at - start.at, 1e-9), 2)
                for pid, before in workers_before.items()
            }
        end.client += done.cpu
        result.windows[name] = Window(name, start, end)
        result.counted[name] = (done.statuses, end.at - start.at, done.percentiles_ms)

    run("warmup", warmup)
    if probe_dir is not None:
        for pid in worker_pids:
            if (probe_dir / f"probe-ready-{pid}").exists():
                os.kill(pid, signal.SIGUSR1)  # warm now: experiments such as gc_freeze apply
    window("measure", seconds)
    if profile_seconds > 0 and profile_dir is not None:
        for pid in worker_pids:
            if (profile_dir / f"probe-ready-{pid}").exists():
                os.kill(pid, signal.SIGUSR1)  # the probe starts counting afresh
                result.probed.append(pid)
            out = profile_dir / f"py-spy-{pid}.txt"
            result.profiles.append((pid, out, start_py_spy(pid, profile_seconds, out, rate)))
            result.threads_before[pid] = thread_cpu(pid)
        window("profile", profile_seconds)
        for pid in worker_pids:
            result.threads_after[pid] = thread_cpu(pid)
        for pid in result.probed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)  # the probe writes its figures
        for _, _, process in result.profiles:
            process.wait(timeout=120)

    samples: list[tuple[int, int, bytes]] = []
    for done in runs:
        result.ok_total += done.statuses.get(200, 0)
        for status, count in done.statuses.items():
            if status != 200:
                result.errors[f"{status}"] += count
        for kind, count in done.socket_errors.items():
            result.errors[f"-1 {kind}"] += count
        result.error_examples += done.error_examples[: 5 - len(result.error_examples)]
        result.unanswered |= done.unanswered
        samples += done.samples
    result.seen_ok = len(samples)
    result.sample = random.Random(1).sample(samples, min(sample_size, len(samples)))
    return result


def verify_sample(sample: list[tuple[int, int, bytes]], address: str) -> tuple[int, list[str]]:
    """Independent checks with eth-account / eth-utils; returns (checked, failures)."""
    from eth_account import Account
    from eth_account.typed_transactions.typed_transaction import TypedTransaction
    from eth_utils.address import to_checksum_address
    from eth_utils.crypto import keccak
    from hexbytes import HexBytes

    failures: list[str] = []
    for nonce, value, payload in sample:
        body = json.loads(payload)
        raw = bytes.fromhex(body["raw_transaction"][2:])
        problems = []
        if Account.recover_transaction(raw) != address:
            problems.append("recovered address differs")
        if body.get("signer") != address:
            problems.append("response 'signer' differs")
        if "0x" + keccak(raw).hex() != body.get("transaction_hash"):
            problems.append("transaction_hash != keccak(raw)")
        decoded = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        expected = {"chainId": CHAIN_ID, "nonce": nonce, "value": value, "gas": 21000}
        for name, want in expected.items():
            if decoded.get(name) != want:
                problems.append(f"{name} {decoded.get(name)} != {want}")
        if to_checksum_address(decoded["to"]) != RECIPIENT:
            problems.append("recipient differs")
        if raw[0] != 2:
            problems.append("not an EIP-1559 envelope")
        if problems:
            failures.append(f"nonce {nonce}: " + ", ".join(problems))
    return len(sample), failures


async def audit_check(database_url: str, unanswered: set[str] | None = None) -> dict[str, Any]:
    """Read the whole audit log back through the store, verify the chain against the head, count.

    ``unanswered``: request ids sent but never answered (wrk drops what is in flight when a run ends);
    the service may have signed them, so their allowed events are counted apart."""
    from signer.audit import ChainVerifier
    from signer.store import open_store

    store = await open_store(database_url, pool_size=1)
    try:
        verifier = ChainVerifier()
        kinds: Counter[str] = Counter()
        cut_off = 0
        after = 0
        async with store.read() as reader:
            head = await reader.audit_head()
            while True:
                records = await reader.audit.events(after, 5000)
                if not records:
                    break
                for record in records:
                    verifier.feed(record)
                    if record.kind == "sign.transaction":
                        event = json.loads(record.event)
                        outcome = event.get("outcome", "?")
                        kinds[f"sign.transaction {outcome}"] += 1
                        if unanswered and outcome == "allowed" and event.get("request_id") in unanswered:
                            cut_off += 1
                after = records[-1].seq
        verdict = verifier.result(expected_head=head)
    finally:
        await store.close()
    return {
        "events": verifier.checked,
        "chain_ok": verdict.ok,
        "reason": verdict.reason,
        "sign_allowed": kinds["sign.transaction allowed"],
        "sign_allowed_unanswered": cut_off,
        "sign_other": sum(v for k, v in kinds.items() if k != "sign.transaction allowed"),
    }


def end_to_end(args: argparse.Namespace, database_url: str | None, data_dir: Path) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    from tests.service_harness import (
        attach_policy,
        grant,
        init_installation,
        make_key,
        make_service,
        start_server,
    )

    installation = init_installation(data_dir, database_url)
    profile_dir = None
    probe_dir = None
    extra_env: dict[str, str] = {}
    if args.profile > 0:
        profile_dir = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
        profile_dir.mkdir(parents=True, exist_ok=True)
    if args.profile > 0 or args.experiment:
        # The probe (timers around the pipeline's steps, and any --experiment) loads through
        # sitecustomize in the server's processes only; signer/ is unchanged and knows nothing of it.
        probe_dir = profile_dir or data_dir.parent / "probe"
        probe_dir.mkdir(parents=True, exist_ok=True)
        site = probe_site_dir(data_dir.parent)
        extra_env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            PROBE_ENV: str(probe_dir),
            EXPERIMENTS_ENV: ",".join(args.experiment),
            # Without --profile the timers stay out: they would cost the experiment what it saves.
            TIMERS_ENV: "1" if args.profile > 0 else "0",
        }
    server = start_server(installation, workers=args.workers, env=extra_env, ready_timeout=120)
    try:
        service = make_service(server, "bench-relayer")
        key = make_key(server, "secp256k1", "bench-hot")
        grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
        if getattr(args, "policy", "none") == "realistic":
            attach_policy(server, realistic_policy(), key_id=key["id"])
        token = service["credentials"]["access_token"]
        workers = server_worker_pids(server.process.pid)
        pids = sorted({server.process.pid, *workers})
        if probe_dir is not None and not all((probe_dir / f"probe-ready-{p}").exists() for p in workers):
            # Without the probe's handlers a SIGUSR1 would kill the worker; and an experiment asked
            # for must not silently be missing from the figures.
            raise RuntimeError("the probe did not load in every worker (see the server log)")
        url = f"{server.url}/v1/keys/{key['id']}/sign/transaction"
        database_name = make_url(database_url).database if database_url else None
        load = run_load(
            args,
            url,
            token,
            warmup=args.warmup,
            seconds=args.seconds,
            profile=args.profile,
            verify=args.verify,
            pids=pids,
            workers=workers,
            database=database_name,
            profile_dir=profile_dir,
            profile_rate=args.profile_rate,
            probe_dir=probe_dir,
            wrk_dir=data_dir.parent / "wrk",
        )
        rate_runs: list[RateRun | WrkRateRun] = []
        if args.rate or args.rate_fraction:
            _, statuses, wall = load.in_window("measure")
            for k, rate in enumerate(fixed_rates(args, statuses.get(200, 0) / wall)):
                print(f"fixed rate {rate:,.0f}/s ...", flush=True)
                if args.rate_load == "wrk":
                    paced = drive_rate_wrk(
                        url,
                        token,
                        rate,
                        args.rate_connections,
                        args.wrk_threads,
                        args.rate_warmup,
                        args.seconds,
                        # Nonces (and so request ids) never sent by the closed-loop wrk runs, which
                        # start theirs at 0, 1e9 and 2e9.
                        (k + 50) * WRK_NONCE_STRIDE,
                        pids,
                        database_name,
                        data_dir.parent / "wrk" / f"rate-{k}",
                    )
                    load.ok_total += paced.ok_all
                    load.unanswered |= paced.unanswered
                    rate_runs.append(paced)
                    continue
                run = asyncio.run(
                    drive_rate(
                        url,
                        token,
                        rate,
                        args.rate_connections,
                        args.rate_warmup,
                        args.seconds,
                        (k + 1) * 10**9,  # nonces never sent by the closed-loop run
                        pids,
                        database_name,
                        max(1, args.verify // 4),
                    )
                )
                load.ok_total += run.ok_all
                rate_runs.append(run)
        alive = server.process.poll() is None
        probes = read_probes(profile_dir, load.probed) if profile_dir is not None and load.probed else None
    finally:
        server.stop()
    log_tail = server.log_text()[-2000:] if not alive else ""
    return {
        "load": load,
        "key": key,
        "alive": alive,
        "log_tail": log_tail,
        "profile_dir": profile_dir,
        "workers": workers,
        "probes": probes,
        "rate_runs": rate_runs,
    }


# -- component costs ------------------------------------------------------------------------------------


def _listening_process(
    target: Any, target_args: tuple[Any, ...], port: int, timeout: float, what: str
) -> Any:
    """A spawned server process, returned once it accepts connections on ``port``."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=target_args, daemon=True)
    process.start()
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return process
        if time.monotonic() > deadline or not process.is_alive():
            process.terminate()
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)  # polling for the port with a hard deadline


def run_load(
    args: argparse.Namespace,
    url: str,
    token: str,
    *,
    warmup: float,
    seconds: float,
    pids: list[int],
    workers: list[int],
    wrk_dir: Path,
    profile: float = 0.0,
    verify: int = 0,
    database: str | None = None,
    profile_dir: Path | None = None,
    profile_rate: int = 0,
    probe_dir: Path | None = None,
) -> LoadResult:
    """The load ``--load`` names (wrk, or the aiohttp clients in this process) against ``url``."""
    rest = (warmup, seconds, profile, verify, pids, workers, database, profile_dir, profile_rate, probe_dir)
    if args.load == "wrk":
        return drive_wrk(url, token, args.clients, args.wrk_threads, *rest, wrk_dir)
    return asyncio.run(drive(url, token, args.clients, *rest))


def _stub_load(args: argparse.Namespace, url: str, pid: int, seconds: float, tmp: Path) -> LoadResult:
    """The bench's load against a stub server: 1 s warm-up, then ``seconds``."""
    return run_load(args, url, "x", warmup=1.0, seconds=seconds, pids=[pid], workers=[pid], wrk_dir=tmp)


def http_floor(args: argparse.Namespace) -> tuple[float, float, float]:
    """(requests/s, server CPU us, client CPU us per request) of a bare aiohttp app, same client."""
    from tests.service_harness import free_port

    port = free_port()
    process = _listening_process(http_floor_server, (port,), port, 30, "the bare aiohttp server")
    try:
        assert process.pid is not None
        url = f"http://127.0.0.1:{port}/v1/keys/k/sign/transaction"
        with tempfile.TemporaryDirectory(prefix="signer-bench-wrk-") as tmp:
            load = _stub_load(args, url, process.pid, 4.0, Path(tmp))
    finally:
        process.terminate()
        process.join(timeout=10)
    window = load.windows["measure"]
    assert window.end is not None
    share = cpu_share(window.start, window.end)
    _, statuses, wall = load.in_window("measure")
    ok = max(statuses.get(200, 0), 1)
    return ok / wall, share.server * wall / ok * 1e6, share.client * wall / ok * 1e6


def serving_floor(args: argparse.Namespace) -> None:
    """Server CPU per request of the serving layer alone (no HSM, no database), ``--floor`` windows."""
    from tests.service_harness import free_port

    if args.load == "wrk" and wrk_available() is None:
        raise SystemExit("--load wrk needs wrk: apt-get install -y wrk (or scripts/setup --bench)")
    tree = str(args.floor_tree.resolve()) if args.floor_tree else None
    print(
        f"# serving floor: {tree or REPO} without {args.floor_without or 'nothing'}; "
        f"load: {load_description(args)}"
    )
    with tempfile.TemporaryDirectory(prefix="signer-floor-") as tmp:
        port = free_port()
        process = _listening_process(
            serving_floor_server,
            (port, tmp, tree, args.floor_without),
            port,
            60,
            "the serving floor (see its log)",
        )
        try:
            assert process.pid is not None
            url = f"http://127.0.0.1:{port}/v1/keys/k/sign/transaction"
            figures = []
            for round_ in range(args.floor):
                load = _stub_load(args, url, process.pid, args.seconds, Path(tmp) / f"wrk-{round_}")
                window = load.windows["measure"]
                assert window.end is not None
                share = cpu_share(window.start, window.end)
                _, statuses, wall = load.in_window("measure")
                ok = statuses.get(200, 0)
                bad = sum(statuses.values()) - ok + sum(load.errors.values())
                server_us = share.server * wall / max(ok, 1) * 1e6
                figures.append(server_us)
                print(
                    f"round {round_ + 1}: {ok / wall:,.0f}/s, server CPU per request {server_us:,.1f} us, "
                    f"client {share.client * wall / max(ok, 1) * 1e6:,.1f} us, others' cores "
                    f"{share.other:.2f}, not 200: {bad}",
                    flush=True,
                )
            print(f"median server CPU per request: {statistics.median(figures):,.1f} us")
        finally:
            process.terminate()
            process.join(timeout=10)


def components(args: argparse.Namespace, raw: RawHsm, tmp: Path) -> tuple[list[str], dict[str, float]]:
    rows: list[tuple[str, float]] = []
    rows += pipeline_costs()
    with raw._ctx.Pool(1) as pool:
        rows += pool.apply(
            hsm_costs, (raw._token.module_path, str(raw._token.conf_path), raw._token.user_pin, raw._hsm_id)
        )
    from signer.store import migrate

    url = f"sqlite+aiosqlite:///{tmp / 'components.db'}"
    migrate(url)
    rows += commit_costs(url)
    rate, server_us, client_us = http_floor(args)
    rows += [
        ("HTTP floor: bare aiohttp POST, server CPU", server_us),
        ("HTTP floor: the load generator's CPU", client_us),
    ]
    lines = [f"  {'step (one process, CPU per call)':<52} {'us':>8}"]
    lines += [f"  {name:<52} {micro:8,.1f}" for name, micro in rows]
    lines.append(f"  (the bare aiohttp server answered {rate:,.0f} requests/s with {args.clients} clients)")
    return lines, {name: round(micro, 1) for name, micro in rows}


# -- reporting ------------------------------------------------------------------------------------------


def tree_state() -> str:
    """The commit measured, and whether the service's code differs from it (others edit the tree)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "signer", "policy")
    changed = len(dirty.splitlines())
    return f"{git('rev-parse', '--short', 'HEAD')}" + (
        f" + {changed} uncommitted file(s) in signer/ or policy/" if changed else " (clean)"
    )


def load_description(args: argparse.Namespace) -> str:
    if args.load == "wrk":
        return (
            f"wrk ({wrk_version()}), {args.wrk_threads} threads, {args.clients} keep-alive connections, "
            f"{WRK_SCRIPT.relative_to(REPO)}; client CPU = wrk's process CPU; latency = wrk's histogram"
        )
    return f"aiohttp, {args.clients} clients (keep-alive) in the bench process; client CPU = its getrusage"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).split(" [")[0].strip() or "wrk"


def share_line(name: str, share: CpuShare) -> str:
    database = f"postgres {share.database:4.2f}  " if share.database else ""
    return (
        f"  {name:<12} client {share.client:4.2f}  server {share.server:4.2f}  {database}"
        f"others {share.other:4.2f}  idle {share.idle:4.2f}   (cores of {share.cores}, {share.wall:.1f} s)"
    )


def _by_value(mapping: dict[Any, float]) -> list[tuple[Any, float]]:
    return sorted(mapping.items(), key=lambda item: -item[1])


def profile_data(load: LoadResult, probes: dict[str, Any] | None) -> dict[str, Any] | str:
    """What the profile window recorded, as JSON-able data (saved next to the stacks for --analyse)."""
    window = load.windows.get("profile")
    if window is None or window.end is None:
        return "no profile window"
    for _, _, process in load.profiles:
        if process.returncode != 0:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            return f"py-spy failed ({process.returncode}): {stderr.strip()[:300]}"
    _, statuses, wall = load.in_window("profile")
    share = cpu_share(window.start, window.end)
    return {
        "requests": statuses.get(200, 0),
        "wall": wall,
        "client_cores": share.client,
        "server_cores": share.server,
        "database_cores": share.database,
        "other_cores": share.other,
        "thread_names": probes["threads"] if probes else {},
        "workers": [
            {
                "pid": pid,
                "stacks": path.name,
                "before": load.threads_before[pid],
                "after": load.threads_after[pid],
            }
            for pid, path, _ in load.profiles
        ],
    }


def profile_report(data: dict[str, Any], directory: Path) -> tuple[list[str], dict[str, Any]]:
    requests, wall = int(data["requests"]), float(data["wall"])
    if not requests:
        return ["  no requests completed in the profile window"], {}
    result = breakdown(
        [
            (
                w["pid"],
                {int(k): v for k, v in w["before"].items()},
                {int(k): v for k, v in w["after"].items()},
                directory / w["stacks"],
            )
            for w in data["workers"]
        ],
        requests,
        wall,
        {int(k): v for k, v in data.get("thread_names", {}).items()},
    )
    total = sum(result.threads.values())
    lines = [
        f"  window {wall:.1f} s, {requests} requests ({requests / wall:,.0f}/s under py-spy), "
        f"{result.samples} GIL-holder samples; CPU per thread from /proc, the event loop's split by samples",
        f"  server CPU per request {total:,.0f} us "
        f"(process total {data['server_cores'] * wall / requests * 1e6:,.0f}; "
        f"PostgreSQL backends {data.get('database_cores', 0.0) * wall / requests * 1e6:,.0f}); "
        f"client {data['client_cores'] * wall / requests * 1e6:,.0f} us; "
        f"others' cores {data['other_cores']:.2f}",
        "  busiest worker's threads, share of one core: "
        + ", ".join(f"{k} {v:.0%}" for k, v in _by_value(result.utilisation)),
        f"  {'thread':<15} {'component':<46} {'us/req':>7} {'share':>6}",
    ]
    rows: dict[str, float] = {}
    for (kind, category), micro in _by_value(result.rows):
        rows[f"{kind}: {category}"] = round(micro, 1)
        lines.append(f"  {kind:<15} {category:<46} {micro:7,.0f} {micro / total:6.1%}")
    summary = {
        "requests": requests,
        "rate_under_profiler": round(requests / wall, 1),
        "server_cpu_us_per_request": round(total, 1),
        "threads_us_per_request": {k: round(v, 1) for k, v in result.threads.items()},
        "thread_utilisation": {k: round(v, 3) for k, v in result.utilisation.items()},
        "components_us_per_request": rows,
    }
    return lines, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="server processes = raw HSM processes")
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients (keep-alive)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured end-to-end window")
    parser.add_argument("--warmup", type=float, default=3.0, help="load before the measured window")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--policy",
        choices=("none", "realistic"),
        default="none",
        help="attach no policy (grants only) or realistic_policy(): 10 rules with a spend and a rate window",
    )
    parser.add_argument(
        "--load",
        choices=("aiohttp", "wrk"),
        default="aiohttp",
        help="load generator: aiohttp clients in this process, or wrk with bench/e2e_sign.lua "
        "(apt-get install wrk, or scripts/setup --bench); both send the same requests",
    )
    parser.add_argument(
        "--wrk-threads", type=int, default=2, help="wrk threads (--load wrk); divides --clients"
    )
    parser.add_argument(
        "--rate",
        help="after the closed-loop window, open-loop windows at these fixed rates (requests/s, "
        "comma-separated)",
    )
    parser.add_argument(
        "--rate-fraction",
        help="after the closed-loop window, open-loop windows at these fractions of its rate "
        "(e.g. 0.25,0.5,0.75)",
    )
    parser.add_argument(
        "--rate-connections", type=int, default=32, help="keep-alive connections of the fixed-rate generator"
    )
    parser.add_argument(
        "--rate-warmup", type=float, default=2.0, help="seconds at each fixed rate before its window"
    )
    parser.add_argument(
        "--rate-load",
        choices=("aiohttp", "wrk"),
        default="aiohttp",
        help="fixed-rate generator: aiohttp in this process (true open loop, 600-900 us of CPU a request "
        "on the same cores) or paced wrk connections (about 25 us a request; see drive_rate_wrk)",
    )
    parser.add_argument("--raw-seconds", type=float, default=5.0, help="length of each raw HSM round")
    parser.add_argument("--verify", type=int, default=1000, help="responses checked with eth-account")
    parser.add_argument("--profile", type=float, default=0.0, help="seconds of py-spy after the window")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each phase, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--results", action="store_true", help="also write the JSON to bench/results/")
    parser.add_argument(
        "--components", action="store_true", help="also measure each step's CPU in isolation (~40 s)"
    )
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        choices=sorted(EXPERIMENTS),
        help="apply a what-if change inside the server processes (repeatable): "
        + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()),
    )
    parser.add_argument("--analyse", type=Path, help="only print the profile saved in this directory")
    parser.add_argument(
        "--floor",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only measure the serving layer around a stub handler (common.serving_floor_server): "
        "ROUNDS windows of --seconds with --load, server CPU per request",
    )
    parser.add_argument(
        "--floor-tree", type=Path, help="serve the floor from this checkout's signer/ (compare commits)"
    )
    parser.add_argument(
        "--floor-without",
        action="append",
        default=[],
        choices=("uvloop", "gc_thresholds"),
        help="leave out what signer.app.run does by default (repeatable)",
    )
    parser.add_argument(
        "--micro",
        action="store_true",
        help="only print the in-process steps' CPU per call (body parse, response JSON, access line, ...)",
    )
    args = parser.parse_args()
    if args.micro:
        print(f"  {'step (one process, CPU per call)':<52} {'us':>8}")
        for name, micro in pipeline_costs():
            print(f"  {name:<52} {micro:8,.2f}")
        return
    if args.analyse is not None:
        data = json.loads((args.analyse / "profile.json").read_text(encoding="utf-8"))
        print("\n".join(profile_report(data, args.analyse)[0]))
        return
    if args.floor:
        serving_floor(args)
        return
    if args.workers < 1 or args.clients < 1 or args.seconds <= 0:
        parser.error("--workers, --clients and --seconds must be positive")
    if args.load == "wrk":
        if wrk_available() is None:
            parser.error("--load wrk needs wrk: apt-get install -y wrk (or scripts/setup --bench)")
        if args.wrk_threads < 1 or args.clients % args.wrk_threads:
            # wrk gives each thread clients // threads connections: the rest would silently not exist.
            parser.error("--wrk-threads must divide --clients")

    command = "bench/e2e_sign.py " + shlex.join(sys.argv[1:])
    print(f"# {command}")
    tree = tree_state()
    print(f"# tree: {tree}")
    print(f"# load: {load_description(args)}")
    for name in args.experiment:
        print(f"# EXPERIMENT {name}: {EXPERIMENTS[name]} (applied in the server by bench code only)")
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}; background before start {background_load():.2f} cores"
    )
    print(
        "# the load generator runs on the same cores as the server: see the CPU lines "
        "(cores used by client, server, other people's processes)",
        flush=True,
    )

    with RawHsm(args.workers, args.raw_seconds) as raw:
        startup = raw.startup_cpu()
        quiet = [wait_for_quiet(args.quiet_wait)]
        first = raw.measure(startup)
        print(f"raw HSM round 1: {first.rate:,.0f}/s ({args.workers} processes)", flush=True)

        with tempfile.TemporaryDirectory(prefix="signer-bench-") as tmp:
            data_dir = Path(tmp) / "data"
            fsync_ms = fsync_latency_ms(Path(tmp))
            quiet.append(wait_for_quiet(args.quiet_wait))
            if args.database == "postgres":
                base = os.environ.get("SIGNER_BENCH_PG_URL", DEFAULT_PG)
                with throwaway_postgres(base) as database_url:
                    e2e = end_to_end(args, database_url, data_dir)
                    audit = asyncio.run(audit_check(database_url, e2e["load"].unanswered))
                    durable = durability("postgresql", database_url, None)
            else:
                e2e = end_to_end(args, None, data_dir)
                sqlite_file = data_dir / "signer.db"
                database_url = f"sqlite+aiosqlite:///{sqlite_file}"
                audit = asyncio.run(audit_check(database_url, e2e["load"].unanswered))
                durable = durability("sqlite", database_url, sqlite_file)

        quiet.append(wait_for_quiet(args.quiet_wait))
        second = raw.measure(startup)
        print(f"raw HSM round 2: {second.rate:,.0f}/s", flush=True)
        component_lines: list[str] = []
        component_summary: dict[str, float] = {}
        if args.components:
            with tempfile.TemporaryDirectory(prefix="signer-bench-") as tmp:
                component_lines, component_summary = components(args, raw, Path(tmp))

    load: LoadResult = e2e["load"]
    latencies, statuses, wall = load.in_window("measure")
    ok = statuses.get(200, 0)
    e2e_rate = ok / wall
    raw_rate = statistics.mean(r.rate for r in raw.rounds)
    ratio = e2e_rate / raw_rate
    # CPU per operation does not depend on how many cores other people leave us, so its ratio says
    # what the service would reach against the raw loop on an otherwise idle machine (both saturating
    # the same cores, the load generator's CPU counted against the service).
    raw_cpu_us = statistics.mean(r.cpu_used / r.rate for r in raw.rounds) * 1e6
    checked, failures = verify_sample(load.sample, e2e["key"]["address"])
    measure = load.windows["measure"]
    assert measure.end is not None
    share = cpu_share(measure.start, measure.end)
    errors_total = sum(load.errors.values())
    client_us = share.client * wall / max(ok, 1) * 1e6
    # The database's CPU is part of what a request costs (PostgreSQL backends; SQLite is in-process).
    server_us = (share.server + share.database) * wall / max(ok, 1) * 1e6
    cpu_ratio = raw_cpu_us / (client_us + server_us)
    # wrk drops the requests in flight when a run ends; those the service signed anyway are audited
    # but never counted as 200s here, and are recognised by their request id.
    cut_off = audit["sign_allowed_unanswered"]
    audit_matches = audit["sign_allowed"] - cut_off == load.ok_total and audit["chain_ok"]

    if "measure" in load.counted:
        p = load.counted["measure"][2]  # wrk's: every response of the window, not only the 200s
    else:
        p = {q: percentile(latencies, q) * 1000 for q in (0.5, 0.9, 0.99)}
    print()
    print(f"{'measure':<46} {'value':>12}")
    rows = [
        (f"raw HSM secp256k1 sign/s, {args.workers} proc (mean of 2)", f"{raw_rate:,.0f}"),
        ("  rounds", " / ".join(f"{r.rate:,.0f}" for r in raw.rounds)),
        (
            "  others' cores during raw rounds",
            " / ".join(f"{r.other:.2f}" for r in raw.rounds),
        ),
        (
            f"end-to-end signed EIP-1559 tx/s ({args.database}, policy {args.policy}, load {args.load})",
            f"{e2e_rate:,.0f}",
        ),
        (f"  {args.workers} workers, {args.clients} clients, {wall:.1f} s", f"{ok} ok"),
        ("  latency p50 / p90 / p99 ms", f"{p[0.5]:.1f} / {p[0.9]:.1f} / {p[0.99]:.1f}"),
        ("  errors (whole run)", f"{errors_total}"),
        ("ratio end-to-end / raw (target >= 0.5)", f"{ratio:.2f}"),
        ("CPU us per raw sign / per e2e request (s+c)", f"{raw_cpu_us:,.0f} / {server_us + client_us:,.0f}"),
        ("  ratio if both had the cores to themselves", f"{cpu_ratio:.2f}"),
        ("signatures verified with eth-account", f"{checked - len(failures)}/{checked}"),
        ("audit chain verified, events", f"{audit['chain_ok']} {audit['events']}"),
        (
            "audit 'allowed' events == 200 responses",
            f"{audit['sign_allowed']} == {load.ok_total}"
            + (f" + {cut_off} cut off" if args.load == "wrk" else ""),
        ),
        ("audit durable", f"{durable['durable']}"),
        ("  fsync (4 KiB + fdatasync) on the data dir", f"{fsync_ms:.2f} ms"),
    ]
    for name, value in rows:
        print(f"{name:<46} {value:>12}")
    print(f"  durability: {durable['why']} (from {durable['source']})")
    print("others' cores just before raw 1 / end-to-end / raw 2: " + " / ".join(f"{q:.2f}" for q in quiet))
    print("CPU during the measured window (cores):")
    print(share_line("end-to-end", share))
    print(
        f"  client CPU per request {client_us:,.0f} us, server CPU per request {server_us:,.0f} us"
        + (" (PostgreSQL backends included)" if share.database else "")
    )
    if load.worker_cores:
        # One worker near zero: every connection went to the other (few clients), which shares batches.
        print("  cores by worker: " + " / ".join(f"{c:.2f}" for c in load.worker_cores.values()))
    if load.errors:
        print("errors:", dict(load.errors))
        for example in load.error_examples:
            print("  e.g.", example)
    for failure in failures[:10]:
        print("  VERIFY FAILED", failure)
    if not e2e["alive"]:
        print("server died during the run; log tail:\n" + e2e["log_tail"])

    profile_summary: dict[str, Any] = {}
    rate_summaries: list[dict[str, Any]] = []
    rate_failures: list[str] = []
    if e2e["rate_runs"]:
        print(
            f"fixed rate ({RATE_LOADS[args.rate_load]}, {args.rate_connections} keep-alive connections; "
            "windows of --seconds):"
        )
        print(
            f"  {'target/s':>9} {'got/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
            f"{'server us/req':>14} {'client us/req':>14} {'late':>5} {'errors':>6} {'others':>7}"
        )
    for run in e2e["rate_runs"]:
        row = run.summary()
        rate_checked, rate_failed = verify_sample(run.sample, e2e["key"]["address"])
        row["verified"] = rate_checked - len(rate_failed)
        rate_failures += rate_failed
        rate_summaries.append(row)
        print(
            f"  {row['target_per_s']:9,.0f} {row['achieved_per_s']:8,.0f} {row['p50_ms'] or 0:8.2f} "
            f"{row['p90_ms'] or 0:8.2f} {row['p99_ms'] or 0:8.2f} {row['server_cpu_us_per_request']:14,.0f} "
            f"{row['client_cpu_us_per_request']:14,.0f} {row['late_sends']:5} {row['errors']:6} "
            f"{row['cpu_cores']['other']:7.2f}"
        )
        for code, count in run.errors.items():
            print(f"    error {code}: {count}")
    for failure in rate_failures[:10]:
        print("  VERIFY FAILED (fixed rate)", failure)

    if e2e["profile_dir"] is not None:
        data = profile_data(load, e2e["probes"])
        directory: Path = e2e["profile_dir"]
        where = directory.relative_to(REPO)
        print(f"profile (py-spy --gil --nonblocking, {len(e2e['workers'])} workers; {where}):")
        if isinstance(data, str):
            print("  " + data)
        else:
            (directory / "profile.json").write_text(json.dumps(data), encoding="utf-8")
            profile_lines, profile_summary = profile_report(data, directory)
            print("\n".join(profile_lines))
        if e2e["probes"] is not None:
            probe_lines, probe_summary = probe_report(
                e2e["probes"], data["requests"] if isinstance(data, dict) else 0
            )
            print("probe (timers around each step, same window):")
            print("\n".join(probe_lines))
            profile_summary["steps"] = probe_summary

    if component_lines:
        print("component costs in isolation (compare with the profile above):")
        print("\n".join(component_lines))

    summary = {
        "bench": "e2e_sign",
        "command": command,
        "tree": tree,
        "experiments": args.experiment,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "clients": args.clients,
        "seconds": round(wall, 2),
        "database": args.database,
        "policy": args.policy,
        "load": args.load,
        "wrk_threads": args.wrk_threads if args.load == "wrk" else None,
        "unanswered_requests": len(load.unanswered),
        "audit_allowed_cut_off": cut_off,
        "raw_hsm_per_s": round(raw_rate, 1),
        "raw_rounds": [round(r.rate, 1) for r in raw.rounds],
        "raw_others_cores": [round(r.other, 2) for r in raw.rounds],
        "raw_rounds_retried": raw.failures,
        "others_cores_before_phases": [round(q, 2) for q in quiet],
        "e2e_per_s": round(e2e_rate, 1),
        "ratio": round(ratio, 3),
        "raw_cpu_us_per_sign": round(raw_cpu_us, 1),
        "e2e_cpu_us_per_request": {"server": round(server_us, 1), "client": round(client_us, 1)},
        "cpu_ratio": round(cpu_ratio, 3),
        "p50_ms": round(p[0.5], 2),
        "p90_ms": round(p[0.9], 2),
        "p99_ms": round(p[0.99], 2),
        "errors": errors_total,
        "error_codes": dict(load.errors),
        "verified": checked - len(failures),
        "verify_failures": len(failures),
        "audit_events": audit["events"],
        "audit_chain_ok": audit["chain_ok"],
        "audit_allowed_matches_200s": audit_matches,
        "durable": durable["durable"],
        "durability": {k: v for k, v in durable.items() if k != "why"},
        "fsync_ms": round(fsync_ms, 3),
        "cpu_cores": share.as_dict(),
        "worker_cores": list(load.worker_cores.values()),
        "profile": profile_summary,
        "components_us": component_summary,
        "fixed_rate": rate_summaries,
    }
    line = json.dumps(summary, separators=(",", ":"))
    if args.results:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(line + "\n", encoding="utf-8")
    print(line)
    rate_errors = sum(row["errors"] for row in rate_summaries)
    if errors_total or failures or rate_errors or rate_failures or not audit_matches or not e2e["alive"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
