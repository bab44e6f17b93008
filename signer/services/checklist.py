"""The operator checklist: what needs an operator's attention, each entry saying what is wrong, why it
matters and what to do.

Items: secrets with broad grants (a whole organisation, a large group, a wide folder prefix); secrets
past their rotation interval (read from ``rotation_interval_seconds`` when the secret record carries
one) or never rotated; secrets tagged as backing shared or public assets; registry and publication
credentials; generated infrastructure secrets and their consumers; secrets never fetched; grants never
used; principals with access they never use; keys with broad signing grants and no policy attached; and
alerts the alerts webhook has not taken (waiting longer than ``STUCK_ALERT_SECONDS``, or given up on in
the last ``days`` days).

``build`` reads in bulk (one statement per table family, filtered in SQL where it can be) so it stays
interactive at 100,000 secrets and 10,000 grants. ``run`` recomputes the counts every ``interval``
seconds off the request path and sets one gauge per item (``signer_checklist_items{item}``). Nothing
here changes anything or sees a value.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from policy.scopes import path_contains
from signer import metrics
from signer.errors import InvalidRequest
from signer.identity import Role
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.services.usage import UsageRecorder, check_days
from signer.services.webhooks import ALERTS
from signer.store import GIVEN_UP_AFTER, GrantRecord, Store

log = logging.getLogger("signer.checklist")

SECRET_OPERATIONS = frozenset({"list", "read_metadata", "read_value", "update", "delete"})
SIGNING_OPERATIONS = frozenset({"sign_transaction", "sign_message", "sign_typed_data", "sign_raw"})
SHARED_TAGS = ("shared", "public")
MAX_ENTRIES = 1000
# An alert still undelivered this long after it was flagged is stuck (its receiver is down or refuses).
STUCK_ALERT_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What counts as broad or old."""

    large_group: int = 20  # members
    wide_folder: int = 500  # secrets under a granted folder
    never_rotated_days: int = 90  # a single version older than this
    days: int = 30  # grace for "never fetched / never used": things younger than this are left alone


ITEMS: dict[str, tuple[str, str, str]] = {
    # id: (what is wrong, why it matters, the action to take)
    "broad_secret_grants": (
        "a grant reaches secrets through a whole organisation, a large group or a wide folder prefix",
        "everyone it reaches can use every secret under it, including ones added later; one leaked "
        "token exposes them all",
        "replace it with grants on the folders or secrets actually used (see the usage report), or add "
        "no-access grants for what must stay closed",
    ),
    "rotation_overdue": (
        "the secret's current version is older than its rotation interval",
        "a value kept past its interval has had longer to leak, and whoever holds an old copy still holds "
        "a working one",
        "set a new value (run the impact review with action rotate_secret first)",
    ),
    "never_rotated": (
        "the secret has only ever had one version, older than the rotation threshold",
        "a value that was never changed is valid for everyone who ever saw it",
        "rotate it (impact review first), and give it a rotation interval",
    ),
    "shared_or_public_assets": (
        "the secret is tagged as backing a shared or public asset",
        "misuse is visible to everyone who depends on the asset, and its blast radius is outside your "
        "organisation",
        "keep its grants narrow and read-only, attach a policy to its folder, and rotate it on a schedule",
    ),
    "registry_and_publication_credentials": (
        "the secret is a registry or publication credential",
        "whoever holds it can publish in your name: a supply-chain compromise reaches your users",
        "grant it only to the release workload, require approval for reads, and rotate it after each use "
        "by a person",
    ),
    "generated_infrastructure_secrets": (
        "a generated infrastructure secret, with the consumers that depend on it",
        "rotating or deleting it breaks every listed consumer at once",
        "check its consumers are declared and fetch it (see the usage report) before rotating it",
    ),
    "secrets_never_fetched": (
        "the secret has never been fetched",
        "an unused secret is risk without benefit, and nobody will notice if it leaks",
        "delete it (impact review first) or find who should be using it",
    ),
    "grants_never_used": (
        "the grant has never been used",
        "access nobody uses is access an attacker can use unnoticed",
        "revoke it (impact review first)",
    ),
    "principals_with_unused_access": (
        "the principal holds grants it has never used",
        "a principal's unused access widens what its leaked token opens",
        "revoke its unused grants, or remove it from groups it does not need",
    ),
    "keys_with_broad_signing_grants_and_no_policy": (
        "a key is reachable by a broad signing grant (a folder or a group) and no policy is attached to it",
        "with no policy a grant alone lets its holders sign anything the key can sign",
        "attach a policy to the key or its scope (spend limits, allowlists), or narrow the grants",
    ),
    "undelivered_alerts": (
        "an unusual-access alert has not reached the alerts webhook (still retried, or given up on)",
        "nobody was told of the unusual access it reports; the audit log has it (anomaly.detected)",
        "check the alerts webhook receiver (its address, TLS, HMAC key) and read the anomaly.detected "
        "events of the period",
    ),
}


def _depth(scope: str) -> int:
    return len(scope.split("/"))


