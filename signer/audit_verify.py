"""Offline verification of an audit export: the chain, the signed checkpoints inside it, a checkpoint the
auditor already holds, and the signed approvals inside approval events.

Pure and streaming (constant memory: the chain's last hash, the tree's right edge, the approver keys
seen): the caller feeds the export's lines in order and passes in the signature checks (``signer.crypto``
does them in the CLI). An export is JSONL of three kinds of line:

* an audit record ``{seq, at, request_id, kind, event, prev_hash, hash}`` (``signer.audit``);
* ``{"tree_start": {"size": A, "edge": [base64...]}}`` first, when the export starts after seq A: the
  Merkle tree's right edge there, so roots can be rebuilt (it is authenticated by the next checkpoint:
  a wrong edge gives a wrong root);
* ``{"checkpoint": NOTE}`` right after the record whose seq is the note's tree size;
* ``{"consistency": {"first": M, "second": N, "proof": [base64...]}}``, for a range export checked
  against an older checkpoint the auditor holds (size M): the RFC 6962 proof that the tree at M is a
  prefix of the one at N, a checkpoint inside the export.

Checkpoints are opened with the audit key in force at their position (``signer.audit_keys``): the
auditor gives the keys they hold (usually only the first one) and the verifier follows each
``audit.key_rotated`` event that a checkpoint by the retiring key covers and the new key co-signs.
A checkpoint signed by a key no rotation endorsed, or a rotation the key in force did not sign, is a
``key_unendorsed`` finding.

A `tree_start` at exactly the size of a held checkpoint (an archive that follows the previous one's
boundary) must rebuild its root.

Findings name the first bad position and what it looks like: ``edited`` (an event whose bytes no longer
hash to its record), ``removed`` (a gap in the sequence), ``inserted`` (a record whose ``prev_hash`` is
not its predecessor's hash), ``reordered`` (a sequence number going back), ``rewritten`` (the chain holds,
but a signed root over a range does not match: history re-hashed after the fact), ``truncated`` (the
export ends before a checkpoint the auditor holds). Each range between checkpoints gets a summary.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from signer.audit import GENESIS_HASH, ChainVerifier
from signer.audit_keys import KeyChain, rotation_in
from signer.audit_note import Checkpoint, NoteError, VerifierKey
from signer.audit_tree import TreeBuilder, leaf_hash, verify_consistency

__all__ = ["ExportVerifier", "Finding", "RangeSummary"]

SignatureCheck = Callable[[bytes, bytes, bytes], object]
# (scheme, public key hex, approval id, decision, digest, signature hex): raises if the vote's
# signature does not verify.
ApprovalCheck = Callable[[str, str, str, str, str, str], object]

_CHAIN_WHAT = {
    "hash_mismatch": "edited",
    "event_not_canonical": "edited",
    "field_mismatch": "edited",
    "prev_hash_mismatch": "inserted",
    "malformed_record": "malformed",
}


@dataclass(frozen=True, slots=True)
class Finding:
    what: str  # edited, removed, inserted, reordered, rewritten, truncated, checkpoint_invalid, ...
    seq: int | None  # the first bad position (the seq the chain expected there), when there is one
    reason: str  # the stable code underneath
    detail: str


@dataclass(slots=True)
class RangeSummary:
    first: int
    last: int
    status: str  # valid, invalid, unanchored (no checkpoint covers it in the export)
    checkpoint: int | None = None

    def line(self) -> str:
        anchor = f" (checkpoint {self.checkpoint})" if self.checkpoint is not None else ""
        return f"events {self.first}..{self.last}: {self.status}{anchor}"


@dataclass(slots=True)
class _Approvals:
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    checked: int = 0
    unverifiable: int = 0


class ExportVerifier:
    """Feed lines with ``feed``; ``finish`` returns the report (``ok`` false on any finding)."""

    def __init__(
        self,
        *,
        key: VerifierKey | None = None,
        keys: Sequence[VerifierKey] = (),
        check: SignatureCheck,
        held: Checkpoint | None = None,
        approval_check: ApprovalCheck | None = None,
        require_anchored: bool = False,
    ) -> None:
        anchors = [*([] if key is None else [key]), *keys]
        self._keys = KeyChain(anchors) if anchors else None
        self._require_anchored = require_anchored
        self._check = check
        self._held = held
        self._approval_check = approval_check
        self._chain: ChainVerifier | None = None
        self._tree: TreeBuilder | None = None
        self._range_start = 0
        self._line = 0
        self.finding: Finding | None = None
        self.ranges: list[RangeSummary] = []
        self.checkpoints = 0
        self._held_checked = False
        self._approvals = _Approvals()
        self._consistency: tuple[int, int, list[bytes]] | None = None

    # -- feeding -----------------------------------------------------------------------------------

    def _fail(self, what: str, seq: int | None, reason: str, detail: str) -> None:
        if self.finding is None:
            self.finding = Finding(what, seq, reason, detail)

    def feed(self, line: str | bytes) -> bool:
        """One export line; False once something failed (later lines are then ignored)."""
        if self.finding is not None:
            return False
        self._line += 1
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        if not text.strip():
            return True
        try:
            item = json.loads(text)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            self._fail(
                "malformed", self._expected(), "malformed_record", f"line {self._line} is not a JSON object"
            )
            return False
        if "checkpoint" in item:
            self._on_checkpoint(item)
        elif "consistency" in item:
            self._on_consistency(item)
        elif "tree_start" in item:
            self._on_tree_start(item)
        else:
            self._on_record(item)
        return self.finding is None

    def _expected(self) -> int:
        return self._chain.next_seq if self._chain is not None else self._range_start + 1

    def _on_tree_start(self, item: dict[str, Any]) -> None:
        start = item.get("tree_start")
        if self._chain is not None or self._tree is not None or not isinstance(start, dict):
            self._fail("malformed", None, "tree_start_misplaced", "a tree_start line comes first, once")
            return
        size, edge = start.get("size"), start.get("edge")
        try:
            hashes = [base64.b64decode(h, validate=True) for h in edge] if isinstance(edge, list) else None
        except (binascii.Error, ValueError, TypeError):
            hashes = None
        if type(size) is not int or size < 0 or hashes is None or any(len(h) != 32 for h in hashes):
            self._fail("malformed", None, "tree_start_malformed", "tree_start has a size and base64 edge")
            return
        try:
            self._tree = TreeBuilder(size, hashes)
        except ValueError:
            self._fail("malformed", None, "tree_start_malformed", "tree_start's edge does not fit its size")
            return
        self._range_start = size
        # Starting exactly at the checkpoint the auditor holds (the boundary of an earlier archive), the
        # edge must rebuild that checkpoint's root.
        held = self._held
        if held is not None and held.size == size and size > 0:
            self._held_checked = True
            if self._tree.root() != held.root:
                self._fail(
                    "rewritten",
                    None,
                    "held_checkpoint_mismatch",
                    f"the export's starting edge does not rebuild the checkpoint you hold ({size})",
                )

    def _on_consistency(self, item: dict[str, Any]) -> None:
        body = item.get("consistency")
        try:
            assert isinstance(body, dict)
            first, second, proof = body["first"], body["second"], body["proof"]
            hashes = [base64.b64decode(h, validate=True) for h in proof]
            assert type(first) is int and type(second) is int and all(len(h) == 32 for h in hashes)
        except (AssertionError, KeyError, TypeError, binascii.Error, ValueError):
            self._fail(
                "malformed", None, "consistency_malformed", f"line {self._line}: not a consistency proof"
            )
            return
        self._consistency = (first, second, hashes)

    def _on_record(self, record: dict[str, Any]) -> None:
        if self._chain is None:
            start = self._range_start
            prev = GENESIS_HASH if start == 0 else record.get("prev_hash")
            if not isinstance(prev, str):
                self._fail("malformed", start + 1, "malformed_record", "the first record has no prev_hash")
                return
            self._chain = ChainVerifier(first_seq=start + 1, prev_hash=prev)
            if self._tree is None:
                self._tree = TreeBuilder() if start == 0 else None
        expected = self._chain.next_seq
        if not self._chain.feed(record):
            failure = self._chain.failure
            assert failure is not None
            reason = failure.reason or "chain_broken"
            what = _CHAIN_WHAT.get(reason, "chain_broken")
            seq = record.get("seq")
            if reason == "seq_mismatch" and type(seq) is int:
                what = "removed" if seq > expected else "reordered"
            self._fail(what, expected, reason, f"the chain breaks at seq {expected} ({reason})")
            return
        event = record["event"].encode("utf-8")
        if self._keys is not None:
            try:
                rotation = rotation_in(record["event"], expected)
                if rotation is not None:
                    self._keys.rotation(rotation)
            except NoteError as exc:
                self._fail("key_unendorsed", expected, exc.code, str(exc))
                return
        if self._tree is not None:
            self._tree.append(leaf_hash(event))
            self._check_held()
        if self._approval_check is not None:
            self._on_approval_event(record["event"])

    def _check_held(self) -> None:
        held, tree = self._held, self._tree
        if held is None or tree is None or self._held_checked or tree.size != held.size:
            return
        self._held_checked = True
        if tree.root() != held.root:
            self._fail(
                "rewritten",
                None,
                "held_checkpoint_mismatch",
                f"events 1..{held.size} do not match the checkpoint you hold: the history was rewritten",
            )

    def _on_checkpoint(self, item: dict[str, Any]) -> None:
        note = item.get("checkpoint")
        if self._keys is None:
            return  # without the audit key a checkpoint proves nothing; the report says none was checked
        if not isinstance(note, str):
            self._fail("checkpoint_invalid", None, "note_malformed", f"line {self._line}: no note")
            return
        pending = self._keys.pending
        try:
            checkpoint = self._keys.checkpoint(note, self._check)
        except NoteError as exc:
            what = "key_unendorsed" if exc.code.startswith(("checkpoint_unendorsed", "rotation_")) else None
            seq = pending.seq if pending is not None and exc.code.startswith("rotation_") else None
            self._fail(what or "checkpoint_invalid", seq, exc.code, f"line {self._line}: {exc}")
            return
        tree = self._tree
        if tree is None:
            self._fail("malformed", None, "tree_start_missing", "a range export needs its tree_start line")
            return
        if checkpoint.size != tree.size:
            what = "removed" if checkpoint.size > tree.size else "inserted"
            self._fail(
                what,
                tree.size + 1 if what == "removed" else checkpoint.size + 1,
                "checkpoint_size_mismatch",
                f"the checkpoint signed at size {checkpoint.size} sits after event {tree.size}",
            )
            return
        self.checkpoints += 1
        first = self._range_start + 1
        if tree.root() != checkpoint.root:
            self.ranges.append(RangeSummary(first, checkpoint.size, "invalid", checkpoint.size))
            self._fail(
                "rewritten",
                None,
                "checkpoint_root_mismatch",
                f"events {first}..{checkpoint.size} do not match the checkpoint signed at {checkpoint.size}",
            )
            return
        if checkpoint.size >= first:
            self.ranges.append(RangeSummary(first, checkpoint.size, "valid", checkpoint.size))
        self._range_start = checkpoint.size
        held, proof = self._held, self._consistency
        if held is not None and not self._held_checked and proof is not None and proof[1] == checkpoint.size:
            self._held_checked = True
            if proof[0] != held.size or not verify_consistency(
                held.size, checkpoint.size, held.root, checkpoint.root, proof[2]
            ):
                self._fail(
                    "rewritten",
                    None,
                    "held_checkpoint_inconsistent",
                    f"the checkpoint you hold ({held.size}) is not a prefix of the one at {checkpoint.size}: "
                    "the history was rewritten",
                )

    def _on_approval_event(self, text: str) -> None:
        if '"kind":"approval.' not in text:  # canonical JSON: the only spelling of an approval event's kind
            return
        try:
            event = json.loads(text)
        except ValueError:
            return
        actor = event.get("actor") if isinstance(event.get("actor"), dict) else {}
        principal = actor.get("principal_id") if isinstance(actor, dict) else None
        kind = event.get("kind")
        if kind == "approval.key_registered" and isinstance(principal, str):
            self._approvals.keys[principal] = (str(event.get("scheme")), str(event.get("public_key")))
        elif kind == "approval.vote" and event.get("outcome") == "allowed" and event.get("signature"):
            key = self._approvals.keys.get(principal) if isinstance(principal, str) else None
            if key is None:
                self._approvals.unverifiable += 1
                return
            assert self._approval_check is not None
            try:
                self._approval_check(
                    key[0],
                    key[1],
                    str(event.get("approval_id")),
                    str(event.get("decision")),
                    str(event.get("digest_named")),
                    str(event.get("signature")),
                )
            except Exception:  # noqa: BLE001 - any refusal means the vote's signature does not verify
                self._fail(
                    "approval_signature_invalid",
                    self._chain.next_seq - 1 if self._chain else None,
                    "approval_signature_invalid",
                    "a signed approval does not verify with its approver's registered key",
                )
                return
            self._approvals.checked += 1

    # -- the verdict -------------------------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        last = (self._chain.next_seq - 1) if self._chain is not None else self._range_start
        if self.finding is None and self._chain is None:
            self._fail("malformed", None, "empty_export", "the export holds no audit record")
        if self.finding is None and self._held is not None and not self._held_checked:
            if last < self._held.size:
                self._fail(
                    "truncated",
                    last + 1,
                    "truncated",
                    f"the export ends at seq {last}; the checkpoint you hold covers {self._held.size}",
                )
            else:
                self._fail(
                    "unchecked",
                    None,
                    "held_checkpoint_not_covered",
                    "the export starts after the checkpoint you hold and carries no consistency proof "
                    "from it (export with --checkpoint, or from seq 1)",
                )
        if self.finding is not None:
            if not self.ranges or self.ranges[-1].status == "valid":
                self.ranges.append(
                    RangeSummary(self._range_start + 1, max(last, self._range_start + 1), "invalid")
                )
        elif last > self._range_start:
            self.ranges.append(RangeSummary(self._range_start + 1, last, "unanchored"))
            if self._require_anchored:
                self._fail(
                    "unanchored",
                    self._range_start + 1,
                    "unanchored",
                    f"events {self._range_start + 1}..{last} are covered by no signed checkpoint",
                )
        report: dict[str, Any] = {
            "ok": self.finding is None,
            "checked": self._chain.checked if self._chain is not None else 0,
            "first_bad_seq": self.finding.seq if self.finding else None,
            "reason": self.finding.reason if self.finding else None,
            "what": self.finding.what if self.finding else None,
            "detail": self.finding.detail if self.finding else None,
            "checkpoints_verified": self.checkpoints,
            "held_checkpoint": None if self._held is None else self._held.size,
            "approvals_verified": self._approvals.checked,
            "approvals_unverifiable": self._approvals.unverifiable,
            "ranges": [r.line() for r in self.ranges],
            "keys": [] if self._keys is None else [span.view() for span in self._keys.spans],
        }
        return report
