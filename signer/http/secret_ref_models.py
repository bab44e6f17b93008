"""The request and response models of resolving secret references (``POST /v1/secrets/resolve``).

Kept beside, not inside, ``models`` and ``schemas``: the grammar of a reference comes from
``signer.secret_refs`` (its one parser), stated here as a JSON Schema pattern so the contract says what
the parser accepts. The answer is the one response besides a fetch that carries values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, JsonValue

from policy.names import NameKind
from signer.http.models import Strict
from signer.http.patterns import name_schema
from signer.http.schemas import SecretValue, View
from signer.secret_refs import FOLDER_PATTERN, MAX_REFERENCE_LENGTH, REFERENCE_PATTERN
from signer.services.secret_resolve import MAX_REFERENCES

_NO_DOTDOT: dict[str, JsonValue] = {"not": {"pattern": r"\.\."}}


class ResolveSecretsBody(Strict):
    """References to resolve (``secret://folder/name[@V][#FIELD]``, ``sec_ID[@V][#FIELD]`` or a name
    alone, looked up from ``workspace`` upward), and or a ``scope`` whose readable secrets to add."""

    references: list[str] = Field(
        default_factory=list,
        max_length=MAX_REFERENCES,
        json_schema_extra={
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_REFERENCE_LENGTH,
                "pattern": REFERENCE_PATTERN,
                **_NO_DOTDOT,
            }
        },
    )
    workspace: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=FOLDER_PATTERN,
        json_schema_extra=_NO_DOTDOT,
        description="the folder a name alone is looked up from (then each parent; the narrowest wins)",
    )
    scope: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=FOLDER_PATTERN,
        json_schema_extra=_NO_DOTDOT,
        description="also every secret under this folder the caller may list and read",
    )
    workload: str | None = Field(
        default=None, min_length=1, max_length=256, json_schema_extra=name_schema(NameKind.TAG)
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "anyOf": [
                {"required": ["references"], "properties": {"references": {"minItems": 1}}},
                {"required": ["scope"], "properties": {"scope": {"type": "string"}}},
            ]
        },
    )


class SkippedSecret(View):
    secret_id: str
    name: str
    folder: str
    state: Literal["active", "disabled"] = Field(
        default="active", description="`disabled`: the whole secret is disabled (no version is read)"
    )


class ResolvedSecrets(View):
    """Every value or none: ``references`` in the order asked, ``scope`` the secrets found under it."""

    references: list[SecretValue]
    scope: list[SecretValue] = Field(description="with `scope`: every secret under it you may list and read")
    skipped: list[SkippedSecret] = Field(
        description="with `scope`: secrets under it you may list but not read (no value)"
    )
