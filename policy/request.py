"""What the engine judges: the request as canonical values, built by the service from decoded payloads.

A ``PolicyRequest`` names who asks (principal and groups), what for (operation), on what (a key or a
secret and the scope it lives at) and, for transactions and EIP-712 data, the decoded content. Every
instance is validated and canonical when constructed (addresses lower-case, amounts integers in range,
the content present exactly when the operation has one), so rules never see two spellings of one
value. ``TransactionView.from_decoded`` and ``TypedDataDomain.from_domain`` accept the service's decoded
objects (``signer.eth.TransactionFields``, ``TypedDataDigest.domain``) structurally, without importing
them: this package stays below the service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from policy.canonical import NATIVE, canonical_address, canonical_selector, check_amount
from policy.errors import PolicyInputError
from policy.scopes import scope_segments

OPERATIONS: Final = frozenset(
    {"sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"}
)
# The secrets' grant operations (``signer.services.secrets``); ``read_secret`` is the engine's older name
# for reading a value, kept for the policy corpus: the service grants and asks for ``read_value``.
SECRET_GRANT_OPERATIONS: Final = frozenset(
    {"list", "read_metadata", "read_value", "create", "update", "delete"}
)
SECRET_OPERATIONS: Final = frozenset({"read_secret"}) | SECRET_GRANT_OPERATIONS
KNOWN_OPERATIONS: Final = OPERATIONS | SECRET_OPERATIONS
# A key's lifecycle transitions (``signer.services.key_states``) and the granting and revoking of access
# to it, each an operation on the key named ``<action>_key``. Admins perform them by their role, not by
# a grant: only ``key_lifecycle`` rules judge them (``policy.engine.evaluate_lifecycle``), and no grant
# lists them.
KEY_LIFECYCLE_ACTIONS: Final = (
    "activate",
    "suspend",
    "deactivate",
    "compromise",
    "destroy",
    "grant",
    "revoke_grant",
)
KEY_LIFECYCLE_OPERATIONS: Final = {action + "_key": action for action in KEY_LIFECYCLE_ACTIONS}
RESOURCE_TYPES: Final = frozenset({"key", "secret"})
# Token calls decoded from calldata (``signer.eth.calldata``) and approvals decoded from EIP-712 permits
# (``signer.eth.permits``): ``permit`` (EIP-2612 and its DAI and ERC-721 variants), ``permit2`` (a
# Uniswap Permit2 allowance or signature transfer).
CALL_METHODS: Final = frozenset(
    {
        "transfer",
        "transferFrom",
        "approve",
        "increaseAllowance",
        "decreaseAllowance",
        "setApprovalForAll",
        "safeTransferFrom",
        "safeBatchTransferFrom",
    }
)
PERMIT_METHODS: Final = frozenset({"permit", "permit2"})
# ``PolicyRequest.uncounted_contract`` when what is uncounted is not one contract but every asset the
# account holds: an EIP-7702 account calling itself runs its delegate's code (a batch ``execute``), whose
# inner calls may move any token or native value.
EVERY_ASSET: Final = "*"
TOKEN_METHODS: Final = CALL_METHODS | PERMIT_METHODS


def _set(obj: object, name: str, value: object) -> None:
    # Canonicalising a frozen dataclass in __post_init__ is the one place we write to it.
    object.__setattr__(obj, name, value)


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyInputError("invalid_request", f"{name} must be a non-negative integer")


@dataclass(frozen=True, slots=True)
class Amount:
    """How much of one asset a request moves: ``native`` (wei) or a token address (smallest unit)."""

    asset: str
    value: int


@dataclass(frozen=True, slots=True)
class TokenMovement:
    """A decoded token call or permit. ``token`` is the token contract (a call's: the transaction's
    ``to``); ``recipient`` is the counterparty: who receives the tokens, or the spender or operator an
    approval or permit names; ``owner`` is the account debited (None: the signer itself); ``amount`` is
    what limits and caps count, in the token's unit (the service decides it per call: for an
    unbounded grant such as ``setApprovalForAll(operator, true)`` it is 2**256-1)."""

    method: str
    token: str
    recipient: str
    amount: int
    owner: str | None = None

    def __post_init__(self) -> None:
        if self.method not in TOKEN_METHODS:
            raise PolicyInputError("invalid_request", "token method is not a known token call or permit")
        _set(self, "token", canonical_address(self.token))
        _set(self, "recipient", canonical_address(self.recipient))
        if self.owner is not None:
            _set(self, "owner", canonical_address(self.owner))
        check_amount(self.amount, "token amount")


@dataclass(frozen=True, slots=True)
class Delegation:
    """One EIP-7702 authorisation: the account will run ``delegate``'s code on ``chain_id`` (0 = any)."""

    chain_id: int
    delegate: str

    def __post_init__(self) -> None:
        _check_count(self.chain_id, "authorisation chain id")
        _set(self, "delegate", canonical_address(self.delegate))


