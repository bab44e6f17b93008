"""Secret records and their sealed versions: the ``secrets`` and ``secret_versions`` tables.

Owns: inserting a secret with its first version, adding versions (a new value), metadata updates,
recording the last fetch, deletion (the record and every version), and reads by id, by folder and
name, and in pages under a folder prefix. A version holds the data key as the token wrapped it and the
fields as ``signer.crypto.envelope`` sealed them: this module never sees a value or an unwrapped key,
and never decides who may read what.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, one_of
from signer.store.records import (
    SECRET_BACKENDS,
    SECRET_CATEGORIES,
    SECRET_ORIGINS,
    SECRET_OWNER_TYPES,
    SecretRecord,
    SecretVersionRecord,
)
from signer.store.tx import Statements, WriteStatements

_METADATA_FIELDS = frozenset({"description", "tags", "category", "owner_type", "owner", "consumers"})


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
    )


def _check_secret(secret: SecretRecord) -> None:
    for name in ("id", "name", "folder", "owner"):
        nonempty(getattr(secret, name), f"secret {name}")
    one_of(secret.category, SECRET_CATEGORIES, "secret category")
    one_of(secret.owner_type, SECRET_OWNER_TYPES, "secret owner_type")
    one_of(secret.origin, SECRET_ORIGINS, "secret origin")
    one_of(secret.backend, SECRET_BACKENDS, "secret backend")
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
            },
            Conflict("that version of the secret exists", code="secret_version_exists"),
        )

    async def add_version(self, version: SecretVersionRecord) -> None:
        """Store ``version`` and make it current; it must be exactly one past the current version
        (``Conflict(secret_version_exists)`` otherwise: a concurrent writer got there first)."""
        _check_version(version)
        c = t.secrets.c
        result = await self._tx._write(
            update(t.secrets)
            .where(c.id == version.secret_id, c.current_version == version.version - 1)
            .values(
                current_version=version.version, updated_at=version.created_at, updated_by=version.created_by
            )
        )
        if not result.rowcount:
            if await self.get(version.secret_id) is None:
                raise NotFound("no such secret", code="secret_not_found")
            raise Conflict("that version of the secret exists", code="secret_version_exists")
        await self._insert_version(version)
        # A cached record names the current version: the next fetch must see the new one.
        self._tx.bump_epoch()

    async def update_metadata(
        self, secret_id: str, changes: dict[str, Any], now: datetime, by: str | None
    ) -> None:
        """Change description, tags, category, owner or consumers; never the name, folder or value."""
        unknown = set(changes) - _METADATA_FIELDS
        if unknown:
            raise ValueError(f"not secret metadata: {', '.join(sorted(unknown))}")
        if "category" in changes:
            one_of(changes["category"], SECRET_CATEGORIES, "secret category")
        if "owner_type" in changes:
            one_of(changes["owner_type"], SECRET_OWNER_TYPES, "secret owner_type")
        aware(now, "now")
        values = {k: (list(v) if k in ("tags", "consumers") else v) for k, v in changes.items()}
        result = await self._tx._write(
            update(t.secrets)
            .where(t.secrets.c.id == secret_id)
            .values(**values, updated_at=now, updated_by=by)
        )
        if not result.rowcount:
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
