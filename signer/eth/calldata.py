"""The token calls policy understands, decoded strictly from calldata: ERC-20, ERC-721 and ERC-1155.

A token call moves or grants value without touching the transaction's ``value``, so spend limits, value
caps and recipient lists need its counterparty and amount. The service understands the selectors in
``SHAPES``; calldata that starts with one of them must be exactly the canonical ABI encoding of that
function's arguments (exact length, zero padding around addresses and booleans, booleans 0 or 1,
dynamic ``bytes`` and arrays at the canonical offsets, in order, zero-padded), or ``decode_token_call``
raises ``InvalidRequest`` code ``calldata_not_canonical``. There is no "unknown" fallback for a known
selector: Solidity contracts execute calldata with trailing bytes or dirty high bits in an address
word, so a call we could not decode would move tokens that policy never counted. Calldata with any
other selector is not a token call (``None``): policy sees only its selector.

How each call is counted (``TokenCall.amount``, in the token contract's own unit):

- ``transfer``, ``transferFrom``, ``approve``, ``increaseAllowance``: the ``uint256`` argument.
  ERC-721's ``transferFrom(address,address,uint256)`` and ``approve(address,uint256)`` share their
  selectors with ERC-20's; nothing in the calldata tells them apart, so they are counted the ERC-20
  way (the token id as an amount). A value cap or spend limit on an ERC-721 contract is therefore
  not a count of NFTs: restrict NFT contracts with recipient lists and selector allowlists.
- ``decreaseAllowance``: 0 (it grants nothing); the spender is still checked against recipient lists.
- ERC-721 ``safeTransferFrom`` (with and without ``bytes data``): 1, one token.
- ERC-1155 ``safeTransferFrom``: its ``amount``; ``safeBatchTransferFrom``: the sum of its amounts.
- ``setApprovalForAll(operator, true)``: ``UINT256_MAX``, unbounded, because it hands the operator
  every token of the contract, present and future; any value cap or spend limit on that contract
  refuses it. ``setApprovalForAll(operator, false)`` revokes and counts 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from signer.errors import InvalidRequest
from signer.eth.primitives import UINT256_MAX, to_checksum_address

CALLDATA_NOT_CANONICAL: Final = "calldata_not_canonical"
_WORD: Final = 32

# The argument kinds the shapes use: static words and the two dynamic kinds ERC-721/1155 need.
_STATIC: Final = frozenset({"address", "uint256", "bool"})


@dataclass(frozen=True, slots=True)
class CallShape:
    method: str  # the function name, which policy's token methods use
    signature: str  # the full Solidity signature, shown to approvers
    standard: str  # "erc20", "erc721", "erc1155" or "erc20/erc721" for shared selectors
    arguments: tuple[str, ...]


SHAPES: Final[dict[bytes, CallShape]] = {
    bytes.fromhex(selector_hex): CallShape(method, signature, standard, arguments)
    for selector_hex, method, signature, standard, arguments in (
        ("a9059cbb", "transfer", "transfer(address,uint256)", "erc20", ("address", "uint256")),
        (
            "23b872dd",
            "transferFrom",
            "transferFrom(address,address,uint256)",
            "erc20/erc721",
            ("address", "address", "uint256"),
        ),
        ("095ea7b3", "approve", "approve(address,uint256)", "erc20/erc721", ("address", "uint256")),
        (
            "39509351",
            "increaseAllowance",
            "increaseAllowance(address,uint256)",
            "erc20",
            ("address", "uint256"),
        ),
        (
            "a457c2d7",
            "decreaseAllowance",
            "decreaseAllowance(address,uint256)",
            "erc20",
            ("address", "uint256"),
        ),
        (
            "a22cb465",
            "setApprovalForAll",
            "setApprovalForAll(address,bool)",
            "erc721/erc1155",
            ("address", "bool"),
        ),
        (
            "42842e0e",
            "safeTransferFrom",
            "safeTransferFrom(address,address,uint256)",
            "erc721",
            ("address", "address", "uint256"),
        ),
        (
            "b88d4fde",
            "safeTransferFrom",
            "safeTransferFrom(address,address,uint256,bytes)",
            "erc721",
            ("address", "address", "uint256", "bytes"),
        ),
        (
            "f242432a",
            "safeTransferFrom",
            "safeTransferFrom(address,address,uint256,uint256,bytes)",
            "erc1155",
            ("address", "address", "uint256", "uint256", "bytes"),
        ),
        (
            "2eb2c2d6",
            "safeBatchTransferFrom",
            "safeBatchTransferFrom(address,address,uint256[],uint256[],bytes)",
            "erc1155",
            ("address", "address", "uint256[]", "uint256[]", "bytes"),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class TokenCall:
    """A decoded token call. ``recipient`` is the counterparty: who receives tokens, or the spender or
    operator an approval names; ``owner`` is the account debited by a ``transferFrom``-style call (None
    otherwise, meaning the transaction's sender); ``amount`` is what policy counts (see the module
    docstring); ``token_ids`` the ERC-721/1155 token ids moved; ``approved`` the flag of
    ``setApprovalForAll``."""

    method: str
    signature: str
    standard: str
    recipient: str
    amount: int
    owner: str | None = None
    token_ids: tuple[int, ...] = ()
    approved: bool | None = None

    def as_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "method": self.method,
            "signature": self.signature,
            "standard": self.standard,
            "recipient": self.recipient,
            "amount": str(self.amount),
            "unbounded": self.amount == UINT256_MAX,
            "owner": self.owner,
        }
        if self.token_ids:
            view["token_ids"] = [str(token_id) for token_id in self.token_ids]
        if self.approved is not None:
            view["approved"] = self.approved
        return view


def selector(data: bytes) -> str | None:
    """The 4-byte function selector as ``0x`` + 8 hex digits, or None for calldata shorter than 4 bytes."""
    return "0x" + data[:4].hex() if len(data) >= 4 else None


def is_token_selector(data: bytes) -> bool:
    return data[:4] in SHAPES


class _NotCanonical(Exception):
    """Internal: the arguments are not the canonical encoding (turned into one InvalidRequest)."""


def _refuse(shape: CallShape) -> InvalidRequest:
    # The message names only the function, never the bytes the caller sent.
    return InvalidRequest(
        f"calldata for {shape.signature} is not its exact canonical ABI encoding",
        code=CALLDATA_NOT_CANONICAL,
        field="data",
    )


def _word(args: bytes, offset: int) -> int:
    if offset < 0 or offset + _WORD > len(args):
        raise _NotCanonical
    return int.from_bytes(args[offset : offset + _WORD], "big")


def _decode_static(kind: str, word: int) -> Any:
    if kind == "address":
        if word >> 160:
            raise _NotCanonical
        return to_checksum_address(word.to_bytes(20, "big"))
    if kind == "bool":
        if word > 1:
            raise _NotCanonical
        return word == 1
    return word


def _decode_tail(kind: str, args: bytes, offset: int) -> Any:
    length = _word(args, offset)
    start = offset + _WORD
    if kind == "bytes":
        if length > len(args) - start:
            raise _NotCanonical
        return args[start : start + length]
    if length > (len(args) - start) // _WORD:
        raise _NotCanonical
    return tuple(_word(args, start + _WORD * index) for index in range(length))


def _encode(arguments: tuple[str, ...], values: list[Any]) -> bytes:
    """The canonical ABI encoding of ``values``: the one byte string strict decoding accepts."""
    head: list[bytes] = []
    tail: list[bytes] = []
    tail_offset = _WORD * len(arguments)
    for kind, value in zip(arguments, values, strict=True):
        if kind in _STATIC:
            number = int(value, 16) if kind == "address" else int(value)
            head.append(number.to_bytes(_WORD, "big"))
            continue
        head.append(tail_offset.to_bytes(_WORD, "big"))
        if kind == "bytes":
            padded = bytes(value) + b"\x00" * (-len(value) % _WORD)
            encoded = len(value).to_bytes(_WORD, "big") + padded
        else:
            encoded = len(value).to_bytes(_WORD, "big") + b"".join(v.to_bytes(_WORD, "big") for v in value)
        tail.append(encoded)
        tail_offset += len(encoded)
    return b"".join(head + tail)


def _decode_arguments(shape: CallShape, args: bytes) -> list[Any]:
    values: list[Any] = []
    for index, kind in enumerate(shape.arguments):
        word = _word(args, _WORD * index)
        if kind in _STATIC:
            values.append(_decode_static(kind, word))
        elif word % _WORD or word >= len(args):
            raise _NotCanonical
        else:
            values.append(_decode_tail(kind, args, word))
    # Decoding read what each argument points at; only the canonical encoding of those values is the
    # calldata itself. This one comparison refuses trailing bytes, dirty padding, reordered, shared or
    # overlapping tails and non-canonical offsets alike.
    if _encode(shape.arguments, values) != args:
        raise _NotCanonical
    return values


def decode_token_call(data: bytes) -> TokenCall | None:
    """The token call ``data`` encodes, None when its selector is not a token call the service knows.

    Raises ``InvalidRequest`` code ``calldata_not_canonical`` (field ``data``) when the selector is a
    known one but the arguments are not exactly their canonical ABI encoding.
    """
    shape = SHAPES.get(bytes(data[:4])) if len(data) >= 4 else None
    if shape is None:
        return None
    try:
        values = _decode_arguments(shape, bytes(data[4:]))
    except _NotCanonical:
        raise _refuse(shape) from None
    return _call_of(shape, values)


def _call_of(shape: CallShape, values: list[Any]) -> TokenCall:
    def call(
        recipient: str,
        amount: int,
        owner: str | None = None,
        token_ids: tuple[int, ...] = (),
        approved: bool | None = None,
    ) -> TokenCall:
        return TokenCall(
            shape.method, shape.signature, shape.standard, recipient, amount, owner, token_ids, approved
        )

    method = shape.method
    if method in ("transfer", "approve", "increaseAllowance"):
        recipient, amount = values
        return call(recipient, amount)
    if method == "decreaseAllowance":
        return call(values[0], 0)
    if method == "setApprovalForAll":
        operator, approved = values
        return call(operator, UINT256_MAX if approved else 0, approved=approved)
    if method == "transferFrom":
        owner, recipient, amount = values
        return call(recipient, amount, owner)
    if shape.standard == "erc721":  # safeTransferFrom, with or without data: one token
        owner, recipient, token_id = values[:3]
        return call(recipient, 1, owner, (token_id,))
    if method == "safeTransferFrom":  # ERC-1155 single
        owner, recipient, token_id, amount, _ = values
        return call(recipient, amount, owner, (token_id,))
    owner, recipient, token_ids, amounts, _ = values  # ERC-1155 batch
    if len(token_ids) != len(amounts):
        # The contract reverts on this; refusing it keeps "decoded" meaning "executable as counted".
        raise _refuse(shape)
    # A sum past 2**256-1 is no amount a contract can move: count it as unbounded.
    return call(recipient, min(sum(amounts), UINT256_MAX), owner, token_ids)
