"""Usage: counting allowed uses cheaply, and the usage reports built from the counts.

``UsageRecorder`` is told of every allowed decision once its commit has succeeded (the pipeline calls
``allowed``): which grant decided it, for whom, on which resource, and for a secret fetch the workload
and version. It only adds to in-memory aggregates (a few dictionary operations: the fetch path stays as
it was), and writes them in one batch transaction every ``interval`` seconds off the request path, at
shutdown, and before a report is read in this process. A crash loses at most the last interval's counts;
the audit log keeps every single event, so the counts are a summary, never the record.

``UsageService`` answers the reports: per secret, the last fetch and fetch counts per principal and
workload per day; per grant, when it was last used; secrets never fetched or not fetched in N days,
and grants never used. It never sees a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from policy import Decision
from signer.errors import NotFound, SignerError
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.store import FetchCount, GrantUse, ReferenceUse, Store, Writer

log = logging.getLogger("signer.usage")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DAYS = 3660
REPORT_LIMIT = 1000
# Rows of (day, principal, workload) shown per secret, newest first.
DAILY_ROWS = 2000


def day_of(at: datetime) -> int:
    """Days since 1970-01-01 UTC."""
    return (at.astimezone(UTC) - _EPOCH).days


def day_start(day: int) -> datetime:
    return _EPOCH + timedelta(days=day)


def deciding_grant(decision: Decision) -> str | None:
    """The grant that allowed ``decision`` (its ``granted`` reason names it)."""
    for reason in decision.reasons:
        if reason.code == "granted" and reason.rule_id.startswith("grant:"):
            return reason.rule_id[len("grant:") :]
    return None


class UsageRecorder:
    """Per-process aggregates of allowed uses, flushed in batches (see the module's docstring)."""

    def __init__(self, store: Store, *, clock: Clock = utcnow, interval: float = 1.0) -> None:
        self._store = store
        self._clock = clock
        self._interval = interval
        self._fetches: dict[tuple[str, int, str, str], list[Any]] = {}
        self._grants: dict[tuple[str, str, str], list[Any]] = {}
        self._references: dict[tuple[str, str, str, str], list[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- recording (on the request path: memory only) --------------------------------------------

    def allowed(
        self,
        principal_id: str,
        resource_type: str,
        resource_id: str,
        decision: Decision,
        summary: dict[str, Any],
        response: dict[str, Any] | None,
        at: datetime,
    ) -> None:
        """An allowed decision committed: count its grant's use and, for a secret read, the fetch."""
        version = response.get("version") if response is not None and resource_type == "secret" else None
        if not isinstance(version, int):
            version = None
        grant_id = deciding_grant(decision)
        if grant_id is not None:
            key = (grant_id, principal_id, resource_id)
            seen = self._grants.get(key)
            if seen is None:
                self._grants[key] = [resource_type, 1, at, at, version, version]
            else:
                seen[1] += 1
                seen[3] = at
                if version is not None:
                    seen[4] = version if seen[4] is None else min(seen[4], version)
                    seen[5] = version if seen[5] is None else max(seen[5], version)
        if resource_type == "secret" and response is not None:
            workload = summary.get("workload") or ""
            fkey = (resource_id, day_of(at), principal_id, workload)
            fseen = self._fetches.get(fkey)
            if fseen is None:
                self._fetches[fkey] = [1, at, version]
            else:
                fseen[0] += 1
                fseen[1] = at
                if version is not None:
                    fseen[2] = version

    def referenced(self, secret_id: str, principal_id: str, reference: str, workspace: str | None) -> None:
        """A reference resolved to ``secret_id`` (its fetch is counted by ``allowed``)."""
        key = (secret_id, principal_id, reference, workspace or "")
        seen = self._references.get(key)
        at = self._clock()
        if seen is None:
            self._references[key] = [1, at]
        else:
            seen[0] += 1
            seen[1] = at

    # -- writing (off the request path) ----------------------------------------------------------

    async def flush(self) -> None:
        """Write what was counted since the last flush, in one transaction."""
        async with self._lock:
            fetches, grants, references = self._fetches, self._grants, self._references
            if not (fetches or grants or references):
                return
            self._fetches, self._grants, self._references = {}, {}, {}
            rows_f = [FetchCount(k[0], k[1], k[2], k[3], v[0], v[1], v[2]) for k, v in fetches.items()]
            rows_g = [
                GrantUse(k[0], k[1], v[0], k[2], v[1], v[2], v[3], v[4], v[5]) for k, v in grants.items()
            ]
            rows_r = [ReferenceUse(k[0], k[1], k[2], k[3], v[0], v[1]) for k, v in references.items()]

            async def unit(writer: Writer) -> None:
                await writer.usage.add(rows_f, rows_g, rows_r)

            try:
                await self._store.submit(unit)
            except SignerError:
                # Counted again at the next flush (the audit log has every event regardless).
                self._merge_back(fetches, grants, references)
                log.warning("usage counts not written; kept for the next flush")

    def _merge_back(
        self,
        fetches: dict[tuple[str, int, str, str], list[Any]],
        grants: dict[tuple[str, str, str], list[Any]],
        references: dict[tuple[str, str, str, str], list[Any]],
    ) -> None:
        for fk, fv in fetches.items():
            now_f = self._fetches.get(fk)
            if now_f is None:
                self._fetches[fk] = fv
            else:
                now_f[0] += fv[0]
        for gk, gv in grants.items():
            now_g = self._grants.get(gk)
            if now_g is None:
                self._grants[gk] = gv
            else:
                now_g[1] += gv[1]
                now_g[2] = min(now_g[2], gv[2])
        for rk, rv in references.items():
            now_r = self._references.get(rk)
            if now_r is None:
                self._references[rk] = rv
            else:
                now_r[0] += rv[0]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # never let the loop die; the next round tries again
                log.exception("usage flush failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()


def check_days(days: object) -> int:
    if type(days) is not int or not 0 <= days <= MAX_DAYS:
        from signer.errors import InvalidRequest

        raise InvalidRequest(f"days is 0 to {MAX_DAYS}", code="invalid_days", field="days")
    return days


class UsageService:
    """The usage reports (admins and auditors; ``secret`` also to whoever may show the secret)."""

    def __init__(self, store: Store, recorder: UsageRecorder, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._recorder = recorder
        self._clock = clock

    async def secret(self, ctx: RequestContext, secret_id: str, days: int = 30) -> dict[str, Any]:
        """Last fetched (when, by whom, which workload); fetches per principal and workload in the
        last ``days`` days, and per day; and the grants used to read it, with when last."""
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        days = check_days(days)
        await self._recorder.flush()
        now = self._clock()
        since = day_of(now) - days
        async with self._store.read() as reader:
            secret = await reader.secrets.get(secret_id)
            if secret is None:
                raise NotFound("no such secret", code="secret_not_found")
            totals = await reader.usage.fetches_of(secret_id, since)
            daily = await reader.usage.daily(secret_id, since, DAILY_ROWS + 1)
            uses = await reader.usage.grant_uses(resource_id=secret_id)
        last = max(totals, key=lambda f: f.last_at, default=None)
        return {
            "secret_id": secret.id,
            "name": secret.name,
            "folder": secret.folder,
            "days": days,
            "last_fetched": None
            if last is None
            else {"at": iso(last.last_at), "by": last.principal_id, "workload": last.workload or None},
            "last_fetched_at": iso(secret.last_fetched_at),
            "by_principal": [
                {
                    "principal_id": f.principal_id,
                    "workload": f.workload or None,
                    "fetches": f.fetches,
                    "last_at": iso(f.last_at),
                    "last_version": f.last_version,
                }
                for f in sorted(totals, key=lambda f: (-f.fetches, f.principal_id, f.workload))[:REPORT_LIMIT]
            ],
            "fetchers_total": len(totals),
            "fetches_total": sum(f.fetches for f in totals),
            "by_day": [
                {
                    "day": day_start(f.day).date().isoformat(),
                    "principal_id": f.principal_id,
                    "workload": f.workload or None,
                    "fetches": f.fetches,
                }
                for f in daily[:DAILY_ROWS]
            ],
            "by_day_truncated": len(daily) > DAILY_ROWS,
            "grants": [
                {
                    "grant_id": u.grant_id,
                    "principal_id": u.principal_id,
                    "uses": u.uses,
                    "first_at": iso(u.first_at),
                    "last_at": iso(u.last_at),
                    "versions": [u.min_version, u.max_version] if u.min_version is not None else [],
                }
                for u in uses
            ],
        }

    async def report(self, ctx: RequestContext, days: int = 30, limit: int = 100) -> dict[str, Any]:
        """Secrets never fetched, secrets not fetched in ``days`` days, and live grants never used
        (each with its count and at most ``limit`` entries)."""
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        days = check_days(days)
        if type(limit) is not int or not 1 <= limit <= REPORT_LIMIT:
            from signer.errors import InvalidRequest

            raise InvalidRequest(f"limit is 1 to {REPORT_LIMIT}", code="invalid_limit", field="limit")
        await self._recorder.flush()
        now = self._clock()
        async with self._store.read() as reader:
            never_count, never = await reader.usage.stale_secrets(None, limit)
            stale_count, stale = await reader.usage.stale_secrets(now - timedelta(days=days), limit)
            live = [g for g in await reader.usage.live_grants(now) if not g.no_access]
            used = await reader.usage.used_grant_ids()
        unused = [g for g in live if g.id not in used]

        def row(r: Any) -> dict[str, Any]:
            return {
                "secret_id": r[0],
                "name": r[1],
                "folder": r[2],
                "created_at": iso(r[3]),
                "last_fetched_at": iso(r[4]),
            }

        return {
            "days": days,
            "never_fetched": {"count": never_count, "items": [row(r) for r in never]},
            "not_fetched_in_days": {"count": stale_count, "items": [row(r) for r in stale]},
            "grants_never_used": {
                "count": len(unused),
                "items": [
                    {
                        "grant_id": g.id,
                        "subject": f"group:{g.group_name}" if g.group_name else f"principal:{g.principal_id}",
                        "on": g.resource_type + ":" + g.resource_id,
                        "operations": sorted(g.operations),
                        "created_at": iso(g.created_at),
                    }
                    for g in unused[:limit]
                ],
            },
            "grants_last_used": {
                "count": len(live) - len(unused),
            },
        }

    async def grant(self, ctx: RequestContext, grant_id: str) -> dict[str, Any]:
        """When a grant was last used, by whom, on what."""
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        await self._recorder.flush()
        async with self._store.read() as reader:
            grant = await reader.grants.get(grant_id)
            if grant is None:
                raise NotFound("no such grant", code="grant_not_found")
            uses = await reader.usage.grant_uses(grant_ids=[grant_id])
        last = max(uses, key=lambda u: u.last_at, default=None)
        return {
            "grant_id": grant_id,
            "last_used_at": None if last is None else iso(last.last_at),
            "uses": sum(u.uses for u in uses),
            "by": [
                {
                    "principal_id": u.principal_id,
                    "resource": {"type": u.resource_type, "id": u.resource_id},
                    "uses": u.uses,
                    "first_at": iso(u.first_at),
                    "last_at": iso(u.last_at),
                }
                for u in uses
            ],
        }
