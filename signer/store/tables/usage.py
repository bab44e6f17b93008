"""Usage aggregates: ``secret_usage``, ``grant_usage`` and ``secret_reference_usage``.

Owns adding batches of counts (each row an aggregate: fetches of one secret by one principal and
workload on one day; uses of one grant by one principal on one resource; resolutions of one reference
spelling to one secret) and the reads the usage, impact and checklist reports need. Rows are written in
batches by ``signer.services.usage`` off the request path; the audit log keeps every single event. This
module never sees a value and decides nothing; it also reads the few secret, grant and policy columns
the checklist needs in bulk (one statement each, so a report over 100,000 secrets stays interactive).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, and_, func, literal, or_, select, type_coerce, update

from signer.store import schema as t
from signer.store.checks import aware
from signer.store.records import GrantRecord
from signer.store.tables.grants import grant_from_row
from signer.store.tx import Statements, WriteStatements


@dataclass(frozen=True, slots=True)
class FetchCount:
    """Fetches of ``secret_id`` by ``principal_id`` as ``workload`` ('' for none) on ``day``."""

    secret_id: str
    day: int
    principal_id: str
    workload: str
    fetches: int
    last_at: datetime
    last_version: int | None = None


@dataclass(frozen=True, slots=True)
class GrantUse:
    """Uses of ``grant_id`` by ``principal_id`` on one resource; the versions of a secret read through it."""

    grant_id: str
    principal_id: str
    resource_type: str
    resource_id: str
    uses: int
    first_at: datetime
    last_at: datetime
    min_version: int | None = None
    max_version: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceUse:
    """Resolutions of ``reference`` (from ``workspace``, '' for none) to ``secret_id`` by ``principal_id``."""

    secret_id: str
    principal_id: str
    reference: str
    workspace: str
    uses: int
    last_at: datetime


@dataclass(frozen=True, slots=True)
class SecretFacts:
    """What the checklist reads of every secret: no value, no description."""

    id: str
    name: str
    folder: str
    category: str
    origin: str
    tags: tuple[str, ...]
    consumers: tuple[str, ...]
    current_version: int
    created_at: datetime
    version_created_at: datetime | None
    last_fetched_at: datetime | None
    rotation_interval_seconds: int | None


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class UsageReads:
    """Reads of the usage tables (and the bulk reads the checklist makes)."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def fetches_of(self, secret_id: str, since_day: int) -> list[FetchCount]:
        """Per principal and workload, the fetches of one secret from ``since_day`` on (``day`` is the
        last day seen)."""
        u = t.secret_usage.c
        rows = await self._tx._all(
            select(
                u.principal_id,
                u.workload,
                func.sum(u.fetches),
                func.max(u.last_at),
                func.max(u.day),
                func.max(u.last_version),
            )
            .where(u.secret_id == secret_id, u.day >= since_day)
            .group_by(u.principal_id, u.workload)
        )
        return [FetchCount(secret_id, int(r[4]), r[0], r[1], int(r[2]), _aware(r[3]), r[5]) for r in rows]

    async def daily(self, secret_id: str, since_day: int, limit: int | None = None) -> list[FetchCount]:
        """The (day, principal, workload) rows of one secret from ``since_day`` on, newest day first
        (at most ``limit``)."""
        u = t.secret_usage.c
        query = (
            select(t.secret_usage)
            .where(u.secret_id == secret_id, u.day >= since_day)
            .order_by(u.day.desc(), u.principal_id, u.workload)
        )
        rows = await self._tx._all(query if limit is None else query.limit(limit))
        return [
            FetchCount(
                r.secret_id,
                r.day,
                r.principal_id,
                r.workload,
                int(r.fetches),
                _aware(r.last_at),
                r.last_version,
            )
            for r in rows
        ]

    async def fetches_by(self, principal_id: str, since_day: int, limit: int) -> list[FetchCount]:
        """Per secret and workload, one principal's fetches from ``since_day`` on (most fetched first)."""
        u = t.secret_usage.c
        total = func.sum(u.fetches)
        rows = await self._tx._all(
            select(u.secret_id, u.workload, total, func.max(u.last_at), func.max(u.day))
            .where(u.principal_id == principal_id, u.day >= since_day)
            .group_by(u.secret_id, u.workload)
            .order_by(total.desc(), u.secret_id)
            .limit(limit)
        )
        return [FetchCount(r[0], int(r[4]), principal_id, r[1], int(r[2]), _aware(r[3])) for r in rows]

    async def fetched_by_others(
        self, secret_ids: Sequence[str], principal_id: str, since_day: int
    ) -> set[str]:
        """Which of ``secret_ids`` someone other than ``principal_id`` fetched from ``since_day`` on."""
        if not secret_ids:
            return set()
        u = t.secret_usage.c
        rows = await self._tx._all(
            select(u.secret_id)
            .where(
                u.secret_id.in_(sorted(set(secret_ids))), u.day >= since_day, u.principal_id != principal_id
            )
            .distinct()
        )
        return {r[0] for r in rows}

    async def grant_uses(
        self,
        *,
        grant_ids: Sequence[str] = (),
        resource_id: str | None = None,
        principal_id: str | None = None,
    ) -> list[GrantUse]:
        """Use rows of the given grants, or on one resource, or by one principal."""
        g = t.grant_usage.c
        conditions: list[Any] = []
        if grant_ids:
            conditions.append(g.grant_id.in_(sorted(set(grant_ids))))
        if resource_id is not None:
            conditions.append(g.resource_id == resource_id)
        if principal_id is not None:
            conditions.append(g.principal_id == principal_id)
        if not conditions:
            raise ValueError("name grants, a resource or a principal")
        rows = await self._tx._all(
            select(t.grant_usage).where(and_(*conditions)).order_by(g.last_at.desc(), g.grant_id)
        )
        return [_grant_use(r) for r in rows]

    async def used_grant_ids(self) -> set[str]:
        """Every grant ever used."""
        g = t.grant_usage.c
        return {r[0] for r in await self._tx._all(select(g.grant_id).distinct())}

    async def grant_last_used(self) -> dict[str, datetime]:
        """Every grant ever used, with when it was last used."""
        g = t.grant_usage.c
        rows = await self._tx._all(select(g.grant_id, func.max(g.last_at)).group_by(g.grant_id))
        return {r[0]: _aware(r[1]) for r in rows}

    async def principals_using(self) -> set[str]:
        """Every principal that has used some grant."""
        g = t.grant_usage.c
        rows = await self._tx._all(select(g.principal_id).distinct())
        return {r[0] for r in rows}

    async def live_grants(self, now: datetime) -> list[GrantRecord]:
        """Every grant neither revoked nor expired at ``now`` (for the checklist, in one statement)."""
        aware(now, "now")
        g = t.grants.c
        rows = await self._tx._all(
            select(t.grants)
            .where(g.revoked_at.is_(None), or_(g.expires_at.is_(None), g.expires_at > now))
            .order_by(g.id)
        )
        return [grant_from_row(r) for r in rows]

    async def references_to(self, secret_id: str) -> list[ReferenceUse]:
        r = t.secret_reference_usage.c
        rows = await self._tx._all(
            select(t.secret_reference_usage).where(r.secret_id == secret_id).order_by(r.last_at.desc())
        )
        return [
            ReferenceUse(
                x.secret_id, x.principal_id, x.reference, x.workspace, int(x.uses), _aware(x.last_at)
            )
            for x in rows
        ]

    # -- bulk reads for the checklist and the reports ------------------------------------------------

    async def secret_facts(
        self,
        *,
        categories: Sequence[str] = (),
        tags: Sequence[str] = (),
        origin: str | None = None,
        single_version_before: datetime | None = None,
        with_interval: bool = False,
        limit: int | None = None,
    ) -> tuple[int, list[SecretFacts]]:
        """The secrets matching every condition given (a category among ``categories``; a tag among
        ``tags``, or starting with one and ':'; ``origin``; only one version, made before
        ``single_version_before``; a rotation interval set): how many, and the first ``limit`` (all
        when None) by id, with the current version's creation time."""
        s = t.secrets.c
        v = t.secret_versions.c
        has_interval = "rotation_interval_seconds" in s
        if with_interval and not has_interval:
            return 0, []
        interval = s["rotation_interval_seconds"] if has_interval else literal(None)
        conditions: list[Any] = []
        if categories:
            conditions.append(s.category.in_(sorted(categories)))
        if tags:
            # Tags are stored as a JSON list of names (which cannot hold '"'): a textual match on the
            # quoted name, or on the name and a ':' suffix.
            text = type_coerce(s.tags, Text)
            conditions.append(
                or_(*(text.like(f'%"{tag}"%') for tag in tags), *(text.like(f'%"{tag}:%') for tag in tags))
            )
        if origin is not None:
            conditions.append(s.origin == origin)
        if single_version_before is not None:
            aware(single_version_before, "single_version_before")
            # The first version is written with the record: its creation time is the secret's.
            conditions.append(and_(s.current_version == 1, s.created_at < single_version_before))
        if with_interval:
            conditions.append(interval.is_not(None))
        where = and_(*conditions) if conditions else literal(True)
        count = await self._tx._first(select(func.count()).select_from(t.secrets).where(where))
        query = (
            select(
                s.id,
                s.name,
                s.folder,
                s.category,
                s.origin,
                s.tags,
                s.consumers,
                s.current_version,
                s.created_at,
                v.created_at,
                s.last_fetched_at,
                interval,
            )
            .select_from(
                t.secrets.outerjoin(
                    t.secret_versions, and_(v.secret_id == s.id, v.version == s.current_version)
                )
            )
            .where(where)
            .order_by(s.id)
        )
        if limit is not None:
            query = query.limit(limit)
        rows = await self._tx._all(query)
        return int(count[0]), [
            SecretFacts(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                tuple(r[5]),
                tuple(r[6]),
                int(r[7]),
                _aware(r[8]),
                None if r[9] is None else _aware(r[9]),
                None if r[10] is None else _aware(r[10]),
                None if r[11] is None else int(r[11]),
            )
            for r in rows
        ]

    async def folder_counts(self) -> dict[str, int]:
        """How many secrets each folder holds (folders holding none are absent)."""
        s = t.secrets.c
        rows = await self._tx._all(select(s.folder, func.count()).group_by(s.folder))
        return {r[0]: int(r[1]) for r in rows}

    async def stale_secrets(
        self, before: datetime | None, limit: int, *, created_before: datetime | None = None
    ) -> tuple[int, list[Any]]:
        """Secrets never fetched (``before`` None) or last fetched before ``before`` (never-fetched
        ones included): their count and the first ``limit`` (id, name, folder, created_at,
        last_fetched_at), oldest fetch first."""
        s = t.secrets.c
        where: Any = s.last_fetched_at.is_(None)
        if before is not None:
            aware(before, "before")
            where = or_(where, s.last_fetched_at < before)
        if created_before is not None:
            aware(created_before, "created_before")
            where = and_(where, s.created_at < created_before)
        count = await self._tx._first(select(func.count()).select_from(t.secrets).where(where))
        rows = await self._tx._all(
            select(s.id, s.name, s.folder, s.created_at, s.last_fetched_at)
            .where(where)
            .order_by(s.last_fetched_at.is_not(None), s.last_fetched_at, s.id)
            .limit(limit)
        )
        return int(count[0]), list(rows)

    async def group_sizes(self) -> dict[str, int]:
        m = t.group_members.c
        rows = await self._tx._all(select(m.group_name, func.count()).group_by(m.group_name))
        return {r[0]: int(r[1]) for r in rows}

    async def members(self, groups: Iterable[str]) -> dict[str, list[str]]:
        names = sorted(set(groups))
        if not names:
            return {}
        m = t.group_members.c
        rows = await self._tx._all(
            select(m.group_name, m.principal_id).where(m.group_name.in_(names)).order_by(m.principal_id)
        )
        out: dict[str, list[str]] = {name: [] for name in names}
        for row in rows:
            out[row[0]].append(row[1])
        return out

    async def all_memberships(self) -> dict[str, list[str]]:
        m = t.group_members.c
        rows = await self._tx._all(select(m.group_name, m.principal_id))
        out: dict[str, list[str]] = {}
        for row in rows:
            out.setdefault(row[0], []).append(row[1])
        return out