def _within(folder: str, prefix: str) -> bool:
    return folder == prefix or folder.startswith(prefix + "/")


def _subject(grant: GrantRecord) -> str:
    return f"group:{grant.group_name}" if grant.group_name is not None else f"principal:{grant.principal_id}"


class ChecklistService:
    def __init__(
        self,
        store: Store,
        recorder: UsageRecorder,
        *,
        clock: Clock = utcnow,
        thresholds: Thresholds | None = None,
        interval: float = 60.0,
        gauge: Callable[[str, int], None] = metrics.checklist_item,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._clock = clock
        self._thresholds = thresholds or Thresholds()
        self._interval = interval
        self._gauge = gauge
        self._task: asyncio.Task[None] | None = None

    async def checklist(
        self,
        ctx: RequestContext,
        *,
        days: int | None = None,
        limit: int = 100,
        rotated_days: int | None = None,
    ) -> dict[str, Any]:
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        if type(limit) is not int or not 1 <= limit <= MAX_ENTRIES:
            raise InvalidRequest(f"limit is 1 to {MAX_ENTRIES}", code="invalid_limit", field="limit")
        base = self._thresholds
        thresholds = Thresholds(
            base.large_group,
            base.wide_folder,
            base.never_rotated_days if rotated_days is None else check_days(rotated_days),
            base.days if days is None else check_days(days),
        )
        await self._recorder.flush()
        return await self.build(thresholds, limit)

    async def build(self, thresholds: Thresholds, limit: int) -> dict[str, Any]:
        now = self._clock()
        t = thresholds
        grace = now - timedelta(days=t.days)
        found: dict[str, list[dict[str, Any]]] = {item: [] for item in ITEMS}
        async with self._store.read() as reader:
            grants = await reader.usage.live_grants(now)
            sizes = await reader.usage.group_sizes()
            folders = await reader.usage.folder_counts()
            facts = reader.usage.secret_facts
            cutoff = now - timedelta(days=t.never_rotated_days)
            # One count and one page per item: the answer's size follows ``limit``, not the table.
            secret_items = {
                "never_rotated": await facts(single_version_before=cutoff, limit=limit),
                "shared_or_public_assets": await facts(tags=SHARED_TAGS, limit=limit),
                "registry_and_publication_credentials": await facts(
                    categories=("registry", "publication"), limit=limit
                ),
                "generated_infrastructure_secrets": await facts(
                    categories=("infrastructure",), origin="generated", limit=limit
                ),
            }
            _, with_interval = await facts(with_interval=True)
            never_count, never = await reader.usage.stale_secrets(None, limit, created_before=grace)
            used_grants = await reader.usage.used_grant_ids()
            used_principals = await reader.usage.principals_using()
            memberships = await reader.usage.all_memberships()
            principals = {p.id: p for p in await reader.principals.all()}
            keys = await reader.keys.all()
            attachments = [a for a in await reader.policies.attachments() if a.mode == "live"]
            alerts = await reader.outbox.undelivered(ALERTS, MAX_ENTRIES)
        # Secrets per folder prefix: sorted folders and prefix sums, so a scope's count is two searches.
        names = sorted(folders)
        sums = [0]
        for name in names:
            sums.append(sums[-1] + folders[name])

        def under(scope: str) -> int:
            # Names starting with scope + "/" sort between scope + "/" and scope + "0" ("0" follows "/").
            slash = bisect.bisect_left(names, scope + "/")
            end = bisect.bisect_left(names, scope + "0")
            return folders.get(scope, 0) + sums[end] - sums[slash]

        for grant in grants:
            if grant.no_access:
                continue
            ops = set(grant.operations)
            # A grant that can reach secrets: on a secret, or on a scope (a folder).
            if ops & SECRET_OPERATIONS and grant.resource_type in ("secret", "scope"):
                reasons = []
                if grant.resource_type == "scope":
                    if _depth(grant.resource_id) == 1:
                        reasons.append("whole organisation")
                    covered = under(grant.resource_id)
                    if covered >= t.wide_folder:
                        reasons.append(f"wide folder prefix ({covered} secrets)")
                if grant.group_name is not None and sizes.get(grant.group_name, 0) >= t.large_group:
                    reasons.append(f"large group ({sizes[grant.group_name]} members)")
                if reasons:
                    found["broad_secret_grants"].append(
                        {
                            "grant_id": grant.id,
                            "subject": _subject(grant),
                            "on": grant.resource_type + ":" + grant.resource_id,
                            "operations": sorted(ops & SECRET_OPERATIONS),
                            "because": reasons,
                        }
                    )
            if grant.id not in used_grants and grant.created_at < grace:
                found["grants_never_used"].append(
                    {
                        "grant_id": grant.id,
                        "subject": _subject(grant),
                        "on": grant.resource_type + ":" + grant.resource_id,
                        "created_at": iso(grant.created_at),
                    }
                )
        # Principals with access they never use: per enabled principal, its live allow grants (own and
        # its groups') none of which it has ever used.
        own: dict[str, list[str]] = {}
        by_group: dict[str, list[str]] = {}
        for grant in grants:
            if grant.no_access:
                continue
            if grant.principal_id is not None:
                own.setdefault(grant.principal_id, []).append(grant.id)
            else:
                by_group.setdefault(grant.group_name or "", []).append(grant.id)
        # Each group's members once (not once per grant), and the grants listed only for those shown.
        holders = set(own)
        groups_of: dict[str, list[str]] = {}
        for group in by_group:
            for member in memberships.get(group, []):
                holders.add(member)
                groups_of.setdefault(member, []).append(group)
        users = used_principals
        for principal_id in sorted(holders):
            ids = own.get(principal_id, [])
            if len(found["principals_with_unused_access"]) < limit:
                ids = ids + [g for group in groups_of.get(principal_id, []) for g in by_group[group]]
            principal = principals.get(principal_id)
            if principal is None or principal.disabled_at is not None or principal.created_at >= grace:
                continue
            if principal_id not in users:
                found["principals_with_unused_access"].append(
                    {"principal_id": principal_id, "name": principal.name, "grants": sorted(ids)[:20]}
                )
        for secret in with_interval:
            if secret.rotation_interval_seconds is not None and secret.version_created_at is not None:
                due = secret.version_created_at + timedelta(seconds=secret.rotation_interval_seconds)
                if due < now:
                    found["rotation_overdue"].append(
                        {
                            "secret_id": secret.id,
                            "name": secret.name,
                            "folder": secret.folder,
                            "version": secret.current_version,
                            "due_at": iso(due),
                        }
                    )
        counts: dict[str, int] = {}
        for item, (count, rows) in secret_items.items():
            counts[item] = count
            for secret in rows:
                view: dict[str, Any] = {"secret_id": secret.id, "name": secret.name, "folder": secret.folder}
                if item == "never_rotated":
                    view["created_at"] = iso(secret.created_at)
                elif item == "shared_or_public_assets":
                    view["tags"] = sorted(
                        tag
                        for tag in secret.tags
                        if any(tag == s or tag.startswith(s + ":") for s in SHARED_TAGS)
                    )
                elif item == "registry_and_publication_credentials":
                    view["category"] = secret.category
                else:
                    view["consumers"] = list(secret.consumers)
                found[item].append(view)
        for row in never:
            found["secrets_never_fetched"].append(
                {"secret_id": row[0], "name": row[1], "folder": row[2], "created_at": iso(row[3])}
            )
        counts["secrets_never_fetched"] = never_count
        # Keys: broad signing grants (a scope, or a group) that reach them, and no live policy.
        broad_signing = [
            g
            for g in grants
            if not g.no_access
            and set(g.operations) & SIGNING_OPERATIONS
            and (g.resource_type == "scope" or g.group_name is not None)
        ]
        for key in keys:
            if key.state != "active":
                continue
            reaching = [
                g.id
                for g in broad_signing
                if (g.resource_type == "scope" and _within(key.scope, g.resource_id))
                or (g.resource_type == "key" and g.resource_id == key.id)
            ]
            if not reaching:
                continue
            guarded = any(
                a.key_id == key.id
                or (
                    a.scope is not None
                    and path_contains(tuple(a.scope.split("/")), tuple(key.scope.split("/")))
                )
                for a in attachments
            )
            if not guarded:
                found["keys_with_broad_signing_grants_and_no_policy"].append(
                    {
                        "key_id": key.id,
                        "label": key.label,
                        "scope": key.scope,
                        "grants": sorted(reaching)[:20],
                    }
                )
        stuck = now - timedelta(seconds=STUCK_ALERT_SECONDS)
        for alert in alerts:
            given_up = alert.next_attempt_at - now >= GIVEN_UP_AFTER
            if (given_up and alert.created_at >= grace) or (not given_up and alert.created_at < stuck):
                found["undelivered_alerts"].append(
                    {
                        "alert_id": alert.id,
                        "signal": alert.event.get("signal"),
                        "principal_id": alert.event.get("principal_id"),
                        "flagged_at": iso(alert.created_at),
                        "attempts": alert.attempts,
                        "last_error": alert.last_error,
                        "state": "given_up" if given_up else "retrying",
                    }
                )
        items = []
        for item, (what, why, action) in ITEMS.items():
            entries = found[item]
            count = counts.get(item, len(entries))
            items.append(
                {
                    "id": item,
                    "what": what,
                    "why": why,
                    "action": action,
                    "count": count,
                    "entries": entries[:limit],
                }
            )
        return {
            "as_of": iso(now),
            "thresholds": {
                "large_group": t.large_group,
                "wide_folder": t.wide_folder,
                "never_rotated_days": t.never_rotated_days,
                "days": t.days,
            },
            "items": items,
        }

    # -- the gauges, off the request path ----------------------------------------------------------

    async def refresh(self) -> None:
        report = await self.build(self._thresholds, 1)
        for item in report["items"]:
            self._gauge(item["id"], item["count"])

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="checklist-gauges")

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the next round tries again
                log.exception("checklist gauges not refreshed")
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
