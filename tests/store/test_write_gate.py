"""The write gate (``signer.store.gate``): the lock file beside a SQLite database that orders the worker
processes' write transactions. A real lock file; the other holder is a second open file description, as
another process's would be."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from signer.store.gate import WriteGate


def _free(lock_file: Path) -> bool:
    """Whether another holder (another open file, as another process has) could take the lock now."""
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


async def test_the_holder_can_let_go_early_from_another_thread_and_a_late_call_does_nothing(
    tmp_path: Path,
) -> None:
    database = tmp_path / "signer.db"
    lock_file = tmp_path / "signer.db.write-lock"
    gate = WriteGate(database, timeout=5.0)
    try:
        for rested in (True, False):
            async with gate.held(rested=rested) as release:
                assert not _free(lock_file)
                # As the store does right after COMMIT, on the database connection's thread.
                await asyncio.to_thread(release)
                assert _free(lock_file)
            assert _free(lock_file)
        async with gate.held(rested=True) as first:
            pass
        # A late call, after the block was left, must not let go of the next holding's lock.
        async with gate.held(rested=True):
            first()
            assert not _free(lock_file)
        assert _free(lock_file)
    finally:
        gate.close()


async def test_a_claim_taken_on_another_thread_is_let_go_once_and_an_abandoned_one_gives_it_back(
    tmp_path: Path,
) -> None:
    database = tmp_path / "signer.db"
    lock_file = tmp_path / "signer.db.write-lock"
    gate = WriteGate(database, timeout=5.0)
    try:
        # As the commit job does it on the database connection's thread: acquire, COMMIT, release.
        claim = gate.claim()
        assert await asyncio.to_thread(claim.acquire)
        assert not _free(lock_file)
        assert not claim.abandon()  # held: the store waits for the job's outcome instead
        await asyncio.to_thread(claim.release)
        assert _free(lock_file)
        claim.release()  # a second release (the job's own, after the early one) does nothing
        assert _free(lock_file)

        # Another process holds the gate: the claim's job waits; the store gives up; when the other
        # lets go, the job gets the lock, sees it was abandoned and lets go at once, doing nothing.
        other = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            claim = gate.claim()
            waiting = asyncio.create_task(asyncio.to_thread(claim.acquire))
            await asyncio.sleep(0)
            assert claim.abandon()
            fcntl.flock(other, fcntl.LOCK_UN)
            assert await waiting is False
            assert _free(lock_file)
            claim.release()
            assert _free(lock_file)
        finally:
            os.close(other)
    finally:
        gate.close()