def _aware(value: datetime) -> datetime:
    # The UTC column type returns aware datetimes; aggregates (max) come back as the database gives them.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return value


def _grant_use(r: Any) -> GrantUse:
    return GrantUse(
        r.grant_id,
        r.principal_id,
        r.resource_type,
        r.resource_id,
        int(r.uses),
        _aware(r.first_at),
        _aware(r.last_at),
        r.min_version,
        r.max_version,
    )


class UsageWrites(UsageReads):
    """Adding batches of usage counts (in a write transaction, which holds the write lock: an update
    that finds no row can insert it without a race)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def add(
        self,
        fetches: Iterable[FetchCount] = (),
        grants: Iterable[GrantUse] = (),
        references: Iterable[ReferenceUse] = (),
    ) -> None:
        u = t.secret_usage
        for f in fetches:
            aware(f.last_at, "last_at")
            key = and_(
                u.c.secret_id == f.secret_id,
                u.c.day == f.day,
                u.c.principal_id == f.principal_id,
                u.c.workload == f.workload,
            )
            row = await self._tx._first(select(u.c.last_at, u.c.last_version).where(key))
            if row is None:
                await self._tx._write(u.insert().values(**_fields(f)))
            else:
                newer = _aware(row[0]) <= f.last_at
                await self._tx._write(
                    update(u)
                    .where(key)
                    .values(
                        fetches=u.c.fetches + f.fetches,
                        last_at=f.last_at if newer else _aware(row[0]),
                        last_version=f.last_version if newer and f.last_version is not None else row[1],
                    )
                )
        g = t.grant_usage
        for use in grants:
            aware(use.last_at, "last_at")
            key = and_(
                g.c.grant_id == use.grant_id,
                g.c.principal_id == use.principal_id,
                g.c.resource_id == use.resource_id,
            )
            row = await self._tx._first(select(t.grant_usage).where(key))
            if row is None:
                await self._tx._write(g.insert().values(**_fields(use)))
            else:
                old = _grant_use(row)
                await self._tx._write(
                    update(g)
                    .where(key)
                    .values(
                        uses=g.c.uses + use.uses,
                        first_at=min(old.first_at, use.first_at),
                        last_at=max(old.last_at, use.last_at),
                        min_version=_min(old.min_version, use.min_version),
                        max_version=_max(old.max_version, use.max_version),
                    )
                )
        r = t.secret_reference_usage
        for ref in references:
            aware(ref.last_at, "last_at")
            key = and_(
                r.c.secret_id == ref.secret_id,
                r.c.principal_id == ref.principal_id,
                r.c.reference == ref.reference,
                r.c.workspace == ref.workspace,
            )
            row = await self._tx._first(select(r.c.last_at).where(key))
            if row is None:
                await self._tx._write(r.insert().values(**_fields(ref)))
            else:
                await self._tx._write(
                    update(r)
                    .where(key)
                    .values(uses=r.c.uses + ref.uses, last_at=max(_aware(row[0]), ref.last_at))
                )

    async def insert_many(self, fetches: Sequence[FetchCount] = (), grants: Sequence[GrantUse] = ()) -> None:
        """Rows known to be new, in bulk (the scale benchmark's seeding)."""
        if fetches:
            await self._tx._write(t.secret_usage.insert(), [_fields(f) for f in fetches])
        if grants:
            await self._tx._write(t.grant_usage.insert(), [_fields(g) for g in grants])


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__slots__}
