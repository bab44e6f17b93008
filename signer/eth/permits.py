"""Token approvals signed as EIP-712 typed data: EIP-2612 ``Permit`` (and its DAI and ERC-721 variants)
and Uniswap Permit2, decoded strictly so policy can count them like ``approve``.

A permit signature is an approval: whoever holds it can move the signer's tokens without another
transaction from the signer. ``decode_permits`` reads a validated ``TypedDataDigest`` (values already
checked against their declared types by ``signer.eth.messages``) and returns the approvals it grants.
A request whose ``primaryType`` is one of the names in ``PERMIT_SHAPES`` must declare exactly one of
the shapes listed for that name (same members, same types, same order, and the same nested structs),
or it is refused with ``InvalidRequest`` code ``permit_not_canonical``: a "Permit" we cannot read is
one we cannot count. Any other primary type is not a permit (an empty tuple).

What is counted (``Permit.amount``, in the token's unit):

- EIP-2612 ``Permit(owner,spender,value,nonce,deadline)``: ``value``; the token is the domain's
  ``verifyingContract`` (required).
- DAI ``Permit(holder,spender,nonce,expiry,allowed)``: unbounded (2**256-1) when ``allowed``, else 0.
- EIP-4494 (ERC-721) ``Permit(spender,tokenId,nonce,deadline)``: 1, one token.
- EIP-3009 ``TransferWithAuthorization`` / ``ReceiveWithAuthorization(from,to,value,validAfter,
  validBefore,nonce)``: a signed transfer, not an allowance, but it moves ``value`` of the domain's
  ``verifyingContract`` (required) to ``to``, so it is counted the same way with ``to`` as its spender.
- Permit2 ``PermitSingle``/``PermitBatch`` (allowances) and ``PermitTransferFrom``/
  ``PermitBatchTransferFrom`` (and their ``Witness`` variants, whose witness may be any struct): each
  token's amount; Permit2's "unlimited" allowance (2**160-1) is counted as unbounded (2**256-1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from signer.errors import InvalidRequest
from signer.eth.messages import TypedDataDigest
from signer.eth.primitives import UINT256_MAX

PERMIT_NOT_CANONICAL: Final = "permit_not_canonical"
PERMIT2_UNLIMITED: Final = 2**160 - 1

Shape = tuple[tuple[str, str], ...]

_EIP2612: Final[Shape] = (
    ("owner", "address"),
    ("spender", "address"),
    ("value", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
)
_DAI: Final[Shape] = (
    ("holder", "address"),
    ("spender", "address"),
    ("nonce", "uint256"),
    ("expiry", "uint256"),
    ("allowed", "bool"),
)
_EIP4494: Final[Shape] = (
    ("spender", "address"),
    ("tokenId", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
)
# EIP-3009 (USDC and others): a signed transfer that anyone may submit; ``Receive...`` only the payee.
_EIP3009: Final[Shape] = (
    ("from", "address"),
    ("to", "address"),
    ("value", "uint256"),
    ("validAfter", "uint256"),
    ("validBefore", "uint256"),
    ("nonce", "bytes32"),
)
_EIP3009_TYPES: Final = frozenset({"TransferWithAuthorization", "ReceiveWithAuthorization"})
_PERMIT_DETAILS: Final[Shape] = (
    ("token", "address"),
    ("amount", "uint160"),
    ("expiration", "uint48"),
    ("nonce", "uint48"),
)
_TOKEN_PERMISSIONS: Final[Shape] = (("token", "address"), ("amount", "uint256"))

# The nested structs each Permit2 primary type needs, with their only accepted shape.
_NESTED: Final[dict[str, Shape]] = {"PermitDetails": _PERMIT_DETAILS, "TokenPermissions": _TOKEN_PERMISSIONS}


def _transfer_from(batch: bool) -> Shape:
    permitted = "TokenPermissions[]" if batch else "TokenPermissions"
    return (("permitted", permitted), ("spender", "address"), ("nonce", "uint256"), ("deadline", "uint256"))


# primaryType -> the shapes it may have. A name here with any other shape is refused.
PERMIT_SHAPES: Final[dict[str, tuple[Shape, ...]]] = {
    "Permit": (_EIP2612, _DAI, _EIP4494),
    "TransferWithAuthorization": (_EIP3009,),
    "ReceiveWithAuthorization": (_EIP3009,),
    "PermitSingle": ((("details", "PermitDetails"), ("spender", "address"), ("sigDeadline", "uint256")),),
    "PermitBatch": ((("details", "PermitDetails[]"), ("spender", "address"), ("sigDeadline", "uint256")),),
    "PermitTransferFrom": (_transfer_from(False),),
    "PermitBatchTransferFrom": (_transfer_from(True),),
    # The witness variants: the same members, then ``witness`` of a struct type the caller defines.
    "PermitWitnessTransferFrom": (_transfer_from(False),),
    "PermitBatchWitnessTransferFrom": (_transfer_from(True),),
}
_WITNESS: Final = frozenset({"PermitWitnessTransferFrom", "PermitBatchWitnessTransferFrom"})


@dataclass(frozen=True, slots=True)
class Permit:
    """One approval a permit grants: ``spender`` may take up to ``amount`` of ``token`` from ``owner``
    (None: the signer) until ``deadline`` (the signature's deadline; for a Permit2 allowance also
    ``expiration``, when the allowance itself ends). ``method`` is the policy name (``permit`` or
    ``permit2``), ``standard`` says which variant, ``token_id`` is set for an ERC-721 permit."""

    method: str
    standard: str
    primary_type: str
    token: str
    spender: str
    amount: int
    owner: str | None = None
    deadline: int | None = None
    expiration: int | None = None
    token_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "standard": self.standard,
            "primary_type": self.primary_type,
            "token": self.token,
            "spender": self.spender,
            "amount": str(self.amount),
            "unbounded": self.amount == UINT256_MAX,
            "owner": self.owner,
            "deadline": None if self.deadline is None else str(self.deadline),
        }
        if self.expiration is not None:
            view["expiration"] = str(self.expiration)
        if self.token_id is not None:
            view["token_id"] = str(self.token_id)
        return view


def _refuse(primary_type: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{primary_type}: {message}", code=PERMIT_NOT_CANONICAL, field="typed_data")


def _shape(types: Mapping[str, list[dict[str, str]]], name: str) -> Shape:
    return tuple((member["name"], member["type"]) for member in types.get(name, []))


def _check_nested(typed: TypedDataDigest, shape: Shape) -> None:
    for _, kind in shape:
        base = kind.removesuffix("[]")
        if base in _NESTED and _shape(typed.types, base) != _NESTED[base]:
            raise _refuse(typed.primary_type, f"{base} is not the Permit2 {base}")


def _permit2_amount(amount: int) -> int:
    return UINT256_MAX if amount >= PERMIT2_UNLIMITED else amount


def decode_permits(typed: TypedDataDigest) -> tuple[Permit, ...]:
    """The approvals ``typed`` grants: empty when its primary type is not a permit; raises
    ``InvalidRequest`` code ``permit_not_canonical`` when it is named like one but is not one exactly."""
    primary = typed.primary_type
    accepted = PERMIT_SHAPES.get(primary)
    if accepted is None:
        return ()
    declared = _shape(typed.types, primary)
    if primary in _WITNESS:
        # Permit2 hashes the witness as the fifth member; its type is the integrator's own struct.
        if len(declared) != 5 or declared[4][0] != "witness" or declared[4][1] not in typed.types:
            raise _refuse(primary, "a witness transfer ends with a 'witness' struct member")
        declared = declared[:4]
    if declared not in accepted:
        raise _refuse(primary, "the type is not a permit shape the service knows")
    _check_nested(typed, declared)
    message = typed.message
    if primary == "Permit":
        return (_eip2612_family(typed, declared, message),)
    if primary in _EIP3009_TYPES:
        token = typed.domain.get("verifyingContract")
        if token is None:
            raise _refuse(primary, "the domain names no verifyingContract (the token)")
        # A transfer, counted like one: the payee is the counterparty, the value the amount.
        return (
            Permit(
                "permit",
                "eip3009",
                primary,
                token,
                message["to"],
                message["value"],
                owner=message["from"],
                deadline=message["validBefore"],
            ),
        )
    spender = message["spender"]
    if primary in ("PermitSingle", "PermitBatch"):
        details = message["details"]
        return tuple(
            Permit(
                "permit2",
                "permit2",
                primary,
                item["token"],
                spender,
                _permit2_amount(item["amount"]),
                deadline=message["sigDeadline"],
                expiration=item["expiration"],
            )
            for item in (details if isinstance(details, list) else [details])
        )
    permitted = message["permitted"]
    return tuple(
        Permit(
            "permit2",
            "permit2",
            primary,
            item["token"],
            spender,
            _permit2_amount(item["amount"]),
            deadline=message["deadline"],
        )
        for item in (permitted if isinstance(permitted, list) else [permitted])
    )


def _eip2612_family(typed: TypedDataDigest, shape: Shape, message: Mapping[str, Any]) -> Permit:
    token = typed.domain.get("verifyingContract")
    if token is None:
        # The token of an EIP-2612 permit is the contract that verifies it: without one, nothing to count.
        raise _refuse("Permit", "the domain names no verifyingContract (the token)")
    if shape == _EIP2612:
        return Permit(
            "permit",
            "eip2612",
            "Permit",
            token,
            message["spender"],
            message["value"],
            owner=message["owner"],
            deadline=message["deadline"],
        )
    if shape == _DAI:
        amount = UINT256_MAX if message["allowed"] else 0
        return Permit(
            "permit",
            "dai",
            "Permit",
            token,
            message["spender"],
            amount,
            owner=message["holder"],
            deadline=message["expiry"],
        )
    return Permit(
        "permit",
        "eip4494",
        "Permit",
        token,
        message["spender"],
        1,
        deadline=message["deadline"],
        token_id=message["tokenId"],
    )
