"""The rule kinds: what each one checks and when it fires.

Two families, told apart by the effects they accept:

- Guards (effect ``deny`` or ``require_approval``) describe what is acceptable and fire when a request
  is outside it: chain-id allowlist, recipient allow- and denylists, per-transaction value cap, rolling
  spend limit, request-rate limit, selector allowlist, EIP-712 domain allowlist, gas-cost cap and
  time-of-day window. A guard that does not concern the request (a value cap on ``sign_message``)
  does not fire.
- The lifecycle guard (``key_lifecycle``, effect ``deny`` or ``require_approval``) fires for the key
  lifecycle actions it lists (``destroy``, ``compromise``...). It is the only kind that judges those
  admin operations (``policy.engine.evaluate_lifecycle``), and it never fires for anything else.
- Unlocks (effect ``allow`` or ``require_approval``) switch on what is denied by default: signing a raw
  digest (``raw_digest``) and EIP-7702 authorisations to listed delegates (``delegate_allowlist``).
  They fire when the request uses what they unlock.

``check`` returns a ``Hit`` (stable code and message) when the rule fires, None otherwise; the engine
gives the hit the rule's effect. The two stateful guards, spend and rate limits, live in
``policy.limits``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

from policy.canonical import NATIVE
from policy.decision import Effect
from policy.errors import PolicyInputError
from policy.facts import Facts
from policy.request import EVERY_ASSET, KEY_LIFECYCLE_OPERATIONS, PolicyRequest
from policy.windows import WEEKDAYS, TimeOfDayWindow, format_time_of_day

GUARD_EFFECTS: Final = frozenset({Effect.DENY, Effect.REQUIRE_APPROVAL})
UNLOCK_EFFECTS: Final = frozenset({Effect.ALLOW, Effect.REQUIRE_APPROVAL})


@dataclass(frozen=True, slots=True)
class ApprovalSpec:
    """``quorum`` distinct members of ``group`` must approve within ``expires_in`` of the request;
    ``rejections`` rejections end it; ``signed`` demands approvals signed with the approver's own key."""

    quorum: int
    group: str
    expires_in: timedelta
    rejections: int = 1
    signed: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "quorum": self.quorum,
            "group": self.group,
            "expires_in_seconds": int(self.expires_in.total_seconds()),
        }
        # Defaults are left out, so documents written before these fields keep their digests.
        if self.rejections != 1:
            out["rejections"] = self.rejections
        if self.signed:
            out["signed"] = True
        return out


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule sees. ``scope`` is the scope a per-scope limit counts over: the scope the rule's
    document is attached to, or the key's own scope for a document attached to a key."""

    request: PolicyRequest
    now: datetime
    scope: str
    facts: Facts


@dataclass(frozen=True, slots=True)
class Hit:
    code: str
    message: str


def amount_of(request: PolicyRequest, asset: str) -> int:
    """How much of ``asset`` the request moves or grants (a transaction's value and token call, or the
    approvals its EIP-712 permits grant)."""
    return request.totals.get(asset, 0)


def uncounted_hit(request: PolicyRequest, asset: str) -> Hit | None:
    """A limit on token ``asset`` cannot count a call to that contract it does not understand (see
    ``PolicyRequest.uncounted_contract``): such a request fires the limit instead of counting as 0. A
    call of the account to itself (its EIP-7702 delegate's batch) fires every limit, native included."""
    uncounted = request.uncounted_contract
    if uncounted == EVERY_ASSET:
        return Hit(
            "token_call_not_counted",
            f"the transaction calls the signing account itself (its EIP-7702 delegate's code), which may "
            f"move {asset_name(asset)} in a way the signer does not decode, so it cannot be counted",
        )
    if asset == NATIVE or uncounted != asset:
        return None
    return Hit(
        "token_call_not_counted",
        f"the request acts on token {asset} in a way the signer does not decode, so its amount cannot be "
        "counted against this limit",
    )


def asset_name(asset: str) -> str:
    return "wei" if asset == NATIVE else f"of token {asset}"


