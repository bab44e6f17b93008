"""Authentication and credentials: turning a bearer token into a caller, issuing, refreshing, revoking.

Every principal holds an access token (short-lived, lifetime set per role) and a refresh token (long-lived,
single use). Refreshing burns the refresh token and issues a new pair in the same *family*; presenting a
refresh token that was already used revokes the whole family, because only a thief or a confused client
replays one. With ``refresh_reuse_grace_seconds`` > 0, a refresh token that a refresh used less than that
long ago (not one an admin revoked, and only while its family lives) gets another new pair instead: replicas
of one relayer sharing a credential file may refresh at the same moment; reuse after the grace is a replay.
Revocation bumps the facts epoch, so it takes effect on the very next request in every process.
A TLS client certificate registered to a principal (``services.client_certs``)
authenticates through ``authenticate_certificate`` when no bearer token is presented.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from signer.audit import AuditEvent, EventTarget, Outcome
from signer.errors import Forbidden, NotFound, Unauthenticated
from signer.identity import (
    MintedToken,
    PresentedToken,
    Role,
    TokenKind,
    bearer_from_header,
    mint_token,
    parse_token,
    token_matches,
)
from signer.services.context import Caller, Clock, RequestContext, iso, require_role, utcnow
from signer.services.facts import FactsCache
from signer.store import PrincipalRecord, Store, TokenRecord, Writer

_GENERIC = "missing or invalid credentials"


class AuthService:
    def __init__(
        self,
        store: Store,
        facts: FactsCache,
        token_key: bytes,
        *,
        access_ttl: Mapping[str, int],
        refresh_ttl: int,
        refresh_grace: int = 0,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._facts = facts
        self._clock = clock
        self._key = token_key
        self._access_ttl = dict(access_ttl)
        self._refresh_ttl = refresh_ttl
        self._refresh_grace = timedelta(seconds=refresh_grace)

    # -- checking ---------------------------------------------------------------------------------

    async def authenticate(
        self, header: str | None, request_id: str, *, cached: bool = False
    ) -> RequestContext:
        """Check a bearer token. ``cached=True`` may answer from the facts cache: only for callers whose
        commit re-checks the token under the write lock when the facts epoch moved (signing does)."""
        presented = bearer_from_header(header)
        if presented.kind is not TokenKind.ACCESS:
            # Same answer as a wrong token: a refresh token is only for /v1/auth/refresh.
            token_matches(self._key, presented, None)
            raise Unauthenticated(_GENERIC)
        record, epoch = await self._token(presented.token_id, cached=cached)
        caller = self._check(presented, record, self._clock())
        return RequestContext(request_id=request_id, caller=caller, epoch=epoch)

    async def authenticate_certificate(
        self, der: bytes, request_id: str, *, cached: bool = False
    ) -> RequestContext:
        """The caller behind a TLS client certificate the handshake verified: the principal it is
        registered for (a ``cert`` token row keyed by its SHA-256 fingerprint). Unregistered:
        ``Unauthenticated(client_certificate_unknown)``; revoked, expired or its principal disabled: the
        same codes as a bearer token. ``cached`` as for ``authenticate``."""
        record, epoch = await self._token(hashlib.sha256(der).hexdigest(), cached=cached)
        if record is None or record.kind != "cert":
            raise Unauthenticated(
                "the client certificate is not registered to a principal", code="client_certificate_unknown"
            )
        self._still_good(record, self._clock())
        caller = Caller(
            principal_id=record.principal_id,
            name=record.principal_name,
            role=Role(record.principal_role),
            token_id=record.id,
        )
        return RequestContext(request_id=request_id, caller=caller, epoch=epoch)

    async def _token(self, token_id: str, *, cached: bool) -> tuple[TokenRecord | None, int]:
        hit = self._facts.tokens.get(token_id) if cached else None
        if hit is not None:
            return hit, self._facts.epoch
        async with self._store.read() as reader:
            epoch = await reader.epoch()
            record = await reader.tokens.get(token_id)
        if record is not None and record.revoked_at is None and self._facts.observe(epoch):
            self._facts.tokens.put(token_id, record)
        return record, epoch

    def _check(self, presented: PresentedToken, record: TokenRecord | None, now: datetime) -> Caller:
        if not token_matches(self._key, presented, record.digest if record is not None else None):
            raise Unauthenticated(_GENERIC)
        assert record is not None  # token_matches is False for a missing record
        if record.kind != presented.kind.value:
            raise Unauthenticated(_GENERIC)
        if record.revoked_at is not None:
            raise Unauthenticated("token has been revoked", code="token_revoked")
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated("token has expired", code="token_expired")
        if record.principal_disabled_at is not None:
            raise Unauthenticated("principal is disabled", code="principal_disabled")
        return Caller(
            principal_id=record.principal_id,
            name=record.principal_name,
            role=Role(record.principal_role),
            token_id=record.id,
        )

    async def context_for_token(self, token_id: str, request_id: str) -> RequestContext:
        """The caller behind an access token the service already checked once (a console session holds
        its id, never its value): read afresh, so a revoked or expired token or a disabled principal
        answers Unauthenticated at once."""
        async with self._store.read() as reader:
            epoch = await reader.epoch()
            record = await reader.tokens.get(token_id)
        if record is None or record.kind != TokenKind.ACCESS.value:
            raise Unauthenticated(_GENERIC)
        self._still_good(record, self._clock())
        return RequestContext(
            request_id=request_id,
            caller=Caller(
                principal_id=record.principal_id,
                name=record.principal_name,
                role=Role(record.principal_role),
                token_id=record.id,
            ),
            epoch=epoch,
        )

    @staticmethod
    def _still_good(record: TokenRecord, now: datetime) -> None:
        if record.revoked_at is not None:
            raise Unauthenticated("token has been revoked", code="token_revoked")
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated("token has expired", code="token_expired")
        if record.principal_disabled_at is not None:
            raise Unauthenticated("principal is disabled", code="principal_disabled")

    def derived_secret(self, purpose: str) -> bytes:
        """A key for ``purpose`` derived from the token key (HMAC), so no further secret is stored."""
        return hmac.new(self._key, f"derived\0{purpose}".encode(), hashlib.sha256).digest()

    async def recheck(self, writer: Writer, ctx: RequestContext, now: datetime | None = None) -> None:
        """Inside a write transaction: is the caller's token still good? Raises Unauthenticated if not.
        ``now`` defaults to this service's clock (token validity is judged on the clock that issued it)."""
        if now is None:
            now = self._clock()
        record = await writer.tokens.get(ctx.caller.token_id)
        if record is None or record.revoked_at is not None:
            raise Unauthenticated("token has been revoked", code="token_revoked")
        if record.expires_at is not None and now >= record.expires_at:
            raise Unauthenticated("token has expired", code="token_expired")
        if record.principal_disabled_at is not None:
            raise Unauthenticated("principal is disabled", code="principal_disabled")

    # -- issuing ----------------------------------------------------------------------------------

    async def issue_credentials(
        self, writer: Writer, principal: PrincipalRecord, now: datetime, family_id: str | None = None
    ) -> dict[str, Any]:
        """Mint an access + refresh pair inside ``writer``'s transaction; the values are shown once."""
        family = family_id or secrets.token_hex(12)
        access = mint_token(self._key, TokenKind.ACCESS)
        refresh = mint_token(self._key, TokenKind.REFRESH)
        access_expires = now + timedelta(seconds=self._access_ttl.get(principal.role, 900))
        refresh_expires = now + timedelta(seconds=self._refresh_ttl)
        for minted, expires in ((access, access_expires), (refresh, refresh_expires)):
            await writer.tokens.insert(
                TokenRecord(
                    id=minted.token_id,
                    principal_id=principal.id,
                    kind=minted.kind.value,
                    digest=minted.digest,
                    family_id=family,
                    created_at=now,
                    expires_at=expires,
                    revoked_at=None,
                    principal_name=principal.name,
                    principal_role=principal.role,
                    principal_disabled_at=principal.disabled_at,
                )
            )
        return _credentials(access, access_expires, refresh, refresh_expires)

    async def refresh(self, refresh_value: str, request_id: str) -> dict[str, Any]:
        presented = parse_token(refresh_value)
        now = self._clock()
        if presented.kind is not TokenKind.REFRESH:
            token_matches(self._key, presented, None)
            raise Unauthenticated(_GENERIC)
        replayed: list[str] = []

        async def unit(writer: Writer) -> dict[str, Any]:
            record = await writer.tokens.get(presented.token_id)
            if not token_matches(self._key, presented, record.digest if record is not None else None):
                raise Unauthenticated(_GENERIC)
            assert record is not None
            if record.kind != TokenKind.REFRESH.value:
                raise Unauthenticated(_GENERIC)
            grace = record.revoked_at is not None and await self._within_grace(writer, record, now)
            if record.revoked_at is not None and not grace:
                replayed.append(record.family_id)
                raise Unauthenticated("refresh token was already used", code="token_revoked")
            if record.expires_at is not None and now >= record.expires_at:
                raise Unauthenticated("token has expired", code="token_expired")
            principal = await writer.principals.get(record.principal_id)
            if principal is None or principal.disabled_at is not None:
                raise Unauthenticated("principal is disabled", code="principal_disabled")
            if not grace:
                await writer.tokens.revoke(record.id, now)
            credentials = await self.issue_credentials(writer, principal, now, record.family_id)
            writer.append_audit(
                AuditEvent.of(
                    "auth.refresh",
                    at=now,
                    outcome=Outcome.ALLOWED,
                    actor={"principal_id": principal.id, "name": principal.name, "role": principal.role},
                    request_id=request_id,
                    resource=EventTarget("token", record.id),
                    token_id=record.id,
                    family_id=record.family_id,
                    new_token_ids=[credentials["access_token_id"], credentials["refresh_token_id"]],
                    reused_within_grace=grace,
                )
            )
            return credentials

        try:
            return await self._store.submit(unit)
        except Unauthenticated:
            if replayed:
                await self._revoke_family(replayed[0], request_id, now)
            raise

    async def _within_grace(self, writer: Writer, record: TokenRecord, now: datetime) -> bool:
        """May this already-revoked refresh token be used once more? Only when a refresh used it (not an
        admin's revoke), less than ``refresh_reuse_grace_seconds`` ago, and its family is still alive:
        another replica sharing the same credential file refreshing at about the same time."""
        if not self._refresh_grace or record.revoked_at is None:
            return False
        if now >= record.revoked_at + self._refresh_grace:
            return False
        return await writer.tokens.rotated_with_live_successor(record.family_id, record.revoked_at, now)

    async def _revoke_family(self, family_id: str, request_id: str, now: datetime) -> None:
        async def unit(writer: Writer) -> None:
            await writer.tokens.revoke_family(family_id, now)
            writer.append_audit(
                AuditEvent.of(
                    "auth.refresh_replayed",
                    at=now,
                    outcome=Outcome.DENIED,
                    actor=None,
                    request_id=request_id,
                    family_id=family_id,
                    action="revoked every token of the family",
                )
            )

        await self._store.submit(unit)

    async def revoke(self, ctx: RequestContext, token_id: str) -> dict[str, Any]:
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            record = await writer.tokens.get(token_id)
            own = record is not None and record.principal_id == ctx.caller.principal_id
            if record is None or not (own or ctx.caller.role is Role.ADMIN):
                raise NotFound("no such token", code="token_not_found")
            if record.revoked_at is None:
                await writer.tokens.revoke(token_id, now)
            writer.append_audit(
                ctx.audit_event(
                    "token.revoke",
                    now,
                    resource=EventTarget("token", token_id),
                    token_id=token_id,
                    principal_id=record.principal_id,
                )
            )
            return {"token_id": token_id, "revoked": True}

        return await self._store.submit(unit)

    async def issue_for_principal(self, ctx: RequestContext, principal_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        now = self._clock()

        async def unit(writer: Writer) -> dict[str, Any]:
            principal = await writer.principals.get(principal_id)
            if principal is None:
                raise NotFound("no such principal", code="principal_not_found")
            if principal.disabled_at is not None:
                raise Forbidden("principal is disabled", code="principal_disabled")
            credentials = await self.issue_credentials(writer, principal, now)
            writer.append_audit(
                ctx.audit_event(
                    "token.issue",
                    now,
                    resource=EventTarget("principal", principal.id),
                    principal_id=principal.id,
                    new_token_ids=[credentials["access_token_id"], credentials["refresh_token_id"]],
                )
            )
            return credentials

        return await self._store.submit(unit)


def _credentials(
    access: MintedToken, access_expires: datetime, refresh: MintedToken, refresh_expires: datetime
) -> dict[str, Any]:
    return {
        "token_type": "Bearer",
        "access_token": access.value,
        "access_token_id": access.token_id,
        "access_token_expires_at": iso(access_expires),
        "refresh_token": refresh.value,
        "refresh_token_id": refresh.token_id,
        "refresh_token_expires_at": iso(refresh_expires),
    }
