"""A queue in front of SQLite's write lock, so that several worker processes take turns fairly.

SQLite makes a writer that finds the database locked sleep and retry (``busy_timeout``), backing off to
100 ms between tries. A worker whose group commit always has the next batch ready re-takes the lock
within microseconds of releasing it, so a second worker, asleep in its back-off, can miss every gap
until its timeout expires: measured under load with two workers, tens of batches a minute failed with
"database is busy" although the lock was free most of the time. Here each write transaction first
takes an exclusive ``flock`` on a file beside the database. A process blocked in ``flock`` is woken by
the kernel the moment the holder lets go, while the holder needs an event-loop turn and a thread
hand-off before it asks again, so the waiter gets in. The wait happens on one dedicated thread per
store (never the event loop) and is bounded by the store's lock timeout; a wait that times out
releases the lock as soon as the thread gets it.

A holder that was idle since it last let go first tries the lock without blocking, on the event loop
itself: at low load the lock is nearly always free, and the hand-off to the gate's thread and back
(two wake-ups and a timer) cost more CPU than the batch's own statements. Only a batcher that re-asks
back to back (its next batch was already queued, which is the case under load) always queues in the
kernel through the thread, so the fairness above is kept where it matters; and an idle holder that
finds the lock taken queues the same way.

It owns only the lock file; SQLite's own locking still guarantees correctness, this only orders
the waiters (a race between a timed-out wait and the next one can only cost fairness, never safety).
PostgreSQL needs none of it: its lock waits are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from signer.errors import DatabaseUnavailable


class WriteGate:
    def __init__(self, database: Path, timeout: float) -> None:
        self._path = database.with_name(database.name + ".write-lock")
        self._timeout = timeout
        self._fd: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signer-write-gate")

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextlib.asynccontextmanager
    async def held(self, *, rested: bool = False) -> AsyncIterator[None]:
        """Hold the gate; one holder at a time per process (the store's batcher), by contract: the
        lock belongs to the open file, so a second holder in this process would not wait.

        ``rested``: the holder waited for work since it last let go (not a back-to-back batch), so
        an uncontended lock is taken without a thread hand-off."""
        loop = asyncio.get_running_loop()
        try:
            fd = self._open()
        except OSError:
            raise DatabaseUnavailable("database directory cannot be written") from None
        if rested and _try_lock(fd):
            try:
                yield
            finally:
                self._unlock(fd)
            return
        waiting = loop.run_in_executor(self._executor, fcntl.flock, fd, fcntl.LOCK_EX)
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self._timeout)
        except TimeoutError:
            # The thread still waits; whenever it gets the lock, give it straight back.
            waiting.add_done_callback(lambda f: f.exception() or self._unlock(fd))
            raise DatabaseUnavailable("database is busy") from None
        try:
            yield
        finally:
            self._unlock(fd)

    @staticmethod
    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _try_lock(fd: int) -> bool:
    """Take the lock if nobody holds it, without blocking; False (queue through the thread) otherwise,
    and for any error, which the blocking path then meets and reports as before."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
