"""Payload kinds: what a caller asks of a resource, from the request's fields to a checked response.

One ``PayloadKind`` per operation, in a registry keyed by the operation's name: here the signing ones
(transaction, message, typed data, EIP-7702 authorisation, digest); a resource kind's own module
registers its others (the secrets' ``read_value`` in ``secret_kind``). A kind also says how an
approved request of it ends (``released_by_requester``) and which metric family counts its outcomes
(``count``).

Each kind parses the request's fields (``parse``) or the canonical body an approval stored
(``parse_stored``) into a preparer; preparing against a resource gives a ``Prepared``: the exact bytes the
token signs, the audit summary, the fields policy judges (``policy_fields``), the canonical body
approvers approve and execution prepares again, the view approvers read, and what happens once allowed:
for a signature the HSM call and the independent check of its signature (recovery to the key's address
for secp256k1, ``cryptography`` for P-256 and Ed25519), for others ``acts``. This module never decides
and never writes: the pipeline does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policy import Delegation, TokenMovement, TransactionView, TypedDataDomain
from signer import metrics
from signer.crypto.signatures import check_ed25519, check_p256
from signer.errors import Forbidden, InvalidRequest, SignerError, Unprocessable
from signer.eth import (
    Permit,
    UnsignedAuthorization,
    UnsignedTransaction,
    decode_permits,
    decode_unsigned_transaction,
    message_signature_bytes,
    parse_authorization,
    parse_transaction,
    personal_message_digest,
    recoverable_signature,
    typed_data_digest,
)
from signer.hsm import Curve, KeyVault
from signer.identity import Role
from signer.store import KeyRecord, Writer


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the token will sign, what policy judges and what the audit log says about it."""

    data: bytes
    summary: dict[str, Any]
    finish: Callable[[KeyRecord, bytes], dict[str, Any]] | None = None
    transaction: Any = None  # signer.eth.TransactionFields, for policy
    sender: str | None = None  # the signing key's address: a transaction to it is a self-call (EIP-7702)
    typed_data_domain: Mapping[str, Any] | None = None
    permits: tuple[Permit, ...] = ()  # approvals decoded from typed data, counted like ``approve``
    authorization: UnsignedAuthorization | None = None  # an EIP-7702 authorisation signed on its own
    # For approvals: the canonical body that prepares exactly these bytes again, the decoded view
    # approvers read (without the key: the resource kind adds that), and the chain id (None for
    # payloads that name none).
    body: Mapping[str, Any] | None = None
    # The view, or how to build it: only a request that waits for approval needs one.
    view: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    chain_id: int | None = None
    # What the operation does once allowed when it is not a signature (a secret read): given the token
    # and the resource, the response. The pipeline keeps the response until its audit event commits.
    acts: Callable[[KeyVault, Any], Awaitable[dict[str, Any]]] | None = None
    # For a request about to wait for approvers, what it must fix of the resource as committed now (a
    # read's version and field names): given the commit unit's writer and the resource, the payload to
    # store and digest instead of this one. None: this one is stored as it is.
    pin: Callable[[Writer, Any], Awaitable[Prepared]] | None = None
    # What else the operation checks and writes once allowed, in the transaction that commits its audit
    # event (a secret read: the version it opened is still current; "last fetched"): given the writer
    # and the resource as committed facts show it under the write lock. Only reads and writes through
    # the writer (the unit may run again); raising refuses the request, and the response never leaves.
    settles: Callable[[Any, Any], Awaitable[None]] | None = None

    def describe(self) -> Mapping[str, Any]:
        """The decoded view approvers read."""
        view = self.view() if callable(self.view) else self.view
        return view or {}

    def policy_fields(self) -> dict[str, Any]:
        """The ``PolicyRequest`` fields this payload gives (may raise ``policy.PolicyError``).
        ``permits`` (EIP-2612, Permit2) each become a token movement counted like ``approve``."""
        return {
            "transaction": None
            if self.transaction is None
            else TransactionView.from_decoded(self.transaction, sender=self.sender),
            "typed_data_domain": None
            if self.typed_data_domain is None
            else TypedDataDomain.from_domain(self.typed_data_domain),
            "permits": tuple(
                TokenMovement(p.method, p.token, p.spender, p.amount, p.owner) for p in self.permits
            ),
            "authorization": None
            if self.authorization is None
            else Delegation(self.authorization.chain_id, self.authorization.address),
        }

    async def act(self, hsm: KeyVault, key: KeyRecord) -> dict[str, Any]:
        """What the operation does once allowed: sign inside the token and check the signature. The
        response stays with the pipeline until its audit event commits."""
        if self.acts is not None:
            return await self.acts(hsm, key)
        if self.finish is None:
            raise TypeError("a prepared payload needs finish or acts")
        return self.finish(key, await hsm.sign(key.hsm_id, Curve(key.curve), self.data))


