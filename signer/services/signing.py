"""Signing: the relayer's entry to the decision pipeline, one method per signing operation.

Each method names the operation's payload kind (``payloads``), hands the request's fields to it, and
runs the result through the one decision pipeline (``pipeline``): load facts, check, judge, sign in the
token, commit with the audit event, release. A request whose policy asks for approval is answered with
``{"state": "pending_approval", ...}`` (HTTP 202) and nothing is signed; the approvals service runs it
through the same pipeline once approved. ``dry_run`` judges a request without signing, reserving or
auditing it. This module holds no decision logic of its own and never talks to the HSM or the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signer.errors import Forbidden
from signer.identity import Role
from signer.services.context import RequestContext
from signer.services.idempotency import Idempotency, IdempotencyGate
from signer.services.payloads import payload_kind
from signer.services.pipeline import DecisionPipeline, Order


class SigningService:
    def __init__(self, pipeline: DecisionPipeline) -> None:
        self._pipeline = pipeline

    @property
    def idempotency(self) -> IdempotencyGate:
        """Who may execute a request named by an Idempotency-Key, and how long its duplicates wait."""
        return self._pipeline.idempotency

    async def sign_transaction(
        self,
        ctx: RequestContext,
        key_id: str,
        transaction: Mapping[str, Any] | None,
        raw: str | None,
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        fields = {"transaction": transaction, "raw": raw}
        return await self._sign(ctx, "sign_transaction", key_id, fields, idempotency)

    async def sign_message(
        self, ctx: RequestContext, key_id: str, message: bytes, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        return await self._sign(ctx, "sign_message", key_id, {"message": message}, idempotency)

    async def sign_typed_data(
        self,
        ctx: RequestContext,
        key_id: str,
        typed_data: Mapping[str, Any],
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        return await self._sign(ctx, "sign_typed_data", key_id, {"typed_data": typed_data}, idempotency)

    async def sign_digest(
        self, ctx: RequestContext, key_id: str, digest_hex: str, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        return await self._sign(ctx, "sign_raw", key_id, {"digest": digest_hex}, idempotency)

    async def sign_authorization(
        self,
        ctx: RequestContext,
        key_id: str,
        authorization: Mapping[str, Any],
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        """An EIP-7702 authorisation (``chainId``, ``address``, ``nonce``) signed on its own."""
        fields = {"authorization": authorization}
        return await self._sign(ctx, "sign_authorization", key_id, fields, idempotency)

    async def _sign(
        self,
        ctx: RequestContext,
        operation: str,
        key_id: str,
        fields: Mapping[str, Any],
        idempotency: Idempotency | None,
    ) -> dict[str, Any]:
        payload = payload_kind(operation)
        order = Order(ctx, payload, key_id, payload.parse(fields), idempotency)
        return await self._pipeline.run(order)

    async def dry_run(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        payload: Mapping[str, Any],
        *,
        principal_id: str | None = None,
        candidate: tuple[str, int, str | None, tuple[str, str] | None] | None = None,
    ) -> dict[str, Any]:
        """Evaluate a sign request against the live policy (or with a candidate version in place)
        using the ledger as it is now; nothing is signed, reserved or counted. A service principal
        asks for itself; an admin may name any principal."""
        if ctx.caller.role is Role.ADMIN:
            subject_id = principal_id or ctx.caller.principal_id
        elif ctx.caller.role is Role.SERVICE and principal_id in (None, ctx.caller.principal_id):
            subject_id = ctx.caller.principal_id
        else:
            raise Forbidden(
                "dry-run is for admins, or for a service principal about itself", code="role_required"
            )
        kind = payload_kind(operation)
        prepare = kind.parse(payload)
        return await self._pipeline.dry_run(ctx, subject_id, kind, key_id, prepare, candidate)
