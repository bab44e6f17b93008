"""Response bodies as pydantic models: the contract the OpenAPI document publishes for every answer.

Handlers do not build responses through these models (the sign path is benchmarked and the services
already return plain dicts); the document is generated from them and the schemathesis run in the test
suite checks every live response against it, so a field added to a service view without a model change
fails a test. Models refuse unknown fields, which in a response schema means ``additionalProperties:
false``: the document says exactly what leaves the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from signer.hsm import Curve
from signer.identity import Role


class View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is stable, extras (``reasons``, ``field``) may follow."""

    model_config = ConfigDict(extra="allow", frozen=True, title="Problem")

    type: str = Field(description="urn:signer:error:<code>")
    title: str
    status: int = Field(ge=400, le=599)
    code: str = Field(description="stable, machine-readable error code")
    detail: str
    request_id: str = Field(description="also sent in the X-Request-Id header and written to the audit log")
    field: str | None = Field(default=None, description="the offending request field, when there is one")
    reasons: list[dict[str, Any]] | None = Field(default=None, description="policy reasons for a refusal")
    allowed: list[str] | None = Field(
        default=None, description="the names allowed where an unknown field or query parameter was sent"
    )


class Health(View):
    status: Literal["ok"]


class Readiness(View):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Literal["up", "down"]]


class Credentials(View):
    token_type: Literal["Bearer"]
    access_token: str
    access_token_id: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_id: str
    refresh_token_expires_at: datetime


class Whoami(View):
    principal_id: str
    name: str
    role: Role
    token_id: str


class Principal(View):
    id: str
    name: str
    role: Role
    created_at: datetime
    created_by: str | None
    disabled: bool


class PrincipalCreated(View):
    principal: Principal
    credentials: Credentials


class PrincipalList(View):
    items: list[Principal]


class TokenRevoked(View):
    token_id: str
    revoked: bool


class Key(View):
    id: str
    label: str
    curve: Curve
    public_key: str
    address: str | None
    scope: str
    tags: list[str]
    state: Literal[
        "pre_activation",
        "active",
        "suspended",
        "deactivated",
        "compromised",
        "destroyed",
        "destroyed_compromised",
    ] = Field(description="the key's lifecycle state (NIST SP 800-57); only `active` signs")
    can_sign: bool = Field(description="true only in state `active`")
    compromised: bool = Field(
        description="the key was declared compromised: trust nothing it signed after `compromised_at`"
    )
    compromised_at: datetime | None = Field(description="when the key is believed compromised, if stated")
    destroyed_in_token: bool | None = Field(
        default=None,
        description="after a destroy: whether the private key was destroyed in the token at once "
        "(false: it is finished at the next start; the key signs nothing either way)",
    )
    attributes: dict[str, bool] = Field(description="PKCS#11 attributes (CKA_*) as read back")
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None
    attributes_source: Literal["token", "registry"] | None = Field(
        default=None, description="where `attributes` were read from (only when showing one key)"
    )


class KeyList(View):
    items: list[Key]
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class GrantResource(View):
    type: str = Field(description="a kind of resource: key, secret, ...")
    id: str


class Grant(View):
    id: str
    principal_id: str | None = Field(description="the principal granted, or null for a group grant")
    group: str | None = Field(description="the group granted, or null for a principal grant")
    resource: GrantResource | None = Field(description="the one resource granted, or null for a scope grant")
    scope: str | None = Field(description="the scope prefix granted (such as acme/payments), or null")
    resource_type: str = Field(description="the resource's kind (key, secret, ...), or scope: the older form")
    resource_id: str = Field(description="the resource's id or the scope prefix: the older form")
    operations: list[str] = Field(description="empty for a no-access grant")
    no_access: bool = Field(description="an explicit no-access grant (overrides what it inherits)")
    expires_at: datetime | None
    max_uses: int | None
    value_budgets: dict[str, str] = Field(description="asset (native or token address) -> decimal amount")
    created_by: str | None
    created_at: datetime
    revoked: bool


class GrantList(View):
    items: list[Grant]


class GrantRevoked(View):
    id: str
    revoked: bool


class TransactionSignature(View):
    key_id: str
    signer: str
    type: int
    chain_id: int
    raw_transaction: str
    transaction_hash: str
    r: str
    s: str
    v: int
    y_parity: int | None = Field(default=None, description="absent for legacy (type 0) transactions")


class EthSignature(View):
    """secp256k1: a 65-byte r||s||v signature over an EIP-191, EIP-712 or raw digest."""

    key_id: str
    signer: str
    digest: str
    signature: str
    r: str
    s: str
    v: int


class SignedAuthorization(View):
    """An EIP-7702 authorisation tuple as a type-4 transaction's ``authorizationList`` carries it."""

    chainId: str  # the JSON-RPC spelling clients paste as it is
    address: str
    nonce: str
    yParity: str
    r: str
    s: str


class AuthorizationSignature(View):
    """secp256k1: an EIP-7702 authorisation signed by the key (``signer`` is the authority)."""

    key_id: str
    signer: str
    digest: str = Field(description="keccak256(0x05 || rlp([chain_id, address, nonce]))")
    authorization: SignedAuthorization


