"""The calldata shapes policy must understand: ERC-20 ``transfer``, ``transferFrom`` and ``approve``.

A token transfer moves value without touching the transaction's ``value``, so spend limits need the
token recipient and amount. Decoding is deliberately exact: the selector must match and the arguments
must be the strict ABI encoding (exact length, address words with zero upper bytes). Anything else is
"not a recognised call" (``None``) and policy treats it as unknown calldata; we never guess at a
lenient decoding that a contract might interpret differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from signer.eth.primitives import to_checksum_address

SELECTOR_TRANSFER: Final = bytes.fromhex("a9059cbb")  # transfer(address,uint256)
SELECTOR_TRANSFER_FROM: Final = bytes.fromhex("23b872dd")  # transferFrom(address,address,uint256)
SELECTOR_APPROVE: Final = bytes.fromhex("095ea7b3")  # approve(address,uint256)

_SHAPES: Final = {
    SELECTOR_TRANSFER: ("transfer", ("address", "uint256")),
    SELECTOR_TRANSFER_FROM: ("transferFrom", ("address", "address", "uint256")),
    SELECTOR_APPROVE: ("approve", ("address", "uint256")),
}


@dataclass(frozen=True, slots=True)
class Erc20Call:
    """A decoded ERC-20 call. ``recipient`` is who receives tokens (for ``approve``: the spender who
    may take them); ``owner`` is the account debited by ``transferFrom`` (None otherwise, meaning the
    transaction's sender); ``amount`` is in the token's smallest unit."""

    method: str
    recipient: str
    amount: int
    owner: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            "method": self.method,
            "recipient": self.recipient,
            "amount": str(self.amount),
            "owner": self.owner,
        }


def selector(data: bytes) -> str | None:
    """The 4-byte function selector as ``0x`` + 8 hex digits, or None for calldata shorter than 4 bytes."""
    return "0x" + data[:4].hex() if len(data) >= 4 else None


def decode_erc20_call(data: bytes) -> Erc20Call | None:
    shape = _SHAPES.get(data[:4])
    if shape is None:
        return None
    method, argument_types = shape
    if len(data) != 4 + 32 * len(argument_types):
        return None
    values: list[str | int] = []
    for index, kind in enumerate(argument_types):
        word = data[4 + 32 * index : 36 + 32 * index]
        if kind == "address":
            if any(word[:12]):
                return None
            values.append(to_checksum_address(word[12:]))
        else:
            values.append(int.from_bytes(word, "big"))
    if method == "transferFrom":
        owner, recipient, amount = values
        return Erc20Call(method=method, recipient=str(recipient), amount=int(amount), owner=str(owner))
    recipient, amount = values
    return Erc20Call(method=method, recipient=str(recipient), amount=int(amount))
