"""Response bodies of the audit checkpoint routes (the audit key, checkpoints, inclusion and consistency
proofs), as pydantic models for the generated contract; hashes and keys travel as standard base64."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from signer.http.schemas import View

_B64_32 = r"^[A-Za-z0-9+/]{43}=$"


class AuditPublicKey(View):
    origin: str = Field(description="the checkpoints' origin line, also the key's name")
    algorithm: Literal["ed25519"]
    public_key: str = Field(description="the raw Ed25519 public key, base64", pattern=_B64_32)
    key_id: str = Field(description="signed-note key id (4 bytes, hex)", pattern=r"^[0-9a-f]{8}$")
    verifier_key: str = Field(description="signed-note verifier key: <name>+<key id>+<base64(0x01||key)>")


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


class AuditRollbackAcknowledged(View):
    acknowledged: Literal[True]
    was: str | None = Field(description="the finding acknowledged, if there was one")
