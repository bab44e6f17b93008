"""Response bodies of the audit checkpoint routes (the audit key, checkpoints, inclusion and consistency
proofs), as pydantic models for the generated contract; hashes and keys travel as standard base64."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from signer.http.schemas import View

_B64_32 = r"^[A-Za-z0-9+/]{43}=$"


class AuditKeyValidity(View):
    key_id: str = Field(description="signed-note key id (4 bytes, hex)", pattern=r"^[0-9a-f]{8}$")
    verifier_key: str = Field(description="signed-note verifier key: <name>+<key id>+<base64(0x01||key)>")
    public_key: str = Field(description="the raw Ed25519 public key, base64", pattern=_B64_32)
    state: Literal["active", "pending", "retiring", "retired"] = Field(
        description="active: signs new checkpoints; pending: rotated in, the next checkpoint (co-signed by "
        "the retiring key) makes it active; retired: signs no more"
    )
    rotation_seq: int | None = Field(description="seq of the audit.key_rotated event that introduced it")
    first_checkpoint: int | None = Field(description="size of the first checkpoint it signed")
    last_checkpoint: int | None = Field(description="size of the last checkpoint it signed (when retired)")
    created_at: str
    retired_at: str | None
    private_key: Literal["in_token", "destroyed"] = Field(
        description="a retired key's private half is destroyed in the token; its public half stays"
    )


class AuditPublicKey(View):
    origin: str = Field(description="the checkpoints' origin line, also the key's name")
    algorithm: Literal["ed25519"]
    public_key: str = Field(description="the key in force: raw Ed25519 public key, base64", pattern=_B64_32)
    key_id: str = Field(description="signed-note key id (4 bytes, hex)", pattern=r"^[0-9a-f]{8}$")
    verifier_key: str = Field(description="signed-note verifier key: <name>+<key id>+<base64(0x01||key)>")
    keys: list[AuditKeyValidity] = Field(
        description="every audit key, the first one first, with its validity"
    )


class AuditCheckpoint(View):
    size: int = Field(ge=1, description="events covered (seq 1..size)")
    root: str = Field(description="RFC 6962 Merkle root over the events, base64", pattern=_B64_32)
    note: str = Field(description="the C2SP tlog-checkpoint signed note, verbatim")
    created_at: str


class AuditConsistencyProof(View):
    first: int = Field(ge=1)
    second: int = Field(ge=1)
    first_root: str = Field(pattern=_B64_32)
    second_root: str = Field(pattern=_B64_32)
    first_checkpoint: str | None = Field(description="the signed note at size first, if one was signed")
    second_checkpoint: str | None = Field(description="the signed note at size second, if one was signed")
    proof: list[str] = Field(description="RFC 6962 consistency proof, base64 hashes")


class AuditInclusionProof(View):
    seq: int = Field(ge=1)
    size: int = Field(ge=1)
    leaf_hash: str = Field(pattern=_B64_32, description="SHA-256(0x00 || the event's canonical bytes)")
    root: str = Field(pattern=_B64_32)
    checkpoint: str | None = Field(description="the signed note at this size, if one was signed")
    proof: list[str] = Field(description="RFC 6962 audit path, base64 hashes")


class AuditCheckpointPage(View):
    items: list[AuditCheckpoint] = Field(description="checkpoints with size > after, smallest first")
    after: int = Field(ge=0)
    edge: list[str] | None = Field(
        description="the tree's right edge at size `after` (base64, largest subtree first), for a verifier "
        "starting there; null when no checkpoint covers `after` yet, or `after` is before `retained_after`"
    )
    retained_after: int = Field(
        ge=0, description="events up to this seq were archived and pruned: an export starts after it"
    )


class AuditRollbackStatus(View):
    detected: bool = Field(description="a rollback found at start and not yet acknowledged")
    code: Literal["truncated", "rewritten", "checkpoints_rolled_back"] | None
    detail: str | None
    anchor_size: int | None
    database_head: int | None


class AuditKeyRotated(View):
    rotated: Literal[True]
    rotation_seq: int = Field(description="seq of the audit.key_rotated event")
    old_key: str = Field(description="the retired key's verifier key")
    new_key: str = Field(description="the new key's verifier key")
    key_id: str = Field(description="the new key's signed-note key id", pattern=r"^[0-9a-f]{8}$")
    checkpoint: AuditCheckpoint | None = Field(
        description="the checkpoint covering the rotation: signed by the old key, co-signed by the new one"
    )


class AuditRollbackAcknowledged(View):
    acknowledged: Literal[True]
    was: str | None = Field(description="the finding acknowledged, if there was one")
