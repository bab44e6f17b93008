"""Idempotency keys: one execution per caller and ``Idempotency-Key``, however many duplicates arrive at once.

A request that names a key first looks for its stored response (a retry gets it back unchanged). If
there is none, it must hold the key before it may ask the HSM for anything: it writes a claim row in its
own short transaction (``Writer.claim_idempotency``), under the store's write lock, so exactly one
request in every process and replica sharing the database wins it. The winner executes; its commit
unit replaces the claim with the response in the same transaction as the audit event. Everyone else
waits for that outcome and gets the identical stored response:

- duplicates inside one process wait on the in-flight request's future (no database round trips);
- a process that finds another process's claim looks again with a short back-off, and answers
  ``409 idempotency_in_progress`` with ``Retry-After`` once its own wait is up (matrix L-05).

A request that ends without a stored response (refused, failed, cancelled) releases its claim, so the
next duplicate executes at once and gets its own outcome. A claimant that died holding a claim cannot
block the key for ever: a claim older than ``claim_seconds`` is stale and the next request takes it
over. A request whose claim was taken over never releases its signature (the commit unit checks that
the claim it writes over is still its own). The same key with a different request is
``422 idempotency_key_reused`` whether the first is finished or still in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from signer.errors import Conflict, SignerError, Unprocessable
from signer.services.context import utcnow
from signer.store import IdempotencyRecord, Store, Writer

# Back-off between looks at a claim another process holds: short at first (a signature takes
# milliseconds), never longer than a quarter second.
_FIRST_LOOK = 0.01
_LAST_LOOK = 0.25


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A caller's ``Idempotency-Key`` and the digest of the request it names."""

    key: str
    request_digest: str


def reused() -> Unprocessable:
    return Unprocessable(
        "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
    )


def in_progress() -> Conflict:
    return Conflict(
        "a request with this Idempotency-Key is still in progress; retry shortly",
        code="idempotency_in_progress",
        retry_after=1,
    )


def replayed(stored: IdempotencyRecord, idempotency: Idempotency) -> dict[str, Any]:
    """The stored response, if the key named this same request (``idempotency_key_reused`` if not)."""
    if stored.request_digest != idempotency.request_digest:
        raise reused()
    return stored.response


Execute = Callable[[str], Awaitable[dict[str, Any]]]
Refused = Callable[[SignerError], Awaitable[None]]


class IdempotencyGate:
    """Runs ``execute(claim)`` at most once at a time per (principal, key), across processes."""

    def __init__(self, store: Store, *, wait_seconds: float = 4.0, claim_seconds: float = 30.0) -> None:
        self._store = store
        # How long a duplicate waits for the request holding the key before answering 409.
        self.wait_seconds = wait_seconds
        # How old a claim must be before it is taken to be a dead claimant's (well past any request).
        self.claim_seconds = claim_seconds
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._releases: set[asyncio.Task[None]] = set()

    async def run(
        self, principal_id: str, idempotency: Idempotency, execute: Execute, refused: Refused
    ) -> dict[str, Any]:
        """The stored response for the key, or the response of executing the request once.

        ``refused`` is told of the refusals made here (reused key, still in progress) before they are
        raised, so they are audited like any other; ``execute``'s own errors pass through."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        name = (principal_id, idempotency.key)
        look = _FIRST_LOOK
        while True:
            local = self._in_flight.get(name)
            if local is not None:
                # A request of this process holds the key (or watches another process's claim).
                if not await self._wait(local, deadline - loop.time()):
                    return await self._refuse(in_progress(), refused)
            record = await self._read(principal_id, idempotency.key)
            if record is not None:
                if record.request_digest != idempotency.request_digest:
                    return await self._refuse(reused(), refused)
                if record.claim is None:
                    return record.response
            if name in self._in_flight:
                continue  # another duplicate of this process took the lead while we read
            mine = loop.create_future()
            self._in_flight[name] = mine
            try:
                if record is None or self._stale(record):
                    claim = secrets.token_urlsafe(16)
                    held = await self._claim(principal_id, idempotency, claim)
                    if held is None:
                        return await self._execute(execute, principal_id, idempotency.key, claim)
                    if held.request_digest != idempotency.request_digest:
                        return await self._refuse(reused(), refused)
                    if held.claim is None:
                        return held.response
                # Another process executes it: look again shortly, holding the lead meanwhile so
                # this process's other duplicates wait on us instead of asking the database too.
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await self._refuse(in_progress(), refused)
                await asyncio.sleep(min(look, remaining))
                look = min(look * 2, _LAST_LOOK)
            finally:
                del self._in_flight[name]
                mine.set_result(None)

    def _stale(self, record: IdempotencyRecord) -> bool:
        return record.created_at < utcnow() - timedelta(seconds=self.claim_seconds)

    @staticmethod
    async def _wait(local: asyncio.Future[None], remaining: float) -> bool:
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                # Shielded: our deadline (or cancellation) must not cancel the holder's future.
                await asyncio.shield(local)
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _refuse(error: SignerError, refused: Refused) -> NoReturn:
        await refused(error)
        raise error

    async def _read(self, principal_id: str, key: str) -> IdempotencyRecord | None:
        async with self._store.read() as reader:
            return await reader.idempotency.get(principal_id, key)

    async def _claim(
        self, principal_id: str, idempotency: Idempotency, claim: str
    ) -> IdempotencyRecord | None:
        now = utcnow()
        stale_before = now - timedelta(seconds=self.claim_seconds)

        async def unit(writer: Writer) -> IdempotencyRecord | None:
            return await writer.idempotency.claim(
                principal_id, idempotency.key, idempotency.request_digest, claim, now, stale_before
            )

        return await self._store.submit(unit)

    async def _execute(self, execute: Execute, principal_id: str, key: str, claim: str) -> dict[str, Any]:
        try:
            return await execute(claim)
        except BaseException:
            # No response was stored: let the key go at once. A task, so that a cancelled request
            # still releases; a release that fails leaves the claim to go stale.
            task = asyncio.create_task(self._release(principal_id, key, claim))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            raise

    async def _release(self, principal_id: str, key: str, claim: str) -> None:
        async def unit(writer: Writer) -> None:
            await writer.idempotency.release_claim(principal_id, key, claim)

        with contextlib.suppress(SignerError):
            await self._store.submit(unit)
