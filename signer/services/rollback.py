"""Rollback detection at start (F-17): the database's audit log against the last checkpoint signed, kept
outside the database as well.

Every checkpoint this installation commits is also written to an anchor file beside the database
(``data_dir/audit-anchor.json``: the signed note and the chain's hash at its size; replaced atomically,
never by a smaller checkpoint). At start the service compares the database with it: a database whose
audit log is shorter than the anchor, whose event at the anchor's size is not the one signed, or whose
newest checkpoint is older than the anchor was restored to an earlier state (or rewritten). Then the
high-risk operations (signing, approving into a signature, secret reads, grant and group changes) are
refused with 503 ``rollback_detected`` until an admin acknowledges (``POST
/v1/audit/rollback/acknowledge``, audited), which re-anchors on the database as it is. Every worker
honours an acknowledgement made through another: the anchor file says so.

The anchor is also kept in the token (``TokenAnchor``: a CKO_DATA object labelled
``signer-audit-anchor`` holding the checkpoint's size, root and chain hash, written after the file and
only ever by a larger checkpoint), so deleting the anchor file together with restoring the database
still shows: at start the larger of the two is the one the database must reach.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from signer.audit_note import Checkpoint, NoteError, VerifierKey, open_checkpoint
from signer.crypto.signatures import check_ed25519
from signer.errors import ConfigurationError, Unavailable
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.store import Store, Writer
from signer.store.tables.checkpoints import CheckpointRecord

log = logging.getLogger("signer.rollback")

ANCHOR_NAME = "audit-anchor.json"


@dataclass(frozen=True, slots=True)
class Anchor:
    size: int
    head_hash: str
    note: str
    acknowledged: dict[str, Any] | None = None


class AnchorFile:
    """The anchor beside the database: read, and replaced atomically under a lock, only by a larger
    checkpoint (or by an acknowledgement)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size

    def read(self) -> Anchor | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            raise ConfigurationError(f"the audit anchor {self.path.name} cannot be read") from None
        try:
            return Anchor(
                int(data["size"]), str(data["head_hash"]), str(data["note"]), data.get("acknowledged")
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"the audit anchor {self.path.name} is malformed") from None

    def _replace(self, anchor: Anchor) -> None:
        body = {"size": anchor.size, "head_hash": anchor.head_hash, "note": anchor.note}
        if anchor.acknowledged is not None:
            body["acknowledged"] = anchor.acknowledged
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _locked(self) -> Any:
        fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def advance(self, record: CheckpointRecord) -> None:
        """Write ``record`` as the anchor unless the anchor already covers as much or more."""
        with self._locked():
            current = self.read()
            if current is not None and current.size >= record.size:
                return
            # An acknowledgement stays on record, so a worker still refusing can tell it was made.
            acknowledged = None if current is None else current.acknowledged
            self._replace(Anchor(record.size, record.head_hash, record.note, acknowledged))

    def acknowledge(self, anchor: Anchor) -> None:
        with self._locked():
            self._replace(anchor)


class AnchorStore(Protocol):
    """What the token anchor needs of the HSM: one data object, read and (only larger) written."""

    async def read_anchor(self) -> bytes | None: ...

    async def write_anchor(self, value: bytes, *, force: bool = False) -> bool: ...


@dataclass(frozen=True, slots=True)
class TokenAnchorValue:
    size: int
    root: str
    head_hash: str


class TokenAnchor:
    """The anchor kept in the token: 8 bytes of big-endian size, then ``{"root", "head_hash"}`` as JSON."""

    def __init__(self, hsm: AnchorStore) -> None:
        self._hsm = hsm

    @staticmethod
    def _encode(size: int, root: bytes, head_hash: str) -> bytes:
        body = json.dumps({"root": root.hex(), "head_hash": head_hash}, sort_keys=True).encode()
        return size.to_bytes(8, "big") + body

    async def read(self) -> TokenAnchorValue | None:
        raw = await self._hsm.read_anchor()
        if raw is None:
            return None
        try:
            body = json.loads(raw[8:])
            return TokenAnchorValue(int.from_bytes(raw[:8], "big"), str(body["root"]), str(body["head_hash"]))
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError("the audit anchor in the token is malformed") from None

    async def advance(self, record: CheckpointRecord) -> None:
        """Write ``record`` unless the token holds as large an anchor; a token fault is logged (the
        next checkpoint writes again), never raised into the checkpoint task."""
        try:
            await self._hsm.write_anchor(self._encode(record.size, record.root, record.head_hash))
        except Exception as exc:  # noqa: BLE001 - logged; the file anchor still holds this checkpoint
            log.error("audit anchor not written to the token", extra={"error": type(exc).__name__})

    async def replace(self, record: CheckpointRecord | None) -> None:
        """An acknowledged rollback: the token's anchor becomes the database's newest checkpoint."""
        if record is None:
            value = self._encode(0, bytes(32), "0" * 64)
        else:
            value = self._encode(record.size, record.root, record.head_hash)
        await self._hsm.write_anchor(value, force=True)


def _open_any(note: str, keys: Sequence[VerifierKey]) -> Checkpoint | None:
    for key in keys:
        with contextlib.suppress(NoteError):
            return open_checkpoint(note, key, check_ed25519)
    return None


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # truncated, rewritten, checkpoints_rolled_back
    detail: str
    anchor_size: int
    database_head: int