class P256Signature(View):
    key_id: str
    curve: Literal["p256"]
    digest: str
    signature: str = Field(description="r||s, 64 bytes")
    signature_der: str


class Ed25519Signature(View):
    key_id: str
    curve: Literal["ed25519"]
    signature: str


# -- groups and policy ------------------------------------------------------------------------------


class Group(View):
    group: str
    members: list[str]


class GroupList(View):
    items: list[Group]


class MembershipChange(View):
    group: str
    principal_id: str
    added: bool | None = None
    removed: bool | None = None


class PolicyVersion(View):
    policy_id: str
    version: int
    digest: str = Field(description="sha256 of the version's canonical JSON; decisions name it")
    created_by: str | None
    created_at: datetime
    document: dict[str, Any] | None = Field(default=None, description="the canonical document")


class PolicyList(View):
    items: list[PolicyVersion]


class PolicyVersions(View):
    policy_id: str
    versions: list[PolicyVersion]


class AttachedResource(View):
    type: str
    id: str


class Attachment(View):
    id: str
    policy_id: str
    version: int
    scope: str | None
    resource: AttachedResource | None
    key_id: str | None
    mode: Literal["live", "shadow"]
    created_by: str | None
    created_at: datetime
    detached_at: datetime | None


class AttachmentList(View):
    items: list[Attachment]


class Detached(View):
    id: str
    detached: bool


class EffectCount(View):
    live: str
    candidate: str
    count: int


class ShadowReport(View):
    attachment: Attachment
    evaluated: int
    differing: int
    by_effect: list[EffectCount]
    recent_differences: list[dict[str, Any]]


class DryRun(View):
    """The decision a sign request would get now; nothing signed or counted."""

    effect: Literal["allow", "deny", "require_approval"]
    reasons: list[dict[str, Any]]
    policies: list[dict[str, Any]]
    approvals: list[dict[str, Any]]
    reservations: list[dict[str, Any]]
    request: dict[str, Any]
    principal_id: str
    key_id: str
    operation: str
    candidate: dict[str, Any] | None = None


# -- approvals --------------------------------------------------------------------------------------


class ApprovalRef(View):
    id: str
    url: str
    result_url: str


class PendingApproval(View):
    """HTTP 202 from a sign or fetch endpoint: nothing was signed or read; the request waits for its
    approvers."""

    state: Literal["pending_approval"]
    approval: ApprovalRef
    payload_digest: str = Field(description="sha256 hex of the canonical payload the approvers approve")
    expires_at: str
    requirements: list[dict[str, Any]]


class NotCounted(View):
    code: Literal[
        "requester",
        "role_not_approver",
        "principal_disabled",
        "token_revoked",
        "digest_mismatch",
        "not_in_group",
    ] = Field(description="stable code: why this recorded vote does not count now")
    reason: str


class ApprovalVote(View):
    approver_id: str
    approver_name: str
    decision: Literal["approve", "reject"]
    digest: str = Field(description="the payload digest voted on: 64 lower-case hex digits")
    at: str
    counted: bool = Field(description="whether the vote counts now (approver still eligible)")
    not_counted: NotCounted | None = Field(description="why the vote does not count now (null if it does)")
    signature_scheme: str | None
    signature: str | None


class ApprovalResource(View):
    """What an approval request is about: a resource kind's type and the resource's id."""

    type: str = Field(description="the resource kind: key or secret")
    id: str


class Approval(View):
    id: str
    kind: str = Field(description="the operation (same as operation; kept for existing clients)")
    operation: str = Field(description="the payload kind: sign_transaction, ..., read_value")
    resource: ApprovalResource
    state: Literal["pending", "approved", "signed", "released", "failed", "rejected", "expired", "cancelled"]
    key_id: str | None = Field(default=None, description="for a key's operation: the key")
    secret_id: str | None = Field(default=None, description="for a secret's operation: the secret")
    requester_id: str
    payload_digest: str
    created_at: str
    expires_at: str
    updated_at: str
    requirements: list[dict[str, Any]]
    reject_quorum: int
    progress: dict[str, int]
    result_available: bool
    released_by_requester: bool = Field(
        description="true for a read: nothing runs on approval, the requester releases it once itself"
    )
    view: dict[str, Any] = Field(
        description="the decoded request: what approvers read (for a read: the secret's metadata, "
        "version and field names, never a value)"
    )
    votes: list[ApprovalVote] | None = None
    error: dict[str, Any] | None = None


class ApprovalList(View):
    items: list[Approval]


class ApprovalResult(View):
    id: str
    state: str
    result: dict[str, Any] | None = Field(
        default=None, description="the signature; fetchable again by the requester until fetchable_until"
    )
    error: dict[str, Any] | None = None
    expires_at: str | None = None
    fetchable_until: str | None = None


class ApproverKey(View):
    principal_id: str
    scheme: Literal["ed25519", "secp256k1"]
    public_key: str


class Webhook(View):
    group: str
    url: str
    secret: str = Field(description="hex HMAC-SHA256 key the receiver checks X-Signer-Signature with")


