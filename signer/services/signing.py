"""Signing: decide, sign inside the token, check the signature, record the decision, then release.

The order is the point. A request is authorised from facts (cached per process, see ``facts``), its
payload parsed into the exact digest to sign, the digest signed by the HSM, and the signature checked by an
independent implementation (recovery to the key's address for secp256k1, ``cryptography`` for P-256 and
Ed25519). Only then is the audit event written, in a group-commit transaction that re-checks the facts
under the write lock if anything changed since they were read; the response leaves after that commit.
If the event cannot be written the signature is discarded and the caller gets 503: nothing is released
unaudited. Every outcome after authentication (allowed, denied, failed) is audited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policy import Grant, GrantRequest, evaluate_grants
from signer import metrics
from signer.errors import (
    AuditUnavailable,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    InvalidRequest,
    NotFound,
    SignerError,
    Unprocessable,
)
from signer.eth import (
    UnsignedTransaction,
    decode_unsigned_transaction,
    message_signature_bytes,
    parse_transaction,
    personal_message_digest,
    recoverable_signature,
    typed_data_digest,
)
from signer.hsm import Curve, KeyVault
from signer.identity import Role
from signer.services.auth import AuthService
from signer.services.context import RequestContext, iso, utcnow
from signer.services.facts import FactsCache
from signer.services.verify import check_ed25519, check_p256
from signer.store import GrantRecord, KeyRecord, Store, Writer

# Which curves each operation can be performed with.
_CURVES = {
    "sign_transaction": {Curve.SECP256K1},
    "sign_typed_data": {Curve.SECP256K1},
    "sign_message": {Curve.SECP256K1, Curve.P256, Curve.ED25519},
    "sign_raw": {Curve.SECP256K1, Curve.P256},
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the token will sign and what the audit log says about it."""

    data: bytes
    summary: dict[str, Any]
    finish: Callable[[KeyRecord, bytes], dict[str, Any]]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _to_grants(records: list[GrantRecord]) -> list[Grant]:
    return [
        Grant(
            grant_id=g.id,
            principal_id=g.principal_id,
            resource_type=g.resource_type,
            resource_id=g.resource_id,
            operations=frozenset(g.operations),
            expires_at=g.expires_at,
            revoked=g.revoked_at is not None,
        )
        for g in records
    ]


def _authorize(
    ctx: RequestContext, key: KeyRecord | None, grants: list[GrantRecord], operation: str, now: datetime
) -> tuple[KeyRecord, list[dict[str, str]]]:
    """Raise the caller-facing error for a request that may not proceed; return the key and reasons."""
    if key is None:
        raise NotFound("no such key", code="key_not_found")
    if ctx.caller.role is not Role.SERVICE:
        # Signing is for service principals; people act through grants on their own service accounts.
        raise Forbidden("only service principals sign", code="role_required")
    live = [g for g in grants if g.revoked_at is None and g.resource_id == key.id]
    if not live:
        # No grant at all on this key: indistinguishable from a key that does not exist.
        raise NotFound("no such key", code="key_not_found")
    decision = evaluate_grants(
        GrantRequest(ctx.caller.principal_id, operation, "key", key.id), _to_grants(live), now=now
    )
    metrics.policy_decision(decision.effect.value, (reason.rule_id for reason in decision.reasons))
    if not decision.allowed:
        raise Forbidden(
            "the operation is not granted on this key",
            code="operation_not_granted",
            reasons=decision.reasons_as_dicts(),
        )
    if Curve(key.curve) not in _CURVES[operation]:
        raise Unprocessable(
            f"{operation} is not possible with a {key.curve} key", code="unsupported_operation"
        )
    if key.state != "active":
        raise Conflict("the key is disabled", code="key_disabled")
    return key, decision.reasons_as_dicts()