Preparer = Callable[[KeyRecord], Prepared]


@dataclass(frozen=True, slots=True)
class PayloadKind:
    """One operation on a resource kind: how to parse it, what it fits, who may ask, how it is audited.

    ``parse(fields)`` takes the request's decoded fields (a message as bytes); ``parse_stored(body)``
    the canonical body of ``Prepared.body`` (a message as hex). Both type-check eagerly and leave every
    check that needs the resource to the preparer they return. ``fits(resource)`` is the refusal for a
    resource the operation cannot be performed with at all (a key of another curve), or None."""

    operation: str
    resource_type: str
    event_kind: str  # the audit event's ``kind`` for every outcome of this operation
    parse: Callable[[Mapping[str, Any]], Preparer]
    parse_stored: Callable[[Mapping[str, Any]], Preparer]
    fits: Callable[[Any], SignerError | None]
    # Signing is for service principals; people act through grants on their own service accounts.
    actors: frozenset[Role] = field(default=frozenset({Role.SERVICE}))
    actors_refusal: str = "only service principals sign"
    # The fields of a response the audit event keeps (never a signature: only who signed and what).
    audited_result: tuple[str, ...] = ("signer", "transaction_hash")
    # How an approved request ends. False (signing): it runs as soon as the quorum is reached and its
    # response is stored as the request's result, handed to the requester once. True (a secret read):
    # nothing runs on approval and no response is ever stored; the requester runs it once, itself, and
    # the response goes straight to it (``ApprovalsService.release``).
    released_by_requester: bool = False
    # The metric family an outcome is counted in: (resource or None, operation, outcome).
    count: Callable[[Any | None, str, str], None] = field(
        default=lambda r, op, out: count_signature(r, op, out)
    )

    def result_summary(self, response: Mapping[str, Any]) -> dict[str, Any]:
        return {k: response[k] for k in self.audited_result if k in response}

    def check_caller(self, role: Role) -> None:
        if role not in self.actors:
            raise Forbidden(self.actors_refusal, code="role_required")

    def check_resource(self, resource: Any) -> None:
        refused = self.fits(resource)
        if refused is not None:
            raise refused


def count_signature(resource: Any | None, operation: str, outcome: str) -> None:
    """``signer_signatures_total``: a key id only for a key that exists (made-up ids are no labels)."""
    metrics.signature(
        None if resource is None else resource.id, getattr(resource, "curve", None), operation, outcome
    )


def signs_with(operation: str, *curves: Curve) -> Callable[[KeyRecord], SignerError | None]:
    """``PayloadKind.fits`` for a signing operation: a key of one of ``curves``."""

    def fits(key: KeyRecord) -> SignerError | None:
        if Curve(key.curve) in curves:
            return None
        return Unprocessable(
            f"{operation} is not possible with a {key.curve} key", code="unsupported_operation"
        )

    return fits


_KINDS: dict[str, PayloadKind] = {}


def register(kind: PayloadKind) -> PayloadKind:
    if kind.operation in _KINDS:
        raise ValueError(f"payload kind {kind.operation!r} is already registered")
    _KINDS[kind.operation] = kind
    return kind


def payload_kind(operation: str) -> PayloadKind:
    """The kind for ``operation``, or ``InvalidRequest(invalid_operation)``."""
    kind = _KINDS.get(operation)
    if kind is None:
        raise InvalidRequest("unknown operation", code="invalid_operation", field="operation")
    return kind


def prepare_payload(operation: str, body: Mapping[str, Any], key: KeyRecord) -> Prepared:
    """Prepare a stored canonical body against ``key``: the same code as a direct request."""
    return payload_kind(operation).parse_stored(body)(key)


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


# -- transactions ----------------------------------------------------------------------------------


def prepare_transaction(transaction: Mapping[str, Any] | None, raw: str | None) -> Preparer:
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
        fields = tx.as_json()
        return Prepared(
            tx.digest,
            _tx_summary(tx, fields),
            lambda key, rs: _finish_transaction(tx, key, rs),
            transaction=tx.fields,
            sender=key.address,
            body={"transaction": fields},
            view=lambda: _tx_view(tx),
            chain_id=tx.chain_id,
        )

    return prepare