def describe_window(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule(ABC):
    """Fields every rule has. ``approval`` is set exactly when ``effect`` is ``require_approval``."""

    kind: ClassVar[str] = ""
    effects: ClassVar[frozenset[Effect]] = GUARD_EFFECTS

    id: str
    effect: Effect
    approval: ApprovalSpec | None = None
    description: str = ""

    def __post_init__(self) -> None:
        # The parser checks these with paths; this catches rules built in code, so that no decision can
        # ask for approval without saying whose (an empty requirement would be trivially met).
        if self.effect not in self.effects:
            raise PolicyInputError("invalid_rule", f"a {self.kind} rule cannot have effect {self.effect}")
        if (self.approval is not None) != (self.effect is Effect.REQUIRE_APPROVAL):
            raise PolicyInputError("invalid_rule", "approval is given exactly for require_approval rules")

    @abstractmethod
    def check(self, ctx: RuleContext) -> Hit | None:
        """The hit when the rule fires for this request, None when it does not."""

    def params(self) -> dict[str, Any]:
        return {}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "effect": self.effect.value,
            "description": self.description,
        }
        if self.approval is not None:
            out["approval"] = self.approval.as_dict()
        return {**out, **self.params()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainAllowlist(Rule):
    """The transaction's chain id, every EIP-7702 authorisation's chain id (in a transaction or signed
    on its own; 0 = any chain, allowed only if 0 is listed) and an EIP-712 domain's chain id (a domain
    without one fires) must be listed."""

    kind: ClassVar[str] = "chain_allowlist"
    chain_ids: frozenset[int]

    def check(self, ctx: RuleContext) -> Hit | None:
        tx, domain = ctx.request.transaction, ctx.request.typed_data_domain
        named: list[tuple[str, int | None]] = []
        if tx is not None:
            named.append(("transaction", tx.chain_id))
        elif domain is not None:
            named.append(("typed-data domain", domain.chain_id))
        named += [("authorisation", d.chain_id) for d in ctx.request.delegations]
        for what, chain_id in named:
            if chain_id is None:
                return Hit("chain_not_allowed", f"the {what} names no chain id")
            if chain_id not in self.chain_ids:
                shown = "0 (any chain)" if chain_id == 0 else str(chain_id)
                return Hit("chain_not_allowed", f"{what} chain id {shown} is not allowed")
        return None

    def params(self) -> dict[str, Any]:
        return {"chain_ids": sorted(self.chain_ids)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientAllowlist(Rule):
    """Who receives value must be listed: the counterparty of a decoded token call (recipient, spender
    or operator), else the transaction's ``to``, and ``to`` as well whenever native value goes to it;
    for EIP-712 data, the spender of every decoded permit. A contract creation has no recipient and
    fires. EIP-712 data that decodes to no permit (an order, a governance delegation, a meta-transaction)
    may commit value to anyone, and who cannot be read from it: it fires (fail closed,
    ``recipient_not_determined``) unless its domain's ``verifyingContract`` is itself on the list, which
    is how a trusted protocol's typed data is let through."""

    kind: ClassVar[str] = "recipient_allowlist"
    addresses: frozenset[str]

    def check(self, ctx: RuleContext) -> Hit | None:
        tx = ctx.request.transaction
        if tx is None:
            for permit in ctx.request.permits:
                if permit.recipient not in self.addresses:
                    return Hit("recipient_not_allowed", f"spender {permit.recipient} is not on the allowlist")
            domain = ctx.request.typed_data_domain
            if domain is not None and not ctx.request.permits:
                if domain.verifying_contract is not None and domain.verifying_contract in self.addresses:
                    return None
                return Hit(
                    "recipient_not_determined",
                    "EIP-712 data that decodes to no permit names no recipient the signer can check, and "
                    "its domain's verifying contract is not on the allowlist",
                )
            return None
        batch = tx.self_batch
        if batch is not None:
            # A self-call running a decoded batch: every inner call's counterparties are the recipients.
            for call in batch:
                for address in call.counterparties:
                    if address not in self.addresses:
                        return Hit("recipient_not_allowed", f"recipient {address} is not on the allowlist")
            return None
        recipient = tx.beneficiary
        if recipient is None:
            return Hit("recipient_not_allowed", "a contract creation has no allowed recipient")
        if recipient not in self.addresses:
            return Hit("recipient_not_allowed", f"recipient {recipient} is not on the allowlist")
        if tx.value > 0 and tx.to is not None and tx.to not in self.addresses:
            # A token call that also sends native value pays it to the contract it calls.
            return Hit(
                "recipient_not_allowed", f"recipient {tx.to} of the native value is not on the allowlist"
            )
        return None

    def params(self) -> dict[str, Any]:
        return {"addresses": sorted(self.addresses)}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientDenylist(Rule):
    """No address the request names may be listed: ``to``, a token call's counterparty (recipient,
    spender or operator) and owner, EIP-7702 delegates, an EIP-712 domain's verifying contract and every
    token, spender and owner a decoded permit names."""

    kind: ClassVar[str] = "recipient_denylist"
    addresses: frozenset[str]

    def check(self, ctx: RuleContext) -> Hit | None:
        tx, domain = ctx.request.transaction, ctx.request.typed_data_domain
        named: list[str] = []
        if tx is not None:
            named += tx.addresses
        named += [d.delegate for d in ctx.request.delegations]
        if domain is not None and domain.verifying_contract is not None:
            named.append(domain.verifying_contract)
        named += ctx.request.permit_addresses
        for address in named:
            if address in self.addresses:
                return Hit("recipient_denied", f"address {address} is on the denylist")
        return None

    def params(self) -> dict[str, Any]:
        return {"addresses": sorted(self.addresses)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueCap(Rule):
    """One transaction may move at most ``max_value`` of ``asset`` (wei, or a token's decoded amount); a
    call to the token that decodes to no amount fires it (``uncounted_hit``)."""

    kind: ClassVar[str] = "value_cap"
    max_value: int
    asset: str = NATIVE

    def check(self, ctx: RuleContext) -> Hit | None:
        uncounted = uncounted_hit(ctx.request, self.asset)
        if uncounted is not None:
            return uncounted
        amount = amount_of(ctx.request, self.asset)
        if amount > self.max_value:
            return Hit(
                "value_cap_exceeded",
                f"{amount} {asset_name(self.asset)} exceeds the per-transaction cap of {self.max_value}",
            )
        return None

    def params(self) -> dict[str, Any]:
        return {"max_value": str(self.max_value), "asset": self.asset}


@dataclass(frozen=True, slots=True, kw_only=True)
class GasCostCap(Rule):
    """``gas x fee cap`` (the most the transaction can pay in fees, in wei) may not exceed ``max_value``."""

    kind: ClassVar[str] = "gas_cost_cap"
    max_value: int

    def check(self, ctx: RuleContext) -> Hit | None:
        tx = ctx.request.transaction
        if tx is not None and tx.max_gas_cost > self.max_value:
            return Hit(
                "gas_cost_cap_exceeded",
                f"the maximum gas cost {tx.max_gas_cost} wei exceeds the cap of {self.max_value}",
            )
        return None

    def params(self) -> dict[str, Any]:
        return {"max_value": str(self.max_value)}


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectorAllowlist(Rule):
    """Calldata must start with a listed 4-byte selector. Empty calldata (a plain transfer) passes when
    ``allow_empty_calldata``; calldata of 1-3 bytes and contract creations always fire."""

    kind: ClassVar[str] = "selector_allowlist"
    selectors: frozenset[str]
    allow_empty_calldata: bool = True

    def check(self, ctx: RuleContext) -> Hit | None:
        tx = ctx.request.transaction
        if tx is None:
            return None
        if tx.to is None:
            return Hit("selector_not_allowed", "a contract creation calls no allowed selector")
        if tx.data_length == 0:
            if self.allow_empty_calldata:
                return None
            return Hit("selector_not_allowed", "a transaction without calldata is not allowed")
        if tx.selector is None:
            return Hit("selector_not_allowed", "calldata shorter than a selector is not allowed")
        if tx.selector not in self.selectors:
            return Hit("selector_not_allowed", f"selector {tx.selector} is not on the allowlist")
        return None

    def params(self) -> dict[str, Any]:
        return {"selectors": sorted(self.selectors), "allow_empty_calldata": self.allow_empty_calldata}


@dataclass(frozen=True, slots=True)
class DomainPattern:
    """An EIP-712 domain allowlist entry: every field given must equal the domain's; absent = any."""

    name: str | None = None
    version: str | None = None
    chain_id: int | None = None
    verifying_contract: str | None = None

    def matches(self, request: PolicyRequest) -> bool:
        domain = request.typed_data_domain
        if domain is None:
            return False
        pairs = (
            (self.name, domain.name),
            (self.version, domain.version),
            (self.chain_id, domain.chain_id),
            (self.verifying_contract, domain.verifying_contract),
        )
        return all(wanted is None or wanted == actual for wanted, actual in pairs)

    def as_dict(self) -> dict[str, Any]:
        fields = {
            "name": self.name,
            "version": self.version,
            "chain_id": self.chain_id,
            "verifying_contract": self.verifying_contract,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class TypedDataDomainAllowlist(Rule):
    """EIP-712 data is signed only when its domain matches one of ``domains``."""

    kind: ClassVar[str] = "typed_data_domain_allowlist"
    domains: tuple[DomainPattern, ...]

    def check(self, ctx: RuleContext) -> Hit | None:
        domain = ctx.request.typed_data_domain
        if domain is None or any(p.matches(ctx.request) for p in self.domains):
            return None
        # The domain's name and version are the caller's free text: a reason never repeats them.
        shown = f"chain_id={domain.chain_id} verifying_contract={domain.verifying_contract}"
        return Hit("typed_data_domain_not_allowed", f"the EIP-712 domain ({shown}) is not on the allowlist")

    def params(self) -> dict[str, Any]:
        return {"domains": [p.as_dict() for p in self.domains]}


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeWindow(Rule):
    """Requests are acceptable only at instants inside one of ``windows`` (UTC)."""

    kind: ClassVar[str] = "time_window"
    windows: tuple[TimeOfDayWindow, ...]

    def check(self, ctx: RuleContext) -> Hit | None:
        if any(w.contains(ctx.now) for w in self.windows):
            return None
        allowed = "; ".join(w.describe() for w in self.windows)
        return Hit("outside_time_window", f"{ctx.now.isoformat()} is outside the allowed times ({allowed})")

    def params(self) -> dict[str, Any]:
        return {
            "windows": [
                {
                    "days": [WEEKDAYS[d] for d in sorted(w.weekdays)],
                    "start": format_time_of_day(w.start_second),
                    "end": format_time_of_day(w.end_second),
                }
                for w in self.windows
            ]
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RawDigest(Rule):
    """Unlocks ``sign_raw`` (signing a bare 32-byte digest), which is denied without such a rule."""

    kind: ClassVar[str] = "raw_digest"
    effects: ClassVar[frozenset[Effect]] = UNLOCK_EFFECTS

    def check(self, ctx: RuleContext) -> Hit | None:
        if ctx.request.operation != "sign_raw":
            return None
        return Hit("raw_digest_allowed", "signing a raw digest is allowed by this rule")


@dataclass(frozen=True, slots=True, kw_only=True)
class DelegateAllowlist(Rule):
    """Unlocks EIP-7702 authorisations to the listed delegates, in a type-4 transaction or signed on their
    own (``sign_authorization``); any other delegate stays denied."""

    kind: ClassVar[str] = "delegate_allowlist"
    effects: ClassVar[frozenset[Effect]] = UNLOCK_EFFECTS
    delegates: frozenset[str]

    def covered(self, request: PolicyRequest) -> list[str]:
        return [d.delegate for d in request.delegations if d.delegate in self.delegates]

    def check(self, ctx: RuleContext) -> Hit | None:
        covered = self.covered(ctx.request)
        if not covered:
            return None
        return Hit("delegate_allowed", f"delegation to {', '.join(dict.fromkeys(covered))} is allowed")

    def params(self) -> dict[str, Any]:
        return {"delegates": sorted(self.delegates)}


ANOMALY_SIGNALS: Final = ("new_source", "burst", "off_hours", "repeated_denials")


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly(Rule):
    """Fires when the service saw one of ``signals`` for this request (``Facts.anomalies``): a source
    address the principal has not used before, a burst well above its recent rate, a request outside
    its usual hours, or repeated denials. Without such a rule an anomaly changes no decision."""

    kind: ClassVar[str] = "anomaly"
    signals: frozenset[str]

    def check(self, ctx: RuleContext) -> Hit | None:
        seen = sorted(self.signals & ctx.facts.anomalies)
        if not seen:
            return None
        return Hit("unusual_access", f"unusual access: {', '.join(seen)}")

    def params(self) -> dict[str, Any]:
        return {"signals": sorted(self.signals)}


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLifecycle(Rule):
    """Fires when an admin moves a key by one of ``actions`` (``destroy``, ``compromise``,
    ``deactivate``, ``suspend``, ``activate``), or grants access to it or revokes a grant on it
    (``grant``, ``revoke_grant``): deny it, or send it to approvers. Signing and reading never fire it."""

    kind: ClassVar[str] = "key_lifecycle"
    actions: frozenset[str]

    def check(self, ctx: RuleContext) -> Hit | None:
        action = KEY_LIFECYCLE_OPERATIONS.get(ctx.request.operation)
        if action is None or action not in self.actions:
            return None
        return Hit(
            "key_lifecycle_restricted", f"{action.replace('_', ' ')} on this key is restricted by policy"
        )

    def params(self) -> dict[str, Any]:
        return {"actions": sorted(self.actions)}