class UndeliveredAlerts(View):
    pending: int = Field(ge=0, description="alerts still being retried")
    oldest_pending_at: str | None = Field(description="when the oldest of them was flagged")
    alerts: list[dict[str, Any]] = Field(
        description="oldest first: id, state (retrying | given_up), signal, principal_id, source, "
        "request_id, flagged_at, attempts, next_attempt_at, last_error"
    )
    truncated: bool


class WebhookSecretRotated(View):
    group: str
    secret: str = Field(description="the new hex HMAC-SHA256 key (shown once per rotation)")
    previous_secret_until: str = Field(
        description="until then every call carries both signatures: "
        "X-Signer-Signature: sha256=<new>, sha256=<old>"
    )


class WebhookDeleted(View):
    group: str
    deleted: bool


class SecretVersion(View):
    version: int
    fields: list[str] = Field(description="field names (never values; none once destroyed)")
    created_at: datetime
    created_by: str | None
    state: Literal["current", "previous", "enabled", "staged", "disabled", "destroyed"] = Field(
        description="previous: readable until `readable_until` (its overlap), then disabled by the service"
    )
    reason: str | None = Field(description="why its state last changed")
    state_changed_at: datetime | None
    state_changed_by: str | None = Field(description="null: the service itself (an overlap's end)")
    readable_until: datetime | None = Field(description="the end of its overlap, if one runs")


class SecretFolderDefault(View):
    folder: str
    rotation_interval_seconds: int | None
    overlap_seconds: int | None


class SecretFolderDefaults(View):
    """What a secret created in ``folder`` gets: each value from the narrowest folder that sets it."""

    folder: str
    rotation_interval_seconds: int | None
    overlap_seconds: int | None
    set_at: list[SecretFolderDefault] = Field(description="the folders at or above it that set some")


class SecretVersionList(View):
    secret_id: str
    current_version: int
    revision: int = Field(description='the ETag is "r<revision>"')
    items: list[SecretVersion]


class SecretAccessGrant(View):
    id: str
    on: str = Field(description="`secret`, or `folder:<path>` for a grant on a folder at or above it")
    operations: list[str]
    no_access: bool
    expires_at: datetime | None


class SecretAccess(View):
    subject: str = Field(description="principal:<id> or group:<name>")
    operations: list[str] = Field(description="what it may do (no-access and precedence applied)")
    grants: list[SecretAccessGrant] = Field(description="its live grants about the secret")


class Secret(View):
    """A secret's metadata: never a value."""

    id: str
    name: str
    folder: str
    description: str
    tags: list[str]
    category: Literal[
        "api_key", "oauth_token", "database", "registry", "publication", "infrastructure", "other"
    ]
    owner: str = Field(description="principal:<id> or group:<name>")
    consumers: list[str] = Field(description="declared workloads that use it")
    origin: Literal["provided", "generated"]
    generation: dict[str, Any] | None = Field(description="the rule a generated value was made by")
    current_version: int
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    updated_by: str | None
    last_fetched_at: datetime | None
    last_fetched_by: str | None
    backend: Literal["sealed", "aws_secrets_manager", "openbao_kv2"] = Field(
        default="sealed", description="where the value lives: sealed here, or held by reference"
    )
    reference: str | None = Field(
        default=None, description="held by reference: the AWS ARN or name, or the KV v2 path (never a value)"
    )
    revision: int = Field(description='moves with every change; the ETag is "r<revision>"')
    pins: dict[str, int] = Field(description="consumer (workload label) -> pinned version")
    overlap_seconds: int | None
    rotation_interval_seconds: int | None
    rotation_due_at: datetime | None
    state: Literal["active", "disabled"] = Field(
        default="active",
        description="the whole secret: disabled, every read of every version answers 409 secret_disabled",
    )
    state_changed_at: datetime | None = None
    state_changed_by: str | None = None
    state_reason: str | None = Field(default=None, description="why it was last disabled or enabled")
    versions: list[SecretVersion] | None = Field(default=None, description="only when showing one secret")
    access: list[SecretAccess] | None = Field(
        default=None,
        description="only when showing one secret: who can use it (principals and groups), which "
        "operations, through which grants",
    )


class SecretList(View):
    items: list[Secret]
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class SecretDeleted(View):
    id: str
    deleted: bool


class SecretValue(View):
    """The fetch's answer: the one response that carries values."""

    secret_id: str
    name: str
    folder: str
    version: int | None = Field(
        description="the version read; null for AWS Secrets Manager (see backend_version)"
    )
    field_names: list[str]
    values: dict[str, str] = Field(description="field name -> value")
    backend: Literal["aws_secrets_manager", "openbao_kv2"] | None = Field(
        default=None, description="held by reference: the backend it was read from"
    )
    backend_version: str | None = Field(default=None, description="AWS Secrets Manager: the VersionId read")
    pinned: bool | None = Field(
        default=None, description="true: the version the caller's workload is pinned to"
    )
    readable_until: datetime | None = Field(
        default=None, description="a previous version: when its overlap ends and it is disabled"
    )