def _transaction_fields(fields: Mapping[str, Any]) -> Preparer:
    return prepare_transaction(fields.get("transaction"), fields.get("raw"))


TRANSACTION = register(
    PayloadKind(
        "sign_transaction",
        "key",
        "sign.transaction",
        fits=signs_with("sign_transaction", Curve.SECP256K1),
        parse=_transaction_fields,
        parse_stored=_transaction_fields,
    )
)


# -- messages --------------------------------------------------------------------------------------


def prepare_message(message: bytes) -> Preparer:
    def prepare(key: KeyRecord) -> Prepared:
        curve = Curve(key.curve)
        body = {"message": _hex(message)}
        # The view is built only for a request that waits for approvers (most are signed at once).
        if curve is Curve.SECP256K1:
            digest = personal_message_digest(message)
            return Prepared(
                digest,
                {"scheme": "eip191", "message_length": len(message), "digest": _hex(digest)},
                lambda k, rs: _finish_eth_message(digest, k, rs),
                body=body,
                view=lambda: {"scheme": "eip191", **_message_view(message), "digest": _hex(digest)},
            )
        if curve is Curve.P256:
            digest = hashlib.sha256(message).digest()
            return Prepared(
                digest,
                {"scheme": "ecdsa-p256-sha256", "message_length": len(message), "digest": _hex(digest)},
                lambda k, rs: _finish_p256(digest, k, rs),
                body=body,
                view=lambda: {
                    "scheme": "ecdsa-p256-sha256",
                    **_message_view(message),
                    "digest": _hex(digest),
                },
            )
        return Prepared(
            message,
            {
                "scheme": "ed25519",
                "message_length": len(message),
                "message_sha256": _hex(hashlib.sha256(message).digest()),
            },
            lambda k, sig: _finish_ed25519(message, k, sig),
            body=body,
            view=lambda: {"scheme": "ed25519", **_message_view(message)},
        )

    return prepare


def _message_fields(fields: Mapping[str, Any]) -> Preparer:
    message = fields.get("message")
    if not isinstance(message, bytes):
        raise InvalidRequest("message is required", code="invalid_field", field="message")
    return prepare_message(message)


MESSAGE = register(
    PayloadKind(
        "sign_message",
        "key",
        "sign.message",
        fits=signs_with("sign_message", Curve.SECP256K1, Curve.P256, Curve.ED25519),
        parse=_message_fields,
        parse_stored=lambda body: prepare_message(_unhex(str(body.get("message", "")), "message")),
    )
)


# -- typed data ------------------------------------------------------------------------------------


def prepare_typed_data(typed_data: Mapping[str, Any]) -> Preparer:
    def prepare(key: KeyRecord) -> Prepared:
        typed = typed_data_digest(typed_data)
        # A permit is an approval: decoded strictly (or refused) so policy counts it like approve.
        permits = decode_permits(typed)
        summary: dict[str, Any] = {
            "scheme": "eip712",
            "primary_type": typed.primary_type,
            "domain": typed.domain,
            "digest": _hex(typed.digest),
        }
        if permits:
            summary["permits"] = [p.as_json() for p in permits]
        canonical = typed.as_json()
        chain = typed.domain.get("chainId")
        return Prepared(
            typed.digest,
            summary,
            lambda k, rs: _finish_eth_message(typed.digest, k, rs),
            typed_data_domain=typed.domain,
            permits=permits,
            body={"typed_data": canonical},
            view={
                "scheme": "eip712",
                "primary_type": typed.primary_type,
                "domain": canonical["domain"],
                "message": canonical["message"],
                "permits": [p.as_json() for p in permits],
                "digest": _hex(typed.digest),
            },
            chain_id=chain if isinstance(chain, int) and not isinstance(chain, bool) else None,
        )

    return prepare


def _typed_data_fields(fields: Mapping[str, Any]) -> Preparer:
    typed = fields.get("typed_data")
    if not isinstance(typed, Mapping):
        raise InvalidRequest("typed_data is required", code="invalid_field", field="typed_data")
    return prepare_typed_data(typed)


TYPED_DATA = register(
    PayloadKind(
        "sign_typed_data",
        "key",
        "sign.typed_data",
        fits=signs_with("sign_typed_data", Curve.SECP256K1),
        parse=_typed_data_fields,
        parse_stored=_typed_data_fields,
    )
)


# -- EIP-7702 authorisations, signed on their own -------------------------------------------------


