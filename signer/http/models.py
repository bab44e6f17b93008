"""Request bodies as strict models: unknown fields refused, no type coercion.

Every time a request carries is a ``Timestamp``: an RFC 3339 string with a time-zone offset, in years
1970-9999 once in UTC, refused at the edge with code ``invalid_timestamp`` otherwise (a naive time, a
number, a date alone, an impossible date, an offset that carries it past year 9999).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from policy import OPERATIONS
from signer.hsm import Curve
from signer.identity import Role

_NAME_PATTERN = "^[a-z0-9][a-z0-9._-]{0,62}$"
_OPERATIONS: list[JsonValue] = [*sorted(OPERATIONS)]


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")
TIMESTAMP_ERROR = "invalid_timestamp"
_TIMESTAMP_HINT = "an RFC 3339 time with a time-zone offset, e.g. 2030-01-01T00:00:00Z"


def _timestamp(value: object) -> datetime:
    """The one parser of request times: aware, in range, in UTC; the message never quotes the value."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(TIMESTAMP_ERROR, f"expected {_TIMESTAMP_HINT}")
    text = value.upper().replace(" ", "T")
    whole, dot, rest = text.partition(".")
    if dot:  # datetime keeps microseconds: cut a longer fraction, keep the offset
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = f"{whole}.{digits.group()[:6]}{rest[digits.end() :]}"
    try:
        parsed = datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PydanticCustomError(TIMESTAMP_ERROR, "not a valid date and time") from None
    if parsed.year < 1970:
        raise PydanticCustomError(TIMESTAMP_ERROR, "out of range: before 1970")
    return parsed


# A datetime in the model, a string with a date-time format in the contract.
Timestamp = Annotated[
    datetime, PlainValidator(_timestamp), WithJsonSchema({"type": "string", "format": "date-time"})
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RefreshBody(Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class CreatePrincipalBody(Strict):
    # The pattern is checked by the admin service (code invalid_name); here it documents the contract.
    name: str = Field(
        min_length=1, max_length=63, json_schema_extra={"pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"}
    )
    role: Role = Field(json_schema_extra={"enum": [r.value for r in Role]})

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PrincipalStateBody(Strict):
    disabled: bool


class CreateKeyBody(Strict):
    curve: Curve
    label: str = Field(min_length=1, max_length=64)
    scope: str = Field(default="default", min_length=1, max_length=1024)
    tags: list[str] = Field(default_factory=list, max_length=32)

    # Enums arrive as JSON strings: allow that one conversion, nothing else.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class CreateGrantBody(Strict):
    """To one ``principal_id`` or every member of ``group``; on one ``key_id`` or every key under
    ``scope``. ``value_budgets`` maps ``native`` or a token address to a decimal string."""

    principal_id: str | None = Field(default=None, min_length=1, max_length=64)
    group: str | None = Field(default=None, min_length=1, max_length=63)
    key_id: str | None = Field(default=None, min_length=1, max_length=64)
    scope: str | None = Field(default=None, min_length=1, max_length=512)
    # Checked by the admin service (code invalid_operations); the enum documents the contract.
    operations: list[str] = Field(
        min_length=1,
        max_length=8,
        json_schema_extra={"items": {"type": "string", "enum": _OPERATIONS}},
    )
    expires_at: Timestamp | None = None
    max_uses: int | None = Field(default=None, ge=0, le=2**63 - 1)
    value_budgets: dict[str, str] | None = Field(default=None, max_length=64)

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class SignTransactionBody(Strict):
    transaction: dict[str, Any] | None = None
    raw: str | None = Field(default=None, max_length=2 * 64 * 1024)


class SignMessageBody(Strict):
    message: str = Field(max_length=64 * 1024)
    encoding: Literal["utf8", "hex", "base64"] = "utf8"


class SignTypedDataBody(Strict):
    typed_data: dict[str, Any]


class SignDigestBody(Strict):
    digest: str = Field(min_length=64, max_length=66)


class VoteBody(Strict):
    """An approval or rejection names the payload digest it is about; ``signature`` is the approver's
    signature over ``signer-approval:v1:<id>:<decision>:<digest>`` when it has registered a key, with
    the digest in its canonical spelling (64 lower-case hex digits, no ``0x``) whatever ``digest`` used."""

    # Any string up to a bound: the approvals service canonicalises it or refuses it (invalid_digest),
    # the same way for the API and the console.
    digest: str = Field(min_length=1, max_length=200)
    signature: str | None = Field(default=None, min_length=2, max_length=200)


class ApproverKeyBody(Strict):
    scheme: Literal["ed25519", "secp256k1"]
    public_key: str = Field(min_length=64, max_length=132)


class AttachPolicyBody(Strict):
    version: int = Field(ge=1, le=2**63 - 1)
    scope: str | None = Field(default=None, min_length=1, max_length=512)
    key_id: str | None = Field(default=None, min_length=1, max_length=64)
    mode: Literal["live", "shadow"] = "live"


class CandidatePolicy(Strict):
    policy_id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1, le=2**63 - 1)
    scope: str | None = Field(default=None, min_length=1, max_length=512)
    key_id: str | None = Field(default=None, min_length=1, max_length=64)


class DryRunBody(Strict):
    """A sign request to judge without signing: ``operation`` and the same fields its endpoint takes."""

    key_id: str = Field(min_length=1, max_length=64)
    operation: Literal["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]
    principal_id: str | None = Field(default=None, min_length=1, max_length=64)
    transaction: dict[str, Any] | None = None
    raw: str | None = Field(default=None, max_length=65536)
    message: str | None = Field(default=None, max_length=65536)
    encoding: Literal["utf8", "hex", "base64"] = "utf8"
    typed_data: dict[str, Any] | None = None
    digest: str | None = Field(default=None, max_length=130)
    candidate: CandidatePolicy | None = None


class WebhookBody(Strict):
    url: str = Field(min_length=8, max_length=2048)


class WebhookRotateBody(Strict):
    """Optional: how long the previous secret is still sent (default: ``webhook_secret_overlap_seconds``)."""

    overlap_seconds: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)


class PolicyDocumentBody(Strict):
    """A policy document (documented here; the handler parses it strictly with ``policy``, which knows
    each rule kind's fields). YAML with ``Content-Type: application/yaml`` is accepted too."""

    id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1, le=2**63 - 1)
    description: str = ""
    rules: list[dict[str, Any]] = Field(max_length=1000)
