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
finds the lock taken queues the same way. The thread is the gate's own and hands the outcome straight
to the waiting future (one wake-up each way, one timer for the deadline): a thread pool's hand-off
(its work item and concurrent future, ``wrap_future``, ``wait_for`` and ``shield``) cost several times
as much on the event loop, on every batch under load.

A batch that runs ahead of the write lock (``Store._run_ahead``: its units already ran, all that is
left is BEGIN IMMEDIATE, the rows and COMMIT) takes the gate on the database connection's own thread,
as the first step of the one job that commits it (``ThreadClaim``), and lets go there right after the
COMMIT. Then the lock is held only while the database works: no event-loop turn (handing the lock to
the loop, the loop sending the job, the result coming back) falls inside the hold, which is what the
other worker's batches wait for. Measured with two workers under a fetch load of 32 connections, the
loop's turns had made the mean hold ~2.3 ms for ~0.4 ms of database work, and the gate was held ~80 %
of the time: the two workers' commits, not their CPU, set the rate. Such a claim uses an open file of
its own, so a claim still waiting after its holder gave up (below) and the next batch's wait exclude each
other like any two holders.

It owns only the lock file; SQLite's own locking still guarantees correctness, this only orders
the waiters (a race between a timed-out wait and the next one can only cost fairness, never safety).
PostgreSQL needs none of it: its lock waits are queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from signer.errors import DatabaseUnavailable