@dataclass(frozen=True, slots=True)
class BatchCallView:
    """One call of a decoded batch (ERC-7821 ``execute``): ``to``, the native ``value`` it sends, its
    calldata size and, when that is a token call the signer decodes, the movement (``token`` is ``to``)."""

    to: str
    value: int
    data_length: int = 0
    token: TokenMovement | None = None

    def __post_init__(self) -> None:
        _set(self, "to", canonical_address(self.to))
        check_amount(self.value, "value")
        _check_count(self.data_length, "data length")
        if self.token is not None and self.token.token != self.to:
            raise PolicyInputError("invalid_request", "a batch call's token must be the call's to")

    @property
    def counted(self) -> bool:
        """Whether the signer knows everything it moves: plain value, or a decoded token call."""
        return self.data_length == 0 or self.token is not None

    @property
    def counterparties(self) -> tuple[str, ...]:
        """Who receives what it moves: the token call's counterparty, and ``to`` for native value (or
        ``to`` alone when it is not a token call)."""
        if self.token is None:
            return (self.to,)
        return (self.token.recipient, self.to) if self.value > 0 else (self.token.recipient,)


@dataclass(frozen=True, slots=True)
class TransactionView:
    """The decoded transaction as policy needs it. ``fee_cap`` is the most paid per gas unit (gas price
    or max fee per gas); ``selector`` the first 4 bytes of calldata (None when shorter);
    ``data_length`` the calldata size in bytes; ``to`` None for a contract creation; ``sender`` the
    signing account's address when known (a call to it is a call to its own EIP-7702 delegated code);
    ``batch`` the calls of an ERC-7821 plain batch the calldata decodes to (counted for a self-call)."""

    chain_id: int
    to: str | None
    value: int
    gas: int
    fee_cap: int
    data_length: int = 0
    selector: str | None = None
    token: TokenMovement | None = None
    delegations: tuple[Delegation, ...] = ()
    sender: str | None = None
    batch: tuple[BatchCallView, ...] | None = None
    amounts: tuple[Amount, ...] = field(init=False, repr=False, compare=False)
    totals: Mapping[str, int] = field(init=False, repr=False, compare=False)  # asset -> sum of amounts

    def __post_init__(self) -> None:
        _check_count(self.chain_id, "chain id")
        _check_count(self.data_length, "data length")
        for name in ("value", "gas", "fee_cap"):
            check_amount(getattr(self, name), name)
        if self.to is not None:
            _set(self, "to", canonical_address(self.to))
        if self.sender is not None:
            _set(self, "sender", canonical_address(self.sender))
        if self.selector is not None:
            _set(self, "selector", canonical_selector(self.selector))
            if self.data_length < 4:
                raise PolicyInputError("invalid_request", "a selector needs at least 4 bytes of calldata")
        if self.token is not None and self.token.token != self.to:
            raise PolicyInputError("invalid_request", "a token call's token must be the transaction's to")
        _set(self, "delegations", tuple(self.delegations))
        if self.batch is not None:
            _set(self, "batch", tuple(self.batch))
        moved = [Amount(NATIVE, self.value)]
        if self.token is not None:
            moved.append(Amount(self.token.token, self.token.amount))
        for call in self.self_batch or ():
            moved.append(Amount(NATIVE, call.value))
            if call.token is not None:
                moved.append(Amount(call.token.token, call.token.amount))
        _set(self, "amounts", tuple(a for a in moved if a.value > 0))
        totals: dict[str, int] = {}
        for a in self.amounts:
            totals[a.asset] = totals.get(a.asset, 0) + a.value
        _set(self, "totals", totals)

    @property
    def self_call(self) -> bool:
        """A call from the account to itself with calldata: with an EIP-7702 delegation in force (set
        earlier or in this very transaction) it runs the delegate's code, a batch ``execute`` whose inner
        calls move whatever the account holds. Without one it does nothing, but the signer cannot know
        which: it is judged as the delegated call it may be."""
        return self.sender is not None and self.to == self.sender and self.data_length > 0

    @property
    def self_batch(self) -> tuple[BatchCallView, ...] | None:
        """The calls a self-call runs when it is a decoded batch of calls the signer can all count
        (plain value or decoded token calls), else None (then nothing of it is counted: ``self_call``)."""
        if not self.self_call or self.batch is None or not all(c.counted for c in self.batch):
            return None
        return self.batch

    @property
    def max_gas_cost(self) -> int:
        return self.gas * self.fee_cap

    @property
    def beneficiary(self) -> str | None:
        """Who receives value: the counterparty (recipient, spender or operator) of a decoded token call,
        else ``to``."""
        return self.token.recipient if self.token is not None else self.to

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every counterparty the transaction names: ``to``, and a token call's recipient and owner."""
        named = [self.to]
        if self.token is not None:
            named += [self.token.recipient, self.token.owner]
        for call in self.batch or ():
            named.append(call.to)
            if call.token is not None:
                named += [call.token.recipient, call.token.owner]
        return tuple(dict.fromkeys(a for a in named if a is not None))

    @classmethod
    def from_decoded(cls, fields: DecodedTransaction, *, sender: str | None = None) -> TransactionView:
        """Build from ``signer.eth.TransactionFields`` (or anything with the same attributes) signed by
        ``sender`` (the key's address, when it has one)."""
        token = None
        if fields.token_call is not None and fields.to is not None:
            call = fields.token_call
            token = TokenMovement(call.method, fields.to, call.recipient, call.amount, call.owner)
        return cls(
            chain_id=fields.chain_id,
            to=fields.to,
            value=fields.value,
            gas=fields.gas,
            fee_cap=fields.fee_cap,
            data_length=len(fields.data),
            selector=fields.selector,
            token=token,
            delegations=tuple(Delegation(a.chain_id, a.address) for a in fields.authorizations),
            sender=sender,
            batch=None
            if fields.batch is None
            else tuple(
                BatchCallView(
                    c.to,
                    c.value,
                    len(c.data),
                    None
                    if c.token_call is None
                    else TokenMovement(
                        c.token_call.method,
                        c.to,
                        c.token_call.recipient,
                        c.token_call.amount,
                        c.token_call.owner,
                    ),
                )
                for c in fields.batch
            ),
        )


