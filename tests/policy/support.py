"""Builders shared by the policy tests, and the reader of the corpus format (plain JSON to engine values).

Nothing here ships: the service builds requests from decoded payloads and reads facts from its ledger.
``ledger_facts`` answers the engine's usage queries from an in-memory list of reservations, which is the
executable meaning of a query (``Facts.from_reservations``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from policy import (
    AttachedPolicy,
    BatchCallView,
    Delegation,
    Facts,
    Grant,
    PolicyRequest,
    PolicySet,
    Reservation,
    TokenMovement,
    TransactionView,
    TypedDataDomain,
    parse_policy_document,
    usage_queries,
)

NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)  # a Wednesday
ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20
TOKEN = "0x" + "70" * 20
DELEGATE = "0x" + "de" * 20
ETHER = 10**18


def tx(**overrides: Any) -> TransactionView:
    fields: dict[str, Any] = {"chain_id": 1, "to": ALICE, "value": 1, "gas": 21_000, "fee_cap": 10**9}
    fields.update(overrides)
    return TransactionView(**fields)


def token_tx(
    amount: int, recipient: str = BOB, method: str = "transfer", **overrides: Any
) -> TransactionView:
    token = TokenMovement(method, TOKEN, recipient, amount, ALICE if method == "transferFrom" else None)
    return tx(to=TOKEN, value=0, data_length=68, selector="0xa9059cbb", token=token, **overrides)


def request(
    operation: str = "sign_transaction",
    *,
    principal: str = "p1",
    key: str = "k1",
    scope: str = "acme/payments/prod",
    groups: Iterable[str] = (),
    transaction: TransactionView | None = None,
    domain: TypedDataDomain | None = None,
    permits: Iterable[TokenMovement] = (),
) -> PolicyRequest:
    if operation == "sign_transaction" and transaction is None:
        transaction = tx()
    if operation == "sign_typed_data" and domain is None:
        domain = TypedDataDomain(name="Mail", version="1", chain_id=1, verifying_contract=ALICE)
    resource_type = "secret" if operation == "read_secret" else "key"
    return PolicyRequest(
        principal,
        operation,
        key,
        scope,
        resource_type,
        frozenset(groups),
        transaction,
        domain,
        tuple(permits),
    )


def grant_all(principal: str = "p1", scope: str = "acme", **extra: Any) -> Grant:
    ops = frozenset({"sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "read_secret"})
    return Grant("g-all", principal, "scope", scope, ops, **extra)


def document(*rules: Mapping[str, Any], policy_id: str = "p", version: int = 1) -> Any:
    return parse_policy_document({"id": policy_id, "version": version, "rules": list(rules)})


def rule(rule_id: str, kind: str, effect: str = "deny", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rule_id, "kind": kind, "effect": effect, **params}
    if effect == "require_approval" and "approval" not in params:
        body["approval"] = {"quorum": 2, "group": "treasury", "expires_in_seconds": 3600}
    return body


def policy_set(
    *rules: Mapping[str, Any], scope: str = "acme", grants: Iterable[Grant] | None = None
) -> PolicySet:
    attached = (AttachedPolicy(document(*rules), scope=scope),) if rules else ()
    return PolicySet(tuple(grants) if grants is not None else (grant_all(),), attached)


def ledger_facts(
    req: PolicyRequest, policies: PolicySet, ledger: Iterable[Reservation], now: datetime = NOW
) -> Facts:
    return Facts.from_reservations(usage_queries(req, policies, now=now), ledger)


def full_facts(req: PolicyRequest, policies: PolicySet, now: datetime = NOW) -> Facts:
    """Every needed sum answered as zero: a fresh ledger."""
    return ledger_facts(req, policies, (), now)


# -- the corpus format ---------------------------------------------------------------------------------


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _transaction(data: Mapping[str, Any]) -> TransactionView:
    token = data.get("token")
    return TransactionView(
        chain_id=data["chain_id"],
        to=data.get("to"),
        value=int(data.get("value", "0")),
        gas=data.get("gas", 21_000),
        fee_cap=int(data.get("fee_cap", "1000000000")),
        data_length=data.get("data_length", 68 if token else 0),
        selector=data.get("selector", "0xa9059cbb" if token else None),
        token=None
        if token is None
        else TokenMovement(
            token["method"], data["to"], token["recipient"], int(token["amount"]), token.get("owner")
        ),
        delegations=tuple(Delegation(d["chain_id"], d["delegate"]) for d in data.get("delegations", [])),
        sender=data.get("sender"),
        batch=None if "batch" not in data else tuple(_batch_call(c) for c in data["batch"]),
    )


def _batch_call(data: Mapping[str, Any]) -> BatchCallView:
    """A batch call in the corpus: ``to``, ``value``, ``data_length`` and an optional ``token`` call."""
    token = data.get("token")
    return BatchCallView(
        data["to"],
        int(data.get("value", "0")),
        data.get("data_length", 68 if token else 0),
        None
        if token is None
        else TokenMovement(
            token["method"], data["to"], token["recipient"], int(token["amount"]), token.get("owner")
        ),
    )


def request_from(data: Mapping[str, Any]) -> PolicyRequest:
    domain = data.get("typed_data_domain")
    return PolicyRequest(
        principal_id=data["principal"],
        operation=data["operation"],
        resource_id=data["resource_id"],
        scope=data["scope"],
        resource_type=data.get("resource_type", "key"),
        groups=frozenset(data.get("groups", [])),
        transaction=_transaction(data["transaction"]) if "transaction" in data else None,
        typed_data_domain=TypedDataDomain(**domain) if domain is not None else None,
        permits=tuple(
            TokenMovement(p["method"], p["token"], p["spender"], int(p["amount"]), p.get("owner"))
            for p in data.get("permits", [])
        ),
    )


def grant_from(data: Mapping[str, Any]) -> Grant:
    return Grant(
        grant_id=data["id"],
        principal_id=data["subject"],
        resource_type=data["resource_type"],
        resource_id=data["resource_id"],
        operations=frozenset(data["operations"]),
        expires_at=instant(data["expires_at"]) if data.get("expires_at") else None,
        revoked=data.get("revoked", False),
        subject_type=data.get("subject_type", "principal"),
        max_uses=data.get("max_uses"),
        value_budgets={asset: int(v) for asset, v in data.get("value_budgets", {}).items()},
    )


def attached_from(data: Mapping[str, Any]) -> AttachedPolicy:
    """A corpus attachment: ``scope``, ``key`` (a key id, the older form) or ``resource`` ({type, id})."""
    resource = data.get("resource") or {}
    return AttachedPolicy(
        parse_policy_document(data["document"]),
        scope=data.get("scope"),
        key_id=data.get("key"),
        resource_type=resource.get("type"),
        resource_id=resource.get("id"),
    )


def policy_set_from(case: Mapping[str, Any]) -> PolicySet:
    attached = tuple(attached_from(p) for p in case.get("policies", []))
    return PolicySet(tuple(grant_from(g) for g in case.get("grants", [])), attached)


def ledger_from(entries: Iterable[Mapping[str, Any]]) -> list[Reservation]:
    return [Reservation(e["limit_key"], int(e["amount"]), instant(e["at"]), None) for e in entries]
