"""Client certificates mapped to principals: register, list and revoke them (admin).

A registered certificate is a ``tokens`` row of kind ``cert`` whose id is the certificate's SHA-256
fingerprint (hex, of the DER) and whose digest is that fingerprint's bytes; it expires at the
certificate's notAfter (or earlier, with ``ttl_seconds``). Being a token row, everything that ends a
bearer token ends it the same way: revocation (here, or ``DELETE /v1/tokens/{fingerprint}``) and
disabling the principal take effect on the very next request, and the signing pipeline's commit re-checks
it under the write lock. Checking a presented certificate is ``AuthService.authenticate_certificate``;
that the certificate chains to ``tls_client_ca_file`` is the TLS layer's job. Every change is audited
(``client_certificate.register``, ``client_certificate.revoke``); the PEM is never stored, logged or echoed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from signer.audit import EventTarget
from signer.crypto.client_certs import read_certificate
from signer.errors import Conflict, Forbidden, InvalidRequest, NotFound
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role
from signer.store import Store, TokenRecord, Writer

__all__ = ["CERT_KIND", "ClientCertService"]

CERT_KIND = "cert"


def _view(record: TokenRecord) -> dict[str, Any]:
    return {
        "fingerprint": record.id,
        "principal_id": record.principal_id,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at) if record.expires_at is not None else None,
        "revoked_at": iso(record.revoked_at) if record.revoked_at is not None else None,
    }


class ClientCertService:
    def __init__(self, store: Store, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def register(
        self, ctx: RequestContext, principal_id: str, pem: str, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        cert = read_certificate(pem)
        now = self._clock()
        expires = cert.not_after
        if ttl_seconds is not None:
            expires = min(expires, now + timedelta(seconds=ttl_seconds))
        if expires <= now:
            raise InvalidRequest(
                "the certificate has expired", code="certificate_expired", field="certificate"
            )

        async def unit(writer: Writer) -> dict[str, Any]:
            principal = await writer.principals.get(principal_id)
            if principal is None:
                raise NotFound("no such principal", code="principal_not_found")
            if principal.disabled_at is not None:
                raise Forbidden("principal is disabled", code="principal_disabled")
            if principal.role != Role.SERVICE.value:
                raise Conflict("client certificates are for service principals", code="role_mismatch")
            if await writer.tokens.get(cert.fingerprint) is not None:
                raise Conflict(
                    "that certificate is registered already (a revoked one cannot be registered again)",
                    code="certificate_registered",
                )
            record = TokenRecord(
                id=cert.fingerprint,
                principal_id=principal.id,
                kind=CERT_KIND,
                digest=bytes.fromhex(cert.fingerprint),
                family_id=cert.fingerprint,
                created_at=now,
                expires_at=expires,
            )
            await writer.tokens.insert(record)
            writer.append_audit(
                ctx.audit_event(
                    "client_certificate.register",
                    now,
                    resource=EventTarget("principal", principal.id),
                    principal_id=principal.id,
                    fingerprint=cert.fingerprint,
                    subject=cert.subject,
                    expires_at=iso(expires),
                )
            )
            return {**_view(record), "subject": cert.subject, "not_after": iso(cert.not_after)}

        return await self._store.submit(unit)

    async def list(self, ctx: RequestContext, principal_id: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        async with self._store.read() as reader:
            if await reader.principals.get(principal_id) is None:
                raise NotFound("no such principal", code="principal_not_found")
            records = await reader.tokens.of_principal(principal_id, CERT_KIND)
        return {"items": [_view(r) for r in records]}

    async def revoke(self, ctx: RequestContext, principal_id: str, fingerprint: str) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN)
        now = self._clock()
        wanted = fingerprint.lower()

        async def unit(writer: Writer) -> dict[str, Any]:
            record = await writer.tokens.get(wanted)
            if record is None or record.kind != CERT_KIND or record.principal_id != principal_id:
                raise NotFound("no such client certificate", code="certificate_not_found")
            if record.revoked_at is None:
                await writer.tokens.revoke(wanted, now)
            writer.append_audit(
                ctx.audit_event(
                    "client_certificate.revoke",
                    now,
                    resource=EventTarget("principal", principal_id),
                    principal_id=principal_id,
                    fingerprint=wanted,
                )
            )
            return {"fingerprint": wanted, "principal_id": principal_id, "revoked": True}

        return await self._store.submit(unit)