class WriteGate:
    def __init__(self, database: Path, timeout: float) -> None:
        self._path = database.with_name(database.name + ".write-lock")
        self._timeout = timeout
        self._fd: int | None = None
        self._claim_fd: int | None = None  # the ThreadClaims' own open file (see above)
        # Waits for the lock, one at a time, on the gate's own thread (started at the first one).
        self._waits: queue.SimpleQueue[_Wait | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextlib.asynccontextmanager
    async def held(self, *, rested: bool = False) -> AsyncIterator[Callable[[], None]]:
        """Hold the gate; one holder at a time per process (the store's batcher), by contract: the
        lock belongs to the open file, so a second holder in this process would not wait.

        ``rested``: the holder waited for work since it last let go (not a back-to-back batch), so
        an uncontended lock is taken without a thread hand-off.

        Yields a function that lets go early, from any thread: the store calls it on the database
        connection's thread right after a successful COMMIT, so the next process's batch need not
        wait for this one's result to travel back to the event loop (and behind whatever the loop
        runs first). Leaving the block lets go if that did not happen; once the block is left the
        function does nothing, so a late call (a COMMIT that finished after its batch was abandoned)
        cannot let go of the next holder's lock."""
        loop = asyncio.get_running_loop()
        try:
            fd = self._open()
        except OSError:
            raise DatabaseUnavailable("database directory cannot be written") from None
        hold = _Hold(fd)
        if rested and _try_lock(fd):
            try:
                yield hold.release
            finally:
                hold.release()
            return
        wait = _Wait(loop, fd)
        self._waiter().put(wait)
        expiry = loop.call_later(self._timeout, wait.expire)
        try:
            await wait.future
        except _Expired:
            raise DatabaseUnavailable("database is busy") from None
        finally:
            # On a timeout or a cancellation the thread still waits; whenever it gets the lock, it
            # is given straight back (_Wait.deliver).
            expiry.cancel()
        try:
            yield hold.release
        finally:
            hold.release()

    @property
    def timeout(self) -> float:
        return self._timeout

    def claim(self) -> ThreadClaim:
        """A claim for the gate to be taken by the job that commits a batch, on the connection's
        thread (``ThreadClaim.acquire``); the store abandons it when its lock timeout passes first."""
        if self._claim_fd is None:
            try:
                self._claim_fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                raise DatabaseUnavailable("database directory cannot be written") from None
        return ThreadClaim(self._claim_fd)

    def _waiter(self) -> queue.SimpleQueue[_Wait | None]:
        if self._thread is None:
            # A daemon: a wait that never ends (a lock held elsewhere forever) must not keep the
            # interpreter alive at exit.
            self._thread = threading.Thread(
                target=_wait_for_locks, args=(self._waits,), name="signer-write-gate", daemon=True
            )
            self._thread.start()
        return self._waits

    @staticmethod
    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._thread is not None:
            self._waits.put(None)
            self._thread = None
        for fd in (self._fd, self._claim_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._claim_fd = None


class _Hold:
    """One holding of the lock: let go once, by whichever comes first, the store after COMMIT (on the
    connection's thread) or the end of the block (on the loop)."""

    __slots__ = ("_lock", "fd", "held")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.held = True
        # The check and the unlock are one step: without it, a late call on the connection's thread
        # could pass the check, lose the GIL to the loop (which lets go and takes the gate again for its
        # next batch), then unlock that next holding.
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self.held:
                self.held = False
                WriteGate._unlock(self.fd)


class ThreadClaim:
    """The gate taken on the database connection's thread by the job that commits a batch run ahead
    of the write lock: ``acquire`` there (it blocks in the kernel's queue, as the gate's own thread
    does), ``release`` there right after COMMIT (and again, harmlessly, when the job ends), ``abandon``
    from the loop when the store's lock timeout passed while the job still waited. The state changes
    under one lock, so an abandoned claim that gets the lock later gives it straight back and its job
    does nothing, while a claim already held is never abandoned (its job commits and reports)."""

    __slots__ = ("_fd", "_lock", "_state")

    _WAITING, _HELD, _DONE, _ABANDONED = range(4)

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._state = ThreadClaim._WAITING

    def acquire(self) -> bool:
        """On the connection's thread: True once held; False if the store gave up meanwhile (the
        lock, if it was granted, is already let go)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        with self._lock:
            if self._state == ThreadClaim._WAITING:
                self._state = ThreadClaim._HELD
                return True
        WriteGate._unlock(self._fd)
        return False

    def release(self) -> None:
        with self._lock:
            if self._state == ThreadClaim._HELD:
                self._state = ThreadClaim._DONE
                WriteGate._unlock(self._fd)

    def abandon(self) -> bool:
        """From the loop, when its timeout passed: True if the job was still waiting (it will do
        nothing); False if it already holds or held the lock (its outcome is still to come)."""
        with self._lock:
            if self._state == ThreadClaim._WAITING:
                self._state = ThreadClaim._ABANDONED
                return True
            return False


class _Expired(Exception):
    """The lock was not granted within the gate's timeout (never leaves ``WriteGate.held``)."""


class _Wait:
    """One holder waiting for the lock on the gate's thread, and its future on the holder's loop."""

    __slots__ = ("fd", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.future: asyncio.Future[None] = loop.create_future()

    def expire(self) -> None:
        if not self.future.done():
            self.future.set_exception(_Expired())

    def deliver(self, error: OSError | None) -> None:
        # On the holder's loop, so it cannot race expire(): whichever runs first settles the future.
        if self.future.done():
            # Nobody waits any more (timed out, cancelled): give the lock straight back.
            if error is None:
                WriteGate._unlock(self.fd)
        elif error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(None)


def _wait_for_locks(waits: queue.SimpleQueue[_Wait | None]) -> None:
    # The gate's thread: blocks in the kernel's queue for the lock, then hands the outcome over as
    # its last action before waiting for the next request.
    while (wait := waits.get()) is not None:
        error: OSError | None = None
        try:
            fcntl.flock(wait.fd, fcntl.LOCK_EX)
        except OSError as exc:
            error = exc
        try:
            wait.loop.call_soon_threadsafe(wait.deliver, error)
        except RuntimeError:
            # The holder's loop is closed: nobody is left to hand the lock to.
            if error is None:
                WriteGate._unlock(wait.fd)


def _try_lock(fd: int) -> bool:
    """Take the lock if nobody holds it, without blocking; False (queue through the thread) otherwise,
    and for any error, which the blocking path then meets and reports as before."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
