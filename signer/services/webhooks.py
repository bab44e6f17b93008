"""Webhooks per approver group: told about new pending requests and their outcomes, never in the way.

- An admin registers one URL per group (``set_webhook``) and receives the group's signing secret, derived
  from the service's token key and a random salt kept with the webhook (``AuthService.derived_secret``):
  no secret is stored, every worker process computes the same key, and registering again (a new URL)
  shows the same secret again. ``rotate_secret`` draws a new salt; for the overlap window that follows
  (``webhook_secret_overlap_seconds``, or per rotation) every call carries both signatures, newest first:
  ``X-Signer-Signature: sha256=<new>, sha256=<old>``. A receiver splits the header on commas and accepts
  the call when any entry matches a secret it holds; after the window only the new one is sent.
- A URL is refused when it carries user information (``user:pass@``: credentials do not belong in a
  stored URL, ``url_has_credentials``) or when its destination is not allowed
  (``webhook_destination_not_allowed``, see ``signer.services.destinations``); the destination is
  checked again at delivery. The audit event records the URL's origin (scheme, host, port) only: a path
  or query may hold a receiver's own secret.
- The approvals service calls ``enqueue`` with the writer of the transaction that records the event, so
  an outbox row exists exactly when the event committed (the transactional outbox pattern); the request
  never waits for a receiver.
- ``run`` (a background task started by the composition root) delivers due rows: it claims one with a
  compare-and-set lease (``Writer.claim_outbox``) so that two processes never send it at once, POSTs the
  canonical JSON with ``X-Signer-Signature`` (each entry ``sha256=<hex HMAC-SHA256 of
  "<timestamp>.<body>">``), ``X-Signer-Timestamp`` and ``X-Signer-Event-Id``, and on failure (no answer
  in time, a network error, a refused destination, any non-2xx) retries with exponential back-off
  (``base_delay * 2**attempt``, capped) up to ``max_attempts``. Delivery is at least once: receivers
  dedupe on the event id and should refuse a timestamp far from their clock (replay).
- A channel is a destination that is not an approver group: the composition root registers it
  (``add_channel``: a name starting with ``@``, which no group name can, its signing key and an
  expiry) and a service queues calls to it with ``enqueue_channel`` in its own transaction, exactly
  like the approvals do (``@alerts``: the alerts webhook, ``signer.services.anomalies``). A channel's
  call is retried with the same back-off until it is delivered or ``expiry`` after it was queued (then
  it is given up: ``last_error`` ``expired``, ``signer_alerts_expired_total``); each failed attempt
  counts in ``signer_alert_delivery_failures_total``. A call left for a channel no longer registered
  (the setting was removed) is given up as ``channel_removed``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from signer import metrics
from signer.audit import EventTarget, canonical_json
from signer.crypto.webhook_hmac import webhook_signature
from signer.errors import InvalidRequest, NotFound, SignerError
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.context import RequestContext, iso, require_role, utcnow
from signer.services.destinations import DestinationPolicy, parse_address, resolve
from signer.services.naming import NameKind, check_name
from signer.store import OutboxRecord, Store, WebhookRecord, Writer

log = logging.getLogger("signer.webhooks")

LEASE = timedelta(seconds=60)
GAVE_UP = timedelta(days=36500)
# Finished calls are pruned this often (each worker; deleting is idempotent), at most
# _PRUNE_PAGES pages of _PRUNE_PAGE rows a round, so one round never holds the write lock long.
PRUNE_EVERY = timedelta(hours=1)
_PRUNE_PAGE = 500
_PRUNE_PAGES = 20
ALERTS = "@alerts"


@dataclass(frozen=True, slots=True)
class Channel:
    """A destination that is not an approver group: its signing key (None: unsigned) and how long a
    call to it is retried."""

    secret: bytes | None
    expiry: timedelta


class WebhookTransport(Protocol):
    """One HTTP POST; returns the status code, raises ``OSError`` or ``TimeoutError`` on no answer."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int: ...


# The MAC's home is signer.crypto; the name stays for the callers and tests that use it from here.
signature = webhook_signature


_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_BAD_URL = "url must be an absolute http or https URL (ASCII, no spaces or control characters)"