class RollbackGuard:
    """The start-up comparison and the latch the high-risk routes consult."""

    def __init__(
        self,
        store: Store,
        anchor: AnchorFile,
        keys: VerifierKey | Sequence[VerifierKey],
        *,
        clock: Clock = utcnow,
        token_anchor: TokenAnchor | None = None,
    ) -> None:
        self._store = store
        self._anchor = anchor
        self._token_anchor = token_anchor
        # Every audit key the token holds (retired ones keep their public half): the anchor holds the
        # newest checkpoint this installation signed, under whichever key was in force then.
        self._keys = [keys] if isinstance(keys, VerifierKey) else list(keys)
        self._clock = clock
        self.finding: Finding | None = None
        self._stamp: tuple[int, int] | None = None
        self._acknowledged_before: dict[str, Any] | None = None

    async def check(self) -> Finding | None:
        """Compare the database with the anchors (file and token); latch (and log) what is found."""
        anchor = self._anchor.read()
        token = None if self._token_anchor is None else await self._token_anchor.read()
        self._stamp = self._anchor.stamp()
        self._acknowledged_before = None if anchor is None else anchor.acknowledged
        async with self._store.read() as reader:
            head_seq, _ = await reader.audit_head()
            latest = await reader.checkpoints.latest()
            size, head_hash = 0, ""
            if anchor is not None and anchor.size:
                signed = _open_any(anchor.note, self._keys)
                if signed is None:
                    raise ConfigurationError(
                        "the audit anchor's checkpoint is not signed by an audit key of this token"
                    )
                if signed.size != anchor.size:
                    raise ConfigurationError("the audit anchor's size is not its checkpoint's")
                size, head_hash = anchor.size, anchor.head_hash
            if token is not None and token.size > size:
                if anchor is None or anchor.size < token.size:
                    log.warning(
                        "the audit anchor file is missing or behind the token's: checked against the token",
                        extra={
                            "token_anchor_size": token.size,
                            "file_anchor_size": 0 if anchor is None else anchor.size,
                        },
                    )
                size, head_hash = token.size, token.head_hash
            if size == 0:
                if latest is not None:
                    log.warning("no audit anchor beside the database: anchoring on its newest checkpoint")
                    self._anchor.advance(latest)
                    if self._token_anchor is not None:
                        await self._token_anchor.advance(latest)
                return None
            records = await reader.audit.events(after_seq=size - 1, limit=1)
        finding: Finding | None = None
        if head_seq < size:
            finding = Finding(
                "truncated",
                f"the database's audit log ends at seq {head_seq}, the last signed checkpoint covers "
                f"{size}: the database was restored to an earlier state or its tail was cut",
                size,
                head_seq,
            )
        elif not records or records[0].seq != size or records[0].hash != head_hash:
            finding = Finding(
                "rewritten",
                f"the database's event {size} is not the one the last checkpoint signed: "
                "its history was rewritten or replaced",
                size,
                head_seq,
            )
        elif latest is None or latest.size < size:
            finding = Finding(
                "checkpoints_rolled_back",
                f"the database's newest checkpoint is older than the anchor ({size})",
                size,
                head_seq,
            )
        self.finding = finding
        if finding is not None:
            log.error(
                "audit rollback detected: high-risk operations refused until acknowledged",
                extra={
                    "code": finding.code,
                    "anchor_size": finding.anchor_size,
                    "db_head": finding.database_head,
                },
            )
        elif latest is not None:
            # Bring a lagging anchor (the file or the token) up to the database's newest checkpoint.
            self._anchor.advance(latest)
            if self._token_anchor is not None:
                await self._token_anchor.advance(latest)
        return finding

    def refuse_if_latched(self) -> None:
        """Raise 503 ``rollback_detected`` while a rollback is unacknowledged (in any worker)."""
        if self.finding is None:
            return
        stamp = self._anchor.stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            with contextlib.suppress(ConfigurationError):
                anchor = self._anchor.read()
                if anchor is not None and anchor.acknowledged not in (None, self._acknowledged_before):
                    self.finding = None
                    return
        raise Unavailable(
            "the audit log was rolled back; an admin must acknowledge before this operation runs",
            code="rollback_detected",
        )

    def status(self, ctx: RequestContext) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        finding = self.finding
        return {
            "detected": finding is not None,
            "code": None if finding is None else finding.code,
            "detail": None if finding is None else finding.detail,
            "anchor_size": None if finding is None else finding.anchor_size,
            "database_head": None if finding is None else finding.database_head,
        }

    async def acknowledge(self, ctx: RequestContext) -> dict[str, Any]:
        """An admin accepts the database as it is: audited, then the anchor moves to its newest
        checkpoint (marked acknowledged) and the refusals stop in every worker."""
        require_role(ctx, Role.ADMIN)
        finding = self.finding
        now = self._clock()

        async def unit(writer: Writer) -> CheckpointRecord | None:
            writer.append_audit(
                ctx.audit_event(
                    "audit.rollback_acknowledged",
                    now,
                    code=None if finding is None else finding.code,
                    anchor_size=None if finding is None else finding.anchor_size,
                    database_head=None if finding is None else finding.database_head,
                )
            )
            return await writer.checkpoints.latest()

        latest = await self._store.submit(unit)
        acknowledged = {"at": iso(now), "by": ctx.caller.principal_id, "request_id": ctx.request_id}
        if latest is not None:
            self._anchor.acknowledge(Anchor(latest.size, latest.head_hash, latest.note, acknowledged))
        else:
            self._anchor.acknowledge(Anchor(0, "0" * 64, "", acknowledged))
        if self._token_anchor is not None:
            await self._token_anchor.replace(latest)
        self.finding = None
        self._stamp = self._anchor.stamp()
        return {"acknowledged": True, "was": None if finding is None else finding.code}
