"""Audit-key rotation as the log records it, and how a verifier follows it from the keys it holds.

Pure (standard library and ``signer.audit_note``), shared by the checkpoint service and the offline
verifier. A rotation is an audit event ``audit.key_rotated`` naming the retiring key and the new one as
signed-note verifier keys (``old_key``, ``new_key``). The first checkpoint that covers the event is signed
by the retiring key (which authenticates the event, and so the new key, through the Merkle root) and
co-signed by the new key (proof that the token holds it); every later checkpoint is signed by the new key
alone. An auditor who holds only the first key follows every rotation from the log itself: trust passes
from key to key by the old key's signature, never from a key merely listed in an export.

``KeyChain`` is that rule: fed the rotation events and the checkpoint notes in log order, it opens each
checkpoint with the key in force at its position and raises ``NoteError`` with
``checkpoint_unendorsed`` (signed by a key no rotation endorsed), ``rotation_unendorsed`` (the
checkpoint covering a rotation is not signed by the key in force, or the rotation names another key as
retiring) or ``rotation_not_cosigned`` (the new key did not co-sign the checkpoint that endorsed it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from signer.audit_note import Check, Checkpoint, NoteError, VerifierKey, open_checkpoint, parse_note

__all__ = ["ROTATION_KIND", "KeyChain", "KeySpan", "Rotation", "rotation_in"]

ROTATION_KIND = "audit.key_rotated"
# Canonical JSON spells a top-level kind only this way: a cheap test before parsing an event.
_MARK = '"kind":"audit.key_rotated"'


@dataclass(frozen=True, slots=True)
class Rotation:
    seq: int
    old: VerifierKey
    new: VerifierKey


def rotation_in(text: str, seq: int) -> Rotation | None:
    """The rotation an audit event's canonical text records, or None when it is not a rotation;
    ``NoteError(rotation_malformed)`` when it is one whose keys cannot be read."""
    if _MARK not in text:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("kind") != ROTATION_KIND:
        return None
    old, new = event.get("old_key"), event.get("new_key")
    if not isinstance(old, str) or not isinstance(new, str):
        raise NoteError("rotation_malformed", f"the key rotation at seq {seq} does not name both keys")
    try:
        rotation = Rotation(seq, VerifierKey.parse(old), VerifierKey.parse(new))
    except NoteError:
        raise NoteError(
            "rotation_malformed", f"the key rotation at seq {seq} names a malformed key"
        ) from None
    if rotation.old.name != rotation.new.name or rotation.old == rotation.new:
        raise NoteError("rotation_malformed", f"the key rotation at seq {seq} does not name a new key")
    return rotation


def _same(a: VerifierKey, b: VerifierKey) -> bool:
    return a.name == b.name and a.public_key == b.public_key and a.alg == b.alg


@dataclass(slots=True)
class KeySpan:
    """One key's stretch of the log: the checkpoints it signed, and where trust in it came from."""

    key: VerifierKey
    endorsed_by: str  # "held" (the auditor gave it) or "rotation at seq N signed by <old key id>"
    first_checkpoint: int
    last_checkpoint: int
    rotation_seq: int | None = None

    def view(self) -> dict[str, Any]:
        return {
            "verifier_key": self.key.text(),
            "key_id": self.key.id.hex(),
            "endorsed_by": self.endorsed_by,
            "rotation_seq": self.rotation_seq,
            "first_checkpoint": self.first_checkpoint,
            "last_checkpoint": self.last_checkpoint,
        }


@dataclass(slots=True)
class KeyChain:
    """The key in force along the log, starting from the keys the auditor holds (``anchors``)."""

    anchors: Sequence[VerifierKey]
    in_force: VerifierKey | None = None
    pending: Rotation | None = None
    spans: list[KeySpan] = field(default_factory=list)

    def rotation(self, rotation: Rotation) -> None:
        """A rotation event in the chain: it takes effect once a checkpoint by the key in force covers it."""
        if self.pending is not None:
            raise NoteError(
                "rotation_unendorsed",
                f"the key rotation at seq {rotation.seq} comes before any checkpoint endorsed the one at "
                f"seq {self.pending.seq}",
            )
        self.pending = rotation

    def _held(self, key: VerifierKey) -> bool:
        return any(_same(key, held) for held in self.anchors)

    def checkpoint(self, note: str, check: Check) -> Checkpoint:
        """Open ``note`` with the key in force there (and follow a rotation it covers)."""
        _, signatures = parse_note(note)
        signed = {(name, kid) for name, kid, _ in signatures}
        pending = self.pending
        signer = self.in_force
        if signer is None:
            # The first checkpoint seen: trust comes from a key the auditor holds.
            if pending is not None and self._held(pending.old):
                signer = pending.old
            else:
                held = [k for k in self.anchors if (k.name, k.id) in signed]
                if not held:
                    raise NoteError(
                        "checkpoint_unendorsed",
                        "the checkpoint is signed by none of the keys you hold"
                        + ("" if pending is None else f" (the log rotated keys at seq {pending.seq})"),
                    )
                signer = held[0]
        if (signer.name, signer.id) not in signed:
            others = ", ".join(sorted(kid.hex() for _, kid in signed))
            if pending is not None:
                raise NoteError(
                    "rotation_unendorsed",
                    f"the checkpoint covering the key rotation at seq {pending.seq} is not signed by the key "
                    f"in force ({signer.id.hex()}), only by {others}",
                )
            raise NoteError(
                "checkpoint_unendorsed",
                f"the checkpoint is signed by {others}, not by the key in force ({signer.id.hex()}); "
                "no rotation in the log endorsed that key",
            )
        checkpoint = open_checkpoint(note, signer, check)
        if pending is None:
            self._extend(signer, checkpoint.size, "held")
            return checkpoint
        self.pending = None
        if _same(pending.old, signer):
            try:
                open_checkpoint(note, pending.new, check)
            except NoteError as exc:
                raise NoteError(
                    "rotation_not_cosigned",
                    f"the new key of the rotation at seq {pending.seq} did not co-sign the checkpoint that "
                    f"endorses it ({exc.code})",
                ) from None
            self._extend(signer, checkpoint.size, "held")
            self.in_force = pending.new
            self.spans.append(
                KeySpan(
                    pending.new,
                    f"rotation at seq {pending.seq} signed by {signer.id.hex()}",
                    checkpoint.size,
                    checkpoint.size,
                    pending.seq,
                )
            )
        elif self.in_force is None and _same(pending.new, signer):
            # The auditor holds the new key itself and starts at the checkpoint it co-signed.
            self._extend(signer, checkpoint.size, "held")
        else:
            raise NoteError(
                "rotation_unendorsed",
                f"the key rotation at seq {pending.seq} retires key {pending.old.id.hex()}, but the key in "
                f"force is {signer.id.hex()}",
            )
        return checkpoint

    def _extend(self, key: VerifierKey, size: int, how: str) -> None:
        if self.in_force is None:
            self.in_force = key
        if self.spans and _same(self.spans[-1].key, key):
            self.spans[-1].last_checkpoint = size
        else:
            self.spans.append(KeySpan(key, how, size, size))
