"""Signed checkpoints of the audit log: the Merkle tree over its events, signed by an audit key in the token.

Off the request path: a background task wakes every ``interval`` seconds, or sooner once ``every``
events were committed (the store reports each group commit), reads the events the last checkpoint does
not cover, checks their chain, extends the tree (``signer.audit_tree``), has the token sign the C2SP
``tlog-checkpoint`` note (``signer.audit_note``) and writes the note with the tree nodes it completed in
one transaction. Nothing on the sign path waits for any of it. Several workers may race: the one whose
transaction finds the checkpoint it built on still the newest writes, the others drop their work.

The same service answers the auditor's reads: the audit public keys (as signed-note verifier keys, with
the checkpoints each signed), a checkpoint by size, and RFC 6962 inclusion and consistency proofs up to
the newest checkpoint.

Key rotation (``signer.audit_keys`` has the rule a verifier follows): an admin's rotation generates a new
key in the token and, in one transaction, writes the ``audit.key_rotated`` event naming the retiring and
the new key with the new key's row in ``audit_keys`` (keyed by the event's seq). Which keys sign a
checkpoint is decided from the database alone, so every worker agrees: the key in force after the last
checkpoint signs; when the range covers a rotation event, the new key co-signs, and that checkpoint's
commit retires the old key. Its private half is then destroyed in the token (its public half stays), so
no later checkpoint can ever be forged under a retired key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from signer.audit import GENESIS_HASH, chain_hash
from signer.audit_keys import ROTATION_KIND, rotation_in
from signer.audit_note import NoteError, VerifierKey, checkpoint_body, signed_note
from signer.audit_tree import (
    TreeBuilder,
    consistency_nodes,
    inclusion_nodes,
    leaf_hash,
    range_hash,
    tree_root,
)
from signer.crypto.signatures import check_ed25519
from signer.errors import Conflict, IntegrityError, InvalidRequest, NotFound
from signer.hsm import Curve
from signer.hsm.types import GeneratedKey
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.store import Store
from signer.store.tables.audit_keys import AuditKeyRecord
from signer.store.tables.checkpoints import CheckpointRecord

log = logging.getLogger("signer.checkpoints")

# Most events one checkpoint takes in (a first run over a long log makes several).
MAX_EVENTS_PER_CHECKPOINT = 100_000
# Events read per query. Their rows are converted on the event loop (~5 us each): a page of 5,000 held
# every request of the worker for up to 9 ms (bench/loop_stalls.py), one of 256 for about 1.
_PAGE = 256
# Events checked and hashed into the tree between two turns of the event loop: at ~10 us each, a
# checkpoint of 1,000 events walked in one go blocked every request of the worker for ~10 ms.
_EVENTS_PER_STEP = 64
# Perfect subtrees of 16 events and more are stored; smaller ones are hashed from the events when a
# proof needs them (at most 15 events read per node), which keeps the rows written per event at 1/8.
STORED_FROM_LEVEL = 4


class AuditSigner(Protocol):
    """What the service needs of the HSM: the audit keys and Ed25519 signatures with them."""

    async def audit_key(self) -> GeneratedKey: ...

    async def new_audit_key(self) -> GeneratedKey: ...

    async def audit_key_by_id(self, hsm_id: str) -> GeneratedKey: ...

    async def audit_public_keys(self) -> list[tuple[str, bytes]]: ...

    async def destroy_audit_private(self, hsm_id: str) -> None: ...

    async def sign(self, hsm_id: str, curve: Curve, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    origin: str
    every_events: int
    interval_seconds: float


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CheckpointService:
    def __init__(
        self,
        store: Store,
        hsm: AuditSigner,
        policy: CheckpointPolicy,
        *,
        clock: Clock = utcnow,
        on_checkpoint: Callable[[CheckpointRecord], None] | None = None,  # blocking; runs on a thread
        after_checkpoint: Callable[[CheckpointRecord], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._policy = policy
        self._clock = clock
        self._on_checkpoint = on_checkpoint
        self._after_checkpoint = after_checkpoint
        self._key: VerifierKey | None = None
        self._hsm_id = ""
        self._committed = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.chain_broken_at: int | None = None

    # -- set-up and the background task ----------------------------------------------------------------

    async def start(self) -> VerifierKey:
        """The key in force; the first time, find (or make) the audit key in the token and record it as
        the first key. Refuses a key the token does not vouch for; finishes a retirement a crash left
        half done (a retired key whose private half is still in the token)."""
        async with self._store.read() as reader:
            rows = await reader.audit_keys.all()
        if not rows:
            key = await self._hsm.audit_key()
            if not key.attributes.confined:
                raise IntegrityError("the audit key could leave the token", code="audit_key_invalid")
            first = self._row(key, None)

            async def unit(writer: Any) -> None:
                if not await writer.audit_keys.all():
                    await writer.audit_keys.add(first)

            await self._store.submit(unit)
            async with self._store.read() as reader:
                rows = await reader.audit_keys.all()
        for row in rows:
            if row.retired_size is not None and row.destroyed_at is None:
                await self._destroy(row)
        try:
            newest = await self._hsm.audit_key_by_id(rows[-1].hsm_id)
        except NotFound:
            # A database from before a rotation names a key the rotation destroyed: no checkpoint can
            # be signed on it (the rollback check at start says what happened).
            log.error("the audit key in force is not in the token: no checkpoint can be signed")
        else:
            if not newest.attributes.confined:
                raise IntegrityError("the audit key could leave the token", code="audit_key_invalid")
            if newest.public_key != base64.b64decode(rows[-1].public_key):
                raise IntegrityError("the token holds another audit key", code="audit_key_invalid")
        self._hsm_id = rows[-1].hsm_id
        self._key = self._verifier(rows[-1])
        return self._key

    def _verifier(self, row: AuditKeyRecord) -> VerifierKey:
        return VerifierKey(self._policy.origin, base64.b64decode(row.public_key))

    def _row(self, key: GeneratedKey, rotation_seq: int | None) -> AuditKeyRecord:
        verifier = VerifierKey(self._policy.origin, key.public_key)
        return AuditKeyRecord(
            key_id=verifier.id.hex(),
            name=verifier.name,
            public_key=_b64(key.public_key),
            hsm_id=key.hsm_id,
            rotation_seq=rotation_seq,
            first_size=None,
            retired_size=None,
            created_at=self._clock(),
            retired_at=None,
            destroyed_at=None,
        )

    async def _destroy(self, row: AuditKeyRecord) -> None:
        """Destroy a retired key's private half in the token and record when; a failure is logged (the
        next start tries again)."""
        try:
            await self._hsm.destroy_audit_private(row.hsm_id)
            now = self._clock()

            async def unit(writer: Any) -> None:
                await writer.audit_keys.destroyed(row.key_id, now)

            await self._store.submit(unit)
        except Exception as exc:  # noqa: BLE001 - logged; retried at the next start
            log.error("retired audit key not destroyed", extra={"error": type(exc).__name__})

    async def token_keys(self) -> list[VerifierKey]:
        """Every audit key whose public half the token holds (retired ones too), as verifier keys: what
        a checkpoint this installation signed is opened with, whatever the database says."""
        return [VerifierKey(self._policy.origin, public) for _, public in await self._hsm.audit_public_keys()]

    @property
    def key(self) -> VerifierKey:
        if self._key is None:
            raise RuntimeError("CheckpointService.start() was not awaited")
        return self._key

    def committed(self, _seconds: float, units: int) -> None:
        """The store's group-commit observer: count units (about one event each) towards ``every``."""
        self._committed += units
        if self._policy.every_events and self._committed >= self._policy.every_events:
            self._wake.set()

    async def run(self) -> None:
        """Checkpoint every ``interval`` seconds or ``every`` events, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._policy.interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
            self._committed = 0
            try:
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged; the next round tries again
                log.error("audit checkpoint failed", extra={"error": type(exc).__name__})

    # -- making a checkpoint ----------------------------------------------------------------------------

    async def checkpoint(self) -> CheckpointRecord | None:
        """Sign the log's current state if it grew since the newest checkpoint; the newest one after."""
        async with self._lock:
            return await self._checkpoint_locked()

    async def _checkpoint_locked(self) -> CheckpointRecord | None:
        while True:
            made = await self._extend()
            if made is None or made[1]:
                return made[0] if made else None

    async def _extend(self) -> tuple[CheckpointRecord, bool] | None:
        # (record, caught up) or None when there is nothing new to sign.
        async with self._store.read() as reader:
            last = await reader.checkpoints.latest()
            head_seq, _ = await reader.audit_head()
            # Written with the rotation's event: every row a rotation up to head_seq needs is here.
            keys = await reader.audit_keys.all()
        base = last.size if last else 0
        if head_seq <= base:
            return None
        if not keys:
            raise IntegrityError("no audit key is recorded", code="audit_key_invalid")
        in_force = [k for k in keys if (k.rotation_seq or 0) <= base][-1]
        rotations = [k for k in keys if k.rotation_seq is not None and k.rotation_seq > base]
        target = min(head_seq, base + MAX_EVENTS_PER_CHECKPOINT)
        if len(rotations) > 1:
            # One rotation per checkpoint: the next one starts where the second rotation is recorded.
            target = min(target, (rotations[1].rotation_seq or 0) - 1)
        incoming = rotations[0] if rotations and (rotations[0].rotation_seq or 0) <= target else None
        builder = TreeBuilder(base, last.edge if last else ())
        prev = last.head_hash if last else GENESIS_HASH
        nodes: list[tuple[int, int, bytes]] = []
        after = base
        while after < target:
            async with self._store.read() as reader:
                records = await reader.audit.chain_slice(after, min(_PAGE, target - after))
            if not records:
                break
            for index, (seq, text, prev_hash, digest) in enumerate(records, 1):
                if index % _EVENTS_PER_STEP == 0:
                    # Let the requests in: this runs on the workers' event loop.
                    await asyncio.sleep(0)
                raw = text.encode("utf-8")
                if seq != after + 1 or prev_hash != prev or chain_hash(prev, raw) != digest:
                    self.chain_broken_at = after + 1
                    log.error("audit chain broken: no checkpoint signed", extra={"seq": after + 1})
                    raise IntegrityError("the audit chain is broken", code="audit_chain_broken")
                if ROTATION_KIND in text:
                    self._check_rotation(text, seq, incoming)
                completed = builder.append(leaf_hash(raw))
                if len(completed) > STORED_FROM_LEVEL:
                    # Levels 0, 1, 2, ... in order: those from STORED_FROM_LEVEL up are stored.
                    nodes.extend(completed[STORED_FROM_LEVEL:])
                after, prev = seq, digest
        if after == base:
            return None
        if incoming is not None and (incoming.rotation_seq or 0) > after:
            incoming = None  # the rotation's event was not reached (a short page): the next round
        root = builder.root()
        body = checkpoint_body(self._policy.origin, after, root)
        lines = []
        for row in (in_force,) if incoming is None else (in_force, incoming):
            key = self._verifier(row)
            signature = await self._hsm.sign(row.hsm_id, Curve.ED25519, body.encode())
            check_ed25519(key.public_key, body.encode(), signature)
            lines.append((key.name, key.id, signature))
        now = self._clock()
        record = CheckpointRecord(
            size=after,
            root=root,
            head_hash=prev,
            edge=tuple(builder.edge),
            note=signed_note(body, *lines[0], *lines[1:]),
            created_at=now,
        )

        async def unit(writer: Any) -> bool:
            current = await writer.checkpoints.latest()
            if (current.size if current else 0) != base:
                return False  # another worker checkpointed first
            await writer.checkpoints.add(record, base, nodes)
            await writer.audit_keys.signed(in_force.key_id, after)
            if incoming is not None:
                await writer.audit_keys.retired(in_force.key_id, after, now)
                await writer.audit_keys.signed(incoming.key_id, after)
            return True

        if await self._store.submit(unit):
            if incoming is not None:
                self._hsm_id, self._key = incoming.hsm_id, self._verifier(incoming)
                await self._destroy(in_force)
            if self._on_checkpoint is not None:
                # A blocking call (the rollback anchor: a file lock, a write and an fsync, measured
                # 10-20 ms on the loop): on a thread, so no request waits behind the disk.
                await asyncio.to_thread(self._on_checkpoint, record)
            if self._after_checkpoint is not None:
                await self._after_checkpoint(record)
        return record, after >= head_seq

    def _check_rotation(self, text: str, seq: int, incoming: AuditKeyRecord | None) -> None:
        """A rotation event in the range must be the one ``audit_keys`` recorded at its seq."""
        try:
            rotation = rotation_in(text, seq)
        except NoteError:
            rotation = None
            expected = False
        else:
            expected = rotation is None or (
                incoming is not None
                and incoming.rotation_seq == seq
                and rotation.new == self._verifier(incoming)
            )
        if not expected:
            log.error("audit key rotation event not as recorded: no checkpoint signed", extra={"seq": seq})
            raise IntegrityError("an audit key rotation is not as recorded", code="audit_key_invalid")

    # -- the auditor's reads ----------------------------------------------------------------------------

    async def public_keys(self) -> dict[str, Any]:
        """The key in force (its fields at the top, as before rotation existed) and every audit key with
        its validity: the seq of the rotation that introduced it, the first and last checkpoint sizes it
        signed, when it was retired and whether its private half is still in the token."""
        async with self._store.read() as reader:
            rows = await reader.audit_keys.all()
            latest = await reader.checkpoints.latest()
        size = latest.size if latest else 0
        keys = [self._key_view(row, i == len(rows) - 1, size) for i, row in enumerate(rows)]
        current = self.key if not keys else self._verifier(rows[-1])
        return {
            "origin": current.name,
            "algorithm": "ed25519",
            "public_key": _b64(current.public_key),
            "key_id": current.id.hex(),
            "verifier_key": current.text(),
            "keys": keys,
        }

    def _key_view(self, row: AuditKeyRecord, newest: bool, size: int) -> dict[str, Any]:
        key = self._verifier(row)
        if row.retired_size is not None:
            state = "retired"
        elif newest and row.rotation_seq is not None and row.rotation_seq > size:
            state = "pending"  # the next checkpoint (co-signed with the retiring key) makes it active
        elif newest:
            state = "active"
        else:
            state = "retiring"
        return {
            "key_id": key.id.hex(),
            "verifier_key": key.text(),
            "public_key": row.public_key,
            "state": state,
            "rotation_seq": row.rotation_seq,
            "first_checkpoint": row.first_size,
            "last_checkpoint": row.retired_size,
            "created_at": iso(row.created_at),
            "retired_at": None if row.retired_at is None else iso(row.retired_at),
            "private_key": "in_token" if row.destroyed_at is None else "destroyed",
        }

    async def rotate(self, ctx: RequestContext) -> dict[str, Any]:
        """Rotate the audit key (admin): a new key generated in the token, the ``audit.key_rotated`` event
        naming both keys, and at once the checkpoint that covers it, signed by the retiring key and
        co-signed by the new one; the retiring key's private half is then destroyed."""
        require_role(ctx, Role.ADMIN)
        async with self._lock:
            async with self._store.read() as reader:
                rows = await reader.audit_keys.all()
                latest = await reader.checkpoints.latest()
            if not rows or _pending(rows, latest):
                raise Conflict(
                    "the previous audit key rotation is not covered by a checkpoint yet",
                    code="audit_key_rotation_pending",
                )
            generated = await self._hsm.new_audit_key()
            if not generated.attributes.confined:
                await self._hsm.destroy_audit_private(generated.hsm_id)
                raise IntegrityError("the new audit key could leave the token", code="audit_key_invalid")
            now = self._clock()

            async def unit(writer: Any) -> tuple[AuditKeyRecord, int] | None:
                current = await writer.audit_keys.all()
                if _pending(current, await writer.checkpoints.latest()):
                    return None  # another worker rotated first
                old = self._verifier(current[-1])
                new = VerifierKey(self._policy.origin, generated.public_key)
                event = writer.append_audit(
                    ctx.audit_event(
                        ROTATION_KIND,
                        now,
                        old_key=old.text(),
                        new_key=new.text(),
                        old_key_id=old.id.hex(),
                        new_key_id=new.id.hex(),
                    )
                )
                await writer.audit_keys.add(self._row(generated, event.seq))
                return current[-1], event.seq

            done = await self._store.submit(unit)
            if done is None:
                await self._hsm.destroy_audit_private(generated.hsm_id)
                raise Conflict(
                    "another audit key rotation is not covered by a checkpoint yet",
                    code="audit_key_rotation_pending",
                )
            retired, seq = done
            checkpoint = await self._checkpoint_locked()
        new_key = VerifierKey(self._policy.origin, generated.public_key)
        return {
            "rotated": True,
            "rotation_seq": seq,
            "old_key": self._verifier(retired).text(),
            "new_key": new_key.text(),
            "key_id": new_key.id.hex(),
            "checkpoint": None if checkpoint is None else _view(checkpoint),
        }

    async def get_checkpoint(self, ctx: RequestContext, size: int | None = None) -> dict[str, Any]:
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        async with self._store.read() as reader:
            record = await (reader.checkpoints.latest() if size is None else reader.checkpoints.at_size(size))
        if record is None:
            raise NotFound("no checkpoint of that size", code="checkpoint_not_found")
        return _view(record)

    async def list_checkpoints(self, ctx: RequestContext, after: int, limit: int) -> dict[str, Any]:
        """Checkpoints with ``size > after`` (for an export of the events after ``after``), and the
        tree's right edge at ``after`` so an offline verifier can rebuild the roots from that point."""
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        async with self._store.read() as reader:
            records = await reader.checkpoints.page(after, max(1, min(limit, 1000)))
            latest = await reader.checkpoints.latest()
            first = await reader.retention.first_retained_seq()
        # Events up to ``retained_after`` were archived and pruned: an export starts there at the earliest.
        retained_after = 0 if first is None else first - 1
        edge: list[str] | None = None
        if after < retained_after:
            edge = None
        elif after == 0:
            edge = []
        elif latest is not None and after <= latest.size:
            edge = [_b64(h) for h in await self._hashes(_edge_ranges(after))]
        return {
            "items": [_view(r) for r in records],
            "after": after,
            "edge": edge,
            "retained_after": retained_after,
        }

    async def _covering(self, size: int) -> CheckpointRecord:
        async with self._store.read() as reader:
            latest = await reader.checkpoints.latest()
        if latest is None or size > latest.size:
            raise NotFound("no checkpoint covers that tree size yet", code="checkpoint_not_found")
        return latest

    async def _nodes(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The perfect subtrees named: stored ones read (a prune stores the small ones of its boundary's
        edge too), other small ones hashed from their events."""
        async with self._store.read() as reader:
            found = await reader.checkpoints.nodes(wanted)
            for level, index in sorted(k for k in wanted if k[0] < STORED_FROM_LEVEL and k not in found):
                first, count = index << level, 1 << level
                events = await reader.audit.chain_slice(first, count)
                if len(events) == count:
                    small = TreeBuilder()
                    for _, text, _, _ in events:
                        small.append(leaf_hash(text.encode("utf-8")))
                    found[(level, index)] = small.root()
        if len(found) != len(wanted):
            raise IntegrityError("the audit tree is missing nodes", code="audit_tree_incomplete")
        return found

    async def _hashes(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        wanted: set[tuple[int, int]] = set()

        def record(level: int, index: int) -> bytes:
            wanted.add((level, index))
            return bytes(32)

        for a, b in ranges:
            range_hash(a, b, record)
        found = await self._nodes(wanted)
        return [range_hash(a, b, lambda lv, i: found[(lv, i)]) for a, b in ranges]

    async def _root(self, size: int) -> bytes:
        wanted: set[tuple[int, int]] = set()

        def record(level: int, index: int) -> bytes:
            wanted.add((level, index))
            return bytes(32)

        tree_root(size, record)
        found = await self._nodes(wanted)
        return tree_root(size, lambda lv, i: found[(lv, i)])

    async def consistency(self, ctx: RequestContext, first: int, second: int | None) -> dict[str, Any]:
        """RFC 6962 consistency proof from tree size ``first`` to ``second`` (default: the newest
        checkpoint), with the second tree's root and its checkpoint note when one was signed there."""
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        latest = await self._covering(second if second is not None else first)
        second = latest.size if second is None else second
        if not 1 <= first <= second:
            raise InvalidRequest("first must be between 1 and second", code="invalid_field", field="first")
        proof = await self._hashes(consistency_nodes(first, second))
        async with self._store.read() as reader:
            at_first = await reader.checkpoints.at_size(first)
            at_second = await reader.checkpoints.at_size(second)
        return {
            "first": first,
            "second": second,
            "first_root": _b64(await self._root(first)),
            "second_root": _b64(await self._root(second)),
            "first_checkpoint": None if at_first is None else at_first.note,
            "second_checkpoint": None if at_second is None else at_second.note,
            "proof": [_b64(h) for h in proof],
        }

    async def inclusion(self, ctx: RequestContext, seq: int, size: int | None) -> dict[str, Any]:
        """RFC 6962 inclusion proof of event ``seq`` (leaf ``seq - 1``) in the tree of ``size`` events
        (default: the newest checkpoint)."""
        require_role(ctx, Role.AUDITOR, Role.ADMIN)
        latest = await self._covering(size if size is not None else seq)
        size = latest.size if size is None else size
        if not 1 <= seq <= size:
            raise InvalidRequest("seq must be between 1 and size", code="invalid_field", field="seq")
        proof = await self._hashes(inclusion_nodes(seq - 1, size))
        leaf = await self._hashes([(seq - 1, seq)])
        async with self._store.read() as reader:
            at_size = await reader.checkpoints.at_size(size)
        return {
            "seq": seq,
            "size": size,
            "leaf_hash": _b64(leaf[0]),
            "root": _b64(await self._root(size)),
            "checkpoint": None if at_size is None else at_size.note,
            "proof": [_b64(h) for h in proof],
        }

    async def edge_at(self, size: int) -> list[tuple[int, int, bytes]]:
        """The tree's right edge at ``size`` as ``(level, index, hash)``, largest subtree first."""
        ranges = _edge_ranges(size)
        hashes = await self._hashes(ranges)
        return [
            ((b - a).bit_length() - 1, a >> ((b - a).bit_length() - 1), h)
            for (a, b), h in zip(ranges, hashes, strict=True)
        ]


def _pending(rows: list[AuditKeyRecord], latest: CheckpointRecord | None) -> bool:
    """Whether the newest key's rotation is not yet covered by a checkpoint."""
    seq = rows[-1].rotation_seq if rows else None
    return seq is not None and (latest is None or latest.size < seq)


def _edge_ranges(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees of the tree's right edge at ``size``, largest first."""
    ranges, start = [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            ranges.append((start, start + (1 << bit)))
            start += 1 << bit
    return ranges


def _view(record: CheckpointRecord) -> dict[str, Any]:
    return {
        "size": record.size,
        "root": _b64(record.root),
        "note": record.note,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
    }
