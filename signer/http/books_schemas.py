"""Request and response bodies of the books routes (address book, token book, registered functions),
for the generated contract."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressBody(_Body):
    label: str = Field(min_length=1, max_length=100, description="shown beside the address")
    note: str | None = Field(default=None, max_length=500)


class AddressEntry(_Out):
    address: str
    label: str
    note: str
    updated_at: str
    updated_by: str


class AddressList(_Out):
    items: list[AddressEntry]


class TokenBody(_Body):
    symbol: str = Field(pattern=r"^[A-Za-z0-9.$_+-]{1,20}$")
    decimals: int = Field(ge=0, le=77)


class TokenEntry(_Out):
    chain_id: int
    contract: str
    symbol: str
    decimals: int
    updated_at: str
    updated_by: str


class TokenList(_Out):
    items: list[TokenEntry]


class FunctionBody(_Body):
    signature: str | None = Field(
        default=None, max_length=1000, description="one canonical signature, e.g. transfer(address,uint256)"
    )
    abi: list[dict[str, Any]] | dict[str, Any] | None = Field(
        default=None, description="a contract ABI (its function entries are registered)"
    )
    contract: str | None = Field(
        default=None,
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="register for this contract only; every contract when absent",
    )


class FunctionEntry(_Out):
    selector: str
    signature: str
    contract: str | None
    updated_at: str
    updated_by: str


class FunctionList(_Out):
    items: list[FunctionEntry]


class Removed(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    removed: bool
