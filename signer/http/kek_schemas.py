"""Response bodies of the KEK rotation routes, as pydantic models for the generated contract. KEK ids
are the token's CKA_ID in hex (names of keys, never key material)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from signer.http.schemas import View

_KEK_ID = r"^([0-9a-f]{2}){1,64}$"


class KekRotation(View):
    id: str
    scope: str
    state: Literal["switching", "rewrapping", "finished"]
    old_kek_id: str = Field(pattern=_KEK_ID, description="the KEK the rotation replaces")
    new_kek_id: str = Field(pattern=_KEK_ID, description="the KEK that seals and wraps from now on")
    total: int = Field(ge=0, description="versions to rewrap, counted when the new KEK took over")
    rewrapped: int = Field(ge=0, description="versions rewrapped so far")
    remaining: int | None = Field(default=None, ge=0, description="versions still under another KEK")
    retired: list[str] = Field(description="KEKs retired by the rotation (kept until destroyed)")
    destroyed: list[str] = Field(description="retired KEKs an operator has destroyed since")
    started_at: str
    started_by: str | None
    updated_at: str
    finished_at: str | None


class KekDestroyed(View):
    scope: str
    kek_id: str
    destroyed: bool
