"""Webhooks per approver group: told about new pending requests and their outcomes, never in the way.

- An admin registers one URL per group (``set_webhook``) and receives the group's signing secret, derived
  from the service's token key (``AuthService.derived_secret``): nothing secret is stored, every worker
  process computes the same key, and registering again shows it again.
- The approvals service calls ``enqueue`` with the writer of the transaction that records the event, so
  an outbox row exists exactly when the event committed (the transactional outbox pattern); the request
  never waits for a receiver.
- ``run`` (a background task started by the composition root) delivers due rows: it claims one with a
  compare-and-set lease (``Writer.claim_outbox``) so that two processes never send it at once, POSTs the
  canonical JSON with ``X-Signer-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``,
  ``X-Signer-Timestamp`` and ``X-Signer-Event-Id``, and on failure (no answer in time, a network error,
  any non-2xx) retries with exponential back-off (``base_delay * 2**attempt``, capped) up to
  ``max_attempts``. Delivery is at least once: receivers dedupe on the event id and should refuse a
  timestamp far from their clock (replay).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from signer.audit import canonical_json
from signer.errors import InvalidRequest, NotFound, SignerError
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.context import RequestContext, iso, require_role, utcnow
from signer.services.naming import NameKind, check_name
from signer.store import OutboxRecord, Store, Writer

log = logging.getLogger("signer.webhooks")

LEASE = timedelta(seconds=60)
GAVE_UP = timedelta(days=36500)


class WebhookTransport(Protocol):
    """One HTTP POST; returns the status code, raises ``OSError`` or ``TimeoutError`` on no answer."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int: ...


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("url must be an http or https URL", code="invalid_field", field="url")
    return url


class WebhookService:
    def __init__(
        self,
        store: Store,
        auth: AuthService,
        transport: WebhookTransport,
        *,
        clock: Callable[[], datetime] = utcnow,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        max_attempts: int = 12,
        timeout: float = 5.0,
        poll_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._auth = auth
        self._transport = transport
        self._clock = clock
        self._base = base_delay
        self._max_delay = max_delay
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._poll = poll_interval
        self._wake = asyncio.Event()

    def secret_for(self, group: str) -> bytes:
        return self._auth.derived_secret(f"approval-webhook\0{group}")

    # -- administration ---------------------------------------------------------------------------

    async def set_webhook(self, ctx: RequestContext, group: str, url: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_name(group, field="group", kind=NameKind.IDENTIFIER)
        _check_url(url)
        now = self._clock()

        async def unit(writer: Writer) -> None:
            await writer.set_webhook(group, url, now, ctx.caller.principal_id)
            writer.append_audit(
                {
                    "kind": "webhook.set",
                    "at": now,
                    "request_id": ctx.request_id,
                    "actor": ctx.actor(),
                    "group": group,
                    "url": url,
                }
            )

        await self._store.submit(unit)
        # The receiver needs the key once; it is derived, never stored, and shown again on a new PUT.
        return {"group": group, "url": url, "secret": self.secret_for(group).hex()}

    async def delete_webhook(self, ctx: RequestContext, group: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_name(group, field="group", kind=NameKind.IDENTIFIER)
        now = self._clock()

        async def unit(writer: Writer) -> None:
            if not await writer.delete_webhook(group):
                raise NotFound("no webhook for that group", code="webhook_not_found")
            writer.append_audit(
                {
                    "kind": "webhook.delete",
                    "at": now,
                    "request_id": ctx.request_id,
                    "actor": ctx.actor(),
                    "group": group,
                }
            )

        await self._store.submit(unit)
        return {"group": group, "deleted": True}

    # -- enqueueing (inside the caller's transaction) ---------------------------------------------

    async def enqueue(
        self, writer: Writer, groups: Iterable[str], event: Mapping[str, Any], now: datetime
    ) -> int:
        hooks = await writer.webhooks_for(sorted(set(groups)))
        for group, url in sorted(hooks.items()):
            outbox_id = "whk_" + secrets.token_hex(10)
            body = {**event, "id": outbox_id, "group": group, "sent_for": iso(now)}
            await writer.enqueue_webhook(OutboxRecord(outbox_id, group, url, body, now, 0, now))
        return len(hooks)

    def wake(self) -> None:
        self._wake.set()

    # -- delivery ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver forever (until cancelled); a failure of one round is logged, never fatal."""
        while True:
            try:
                await self.deliver_due()
            except SignerError as exc:
                log.warning("webhook round failed", extra={"code": exc.code})
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any one bad round
                log.error("webhook round failed", extra={"error": type(exc).__name__})
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    async def deliver_due(self) -> int:
        now = self._clock()
        async with self._store.read() as reader:
            due = await reader.due_outbox(now)
        sent = await asyncio.gather(*(self._deliver(record, now) for record in due))
        return sum(sent)

    async def _deliver(self, record: OutboxRecord, due: datetime) -> int:
        async def claim(writer: Writer) -> bool:
            return await writer.claim_outbox(record.id, due, self._clock() + LEASE)

        if not await self._store.submit(claim):
            return 0
        body = canonical_json(record.event)
        timestamp = str(int(self._clock().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "X-Signer-Event-Id": record.id,
            "X-Signer-Timestamp": timestamp,
            "X-Signer-Signature": signature(self.secret_for(record.group_name), timestamp, body),
        }
        error: str | None
        try:
            status = await self._transport.post(record.url, body, headers, self._timeout)
            error = None if 200 <= status < 300 else f"status {status}"
        except (OSError, TimeoutError) as exc:
            error = type(exc).__name__
        now = self._clock()
        attempts = record.attempts + 1
        if error is None:
            finish: Callable[[Writer], Awaitable[None]] = lambda w: w.finish_outbox(  # noqa: E731
                record.id, delivered_at=now, attempts=attempts, next_attempt_at=now, error=None
            )
        else:
            delay = min(self._base * 2 ** (attempts - 1), self._max_delay)
            retry_at = now + (GAVE_UP if attempts >= self._max_attempts else timedelta(seconds=delay))
            finish = lambda w: w.finish_outbox(  # noqa: E731
                record.id, delivered_at=None, attempts=attempts, next_attempt_at=retry_at, error=error
            )
        await self._store.submit(finish)
        return 1 if error is None else 0