class SigningService:
    def __init__(self, store: Store, hsm: KeyVault, facts: FactsCache, auth: AuthService) -> None:
        self._store = store
        self._hsm = hsm
        self._facts = facts
        self._auth = auth

    # -- the four operations ----------------------------------------------------------------------

    async def sign_transaction(
        self, ctx: RequestContext, key_id: str, transaction: Mapping[str, Any] | None, raw: str | None
    ) -> dict[str, Any]:
        def prepare(key: KeyRecord) -> Prepared:
            if (transaction is None) == (raw is None):
                raise InvalidRequest(
                    "give exactly one of 'transaction' (fields) or 'raw' (unsigned serialised hex)",
                    code="invalid_request",
                )
            tx = (
                parse_transaction(_rpc_fields(transaction, key))
                if transaction is not None
                else decode_unsigned_transaction(_unhex(raw or "", "raw"))
            )
            return Prepared(tx.digest, _tx_summary(tx), lambda key, rs: _finish_transaction(tx, key, rs))

        return await self._sign(ctx, key_id, "sign_transaction", prepare)

    async def sign_message(self, ctx: RequestContext, key_id: str, message: bytes) -> dict[str, Any]:
        def prepare(key: KeyRecord) -> Prepared:
            curve = Curve(key.curve)
            if curve is Curve.SECP256K1:
                digest = personal_message_digest(message)
                return Prepared(
                    digest,
                    {"scheme": "eip191", "message_length": len(message), "digest": _hex(digest)},
                    lambda k, rs: _finish_eth_message(digest, k, rs),
                )
            if curve is Curve.P256:
                digest = hashlib.sha256(message).digest()
                return Prepared(
                    digest,
                    {"scheme": "ecdsa-p256-sha256", "message_length": len(message), "digest": _hex(digest)},
                    lambda k, rs: _finish_p256(digest, k, rs),
                )
            return Prepared(
                message,
                {
                    "scheme": "ed25519",
                    "message_length": len(message),
                    "message_sha256": _hex(hashlib.sha256(message).digest()),
                },
                lambda k, sig: _finish_ed25519(message, k, sig),
            )

        return await self._sign(ctx, key_id, "sign_message", prepare)

    async def sign_typed_data(
        self, ctx: RequestContext, key_id: str, typed_data: Mapping[str, Any]
    ) -> dict[str, Any]:
        def prepare(_key: KeyRecord) -> Prepared:
            typed = typed_data_digest(typed_data)
            summary = {
                "scheme": "eip712",
                "primary_type": typed.primary_type,
                "domain": typed.domain,
                "digest": _hex(typed.digest),
            }
            return Prepared(typed.digest, summary, lambda k, rs: _finish_eth_message(typed.digest, k, rs))

        return await self._sign(ctx, key_id, "sign_typed_data", prepare)

    async def sign_digest(self, ctx: RequestContext, key_id: str, digest_hex: str) -> dict[str, Any]:
        def prepare(_key: KeyRecord) -> Prepared:
            digest = _unhex(digest_hex, "digest")
            if len(digest) != 32:
                raise InvalidRequest("digest must be exactly 32 bytes", code="invalid_digest", field="digest")
            summary = {"scheme": "raw_digest", "blind": True, "digest": _hex(digest)}

            def finish(key: KeyRecord, rs: bytes) -> dict[str, Any]:
                if Curve(key.curve) is Curve.P256:
                    return _finish_p256(digest, key, rs)
                return _finish_eth_message(digest, key, rs)

            return Prepared(digest, summary, finish)

        return await self._sign(ctx, key_id, "sign_raw", prepare)

    # -- the pipeline -----------------------------------------------------------------------------

    async def _sign(
        self,
        ctx: RequestContext,
        key_id: str,
        operation: str,
        prepare: Callable[[KeyRecord], Prepared],
    ) -> dict[str, Any]:
        now = utcnow()
        event: dict[str, Any] = {
            "kind": f"sign.{operation.removeprefix('sign_')}",
            "operation": operation,
            "request_id": ctx.request_id,
            "at": iso(now),
            "actor": ctx.actor(),
            "key_id": key_id,
        }
        key: KeyRecord | None = None
        try:
            key, reasons, epoch = await self._authorized(ctx, key_id, operation, now)
            prepared = prepare(key)
            event["request"] = prepared.summary
            raw = await self._hsm.sign(key.hsm_id, Curve(key.curve), prepared.data)
            response = prepared.finish(key, raw)
        except SignerError as exc:
            _count(key, operation, exc)
            await self._record_refusal(event, exc)
            raise
        event["reasons"] = reasons
        event["result"] = {k: response[k] for k in ("signer", "transaction_hash") if k in response}

        async def unit(writer: Writer) -> None:
            if writer.epoch != epoch:
                # A fact moved since we read it: decide again from what is committed now.
                await self._auth.recheck(writer, ctx, now)
                fresh_key = await writer.get_key(key_id)
                fresh_grants = await writer.active_grants(ctx.caller.principal_id, "key", key_id, now)
                _authorize(ctx, fresh_key, fresh_grants, operation, now)
                self._facts.observe(writer.epoch)
            writer.append_audit({**event, "outcome": "allowed"})

        try:
            await self._store.submit(unit)
        except (DatabaseUnavailable, AuditUnavailable) as exc:
            # The signature is dropped here and never leaves. Recording the failure would wait for the
            # same database that just failed, past the caller's deadline: the store logged it.
            _count(key, operation, exc)
            raise
        except SignerError as exc:
            # The signature is dropped here and never leaves.
            _count(key, operation, exc)
            await self._record_refusal(event, exc)
            raise
        metrics.signature(key.id, key.curve, operation, "allowed")
        return response

    async def _authorized(
        self, ctx: RequestContext, key_id: str, operation: str, now: datetime
    ) -> tuple[KeyRecord, list[dict[str, str]], int]:
        key, grants, epoch, cached = await self._facts_for(ctx, key_id, now, fresh=False)
        try:
            authorized, reasons = _authorize(ctx, key, grants, operation, now)
        except SignerError:
            if not cached:
                raise
            # Never refuse on cached facts alone: read them again.
            key, grants, epoch, _ = await self._facts_for(ctx, key_id, now, fresh=True)
            authorized, reasons = _authorize(ctx, key, grants, operation, now)
        return authorized, reasons, min(epoch, ctx.epoch)

    async def _facts_for(
        self, ctx: RequestContext, key_id: str, now: datetime, *, fresh: bool
    ) -> tuple[KeyRecord | None, list[GrantRecord], int, bool]:
        """The key and the caller's grants on it, the epoch they are valid at, and whether cached."""
        principal_id = ctx.caller.principal_id
        if not fresh:
            key = self._facts.keys.get(key_id)
            grants = self._facts.grants.get((principal_id, key_id))
            if key is not None and grants is not None:
                return key, grants, self._facts.epoch, True
        async with self._store.read() as reader:
            epoch = await reader.epoch()
            key = await reader.get_key(key_id)
            grants = await reader.active_grants(principal_id, "key", key_id, now) if key else []
        if key is not None and self._facts.observe(epoch):
            self._facts.keys.put(key_id, key)
            self._facts.grants.put((principal_id, key_id), grants)
        return key, grants, epoch, False

    async def _record_refusal(self, event: dict[str, Any], exc: SignerError) -> None:
        record = {**event, "outcome": _outcome(exc), "error": {"code": exc.code, "status": exc.status}}
        if "reasons" in exc.extra:
            record["reasons"] = exc.extra["reasons"]

        async def unit(writer: Writer) -> None:
            writer.append_audit(record)

        try:
            await self._store.submit(unit)
        except SignerError:
            # The original error is what the caller needs; the store failure is logged by the store.
            pass


