"""Request bodies as strict models: unknown fields refused, no type coercion; and their contract.

The OpenAPI document's request schemas are these models' JSON schemas, so every rule a validator
applies is written here once: as a constraint pydantic enforces, or, for a rule a service or ``policy``
enforces, as the pattern, format or combination that describes it (``json_schema_extra``). A test holds
each description to its validator (``tests/test_http_contract_rules.py``).

Names follow ``policy.names.canonical_name``; how a name's rule and the services' other rules are stated
in the document (patterns and formats) lives in ``signer.http.patterns``.

Every time a request carries is a ``Timestamp``: an RFC 3339 string with a time-zone offset, in years
1970-9999 once in UTC, refused at the edge with code ``invalid_timestamp`` otherwise (a naive time, a
number, a date alone, an impossible date, an offset that carries it past year 9999).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainValidator, StrictBool, WithJsonSchema
from pydantic_core import PydanticCustomError

from policy import OPERATIONS, RESOURCE_TYPES, SECRET_GRANT_OPERATIONS
from policy.names import NameKind
from signer.hsm import Curve
from signer.http.patterns import (
    ASSET_PATTERN,
    BASE64_PATTERN,
    DIGEST_PATTERN,
    HEX_PATTERN,
    UINT256_PATTERN,
    WEBHOOK_URL_PATTERN,
    name_schema,
)
from signer.identity import Role

_OPERATIONS: list[JsonValue] = [*sorted(OPERATIONS | SECRET_GRANT_OPERATIONS)]


# A grant either allows the operations it lists or says "no access" and lists none (nor any limit):
# never a list of zero operations that could be read either way.
ALLOW_OR_NO_ACCESS: dict[str, JsonValue] = {
    "oneOf": [
        {
            "required": ["operations"],
            "properties": {"operations": {"type": "array"}, "no_access": {"const": False}},
        },
        {
            "required": ["no_access"],
            "properties": {
                "no_access": {"const": True},
                "operations": {"type": "null"},
                "max_uses": {"type": "null"},
                "value_budgets": {"type": "null"},
            },
        },
    ]
}


def exactly_one_of(*fields: str) -> dict[str, JsonValue]:
    """Exactly one of ``fields`` present and not null."""
    return {"oneOf": [{"required": [f], "properties": {f: {"not": {"type": "null"}}}} for f in fields]}


MESSAGE_ENCODINGS: dict[str, JsonValue] = {
    "anyOf": [
        {"not": {"required": ["encoding"]}},
        {"properties": {"encoding": {"const": "utf8"}}},
        {"properties": {"encoding": {"const": "hex"}, "message": {"pattern": HEX_PATTERN}}},
        {"properties": {"encoding": {"const": "base64"}, "message": {"pattern": BASE64_PATTERN}}},
    ]
}

DRY_RUN_PAYLOADS: dict[str, JsonValue] = {
    # A message present is read in its encoding whatever the operation (the dry run parses every field).
    **MESSAGE_ENCODINGS,
    "oneOf": [
        {"properties": {"operation": {"const": "sign_transaction"}}, **exactly_one_of("transaction", "raw")},
        {
            "properties": {"operation": {"const": "sign_message"}, "message": {"type": "string"}},
            "required": ["message"],
            **MESSAGE_ENCODINGS,
        },
        {
            "properties": {"operation": {"const": "sign_typed_data"}, "typed_data": {"type": "object"}},
            "required": ["typed_data"],
        },
        {
            "properties": {"operation": {"const": "sign_authorization"}, "authorization": {"type": "object"}},
            "required": ["authorization"],
        },
        {
            "properties": {
                "operation": {"const": "sign_raw"},
                "digest": {"type": "string", "pattern": DIGEST_PATTERN},
            },
            "required": ["digest"],
        },
    ],
}


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
    name: str = Field(min_length=1, max_length=63, json_schema_extra=name_schema(NameKind.IDENTIFIER))
    role: Role = Field(json_schema_extra={"enum": [r.value for r in Role]})

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PrincipalStateBody(Strict):
    disabled: bool


class CreateKeyBody(Strict):
    curve: Curve
    # Labels, scopes and tags are checked by the keys service (code invalid_name); described here.
    label: str = Field(min_length=1, max_length=64, json_schema_extra=name_schema(NameKind.LABEL))
    scope: str = Field(
        default="default", min_length=1, max_length=1024, json_schema_extra=name_schema(NameKind.SCOPE)
    )
    tags: list[str] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={
            "items": {"type": "string", "minLength": 1, "maxLength": 256, **name_schema(NameKind.TAG)}
        },
    )

    inactive: StrictBool = Field(
        default=False, description="create it in state `pre_activation`: it signs nothing until activated"
    )

    # Enums arrive as JSON strings: allow that one conversion, nothing else.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def _key_reason() -> Any:
    return Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=r"^[ -~]+$",
        description="why (kept in the audit log)",
    )


def _key_approval() -> Any:
    return Field(
        default=None,
        min_length=1,
        max_length=64,
        description="complete the caller's approved request for this transition (from the 202 answer)",
    )


def _key_confirm() -> Any:
    return Field(
        min_length=1, max_length=64, description="the key's label, exactly: this transition is irreversible"
    )


class KeyStateBody(Strict):
    """Why a key is activated, suspended or deactivated (kept in the audit event); ``approval_id``
    completes an approved request for this transition."""

    reason: str | None = _key_reason()
    approval_id: str | None = _key_approval()


class KeyCompromiseBody(Strict):
    """A compromise: confirmed by the key's label; when it is believed to have happened, if known."""

    confirm: str = _key_confirm()
    reason: str | None = _key_reason()
    compromised_at: Timestamp | None = Field(
        default=None, description="when the key is believed to have been compromised (not in the future)"
    )
    approval_id: str | None = _key_approval()


