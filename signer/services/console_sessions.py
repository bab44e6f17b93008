"""Console sessions: what the approvers' web console keeps between pages, on the server side.

- Signing in with an approver's, admin's or auditor's access token opens a session: 32 random bytes
  go to the browser (the cookie); the database keeps only their keyed digest (HMAC under the token
  key, through ``AuthService.derived_secret``), so neither a database dump nor the audit log yields a
  usable cookie. The cookie is not the token, and the token is not kept: the session holds the token's id.
- A session ends at its absolute expiry (``console_session_max_seconds`` after sign-in), after
  ``console_session_idle_seconds`` without a page, on sign-out (its row is deleted, so replaying the
  old cookie finds nothing), and at once when the token it was opened with is revoked or expires or
  its principal is disabled or its role no longer opens one: every page re-reads the token's row.
- Each session has its own CSRF token (an HMAC of its id), so a new sign-in never reuses one.
- Sign-in and sign-out are audited (``console.sign_in``, ``console.sign_out``) with the session's public
  id; an expired or ended session is deleted when next presented, and sign-in purges expired ones.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from signer.audit import AuditEvent, Outcome
from signer.errors import SignerError, Unauthenticated
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.context import RequestContext, iso, utcnow
from signer.store import ConsoleSessionRecord, Store, Writer

_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")

# Who may open a console session: people (approvers vote; admins and auditors read the operator pages).
CONSOLE_ROLES = frozenset({Role.APPROVER, Role.ADMIN, Role.AUDITOR})


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A live session and the caller it stands for (what a console page needs)."""

    record: ConsoleSessionRecord
    ctx: RequestContext
    csrf: str


class ConsoleSessions:
    def __init__(
        self,
        store: Store,
        auth: AuthService,
        *,
        idle: timedelta = timedelta(minutes=15),
        max_age: timedelta = timedelta(hours=8),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._auth = auth
        self._idle = idle
        self._max_age = max_age
        self._clock = clock

    def _digest(self, secret: str) -> bytes:
        return self._auth.derived_secret(f"console-session\0{secret}")

    def _csrf(self, record: ConsoleSessionRecord) -> str:
        return self._auth.derived_secret(f"console-csrf\0{record.id}").hex()

    async def sign_in(self, token: str, request_id: str) -> tuple[str, ConsoleSession]:
        """Open a session for an approver's, admin's or auditor's access token (never a service's);
        returns the cookie value (shown once)."""
        ctx = await self._auth.authenticate(f"Bearer {token}", request_id)
        if ctx.caller.role not in CONSOLE_ROLES:
            raise Unauthenticated("not a console token", code="console_role_required")
        now = self._clock()
        secret = secrets.token_urlsafe(32)
        record = ConsoleSessionRecord(
            id="cs_" + secrets.token_hex(12),
            digest=self._digest(secret),
            principal_id=ctx.caller.principal_id,
            token_id=ctx.caller.token_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self._max_age,
        )

        async def unit(writer: Writer) -> None:
            await self._auth.recheck(writer, ctx)
            await writer.console_sessions.purge(now, now - self._idle)
            await writer.console_sessions.insert(record)
            writer.append_audit(
                AuditEvent.of(
                    "console.sign_in",
                    at=now,
                    outcome=Outcome.ALLOWED,
                    actor=ctx.actor(),
                    request_id=request_id,
                    session_id=record.id,
                    expires_at=iso(record.expires_at),
                )
            )

        await self._store.submit(unit)
        return secret, ConsoleSession(record, ctx, self._csrf(record))

    async def resume(self, cookie: str | None, request_id: str) -> ConsoleSession | None:
        """The live session a cookie names, its activity recorded; None (and the row gone) otherwise."""
        if not cookie or not _COOKIE_RE.match(cookie):
            return None
        async with self._store.read() as reader:
            record = await reader.console_sessions.get(self._digest(cookie))
        if record is None:
            return None
        now = self._clock()
        if now >= record.expires_at or now - record.last_seen_at >= self._idle:
            await self._end(record.id)
            return None
        try:
            ctx = await self._auth.context_for_token(record.token_id, request_id)
        except SignerError:
            await self._end(record.id)
            return None
        if ctx.caller.principal_id != record.principal_id or ctx.caller.role not in CONSOLE_ROLES:
            await self._end(record.id)
            return None

        async def touch(writer: Writer) -> bool:
            return await writer.console_sessions.touch(record.id, now)

        if not await self._store.submit(touch):
            return None  # signed out meanwhile
        return ConsoleSession(record, ctx, self._csrf(record))

    async def sign_out(self, session: ConsoleSession) -> None:
        now = self._clock()

        async def unit(writer: Writer) -> None:
            if await writer.console_sessions.delete(session.record.id):
                writer.append_audit(
                    session.ctx.audit_event("console.sign_out", now, session_id=session.record.id)
                )

        await self._store.submit(unit)

    async def _end(self, session_id: str) -> None:
        async def unit(writer: Writer) -> None:
            await writer.console_sessions.delete(session_id)

        await self._store.submit(unit)
