"""Loaded by ``bench/gate_hold.py`` into the server's processes (``PYTHONPATH``), never by the service.

Records how long this process holds the SQLite write gate (``signer.store.gate``): from the moment the
lock is granted (the idle batcher's non-blocking try on the loop, the gate's own thread, or a
``ThreadClaim`` on the connection's thread) to the moment it is let go, and how batches went (run ahead
of the lock or the ordinary way, where the tree has run-ahead batches). ``SIGUSR2`` appends a summary
line to ``$GATE_PROBE_DIR/<pid>.txt`` and starts over. Works on trees with and without
``ThreadClaim``. Timing only: nothing about the requests or their values is recorded.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import signal
import sys
import time

_OUT = os.environ.get("GATE_PROBE_DIR")
_holds: list[float] = []
_granted: list[float | None] = [None]
_batches = {"ahead": 0, "missed": 0, "ordinary": 0}


def _granted_now() -> None:
    _granted[0] = time.perf_counter()


def _install_gate(g: object) -> None:
    original_try = g._try_lock  # type: ignore[attr-defined]

    def try_lock(fd: int) -> bool:
        ok = original_try(fd)
        if ok:
            _granted_now()
        return bool(ok)

    g._try_lock = try_lock  # type: ignore[attr-defined]

    def wait_for_locks(waits: object) -> None:
        # signer.store.gate._wait_for_locks with the grant timed.
        while (wait := waits.get()) is not None:  # type: ignore[attr-defined]
            error = None
            try:
                fcntl.flock(wait.fd, fcntl.LOCK_EX)
                _granted_now()
            except OSError as exc:
                error = exc
            try:
                wait.loop.call_soon_threadsafe(wait.deliver, error)
            except RuntimeError:
                if error is None:
                    g.WriteGate._unlock(wait.fd)  # type: ignore[attr-defined]

    g._wait_for_locks = wait_for_locks  # type: ignore[attr-defined]
    original_unlock = g.WriteGate._unlock  # type: ignore[attr-defined]

    def unlock(fd: int) -> None:
        at = _granted[0]
        if at is not None:
            _holds.append(time.perf_counter() - at)
            _granted[0] = None
        original_unlock(fd)

    g.WriteGate._unlock = staticmethod(unlock)  # type: ignore[attr-defined]
    claim = getattr(g, "ThreadClaim", None)
    if claim is not None:
        original_acquire = claim.acquire

        def acquire(self: object) -> bool:
            ok = original_acquire(self)
            if ok:
                _granted_now()
            return bool(ok)

        claim.acquire = acquire


def _install_store(c: object) -> None:
    store = c.Store  # type: ignore[attr-defined]
    if not hasattr(store, "_run_ahead"):
        return
    original_ahead, original_may = store._run_ahead, store._may_run_ahead

    async def run_ahead(self: object, batch: object) -> object:
        result = await original_ahead(self, batch)
        _batches["ahead" if result is not None else "missed"] += 1
        return result

    def may(self: object, batch: object) -> bool:
        ok = original_may(self, batch)
        if not ok:
            _batches["ordinary"] += 1
        return bool(ok)

    store._run_ahead, store._may_run_ahead = run_ahead, may


def _dump(_signum: int, _frame: object) -> None:
    holds = sorted(_holds)
    n = len(holds)
    if _OUT and n:
        line = (
            f"{n} {sum(holds):.6f} {holds[n // 2]:.6f} {holds[int(n * 0.9)]:.6f} {holds[int(n * 0.99)]:.6f} "
            f"{_batches['ahead']} {_batches['missed']} {_batches['ordinary']}\n"
        )
        with open(os.path.join(_OUT, f"{os.getpid()}.txt"), "a", encoding="ascii") as f:
            f.write(line)
    _holds.clear()
    for key in _batches:
        _batches[key] = 0


_pending = {"gate": True, "store": True}
_import = builtins.__import__


def _watching_import(name: str, *args: object, **kwargs: object) -> object:
    module = _import(name, *args, **kwargs)
    if _pending["gate"] and hasattr(sys.modules.get("signer.store.gate"), "_try_lock"):
        _pending["gate"] = False
        _install_gate(sys.modules["signer.store.gate"])
        signal.signal(signal.SIGUSR2, _dump)
    if _pending["store"] and hasattr(sys.modules.get("signer.store.commit"), "Store"):
        _pending["store"] = False
        _install_store(sys.modules["signer.store.commit"])
    if not any(_pending.values()):
        builtins.__import__ = _import
    return module


if _OUT:
    builtins.__import__ = _watching_import