class KeyDestroyBody(Strict):
    """A destruction: confirmed by the key's label."""

    confirm: str = _key_confirm()
    reason: str | None = _key_reason()
    approval_id: str | None = _key_approval()


def _operations_for(target: str, operations: frozenset[str]) -> dict[str, JsonValue]:
    """When ``target`` is given, ``operations`` are among ``operations``."""
    allowed: list[JsonValue] = [*sorted(operations)]
    return {
        "if": {"required": [target], "properties": {target: {"type": "string"}}},
        "then": {"properties": {"operations": {"items": {"enum": allowed}}}},
    }


_RESOURCE_KINDS: list[JsonValue] = [kind for kind in sorted(RESOURCE_TYPES)]


class ResourceReference(Strict):
    """One resource by reference: its kind (one policy knows: ``policy.RESOURCE_TYPES``) and its id.
    The service that takes it refuses a kind that is not registered (``invalid_attachment`` for a
    policy attachment, ``invalid_grant`` for a grant)."""

    type: str = Field(json_schema_extra={"enum": _RESOURCE_KINDS})
    id: str = Field(min_length=1, max_length=64)


def _operations_on(kind: str, operations: frozenset[str]) -> dict[str, JsonValue]:
    """When ``resource`` is one of ``kind``, ``operations`` are among ``operations``."""
    allowed: list[JsonValue] = [*sorted(operations)]
    return {
        "if": {
            "required": ["resource"],
            "properties": {"resource": {"type": "object", "properties": {"type": {"const": kind}}}},
        },
        "then": {"properties": {"operations": {"items": {"enum": allowed}}}},
    }