def check_url(url: str) -> urllib.parse.SplitResult:
    """The URL's parts if it is one the service will store; messages never repeat it."""
    if not url.isascii() or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidRequest(_BAD_URL, code="invalid_field", field="url")
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        raise InvalidRequest(
            "a webhook URL must not carry user information (credentials)",
            code="url_has_credentials",
            field="url",
        )
    try:
        port = parts.port
    except ValueError:
        raise InvalidRequest(_BAD_URL, code="invalid_field", field="url") from None
    host = parts.hostname or ""
    # A host is a DNS name or a plain IP literal: never a percent sign (an IPv6 zone, or "%40" that
    # one parser reads as part of an address and another as '@'), never port 0.
    literal = "%" not in host and parse_address(host) is not None
    if parts.scheme not in ("http", "https") or port == 0 or not (literal or _HOST.match(host)):
        raise InvalidRequest(_BAD_URL, code="invalid_field", field="url")
    return parts


def origin(parts: urllib.parse.SplitResult) -> str:
    """Scheme, host and port: what the audit log records of a webhook URL."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{host}:{port}"


async def check_destination(url: str, destinations: DestinationPolicy) -> urllib.parse.SplitResult:
    """``url``'s parts if it may be stored: well-formed, no user information, an allowed destination
    (every address its host resolves to now); InvalidRequest otherwise, never repeating it."""
    parts = check_url(url)
    host = parts.hostname or ""
    try:
        addresses = await resolve(host, parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, TimeoutError):
        # Not resolvable now: accepted when nothing is listed or the name is (delivery checks its
        # addresses); otherwise nothing shows that it would be allowed.
        addresses = []
        if not destinations.restricted or host in destinations.names:
            return parts
    if not addresses or not all(destinations.address_allowed(host, a) for a in addresses):
        raise InvalidRequest(
            "the webhook destination is not allowed (loopback, private and link-local addresses, and "
            "hosts outside webhook_allowed_destinations when it is set, are refused)",
            code="webhook_destination_not_allowed",
            field="url",
        )
    return parts


def _signatures(
    record: WebhookRecord, secret_for: Callable[[str, str | None], bytes], now: datetime
) -> list[bytes]:
    secrets_now = [secret_for(record.group_name, record.secret_salt)]
    if record.previous_secret_until is not None and now < record.previous_secret_until:
        secrets_now.append(secret_for(record.group_name, record.previous_secret_salt))
    return secrets_now


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
        destinations: DestinationPolicy | None = None,
        secret_overlap: timedelta = timedelta(days=1),
        outbox_retention: timedelta = timedelta(days=30),
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
        self._destinations = destinations or DestinationPolicy()
        self._overlap = secret_overlap
        self._channels: dict[str, Channel] = {}
        self._retention = outbox_retention
        self._pruned_at: datetime | None = None

    def add_channel(self, name: str, *, secret: bytes | None, expiry: timedelta) -> None:
        """Deliver the calls queued for ``name`` (``@`` and a name), signed with ``secret``."""
        if not name.startswith("@"):
            raise ValueError("a channel's name starts with @")
        self._channels[name] = Channel(secret, expiry)

    def secret_for(self, group: str, salt: str | None) -> bytes:
        """The group's secret for ``salt`` (None: the salt-less secret of a webhook set before 0004)."""
        suffix = "" if salt is None else f"\0{salt}"
        return self._auth.derived_secret(f"approval-webhook\0{group}{suffix}")

    async def check_destination_url(self, url: str) -> urllib.parse.SplitResult:
        return await check_destination(url, self._destinations)

    # -- administration ---------------------------------------------------------------------------

    async def set_webhook(self, ctx: RequestContext, group: str, url: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_name(group, field="group", kind=NameKind.IDENTIFIER)
        parts = await self.check_destination_url(url)
        now = self._clock()

        async def unit(writer: Writer) -> WebhookRecord:
            await writer.webhooks.set(
                group, url, now, ctx.caller.principal_id, secret_salt=secrets.token_hex(16)
            )
            writer.append_audit(
                ctx.audit_event(
                    "webhook.set",
                    now,
                    resource=EventTarget("webhook", group),
                    group=group,
                    destination=origin(parts),
                )
            )
            record = await writer.webhooks.get(group)
            assert record is not None  # written just above, in this transaction
            return record

        record = await self._store.submit(unit)
        # The receiver needs the key once; it is derived, never stored, and shown again on a new PUT.
        return {"group": group, "url": url, "secret": self.secret_for(group, record.secret_salt).hex()}

    async def rotate_secret(
        self, ctx: RequestContext, group: str, overlap_seconds: int | None = None
    ) -> dict[str, Any]:
        """A new secret for the group's webhook; the previous one is still used (both signatures sent)
        for ``overlap_seconds`` (default: the setting), and an older previous one is dropped now."""
        require_role(ctx, Role.ADMIN)
        group = check_name(group, field="group", kind=NameKind.IDENTIFIER)
        now = self._clock()
        overlap = self._overlap if overlap_seconds is None else timedelta(seconds=overlap_seconds)
        until = now + overlap

        async def unit(writer: Writer) -> WebhookRecord:
            record = await writer.webhooks.rotate_secret(group, secrets.token_hex(16), until)
            if record is None:
                raise NotFound("no webhook for that group", code="webhook_not_found")
            writer.append_audit(
                ctx.audit_event(
                    "webhook.secret_rotate",
                    now,
                    resource=EventTarget("webhook", group),
                    group=group,
                    previous_secret_until=iso(until),
                )
            )
            return record

        record = await self._store.submit(unit)
        return {
            "group": group,
            "secret": self.secret_for(group, record.secret_salt).hex(),
            "previous_secret_until": iso(until),
        }

    async def delete_webhook(self, ctx: RequestContext, group: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        group = check_name(group, field="group", kind=NameKind.IDENTIFIER)
        now = self._clock()

        async def unit(writer: Writer) -> None:
            if not await writer.webhooks.delete(group):
                raise NotFound("no webhook for that group", code="webhook_not_found")
            writer.append_audit(
                ctx.audit_event("webhook.delete", now, resource=EventTarget("webhook", group), group=group)
            )

        await self._store.submit(unit)
        return {"group": group, "deleted": True}

    # -- enqueueing (inside the caller's transaction) ---------------------------------------------

    async def enqueue(
        self, writer: Writer, groups: Iterable[str], event: Mapping[str, Any], now: datetime
    ) -> int:
        hooks = await writer.webhooks.for_groups(sorted(set(groups)))
        for group, url in sorted(hooks.items()):
            outbox_id = "whk_" + secrets.token_hex(10)
            body = {**event, "id": outbox_id, "group": group, "sent_for": iso(now)}
            await writer.outbox.enqueue(OutboxRecord(outbox_id, group, url, body, now, 0, now))
        return len(hooks)

    async def enqueue_channel(
        self, writer: Writer, channel: str, url: str, event: Mapping[str, Any], now: datetime
    ) -> str:
        """Queue one call to ``channel`` in ``writer``'s transaction; its id (also the body's ``id``
        and the ``X-Signer-Event-Id`` header) is what a receiver dedupes on."""
        outbox_id = "alr_" + secrets.token_hex(10)
        body = {**event, "id": outbox_id}
        await writer.outbox.enqueue(OutboxRecord(outbox_id, channel, url, body, now, 0, now))
        return outbox_id

    async def undelivered_alerts(self, ctx: RequestContext, limit: int = 100) -> dict[str, Any]:
        """The alerts not delivered to the alerts webhook, oldest first: still being tried, or given up
        on (expired, or the alerts webhook removed). Admins and auditors."""
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        if type(limit) is not int or not 1 <= limit <= 1000:
            raise InvalidRequest("limit is 1 to 1000", code="invalid_limit", field="limit")
        now = self._clock()
        async with self._store.read() as reader:
            pending, oldest = await reader.outbox.channel_backlog(ALERTS, now)
            records = await reader.outbox.undelivered(ALERTS, limit + 1)
        alerts = []
        for record in records[:limit]:
            given_up = record.next_attempt_at - now >= timedelta(days=3650)
            event = record.event
            alerts.append(
                {
                    "id": record.id,
                    "state": "given_up" if given_up else "retrying",
                    "signal": event.get("signal"),
                    "principal_id": event.get("principal_id"),
                    "source": event.get("source"),
                    "request_id": event.get("request_id"),
                    "flagged_at": iso(record.created_at),
                    "attempts": record.attempts,
                    "next_attempt_at": None if given_up else iso(record.next_attempt_at),
                    "last_error": record.last_error,
                }
            )
        return {
            "pending": pending,
            "oldest_pending_at": iso(oldest),
            "alerts": alerts,
            "truncated": len(records) > limit,
        }

    def wake(self) -> None:
        self._wake.set()

    # -- delivery ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver forever (until cancelled); a failure of one round is logged, never fatal."""
        while True:
            try:
                await self.deliver_due()
                await self.prune_if_due()
            except SignerError as exc:
                log.warning("webhook round failed", extra={"code": exc.code})
            except Exception as exc:  # noqa: BLE001 - the dispatcher must outlive any one bad round
                log.error("webhook round failed", extra={"error": type(exc).__name__})
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            except TimeoutError:
                pass

    async def prune_if_due(self) -> int:
        """At most once per ``PRUNE_EVERY``: delete the outbox's finished calls (delivered, or given up
        on) older than the retention, a page per transaction, so the table holds what is in flight and
        recent history, not every call ever made. Returns how many went."""
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return 0
        self._pruned_at = now
        pruned = 0
        for _ in range(_PRUNE_PAGES):
            gone = await self._store.submit(lambda w: w.outbox.prune(now, self._retention, _PRUNE_PAGE))
            pruned += gone
            if gone < _PRUNE_PAGE:
                break
        if pruned:
            log.info("webhook outbox pruned", extra={"count": pruned})
        return pruned

    async def deliver_due(self) -> int:
        now = self._clock()
        async with self._store.read() as reader:
            due = await reader.outbox.due(now)
        sent = await asyncio.gather(*(self._deliver(record, now) for record in due))
        return sum(sent)

    async def _deliver(self, record: OutboxRecord, due: datetime) -> int:
        async def claim(writer: Writer) -> bool:
            return await writer.outbox.claim(record.id, due, self._clock() + LEASE)

        if not await self._store.submit(claim):
            return 0
        channel: Channel | None = None
        hook: WebhookRecord | None = None
        gone: str | None = None
        if record.group_name.startswith("@"):
            channel = self._channels.get(record.group_name)
            if channel is None:
                gone = "channel_removed"
            elif self._clock() - record.created_at >= channel.expiry:
                gone = "expired"
                metrics.alert_expired()
                log.error("alert given up undelivered", extra={"id": record.id, "attempts": record.attempts})
        else:
            async with self._store.read() as reader:
                hook = await reader.webhooks.get(record.group_name)
            if hook is None:
                gone = "webhook_deleted"
        if gone is not None:
            # The webhook was removed after this call was queued: nobody is left to tell.
            await self._store.submit(
                lambda w: w.outbox.finish(
                    record.id,
                    delivered_at=None,
                    attempts=record.attempts,
                    next_attempt_at=self._clock() + GAVE_UP,
                    error=gone,
                )
            )
            return 0
        body = canonical_json(record.event)
        sent_at = self._clock()
        timestamp = str(int(sent_at.timestamp()))
        if hook is not None:
            keys = _signatures(hook, self.secret_for, sent_at)
        else:
            keys = [] if channel is None or channel.secret is None else [channel.secret]
        headers = {
            "Content-Type": "application/json",
            "X-Signer-Event-Id": record.id,
            "X-Signer-Timestamp": timestamp,
        }
        if keys:
            headers["X-Signer-Signature"] = ", ".join(signature(key, timestamp, body) for key in keys)
        error: str | None
        try:
            status = await self._transport.post(record.url, body, headers, self._timeout)
            error = None if 200 <= status < 300 else f"status {status}"
        except (OSError, TimeoutError) as exc:
            error = type(exc).__name__
        now = self._clock()
        attempts = record.attempts + 1
        if error is None:
            finish: Callable[[Writer], Awaitable[None]] = lambda w: w.outbox.finish(  # noqa: E731
                record.id, delivered_at=now, attempts=attempts, next_attempt_at=now, error=None
            )
        else:
            delay = min(self._base * 2 ** (attempts - 1), self._max_delay)
            if channel is not None:
                # A channel's call is retried until it expires (checked when it is next due).
                metrics.alert_failed()
                retry_at = now + timedelta(seconds=delay)
            else:
                retry_at = now + (GAVE_UP if attempts >= self._max_attempts else timedelta(seconds=delay))
            finish = lambda w: w.outbox.finish(  # noqa: E731
                record.id, delivered_at=None, attempts=attempts, next_attempt_at=retry_at, error=error
            )
        await self._store.submit(finish)
        return 1 if error is None else 0
