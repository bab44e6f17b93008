"""Secret records and their sealed versions: the ``secrets`` and ``secret_versions`` tables.

Owns: inserting a secret with its first version, adding versions (a new value), metadata updates,
the whole secret's state (active or disabled, which moves the facts epoch), recording the last fetch,
deletion (the record and every version), and reads by id, by folder and name, and in pages under a
folder prefix. A version holds the data key as the token wrapped it and the
fields as ``signer.crypto.envelope`` sealed them: this module never sees a value or an unwrapped key,
and never decides who may read what.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, one_of
from signer.store.records import (
    SECRET_BACKENDS,
    SECRET_CATEGORIES,
    SECRET_ORIGINS,
    SECRET_OWNER_TYPES,
    SECRET_STATES,
    SECRET_VERSION_STATES,
    SecretRecord,
    SecretVersionRecord,
)
from signer.store.tx import Statements, WriteStatements

_METADATA_FIELDS = frozenset(
    {
        "description",
        "tags",
        "category",
        "owner_type",
        "owner",
        "consumers",
        "pins",
        "overlap_seconds",
        "rotation_interval_seconds",
        "rotation_due_at",
    }
)


def _secret(row: Any) -> SecretRecord:
    m = row._mapping
    return SecretRecord(
        id=m["id"],
        name=m["name"],
        folder=m["folder"],
        description=m["description"],
        tags=list(m["tags"]),
        category=m["category"],
        owner_type=m["owner_type"],
        owner=m["owner"],
        consumers=list(m["consumers"]),
        origin=m["origin"],
        generation=None if m["generation"] is None else dict(m["generation"]),
        current_version=m["current_version"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        updated_at=m["updated_at"],
        updated_by=m["updated_by"],
        last_fetched_at=m["last_fetched_at"],
        last_fetched_by=m["last_fetched_by"],
        backend=m["backend"],
        reference=m["reference"],
        revision=m["revision"],
        pins={str(k): int(v) for k, v in dict(m["pins"] or {}).items()},
        overlap_seconds=m["overlap_seconds"],
        rotation_interval_seconds=m["rotation_interval_seconds"],
        rotation_due_at=m["rotation_due_at"],
        overdue_notified_at=m["overdue_notified_at"],
        state=m["state"],
        state_changed_at=m["state_changed_at"],
        state_changed_by=m["state_changed_by"],
        state_reason=m["state_reason"],
    )


def _version(row: Any) -> SecretVersionRecord:
    m = row._mapping
    return SecretVersionRecord(
        secret_id=m["secret_id"],
        version=m["version"],
        kek_id=m["kek_id"],
        wrapped_key=bytes(m["wrapped_key"]),
        sealed_fields={name: base64.b64decode(text) for name, text in dict(m["sealed_fields"]).items()},
        created_at=m["created_at"],
        created_by=m["created_by"],
        bound_kek_id=m.get("bound_kek_id"),
        state=m["state"],
        reason=m["reason"],
        state_changed_at=m["state_changed_at"],
        state_changed_by=m["state_changed_by"],
        disable_at=m["disable_at"],
    )


def _if_match_failed() -> Conflict:
    return Conflict(
        "the secret changed since the revision If-Match names; read it again", code="if_match_failed"
    )


def _check_secret(secret: SecretRecord) -> None:
    for name in ("id", "name", "folder", "owner"):
        nonempty(getattr(secret, name), f"secret {name}")
    one_of(secret.category, SECRET_CATEGORIES, "secret category")
    one_of(secret.owner_type, SECRET_OWNER_TYPES, "secret owner_type")
    one_of(secret.origin, SECRET_ORIGINS, "secret origin")
    one_of(secret.backend, SECRET_BACKENDS, "secret backend")
    one_of(secret.state, SECRET_STATES, "secret state")
    if (secret.backend == "sealed") != (secret.reference is None):
        raise ValueError("a reference belongs to, and only to, a secret held by an external backend")
    aware(secret.created_at, "created_at")
    aware(secret.updated_at, "updated_at")


def _check_version(version: SecretVersionRecord) -> None:
    nonempty(version.secret_id, "secret_id")
    nonempty(version.kek_id, "kek_id")
    if type(version.version) is not int or version.version < 1:
        raise ValueError("version must be a positive integer")
    if not version.wrapped_key or not version.sealed_fields:
        raise ValueError("a version needs a wrapped key and at least one sealed field")
    one_of(version.state, SECRET_VERSION_STATES, "secret version state")
    aware(version.created_at, "created_at")


def _under(folder: str) -> Any:
    """Rows in ``folder`` or below it (a scope prefix ends at a ``/``)."""
    c = t.secrets.c
    if folder == "*":
        return c.folder.is_not(None)
    return or_(c.folder == folder, c.folder.startswith(folder + "/", autoescape=True))


class SecretReads:
    """Reads of ``secrets`` and ``secret_versions``."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, secret_id: str) -> SecretRecord | None:
        row = await self._tx._first(select(t.secrets).where(t.secrets.c.id == secret_id))
        return None if row is None else _secret(row)

    async def by_name(self, folder: str, name: str) -> SecretRecord | None:
        c = t.secrets.c
        row = await self._tx._first(select(t.secrets).where(c.folder == folder, c.name == name))
        return None if row is None else _secret(row)

    async def under(self, folder: str, *, limit: int = 100, after: str | None = None) -> list[SecretRecord]:
        """Secrets in ``folder`` and below (``*``: all), ordered by id; ``after`` is the last id seen."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        query = select(t.secrets).where(_under(folder))
        if after is not None:
            query = query.where(t.secrets.c.id > after)
        rows = await self._tx._all(query.order_by(t.secrets.c.id).limit(limit))
        return [_secret(r) for r in rows]

    async def in_folders(
        self, folders: list[str], ids: list[str], *, limit: int, after: str | None = None
    ) -> list[SecretRecord]:
        """Secrets in or below any of ``folders`` and secrets named in ``ids``, ordered by id, at most
        ``limit`` after the id ``after``. One index range per folder (``ix_secrets_folder_id``) and one
        primary-key lookup per id: the cost follows how many secrets those folders hold, never the
        table's size, and no folder or id at all reads nothing."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        c = t.secrets.c
        found: dict[str, SecretRecord] = {}
        for folder in folders:
            nonempty(folder, "folder")
            if self._tx.backend == "postgresql":
                # text_pattern_ops index: a LIKE prefix is a range in byte order, whatever the collation.
                below = c.folder.startswith(folder + "/", autoescape=True)
            else:
                # SQLite compares text bytewise; LIKE would be case-insensitive and skip the index.
                # '0' follows '/': [folder/, folder0) is every folder below.
                below = and_(c.folder >= folder + "/", c.folder < folder + "0")
            query = select(t.secrets).where(or_(c.folder == folder, below))
            if after is not None:
                query = query.where(c.id > after)
            for row in await self._tx._all(query.order_by(c.id).limit(limit)):
                found[row._mapping["id"]] = _secret(row)
        if ids:
            query = select(t.secrets).where(c.id.in_(sorted(set(ids))))
            if after is not None:
                query = query.where(c.id > after)
            for row in await self._tx._all(query):
                found[row._mapping["id"]] = _secret(row)
        return [found[i] for i in sorted(found)[:limit]]

    async def version(self, secret_id: str, version: int) -> SecretVersionRecord | None:
        c = t.secret_versions.c
        row = await self._tx._first(
            select(t.secret_versions).where(c.secret_id == secret_id, c.version == version)
        )
        return None if row is None else _version(row)

    async def version_to_open(
        self, secret_id: str, version: int | None
    ) -> tuple[bool, SecretVersionRecord | None]:
        """In one statement: whether the secret exists, and its version ``version`` (None: the current
        one as committed now), or None when it has no such version."""
        s, v = t.secrets.c, t.secret_versions.c
        number = s.current_version if version is None else version
        query = (
            select(t.secret_versions, s.id.label("exists_id"))
            .select_from(
                t.secrets.outerjoin(t.secret_versions, and_(v.secret_id == s.id, v.version == number))
            )
            .where(s.id == secret_id)
        )
        row = await self._tx._first(query)
        if row is None:
            return False, None
        return True, None if row._mapping["secret_id"] is None else _version(row)

    async def latest_version(self, secret_id: str) -> int:
        """The highest version number the secret has (staged ones included), 0 if none."""
        c = t.secret_versions.c
        row = await self._tx._first(select(func.max(c.version)).where(c.secret_id == secret_id))
        return 0 if row is None or row[0] is None else int(row[0])

    async def version_state(self, secret_id: str, version: int) -> str | None:
        """The state of one version (None: no such version), without its sealed row."""
        c = t.secret_versions.c
        row = await self._tx._first(select(c.state).where(c.secret_id == secret_id, c.version == version))
        return None if row is None else str(row[0])

    async def overlaps_ended(self, now: datetime, *, limit: int = 100) -> list[tuple[str, int]]:
        """(secret id, version) of enabled versions whose overlap ended at or before ``now``."""
        c = t.secret_versions.c
        rows = await self._tx._all(
            select(c.secret_id, c.version)
            .where(c.disable_at <= now, c.state == "enabled")
            .order_by(c.disable_at)
            .limit(limit)
        )
        return [(r[0], int(r[1])) for r in rows]

    async def rotations_due(self, now: datetime, *, limit: int = 100) -> list[SecretRecord]:
        """Sealed, active secrets whose rotation is due at or before ``now`` (a disabled secret is neither
        rotated nor reported overdue; enabled again, it is due at the next sweep)."""
        c = t.secrets.c
        rows = await self._tx._all(
            select(t.secrets)
            .where(c.rotation_due_at <= now, c.backend == "sealed", c.state == "active")
            .order_by(c.rotation_due_at)
            .limit(limit)
        )
        return [_secret(r) for r in rows]

    async def folder_defaults(self, folders: list[str]) -> dict[str, tuple[int | None, int | None]]:
        """folder -> (rotation interval, overlap) in seconds, for those of ``folders`` that have some."""
        c = t.secret_folder_defaults.c
        if not folders:
            return {}
        rows = await self._tx._all(
            select(c.folder, c.rotation_interval_seconds, c.overlap_seconds).where(c.folder.in_(folders))
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def versions(self, secret_id: str) -> list[SecretVersionRecord]:
        c = t.secret_versions.c
        rows = await self._tx._all(
            select(t.secret_versions).where(c.secret_id == secret_id).order_by(c.version)
        )
        return [_version(r) for r in rows]


class SecretWrites(SecretReads):
    """Writes of ``secrets`` and ``secret_versions`` (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, secret: SecretRecord, first: SecretVersionRecord | None) -> None:
        """A new secret with its first version (None, and current_version 0, for a secret held by
        reference in an external backend); ``Conflict(secret_exists)`` if the folder holds the name."""
        _check_secret(secret)
        if first is None:
            if secret.backend == "sealed" or secret.current_version != 0:
                raise ValueError("only a secret held by reference has no version, and current_version 0")
        else:
            _check_version(first)
            if secret.backend != "sealed":
                raise ValueError("a secret held by reference has no sealed version")
            if first.secret_id != secret.id or first.version != secret.current_version:
                raise ValueError("the first version must belong to the secret and be its current version")
        await self._tx._insert_new(
            t.secrets,
            {
                "id": secret.id,
                "name": secret.name,
                "folder": secret.folder,
                "description": secret.description,
                "tags": list(secret.tags),
                "category": secret.category,
                "owner_type": secret.owner_type,
                "owner": secret.owner,
                "consumers": list(secret.consumers),
                "origin": secret.origin,
                "generation": secret.generation,
                "current_version": secret.current_version,
                "created_at": secret.created_at,
                "created_by": secret.created_by,
                "updated_at": secret.updated_at,
                "updated_by": secret.updated_by,
                "last_fetched_at": secret.last_fetched_at,
                "last_fetched_by": secret.last_fetched_by,
                "backend": secret.backend,
                "reference": secret.reference,
                "revision": secret.revision,
                "pins": dict(secret.pins),
                "overlap_seconds": secret.overlap_seconds,
                "rotation_interval_seconds": secret.rotation_interval_seconds,
                "rotation_due_at": secret.rotation_due_at,
                "overdue_notified_at": secret.overdue_notified_at,
                "state": secret.state,
                "state_changed_at": secret.state_changed_at,
                "state_changed_by": secret.state_changed_by,
                "state_reason": secret.state_reason,
            },
            Conflict("a secret with that name exists in that folder", code="secret_exists"),
        )
        if first is not None:
            await self._insert_version(first)

    async def _insert_version(self, version: SecretVersionRecord) -> None:
        await self._tx._insert_new(
            t.secret_versions,
            {
                "secret_id": version.secret_id,
                "version": version.version,
                "kek_id": version.kek_id,
                "wrapped_key": version.wrapped_key,
                "sealed_fields": {
                    name: base64.b64encode(sealed).decode("ascii")
                    for name, sealed in version.sealed_fields.items()
                },
                "created_at": version.created_at,
                "created_by": version.created_by,
                "state": version.state,
                "reason": version.reason,
                "state_changed_at": version.state_changed_at,
                "state_changed_by": version.state_changed_by,
                "disable_at": version.disable_at,
            },
            Conflict("that version of the secret exists", code="secret_version_exists"),
        )

    async def add_version(
        self,
        version: SecretVersionRecord,
        *,
        current_was: int | None = None,
        if_revision: int | None = None,
        previous_until: datetime | None = None,
        rotation_due_at: datetime | None = None,
    ) -> None:
        """Store ``version``. Enabled: it becomes current, and the current version must still be
        ``current_was`` (default: one before it); staged: the current version stays. Either way
        ``Conflict(secret_version_exists)`` when a concurrent writer got there first, and with
        ``if_revision`` ``Conflict(if_match_failed)`` unless the record is still at that revision.
        ``previous_until`` ends the previous current version's overlap then; ``rotation_due_at`` is
        when the next rotation falls due."""
        _check_version(version)
        if version.state not in ("enabled", "staged"):
            raise ValueError("a new version is enabled or staged")
        c = t.secrets.c
        query = update(t.secrets).where(c.id == version.secret_id)
        if if_revision is not None:
            query = query.where(c.revision == if_revision)
        values: dict[str, Any] = {
            "revision": c.revision + 1,
            "updated_at": version.created_at,
            "updated_by": version.created_by,
        }
        previous = version.version - 1 if current_was is None else current_was
        if version.state == "enabled":
            query = query.where(c.current_version == previous)
            values.update(current_version=version.version, rotation_due_at=rotation_due_at)
        result = await self._tx._write(query.values(**values))
        if not result.rowcount:
            if await self.get(version.secret_id) is None:
                raise NotFound("no such secret", code="secret_not_found")
            if if_revision is not None:
                raise _if_match_failed()
            raise Conflict("that version of the secret exists", code="secret_version_exists")
        await self._insert_version(version)
        if version.state == "enabled" and previous_until is not None and previous >= 1:
            v = t.secret_versions.c
            await self._tx._write(
                update(t.secret_versions)
                .where(v.secret_id == version.secret_id, v.version == previous, v.state == "enabled")
                .values(disable_at=previous_until)
            )
        # A cached record names the current version: the next fetch must see the new one.
        self._tx.bump_epoch()

    async def promote(
        self,
        secret_id: str,
        version: int,
        now: datetime,
        by: str | None,
        *,
        if_revision: int | None = None,
        previous_until: datetime | None = None,
        rotation_due_at: datetime | None = None,
    ) -> int:
        """Make the staged ``version`` current; returns the version that was current. Refused with
        ``Conflict(secret_version_not_staged)`` if it is not staged (a concurrent promotion won)."""
        aware(now, "now")
        secret = await self.get(secret_id)
        if secret is None:
            raise NotFound("no such secret", code="secret_not_found")
        if if_revision is not None and secret.revision != if_revision:
            raise _if_match_failed()
        v = t.secret_versions.c
        moved = await self._tx._write(
            update(t.secret_versions)
            .where(v.secret_id == secret_id, v.version == version, v.state == "staged")
            .values(state="enabled", state_changed_at=now, state_changed_by=by, reason="promoted")
        )
        if not moved.rowcount:
            if await self.version_state(secret_id, version) is None:
                raise NotFound("no such version of the secret", code="secret_version_not_found")
            raise Conflict("that version is not staged", code="secret_version_not_staged")
        c = t.secrets.c
        result = await self._tx._write(
            update(t.secrets)
            .where(c.id == secret_id, c.revision == secret.revision)
            .values(
                current_version=version,
                revision=c.revision + 1,
                updated_at=now,
                updated_by=by,
                rotation_due_at=rotation_due_at,
            )
        )
        if not result.rowcount:
            raise _if_match_failed()
        if previous_until is not None and secret.current_version >= 1:
            await self._tx._write(
                update(t.secret_versions)
                .where(
                    v.secret_id == secret_id,
                    v.version == secret.current_version,
                    v.state == "enabled",
                )
                .values(disable_at=previous_until)
            )
        self._tx.bump_epoch()
        return secret.current_version

    async def set_version_state(
        self,
        secret_id: str,
        version: int,
        state: str,
        *,
        from_states: frozenset[str],
        now: datetime,
        by: str | None,
        reason: str,
        if_revision: int | None = None,
    ) -> bool:
        """Move one version to ``state`` if it is in one of ``from_states`` (False otherwise: already
        there, or moved by someone else). ``destroyed`` wipes its wrapped key and sealed fields for good.
        The record's revision moves (with ``if_revision``: only from that revision)."""
        one_of(state, SECRET_VERSION_STATES, "secret version state")
        aware(now, "now")
        c = t.secrets.c
        query = update(t.secrets).where(c.id == secret_id)
        if if_revision is not None:
            query = query.where(c.revision == if_revision)
        result = await self._tx._write(query.values(revision=c.revision + 1, updated_at=now, updated_by=by))
        if not result.rowcount:
            if await self.get(secret_id) is None:
                raise NotFound("no such secret", code="secret_not_found")
            raise _if_match_failed()
        v = t.secret_versions.c
        values: dict[str, Any] = {
            "state": state,
            "state_changed_at": now,
            "state_changed_by": by,
            "reason": reason,
        }
        if state == "destroyed":
            values.update(wrapped_key=b"", sealed_fields={}, disable_at=None)
        elif state == "enabled":
            values.update(disable_at=None)
        moved = await self._tx._write(
            update(t.secret_versions)
            .where(v.secret_id == secret_id, v.version == version, v.state.in_(sorted(from_states)))
            .values(**values)
        )
        self._tx.bump_epoch()
        return bool(moved.rowcount)

    async def set_state(
        self,
        secret_id: str,
        state: str,
        *,
        now: datetime,
        by: str | None,
        reason: str | None,
        if_revision: int | None = None,
    ) -> bool:
        """Move the whole secret to ``state`` (``active`` or ``disabled``); False (nothing written) when
        it is in that state already. The revision moves (with ``if_revision``: only from that revision)
        and so does the facts epoch: every worker's cached record, version rows and data keys of it
        go, and a fetch judged on a cached record is refused at its commit."""
        one_of(state, SECRET_STATES, "secret state")
        aware(now, "now")
        c = t.secrets.c
        query = update(t.secrets).where(c.id == secret_id, c.state != state)
        if if_revision is not None:
            query = query.where(c.revision == if_revision)
        result = await self._tx._write(
            query.values(
                state=state,
                state_changed_at=now,
                state_changed_by=by,
                state_reason=reason,
                revision=c.revision + 1,
                updated_at=now,
                updated_by=by,
            )
        )
        if not result.rowcount:
            found = await self.get(secret_id)
            if found is None:
                raise NotFound("no such secret", code="secret_not_found")
            if found.state == state:
                return False
            raise _if_match_failed()
        self._tx.bump_epoch()
        return True

    async def set_folder_defaults(
        self,
        folder: str,
        rotation_interval_seconds: int | None,
        overlap_seconds: int | None,
        now: datetime,
        by: str | None,
    ) -> None:
        """Set (or, both None, remove) a folder's defaults for the secrets created in it or below."""
        nonempty(folder, "folder")
        aware(now, "now")
        c = t.secret_folder_defaults.c
        await self._tx._write(delete(t.secret_folder_defaults).where(c.folder == folder))
        if rotation_interval_seconds is None and overlap_seconds is None:
            return
        await self._tx._insert_new(
            t.secret_folder_defaults,
            {
                "folder": folder,
                "rotation_interval_seconds": rotation_interval_seconds,
                "overlap_seconds": overlap_seconds,
                "updated_at": now,
                "updated_by": by,
            },
            Conflict("those folder defaults were just set", code="folder_defaults_exist"),
        )

    async def note_overdue(self, secret_id: str, revision: int, now: datetime) -> bool:
        """Record that the owner was told the rotation is overdue; False if another worker did, or the
        record changed (check-and-set on the revision)."""
        c = t.secrets.c
        result = await self._tx._write(
            update(t.secrets)
            .where(c.id == secret_id, c.revision == revision)
            .values(overdue_notified_at=now, revision=c.revision + 1)
        )
        return bool(result.rowcount)

    async def update_metadata(
        self,
        secret_id: str,
        changes: dict[str, Any],
        now: datetime,
        by: str | None,
        *,
        if_revision: int | None = None,
    ) -> None:
        """Change description, tags, category, owner, consumers, pins, overlap or rotation interval;
        never the name, folder or value. With ``if_revision``: only from that revision."""
        unknown = set(changes) - _METADATA_FIELDS
        if unknown:
            raise ValueError(f"not secret metadata: {', '.join(sorted(unknown))}")
        if "category" in changes:
            one_of(changes["category"], SECRET_CATEGORIES, "secret category")
        if "owner_type" in changes:
            one_of(changes["owner_type"], SECRET_OWNER_TYPES, "secret owner_type")
        aware(now, "now")
        values = {k: (list(v) if k in ("tags", "consumers") else v) for k, v in changes.items()}
        c = t.secrets.c
        query = update(t.secrets).where(c.id == secret_id)
        if if_revision is not None:
            query = query.where(c.revision == if_revision)
        result = await self._tx._write(
            query.values(**values, revision=c.revision + 1, updated_at=now, updated_by=by)
        )
        if not result.rowcount:
            if if_revision is not None and await self.get(secret_id) is not None:
                raise _if_match_failed()
            raise NotFound("no such secret", code="secret_not_found")
        self._tx.bump_epoch()

    async def record_fetch(
        self, secret_id: str, now: datetime, by: str, *, current_version: int | None = None
    ) -> bool:
        """Note the last fetch; False (nothing written) when the secret is gone or, with
        ``current_version``, when that is no longer its current version."""
        aware(now, "now")
        c = t.secrets.c
        query = update(t.secrets).where(c.id == secret_id)
        if current_version is not None:
            query = query.where(c.current_version == current_version)
        result = await self._tx._write(query.values(last_fetched_at=now, last_fetched_by=by))
        return bool(result.rowcount)

    async def delete(self, secret_id: str) -> bool:
        """Remove the secret and every version (the sealed values go with them); False if unknown."""
        await self._tx._write(delete(t.secret_versions).where(t.secret_versions.c.secret_id == secret_id))
        result = await self._tx._write(delete(t.secrets).where(t.secrets.c.id == secret_id))
        if result.rowcount:
            self._tx.bump_epoch()
        return bool(result.rowcount)