class CreateGrantBody(Strict):
    """To one ``principal_id`` or every member of ``group``; on one ``resource`` (its kind and id) or
    every resource under ``scope``. ``key_id`` and ``secret_id`` are the older spellings of a key or
    secret reference. ``value_budgets`` maps ``native`` or a token address to a decimal string."""

    principal_id: str | None = Field(default=None, min_length=1, max_length=64)
    group: str | None = Field(
        default=None, min_length=1, max_length=63, json_schema_extra=name_schema(NameKind.IDENTIFIER)
    )
    resource: ResourceReference | None = None
    key_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description='the older form of {"resource": {"type": "key", "id": ...}}',
    )
    secret_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description='the older form of {"resource": {"type": "secret", "id": ...}}',
    )
    scope: str | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra=name_schema(NameKind.SCOPE)
    )
    # Checked by the admin service (code invalid_operations); the enum documents the contract.
    operations: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        json_schema_extra={"items": {"type": "string", "enum": _OPERATIONS}},
    )
    expires_at: Timestamp | None = Field(
        default=None, json_schema_extra={"description": "must be in the future (refused with invalid_expiry)"}
    )
    max_uses: int | None = Field(default=None, ge=0, le=2**63 - 1)
    no_access: StrictBool = Field(
        default=False,
        description='an explicit "no access" here, overriding what the same principal or group '
        "inherits from a broader scope; it takes no operations and no limits",
    )
    # Checked by the admin service (code invalid_budget); described here.
    value_budgets: dict[str, str] | None = Field(
        default=None,
        max_length=64,
        json_schema_extra={
            "propertyNames": {"pattern": ASSET_PATTERN},
            "additionalProperties": {"type": "string", "pattern": UINT256_PATTERN},
        },
    )
    approval_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="create the grant on a key that the caller's approved request approved (the same body)",
    )

    # The admin service refuses anything but exactly one grantee and exactly one target (invalid_grant).
    model_config = ConfigDict(
        extra="forbid",
        strict=False,
        frozen=True,
        json_schema_extra={
            "allOf": [
                exactly_one_of("principal_id", "group"),
                exactly_one_of("resource", "key_id", "secret_id", "scope"),
                ALLOW_OR_NO_ACCESS,
                # A key grant names signing operations, a secret grant the secrets' operations.
                _operations_for("key_id", OPERATIONS),
                _operations_for("secret_id", SECRET_GRANT_OPERATIONS),
                _operations_on("key", OPERATIONS),
                _operations_on("secret", SECRET_GRANT_OPERATIONS),
            ]
        },
    )

    def reference(self) -> tuple[str, str] | None:
        return None if self.resource is None else (self.resource.type, self.resource.id)


class SignTransactionBody(Strict):
    """Exactly one of ``transaction`` (fields) or ``raw`` (unsigned serialised hex): the signing service
    refuses anything else (invalid_request)."""

    transaction: dict[str, Any] | None = None
    # Its content (hex of an unsigned transaction) is the eth parser's to judge: see SEMANTIC_REFUSALS.
    raw: str | None = Field(default=None, max_length=2 * 64 * 1024)

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=exactly_one_of("transaction", "raw")
    )


class SignMessageBody(Strict):
    """``message`` is text (utf8), hex (``0x`` optional) or base64 (RFC 4648, padded): see ``encoding``."""

    message: str = Field(max_length=64 * 1024)
    encoding: Literal["utf8", "hex", "base64"] = "utf8"

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=MESSAGE_ENCODINGS)


class SignTypedDataBody(Strict):
    typed_data: dict[str, Any]


class SignDigestBody(Strict):
    digest: str = Field(min_length=64, max_length=66, json_schema_extra={"pattern": DIGEST_PATTERN})


class SignAuthorizationBody(Strict):
    """An EIP-7702 authorisation to sign on its own: on chain ``chain_id`` (0: any chain), while the key's
    account nonce is ``nonce``, the account runs ``delegate``'s code. Integers may be JSON numbers, 0x
    hex or decimal strings; the delegate must be on a ``delegate_allowlist`` rule in force."""

    # Ranges, hex and the address's checksum are the eth parser's (invalid_hex, invalid_address,
    # value_out_of_range): described as a semantic refusal of this operation.
    chain_id: int | str = Field(json_schema_extra={"minimum": 0}, union_mode="left_to_right")
    delegate: str = Field(min_length=42, max_length=42)
    nonce: int | str = Field(json_schema_extra={"minimum": 0}, union_mode="left_to_right")


class VoteBody(Strict):
    """An approval or rejection names the payload digest it is about; ``signature`` is the approver's
    signature over ``signer-approval:v1:<id>:<decision>:<digest>`` when it has registered a key, with
    the digest in its canonical spelling (64 lower-case hex digits, no ``0x``) whatever ``digest`` used."""

    # Any string up to a bound: the approvals service canonicalises it or refuses it (invalid_digest),
    # the same way for the API and the console.
    digest: str = Field(min_length=1, max_length=200, json_schema_extra={"pattern": DIGEST_PATTERN})
    signature: str | None = Field(default=None, min_length=2, max_length=200)


class ApproverKeyBody(Strict):
    scheme: Literal["ed25519", "secp256k1"]
    public_key: str = Field(min_length=64, max_length=132)