def _outcome(exc: SignerError) -> str:
    return "denied" if exc.status in (401, 403, 404, 409) else "failed"


def _count(key: KeyRecord | None, operation: str, exc: SignerError) -> None:
    # Only a key that exists names its id: a caller's made-up ids must not become label values.
    metrics.signature(key.id if key else None, key.curve if key else None, operation, _outcome(exc))


# -- finishing: turn the token's bytes into a checked response ------------------------------------


def _unhex(value: str, field: str) -> bytes:
    text = value[2:] if value[:2] in ("0x", "0X") else value
    if len(text) % 2:
        raise InvalidRequest(f"{field} is not valid hex", code="invalid_hex", field=field)
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidRequest(f"{field} is not valid hex", code="invalid_hex", field=field) from None


def _rpc_fields(transaction: Mapping[str, Any], key: KeyRecord) -> Mapping[str, Any]:
    """Accept the two JSON-RPC habits eth.parse_transaction does not: ``from`` and ``input``."""
    fields = dict(transaction)
    sender = fields.pop("from", None)
    if sender is not None:
        if not isinstance(sender, str) or key.address is None or sender.lower() != key.address.lower():
            raise Unprocessable("'from' is not this key's address", code="from_mismatch", field="from")
    if "input" in fields:
        data = fields.pop("input")
        if "data" in fields and fields["data"] != data:
            raise InvalidRequest("'input' and 'data' differ", code="invalid_field", field="input")
        fields["data"] = data
    return fields


def _public_key(key: KeyRecord) -> bytes:
    return bytes.fromhex(key.public_key)


def _tx_summary(tx: UnsignedTransaction) -> dict[str, Any]:
    summary = dict(tx.as_json())
    data = summary.pop("data", None)
    if isinstance(data, str):
        body = bytes.fromhex(data.removeprefix("0x"))
        summary["data_length"] = len(body)
        summary["data_sha256"] = _hex(hashlib.sha256(body).digest())
    summary["digest"] = _hex(tx.digest)
    return summary


def _finish_transaction(tx: UnsignedTransaction, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    sig = recoverable_signature(tx.digest, raw_rs, _public_key(key))
    signed = tx.assemble(sig)
    response: dict[str, Any] = {
        "key_id": key.id,
        "signer": key.address,
        "type": tx.tx_type,
        "chain_id": tx.chain_id,
        "raw_transaction": _hex(signed.raw),
        "transaction_hash": _hex(signed.hash),
        "r": hex(signed.r),
        "s": hex(signed.s),
        "v": signed.v,
    }
    if tx.tx_type != 0:
        response["y_parity"] = signed.y_parity
    return response


def _finish_eth_message(digest: bytes, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    sig = recoverable_signature(digest, raw_rs, _public_key(key))
    signature = message_signature_bytes(sig)
    return {
        "key_id": key.id,
        "signer": key.address,
        "digest": _hex(digest),
        "signature": _hex(signature),
        "r": hex(sig.r),
        "s": hex(sig.s),
        "v": signature[64],
    }


def _finish_p256(digest: bytes, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    der = check_p256(_public_key(key), digest, raw_rs)
    return {
        "key_id": key.id,
        "curve": key.curve,
        "digest": _hex(digest),
        "signature": _hex(raw_rs),
        "signature_der": _hex(der),
    }


def _finish_ed25519(message: bytes, key: KeyRecord, signature: bytes) -> dict[str, Any]:
    check_ed25519(_public_key(key), message, signature)
    return {"key_id": key.id, "curve": key.curve, "signature": _hex(signature)}