@dataclass(frozen=True, slots=True)
class TypedDataDomain:
    """The EIP-712 domain fields policy can match on; absent fields are None."""

    name: str | None = None
    version: str | None = None
    chain_id: int | None = None
    verifying_contract: str | None = None

    def __post_init__(self) -> None:
        if self.chain_id is not None:
            _check_count(self.chain_id, "domain chain id")
        if self.verifying_contract is not None:
            _set(self, "verifying_contract", canonical_address(self.verifying_contract))
        for name in ("name", "version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise PolicyInputError("invalid_request", f"domain {name} must be a string")

    @classmethod
    def from_domain(cls, domain: Mapping[str, Any]) -> TypedDataDomain:
        """Build from a validated EIP-712 domain object (``name``, ``version``, ``chainId``,
        ``verifyingContract``; ``salt`` is not matched on)."""
        return cls(
            name=domain.get("name"),
            version=domain.get("version"),
            chain_id=domain.get("chainId"),
            verifying_contract=domain.get("verifyingContract"),
        )


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request to judge. ``scope`` is where the resource lives; ``groups`` the principal's groups
    (already resolved by the caller). ``transaction`` is present exactly for ``sign_transaction``,
    ``typed_data_domain`` exactly for ``sign_typed_data`` and ``authorization`` (an EIP-7702
    authorisation signed on its own) exactly for ``sign_authorization``; ``permits`` are the token
    approvals decoded from that typed data (EIP-2612, Permit2), counted like ``approve``. An
    unknown operation is accepted here and denied by the grant check, so the refusal has a reason.
    ``amounts`` and ``totals`` are what the request moves or grants, from a transaction or from permits."""

    principal_id: str
    operation: str
    resource_id: str
    scope: str
    resource_type: str = "key"
    groups: frozenset[str] = frozenset()
    transaction: TransactionView | None = None
    typed_data_domain: TypedDataDomain | None = None
    permits: tuple[TokenMovement, ...] = ()
    authorization: Delegation | None = None
    scope_path: tuple[str, ...] = field(init=False, repr=False, compare=False)
    amounts: tuple[Amount, ...] = field(init=False, repr=False, compare=False)
    totals: Mapping[str, int] = field(init=False, repr=False, compare=False)  # asset -> sum of amounts

    def __post_init__(self) -> None:
        for name in ("principal_id", "operation", "resource_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise PolicyInputError("invalid_request", f"{name} must be a non-empty string")
        _set(self, "scope_path", scope_segments(self.scope))
        if self.resource_type not in RESOURCE_TYPES:
            raise PolicyInputError("invalid_request", "resource_type must be 'key' or 'secret'")
        expected_type = "secret" if self.operation in SECRET_OPERATIONS else "key"
        named = self.operation in KNOWN_OPERATIONS or self.operation in KEY_LIFECYCLE_OPERATIONS
        if named and self.resource_type != expected_type:
            raise PolicyInputError("invalid_request", f"{self.operation} acts on a {expected_type}")
        if (self.transaction is not None) != (self.operation == "sign_transaction"):
            raise PolicyInputError("invalid_request", "a transaction comes with sign_transaction only")
        if (self.typed_data_domain is not None) != (self.operation == "sign_typed_data"):
            raise PolicyInputError("invalid_request", "a typed-data domain comes with sign_typed_data only")
        if (self.authorization is not None) != (self.operation == "sign_authorization"):
            raise PolicyInputError("invalid_request", "an authorisation comes with sign_authorization only")
        _set(self, "groups", frozenset(self.groups))
        _set(self, "permits", tuple(self.permits))
        if self.permits and self.typed_data_domain is None:
            raise PolicyInputError("invalid_request", "permits come with sign_typed_data only")
        if any(p.method not in PERMIT_METHODS for p in self.permits):
            raise PolicyInputError("invalid_request", "a typed-data permit's method must be a permit")
        if self.transaction is not None:
            _set(self, "amounts", self.transaction.amounts)
            _set(self, "totals", self.transaction.totals)
        else:
            amounts = tuple(Amount(p.token, p.amount) for p in self.permits if p.amount > 0)
            totals: dict[str, int] = {}
            for a in amounts:
                totals[a.asset] = totals.get(a.asset, 0) + a.value
            _set(self, "amounts", amounts)
            _set(self, "totals", totals)

    @property
    def uncounted_contract(self) -> str | None:
        """The contract this request acts on without an amount the signer could count, or None.

        A transaction that calls ``to`` with calldata that is not a decoded token call (an ERC-677
        ``transferAndCall``, an ERC-777 ``send``, a ``multicall``, anything the signer does not read),
        and EIP-712 data verified by its domain's ``verifyingContract`` that decodes to no permit (a
        governance ``Delegation``, say), may move or commit that contract's tokens while counting
        nothing. A limit, cap or budget on that contract as a token cannot judge such a request, so it
        refuses it (``rules.uncounted_hit``). A call from the account to itself (``self_call``: its
        EIP-7702 delegate's code, a batch ``execute``) may move every asset it holds: ``EVERY_ASSET``,
        which every limit, cap and budget refuses, native value included."""
        tx = self.transaction
        if tx is not None:
            if tx.self_call:
                return None if tx.self_batch is not None else EVERY_ASSET
            return tx.to if tx.to is not None and tx.data_length > 0 and tx.token is None else None
        domain = self.typed_data_domain
        if domain is not None and not self.permits:
            return domain.verifying_contract
        return None

    @property
    def delegations(self) -> tuple[Delegation, ...]:
        """Every EIP-7702 delegation the request signs: a type-4 transaction's authorisations, or the
        one authorisation signed on its own."""
        if self.transaction is not None:
            return self.transaction.delegations
        return () if self.authorization is None else (self.authorization,)

    @property
    def permit_addresses(self) -> tuple[str, ...]:
        """Every address the decoded permits name: tokens, spenders and owners."""
        named = [a for p in self.permits for a in (p.token, p.recipient, p.owner) if a is not None]
        return tuple(dict.fromkeys(named))


# -- structural types of the service's decoded objects ------------------------------------------------


class DecodedTokenCall(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def amount(self) -> int: ...
    @property
    def owner(self) -> str | None: ...


class DecodedAuthorization(Protocol):
    @property
    def chain_id(self) -> int: ...
    @property
    def address(self) -> str: ...


class DecodedBatchCall(Protocol):
    @property
    def to(self) -> str: ...
    @property
    def value(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def token_call(self) -> DecodedTokenCall | None: ...


class DecodedTransaction(Protocol):
    @property
    def chain_id(self) -> int: ...
    @property
    def to(self) -> str | None: ...
    @property
    def value(self) -> int: ...
    @property
    def gas(self) -> int: ...
    @property
    def fee_cap(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def selector(self) -> str | None: ...
    @property
    def token_call(self) -> DecodedTokenCall | None: ...
    @property
    def authorizations(self) -> Sequence[DecodedAuthorization]: ...
    @property
    def batch(self) -> Sequence[DecodedBatchCall] | None: ...