class AttachPolicyBody(Strict):
    version: int = Field(ge=1, le=2**63 - 1)
    scope: str | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra=name_schema(NameKind.SCOPE)
    )
    resource: ResourceReference | None = None
    key_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description='the older form of {"resource": {"type": "key", "id": ...}}',
    )
    mode: Literal["live", "shadow"] = "live"

    # The policies service refuses anything but exactly one target (invalid_attachment).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=exactly_one_of("scope", "resource", "key_id"),
    )

    def reference(self) -> tuple[str, str] | None:
        return None if self.resource is None else (self.resource.type, self.resource.id)


class CandidatePolicy(Strict):
    policy_id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1, le=2**63 - 1)
    scope: str | None = Field(
        default=None, min_length=1, max_length=512, json_schema_extra=name_schema(NameKind.SCOPE)
    )
    resource: ResourceReference | None = None
    key_id: str | None = Field(default=None, min_length=1, max_length=64)

    # The dry run refuses anything but exactly one target (invalid_attachment).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=exactly_one_of("scope", "resource", "key_id"),
    )

    def reference(self) -> tuple[str, str] | None:
        return None if self.resource is None else (self.resource.type, self.resource.id)


class DryRunBody(Strict):
    """A sign request to judge without signing: ``operation`` and the same fields its endpoint takes."""

    key_id: str = Field(min_length=1, max_length=64)
    operation: Literal[
        "sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"
    ]
    principal_id: str | None = Field(default=None, min_length=1, max_length=64)
    transaction: dict[str, Any] | None = None
    raw: str | None = Field(default=None, max_length=65536)
    message: str | None = Field(default=None, max_length=65536)
    encoding: Literal["utf8", "hex", "base64"] = "utf8"
    typed_data: dict[str, Any] | None = None
    digest: str | None = Field(default=None, max_length=130)
    authorization: dict[str, Any] | None = None
    candidate: CandidatePolicy | None = None

    # The signing service needs the fields of the named operation (invalid_field, invalid_request).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=DRY_RUN_PAYLOADS)


class WebhookBody(Strict):
    # Checked by the webhooks service (invalid_field, url_has_credentials); described here.
    url: str = Field(min_length=8, max_length=2048, json_schema_extra={"pattern": WEBHOOK_URL_PATTERN})


class WebhookRotateBody(Strict):
    """Optional: how long the previous secret is still sent (default: ``webhook_secret_overlap_seconds``)."""

    overlap_seconds: int | None = Field(default=None, ge=0, le=30 * 24 * 3600)


def _policy_document(schema: dict[str, Any]) -> None:
    # The parser's shape (signer.http.policy_schema builds on this module's name schemas: imported late).
    from signer.http.policy_schema import policy_document_schema

    schema.clear()
    schema.update({"title": "PolicyDocumentBody", **policy_document_schema()})


class PolicyDocumentBody(Strict):
    """A policy document (documented here; the handler parses it strictly with ``policy``, and its schema
    is generated from that parser's tables). YAML with ``Content-Type: application/yaml`` is accepted too."""

    id: str = Field(min_length=1, max_length=64)
    version: int = Field(ge=1, le=2**63 - 1)
    description: str = ""
    rules: list[dict[str, Any]] = Field(max_length=1000)

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=_policy_document)


# -- secrets --------------------------------------------------------------------------------------

FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
# A secret held by reference: an AWS ARN or name, or a KV v2 path MOUNT/data/PATH (the same rules as
# signer/services/secret_backends/aws.py and openbao.py, which check them again).
_REFERENCE_PATTERN = r"^[A-Za-z0-9/_+=.@:-]+$"
_AWS_REFERENCE = (
    r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,512}"
    r"|[A-Za-z0-9/_+=.@-]{1,512})$"
)
_KV_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}"
_KV_REFERENCE = rf"^{_KV_SEGMENT}(/{_KV_SEGMENT})*/data/{_KV_SEGMENT}(/{_KV_SEGMENT})*$"
# A reference needs an external backend (and its form); a value given here needs the sealed one.
_BY_REFERENCE: list[JsonValue] = [
    {
        "anyOf": [
            {"not": {"required": ["reference"]}},
            {"properties": {"reference": {"type": "null"}}},
            {
                "required": ["backend"],
                "properties": {
                    "backend": {"const": "aws_secrets_manager"},
                    "reference": {"pattern": _AWS_REFERENCE},
                },
            },
            {
                "required": ["backend"],
                "properties": {"backend": {"const": "openbao_kv2"}, "reference": {"pattern": _KV_REFERENCE}},
            },
        ]
    },
    {
        "anyOf": [
            {"not": {"required": ["backend"]}},
            {"properties": {"backend": {"const": "sealed"}}},
            {"properties": {"fields": {"type": "null"}, "generate": {"type": "null"}}},
        ]
    },
]
# AWS Secrets Manager's VersionId or VersionStage (the same rule as secret_kind.BACKEND_VERSION).
BACKEND_VERSION_PATTERN = r"^[A-Za-z0-9_.-]{1,256}$"
# Text without ASCII or C1 control characters, except newline and tab (descriptions).
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"
_SECRET_CATEGORY = Literal[
    "api_key", "oauth_token", "database", "registry", "publication", "infrastructure", "other"
]
_DOTDOT: dict[str, JsonValue] = {"pattern": r"\.\."}
_SECRET_TAGS: dict[str, JsonValue] = {
    "items": {"type": "string", "minLength": 1, "maxLength": 256, **name_schema(NameKind.TAG)}
}
_SECRET_FIELDS: dict[str, JsonValue] = {
    "propertyNames": {"pattern": FIELD_NAME_PATTERN},
    "additionalProperties": {"type": "string", "minLength": 1},
    "description": "field name -> value; each value at most secret_max_value_bytes of UTF-8 (default 65536)",
}


class GenerateRule(Strict):
    """A value the service makes: ``chars`` (``length`` characters from ``classes``, at least one of
    each), ``hex`` or ``base64`` (``bytes`` random bytes), or ``uuid``; stored in ``field``."""

    kind: Literal["chars", "hex", "base64", "uuid"]
    field: str = Field(default="value", min_length=1, max_length=64, pattern=FIELD_NAME_PATTERN)
    length: int | None = Field(default=None, ge=8, le=4096)
    bytes: int | None = Field(default=None, ge=8, le=4096)
    classes: list[Literal["lower", "upper", "digits", "symbols"]] | None = Field(
        default=None, min_length=1, max_length=4, json_schema_extra={"uniqueItems": True}
    )


class CreateSecretBody(Strict):
    """A secret in ``folder`` named ``name``, owned by one principal or one group, with its first value:
    exactly one of ``fields`` (given) or ``generate`` (made by the service)."""

    # The secrets service also refuses ".." anywhere in a folder or name (a path-like look-alike).
    folder: str = Field(
        min_length=1, max_length=512, json_schema_extra={**name_schema(NameKind.SCOPE), "not": _DOTDOT}
    )
    name: str = Field(
        min_length=1, max_length=63, json_schema_extra={**name_schema(NameKind.IDENTIFIER), "not": _DOTDOT}
    )
    owner_principal: str | None = Field(default=None, min_length=1, max_length=64)
    owner_group: str | None = Field(
        default=None, min_length=1, max_length=63, json_schema_extra=name_schema(NameKind.IDENTIFIER)
    )
    description: str = Field(default="", max_length=1024, pattern=DESCRIPTION_PATTERN)
    tags: list[str] = Field(default_factory=list, max_length=32, json_schema_extra=_SECRET_TAGS)
    category: _SECRET_CATEGORY = "other"
    consumers: list[str] = Field(default_factory=list, max_length=64, json_schema_extra=_SECRET_TAGS)
    fields: dict[str, str] | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_SECRET_FIELDS
    )
    generate: GenerateRule | None = None
    # Held by reference instead (no fields, no generate): an AWS Secrets Manager ARN or name, or a KV v2
    # path MOUNT/data/PATH; the value is fetched from there at read time.
    backend: Literal["sealed", "aws_secrets_manager", "openbao_kv2"] = "sealed"
    reference: str | None = Field(default=None, min_length=1, max_length=2048, pattern=_REFERENCE_PATTERN)

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "allOf": [
                exactly_one_of("owner_principal", "owner_group"),
                exactly_one_of("fields", "generate", "reference"),
                *_BY_REFERENCE,
            ]
        },
    )