def prepare_authorization(fields: Mapping[str, Any]) -> Preparer:
    def prepare(key: KeyRecord) -> Prepared:
        auth = parse_authorization(fields)
        canonical = auth.as_json()
        view = {
            "scheme": "eip7702_authorization",
            "chain_id": canonical["chainId"],
            "any_chain": auth.chain_id == 0,
            "delegate": auth.address,
            "nonce": canonical["nonce"],
            "authority": key.address,
            "digest": _hex(auth.digest),
        }
        return Prepared(
            auth.digest,
            {k: v for k, v in view.items() if k != "authority"},
            lambda k, rs: _finish_authorization(auth, k, rs),
            authorization=auth,
            body={"authorization": canonical},
            view=view,
            chain_id=auth.chain_id,
        )

    return prepare


def _authorization_fields(fields: Mapping[str, Any]) -> Preparer:
    authorization = fields.get("authorization")
    if not isinstance(authorization, Mapping):
        raise InvalidRequest("authorization is required", code="invalid_field", field="authorization")
    return prepare_authorization(authorization)


AUTHORIZATION = register(
    PayloadKind(
        "sign_authorization",
        "key",
        "sign.authorization",
        fits=signs_with("sign_authorization", Curve.SECP256K1),
        parse=_authorization_fields,
        parse_stored=_authorization_fields,
    )
)


# -- raw digests (blind signing) -------------------------------------------------------------------


def prepare_digest(digest_hex: str) -> Preparer:
    def prepare(key: KeyRecord) -> Prepared:
        digest = _unhex(digest_hex, "digest")
        if len(digest) != 32:
            raise InvalidRequest("digest must be exactly 32 bytes", code="invalid_digest", field="digest")
        summary: dict[str, Any] = {"scheme": "raw_digest", "blind": True, "digest": _hex(digest)}

        def finish(key: KeyRecord, rs: bytes) -> dict[str, Any]:
            if Curve(key.curve) is Curve.P256:
                return _finish_p256(digest, key, rs)
            return _finish_eth_message(digest, key, rs)

        return Prepared(digest, summary, finish, body={"digest": _hex(digest)}, view=summary)

    return prepare


def _digest_fields(fields: Mapping[str, Any]) -> Preparer:
    digest = fields.get("digest")
    if not isinstance(digest, str):
        raise InvalidRequest("digest is required", code="invalid_field", field="digest")
    return prepare_digest(digest)


DIGEST = register(
    PayloadKind(
        "sign_raw",
        "key",
        "sign.raw",
        fits=signs_with("sign_raw", Curve.SECP256K1, Curve.P256),
        parse=_digest_fields,
        parse_stored=lambda body: prepare_digest(str(body.get("digest", ""))),
    )
)


# -- views -----------------------------------------------------------------------------------------


def _eth(wei: int) -> str:
    """Wei as an exact decimal ETH string (no float)."""
    whole, frac = divmod(wei, 10**18)
    return f"{whole}.{frac:018d}".rstrip("0") if frac else str(whole)


def _tx_view(tx: UnsignedTransaction) -> dict[str, Any]:
    """What an approver reads: every decoded field, value and gas cap in ETH and wei, the selector, the
    decoded token call (``token_call``: method, counterparty, counted amount) and the EIP-7702
    delegates (``TransactionFields.as_json``)."""
    view = {"scheme": "transaction", **tx.fields.as_json()}
    view["value_eth"] = _eth(tx.fields.value)
    view["max_gas_cost_eth"] = _eth(tx.fields.max_gas_cost)
    if tx.fields.authorizations:
        view["delegates"] = list(tx.fields.delegates)
    if tx.fields.batch is not None:
        view["batch"] = [call.as_json() for call in tx.fields.batch]
    return view


def _message_view(message: bytes) -> dict[str, Any]:
    view: dict[str, Any] = {"message_length": len(message)}
    try:
        view["message_text"] = message.decode("utf-8")
    except UnicodeDecodeError:
        view["message_hex"] = _hex(message)
    return view


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


def _tx_summary(tx: UnsignedTransaction, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The audit event's view of a transaction (``fields`` is ``tx.as_json()``): the calldata by its
    length and hash, not its bytes."""
    summary = dict(fields)
    if summary.pop("data", None) is not None:
        summary["data_length"] = len(tx.fields.data)
        summary["data_sha256"] = _hex(hashlib.sha256(tx.fields.data).digest())
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


def _finish_authorization(auth: UnsignedAuthorization, key: KeyRecord, raw_rs: bytes) -> dict[str, Any]:
    sig = recoverable_signature(auth.digest, raw_rs, _public_key(key))
    return {
        "key_id": key.id,
        "signer": key.address,
        "digest": _hex(auth.digest),
        "authorization": auth.signed(sig),
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