class UpdateSecretBody(Strict):
    """Metadata to change (at least one; never the name, folder or value); an owner is one of the two."""

    description: str | None = Field(default=None, max_length=1024, pattern=DESCRIPTION_PATTERN)
    tags: list[str] | None = Field(default=None, max_length=32, json_schema_extra=_SECRET_TAGS)
    category: _SECRET_CATEGORY | None = None
    consumers: list[str] | None = Field(default=None, max_length=64, json_schema_extra=_SECRET_TAGS)
    owner_principal: str | None = Field(default=None, min_length=1, max_length=64)
    owner_group: str | None = Field(
        default=None, min_length=1, max_length=63, json_schema_extra=name_schema(NameKind.IDENTIFIER)
    )
    pins: dict[str, int] | None = Field(
        default=None,
        max_length=64,
        description="consumer (workload label) -> the version its fetches get when they name none; "
        "replaces every pin ({} unpins all)",
        json_schema_extra={
            "propertyNames": {"minLength": 1, "maxLength": 63, **name_schema(NameKind.TAG)},
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 999999999},
        },
    )
    overlap_seconds: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * 86400,
        description="how long a previous version stays readable after a rotation (0 clears)",
    )
    rotation_interval_seconds: int | None = Field(
        default=None,
        ge=0,
        le=10 * 365 * 86400,
        description="rotate (generated) or report overdue (provided) this long after a rotation (0 clears)",
    )

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            # At least one change that is not null.
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in (
                    "description",
                    "tags",
                    "category",
                    "consumers",
                    "owner_principal",
                    "owner_group",
                    "pins",
                    "overlap_seconds",
                    "rotation_interval_seconds",
                )
            ],
            "not": {
                "required": ["owner_principal", "owner_group"],
                "properties": {"owner_principal": {"type": "string"}, "owner_group": {"type": "string"}},
            },
        },
    )


class SetSecretValueBody(Strict):
    """A new version: exactly one of ``fields``, ``generate`` or ``from_rule`` (a generated secret's
    stored rule); ``stage``: pending, read by number only until promoted."""

    fields: dict[str, str] | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=_SECRET_FIELDS
    )
    generate: GenerateRule | None = None
    from_rule: Literal[True] | None = Field(
        default=None, description="a new value from the secret's own generation rule"
    )
    stage: bool = Field(default=False, description="stage the version; promote it to make it current")

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra=exactly_one_of("fields", "generate", "from_rule"),
    )


class SecretFolderDefaultsBody(Strict):
    """A folder's defaults for secrets created in it or below from now on (0 or null clears one)."""

    folder: str = Field(min_length=1, max_length=512, json_schema_extra=name_schema(NameKind.SCOPE))
    rotation_interval_seconds: int | None = Field(default=None, ge=0, le=10 * 365 * 86400)
    overlap_seconds: int | None = Field(default=None, ge=0, le=10 * 365 * 86400)


class SecretVersionStateBody(Strict):
    """Why a version is disabled, enabled or destroyed (kept with the version and in the audit)."""

    reason: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[ -~]+$")


class SecretStateBody(Strict):
    """Why a whole secret is disabled or enabled (kept with the secret and in the audit)."""

    reason: str | None = Field(default=None, min_length=1, max_length=256, pattern=r"^[ -~]+$")


class FetchSecretBody(Strict):
    """The current version (or ``version``), one ``field`` or all; ``workload`` labels who reads it.
    With ``approval_id`` (and neither ``version`` nor ``field``): release the approved read once, the
    version and fields its approvers approved."""

    approval_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the caller's approved request for this read (from the 202 answer)",
    )

    # With approval_id, the approval fixes the version and fields (refused: approval_fixes_the_read).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        json_schema_extra={
            "anyOf": [
                {"properties": {"approval_id": {"type": "null"}}},
                {"properties": {"version": {"type": "null"}, "field": {"type": "null"}}},
            ]
        },
    )

    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    # A secret held in AWS Secrets Manager: a VersionId (a UUID) or a VersionStage label.
    backend_version: str | None = Field(
        default=None, min_length=1, max_length=256, pattern=BACKEND_VERSION_PATTERN
    )
    field: str | None = Field(default=None, min_length=1, max_length=64, pattern=FIELD_NAME_PATTERN)
    workload: str | None = Field(
        default=None, min_length=1, max_length=256, json_schema_extra=name_schema(NameKind.TAG)
    )
