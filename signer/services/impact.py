"""Impact review: what an action would change, asked before acting (a dry run) and recorded after.

For revoking a grant, disabling a principal, deleting a secret, disabling or enabling a whole secret
and setting a secret's new value (rotating it), ``review`` answers, per resource the action touches:
which principals and groups lose access and which keep it, through which grants (the grants' own
precedence, ``policy.evaluate_grants``, applied to the grants as they are and as they would be); which
workloads fetched it in the last N days, how often and when last (``secret_usage``); which references
resolved to it and which declared consumers will fail; which secrets or grants become unused; and for
a rotation, the grants that were only ever used to read older versions (should they stay?). Revocation
and disabling a principal answer "what stops working" from what was actually used through the grant or
by the principal; deletion, disabling a secret and rotation answer "who is affected" from who can use
the secret and who did. Disabling a secret takes only its reads (``read_value``) from everyone who has
them, while its grants stay (they read again once it is enabled: nothing becomes unused for good);
enabling gives them back.

``compact`` is the same report cut to counts and at most ``AUDIT_IDS`` ids per list, computed inside
the action's own transaction and recorded in its audit event. A rotation report reads versions
generically (every version's number and creation time, and any state another module adds to them), so
states such as an overlap or a staged version show up without this module knowing them. Nothing here
acts, and nothing here sees a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from policy import Effect, GrantRequest, evaluate_grants
from signer.errors import InvalidRequest, NotFound
from signer.identity import Role
from signer.services.authorization import to_grant
from signer.services.context import Clock, RequestContext, iso, require_role, utcnow
from signer.services.resources import MAKING, SCOPE, known_kind, resource_kind
from signer.services.secret_access import access_view, ancestors
from signer.services.secret_kind import SECRETS, secret_ref
from signer.services.usage import UsageRecorder, check_days, day_of, deciding_grant
from signer.store import GrantRecord, Reader, SecretRecord, Store, Writer

ACTIONS = (
    "revoke_grant",
    "disable_principal",
    "delete_secret",
    "rotate_secret",
    "disable_secret",
    "enable_secret",
)
MAX_RESOURCES = 100
MAX_PRINCIPALS = 200
MAX_FETCHERS = 100
AUDIT_IDS = 50


@dataclass(frozen=True, slots=True)
class _Resource:
    type: str
    id: str
    scope: str
    summary: Mapping[str, Any]  # what names it for a person (its kind's ``summary``)
    secret: SecretRecord | None = None


def _subject(grant: GrantRecord) -> str:
    return f"group:{grant.group_name}" if grant.group_name is not None else f"principal:{grant.principal_id}"


def _allowed(
    principal_id: str, groups: frozenset[str], grants: tuple[Any, ...], resource: _Resource, now: datetime
) -> dict[str, str]:
    """Operation -> the grant that allows it (for ``principal_id`` with ``groups``), over the operations
    of the resource's kind that act on an existing one."""
    out: dict[str, str] = {}
    for operation in sorted(resource_kind(resource.type).operations - MAKING):
        decision = evaluate_grants(
            GrantRequest(
                principal_id=principal_id,
                operation=operation,
                resource_type=resource.type,
                resource_id=resource.id,
                scope=resource.scope,
                groups=groups,
            ),
            grants,
            now=now,
        )
        if decision.effect is Effect.ALLOW:
            grant_id = deciding_grant(decision)
            if grant_id is not None:
                out[operation] = grant_id
    return out


class _Facts:
    """The reads one report makes, cached for its length (principals' groups and live grants)."""

    def __init__(self, reader: Reader | Writer, now: datetime) -> None:
        self.reader = reader
        self.now = now
        self._held: dict[str, tuple[frozenset[str], tuple[GrantRecord, ...]]] = {}
        self._groups: dict[str, set[str]] | None = None
        self._about: dict[str, tuple[Any, ...]] = {}

    async def groups_of(self, principal_id: str) -> frozenset[str]:
        """The principal's groups, from every membership read once per report."""
        if self._groups is None:
            self._groups = {}
            for group, members in (await self.reader.usage.all_memberships()).items():
                for member in members:
                    self._groups.setdefault(member, set()).add(group)
        return frozenset(self._groups.get(principal_id, ()))

    async def about(self, resource: _Resource) -> tuple[Any, ...]:
        """The live grants naming the resource or a folder at or above it, whoever holds them."""
        seen = self._about.get(resource.id)
        if seen is None:
            scopes = ancestors(resource.scope)
            found = await self.reader.grants.about(resource.type, resource.id, scopes, self.now)
            seen = self._about[resource.id] = tuple(to_grant(g) for g in found)
        return seen

    async def held(self, principal_id: str) -> tuple[frozenset[str], tuple[GrantRecord, ...]]:
        seen = self._held.get(principal_id)
        if seen is None:
            groups = await self.reader.groups.of(principal_id)
            grants = tuple(await self.reader.grants.for_principal(principal_id, groups, self.now))
            seen = self._held[principal_id] = (groups, grants)
        return seen

    async def resource(self, resource_type: str, resource_id: str) -> _Resource | None:
        """The resource a grant or a use names, through its kind; None for a scope or a missing one."""
        kind = known_kind(resource_type)
        record = None if kind is None else await kind.load(self.reader, resource_id)
        if kind is None or record is None:
            return None
        ref = kind.ref(record)
        secret = record if isinstance(record, SecretRecord) else None
        return _Resource(ref.type, ref.id, ref.scope, kind.summary(record), secret)


class ImpactService:
    def __init__(self, store: Store, recorder: UsageRecorder, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._recorder = recorder
        self._clock = clock

    async def review(
        self, ctx: RequestContext, action: str, target_id: str, days: int = 30
    ) -> dict[str, Any]:
        """The dry run: the full report, nothing changed."""
        require_role(ctx, Role.ADMIN, Role.AUDITOR)
        if action not in ACTIONS:
            raise InvalidRequest(
                "action is one of: " + ", ".join(ACTIONS), code="invalid_action", field="action"
            )
        days = check_days(days)
        await self._recorder.flush()
        async with self._store.read() as reader:
            report = await self.report(reader, action, target_id, days, self._clock())
        report["dry_run"] = True
        return report

    async def compact(
        self, reader: Reader | Writer, action: str, target_id: str, days: int = 30
    ) -> dict[str, Any]:
        """The report as the action's audit event records it: counts and at most ``AUDIT_IDS`` ids
        per list (bounded whatever the action touches)."""
        return compact(await self.report(reader, action, target_id, days, self._clock()))

    async def report(
        self, reader: Reader | Writer, action: str, target_id: str, days: int, now: datetime
    ) -> dict[str, Any]:
        facts = _Facts(reader, now)
        since = day_of(now) - days
        if action == "revoke_grant":
            body = await self._revoke_grant(facts, target_id, since)
            target = {"type": "grant", "id": target_id}
        elif action == "disable_principal":
            body = await self._disable_principal(facts, target_id, since)
            target = {"type": "principal", "id": target_id}
        elif action in ("disable_secret", "enable_secret"):
            body = await self._secret_state(facts, action, target_id, since)
            target = {"type": "secret", "id": target_id}
        else:
            body = await self._secret_action(facts, action, target_id, since)
            target = {"type": "secret", "id": target_id}
        report: dict[str, Any] = {"action": action, "target": target, "as_of": iso(now), "days": days}
        report.update(body)
        report["summary"] = _summary(report)
        return report

    # -- revoking a grant: what stops working ---------------------------------------------------

    async def _revoke_grant(self, facts: _Facts, grant_id: str, since: int) -> dict[str, Any]:
        reader = facts.reader
        grant = await reader.grants.get(grant_id)
        if grant is None:
            raise NotFound("no such grant", code="grant_not_found")
        uses = await reader.usage.grant_uses(grant_ids=[grant_id])
        live = grant.revoked_at is None and (grant.expires_at is None or grant.expires_at > facts.now)
        resources: list[_Resource] = []
        found = await facts.resource(grant.resource_type, grant.resource_id)
        if found is not None:
            resources.append(found)
        seen = {r.id for r in resources}
        for use in uses:
            if use.resource_id not in seen and len(resources) < MAX_RESOURCES:
                found = await facts.resource(use.resource_type, use.resource_id)
                if found is not None:
                    resources.append(found)
                    seen.add(found.id)
        holders: list[str] = (
            [grant.principal_id]
            if grant.principal_id is not None
            else (await reader.usage.members([grant.group_name or ""])).get(grant.group_name or "", [])
        )
        users = {u.principal_id for u in uses}
        principals = sorted(set(holders[:MAX_PRINCIPALS]) | users)
        out_resources = []
        without = {grant_id} if live else set()
        for resource in resources:
            entry = await self._resource_change(facts, resource, principals, since, without=without)
            if grant.group_name is not None:
                await _group_change(facts, entry, resource, grant.group_name, without)
            out_resources.append(entry)
        coverage: dict[str, Any] = {"on": grant.resource_type + ":" + grant.resource_id}
        if grant.resource_type == SCOPE:
            counts = await reader.usage.folder_counts()
            scope = grant.resource_id
            coverage["secrets_covered"] = sum(
                n for folder, n in counts.items() if folder == scope or folder.startswith(scope + "/")
            )
        last = max(uses, key=lambda u: u.last_at, default=None)
        return {
            "grant": {
                "id": grant.id,
                "subject": _subject(grant),
                "operations": sorted(grant.operations),
                "no_access": grant.no_access,
                "live": live,
                "last_used_at": None if last is None else iso(last.last_at),
                "uses": sum(u.uses for u in uses),
                **coverage,
            },
            "holders_total": len(holders),
            "resources": out_resources,
            "resources_total": len(resources),
            # Revoking a no-access grant gives access back: the "keep" lists show what it reopens.
            "unused_after": {"grants": [], "secrets": _unused_secrets(out_resources)},
        }

    async def _resource_change(
        self, facts: _Facts, resource: _Resource, principals: Iterable[str], since: int, *, without: set[str]
    ) -> dict[str, Any]:
        """Per principal, the operations on ``resource`` before and after ``without`` goes; with the
        fetches, references and consumers of a secret."""
        lose: list[dict[str, Any]] = []
        keep: list[dict[str, Any]] = []
        gain: list[dict[str, Any]] = []
        losing_read: set[str] = set()
        about = await facts.about(resource)
        for principal_id in principals:
            groups = await facts.groups_of(principal_id)
            # Only the grants about this resource can decide about it: the holder's own and its groups'.
            converted = tuple(
                g
                for g in about
                if (g.subject_type == "principal" and g.principal_id == principal_id)
                or (g.subject_type == "group" and g.principal_id in groups)
            )
            before = _allowed(principal_id, groups, converted, resource, facts.now)
            after = _allowed(
                principal_id,
                groups,
                tuple(g for g in converted if g.grant_id not in without),
                resource,
                facts.now,
            )
            lost = sorted(set(before) - set(after))
            if lost:
                lose.append(
                    {
                        "subject": f"principal:{principal_id}",
                        "operations": lost,
                        "through": sorted({before[op] for op in lost}),
                    }
                )
                if "read_value" in lost:
                    losing_read.add(principal_id)
            if after:
                keep.append(
                    {
                        "subject": f"principal:{principal_id}",
                        "operations": sorted(after),
                        "through": sorted(set(after.values())),
                    }
                )
            gained = sorted(set(after) - set(before))
            if gained:
                gain.append({"subject": f"principal:{principal_id}", "operations": gained})
        entry = _resource_view(resource)
        entry.update(lose=lose, keep=keep)
        if gain:
            entry["gain"] = gain
        if resource.type == "secret":
            entry.update(await _secret_use(facts, resource, since, losing_read, all_fail=False))
        else:
            entry["used"] = await _key_use(facts, resource)
        return entry

    # -- disabling a principal: everything it did stops ------------------------------------------

    async def _disable_principal(self, facts: _Facts, principal_id: str, since: int) -> dict[str, Any]:
        reader = facts.reader
        principal = await reader.principals.get(principal_id)
        if principal is None:
            raise NotFound("no such principal", code="principal_not_found")
        groups, held = await facts.held(principal_id)
        uses = await reader.usage.grant_uses(principal_id=principal_id)
        resources: list[_Resource] = []
        seen: set[str] = set()
        for grant in held:
            if grant.resource_type != SCOPE and grant.resource_id not in seen:
                found = await facts.resource(grant.resource_type, grant.resource_id)
                if found is not None and len(resources) < MAX_RESOURCES:
                    resources.append(found)
                    seen.add(found.id)
        for use in uses:
            if use.resource_id not in seen and len(resources) < MAX_RESOURCES:
                found = await facts.resource(use.resource_type, use.resource_id)
                if found is not None:
                    resources.append(found)
                    seen.add(found.id)
        fetched = await reader.usage.fetches_by(principal_id, since, MAX_RESOURCES * 10)
        shared = await reader.usage.fetched_by_others(
            [r.id for r in resources if r.type == "secret"], principal_id, since
        )
        converted = tuple(to_grant(g) for g in held)
        out = []
        for resource in resources:
            # Disabled, the principal loses whatever its grants about the resource allowed.
            about = tuple(g for g in converted if _names(g, resource))
            before = _allowed(principal_id, groups, about, resource, facts.now)
            entry = _resource_view(resource)
            entry["lose"] = (
                [
                    {
                        "subject": f"principal:{principal_id}",
                        "operations": sorted(before),
                        "through": sorted(set(before.values())),
                    }
                ]
                if before
                else []
            )
            entry["keep"] = []
            if resource.secret is not None:
                mine = [f for f in fetched if f.secret_id == resource.id]
                workloads = sorted({f.workload for f in mine if f.workload})
                entry.update(
                    fetched=[
                        {
                            "principal_id": principal_id,
                            "workload": f.workload or None,
                            "fetches": f.fetches,
                            "last_at": iso(f.last_at),
                            "fails": True,
                        }
                        for f in mine
                    ],
                    fetches_total=sum(f.fetches for f in mine),
                    workloads_failing=workloads,
                    every_fetcher_fails=bool(mine) and resource.id not in shared,
                    consumers=[
                        {"name": name, "status": "fails" if name in workloads else "not_seen"}
                        for name in resource.secret.consumers
                    ],
                )
            else:
                entry["used"] = await _key_use(facts, resource)
            out.append(entry)
        # Group grants only this principal ever used, and its own grants: nobody uses them afterwards.
        group_grants = [g.id for g in held if g.group_name is not None]
        others = await reader.usage.grant_uses(grant_ids=group_grants) if group_grants else []
        used_by_others = {u.grant_id for u in others if u.principal_id != principal_id}
        used_by_it = {u.grant_id for u in uses}
        unused_grants = sorted(
            g.id for g in held if g.group_name is None or (g.id in used_by_it and g.id not in used_by_others)
        )
        return {
            "principal": {
                "id": principal.id,
                "name": principal.name,
                "role": principal.role,
                "disabled": principal.disabled_at is not None,
                "groups": sorted(groups),
            },
            "workloads": sorted({f.workload for f in fetched if f.workload}),
            "fetched": [
                {
                    "secret_id": f.secret_id,
                    "workload": f.workload or None,
                    "fetches": f.fetches,
                    "last_at": iso(f.last_at),
                }
                for f in fetched[:MAX_RESOURCES]
            ],
            "resources": out,
            "resources_total": len(resources),
            "unused_after": {"grants": unused_grants, "secrets": _unused_secrets(out)},
        }

    # -- disabling or enabling a whole secret: who loses or gets back its reads -------------------

    async def _secret_state(self, facts: _Facts, action: str, secret_id: str, since: int) -> dict[str, Any]:
        reader = facts.reader
        secret = await reader.secrets.get(secret_id)
        if secret is None:
            raise NotFound("no such secret", code="secret_not_found")
        to = "disabled" if action == "disable_secret" else "active"
        changes = secret.state != to
        resource = _Resource("secret", secret.id, secret.folder, SECRETS.summary(secret), secret)
        about = await reader.grants.about("secret", secret.id, ancestors(secret.folder), facts.now)
        access = access_view(secret_ref(secret), about, facts.now)
        entry = _resource_view(resource)
        readers: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for a in access:
            # A disabled secret refuses reads only: listing, metadata, new values and deletion go on.
            if "read_value" in a["operations"]:
                readers.append(
                    {
                        "subject": a["subject"],
                        "operations": ["read_value"],
                        "through": sorted(
                            g["id"]
                            for g in a["grants"]
                            if not g["no_access"] and "read_value" in g["operations"]
                        ),
                    }
                )
            rest = [op for op in a["operations"] if op != "read_value"]
            if rest:
                others.append(
                    {
                        "subject": a["subject"],
                        "operations": rest,
                        "through": sorted(g["id"] for g in a["grants"] if not g["no_access"]),
                    }
                )
        disabling = to == "disabled"
        entry["lose"] = readers if disabling and changes else []
        entry["keep"] = others if disabling else others + readers
        if not disabling and changes:
            entry["gain"] = [{"subject": r["subject"], "operations": r["operations"]} for r in readers]
        # Every fetch, reference and declared consumer fails while it is disabled (a short reference
        # still finds it, so never resolves elsewhere); once enabled, they work as before.
        entry.update(await _secret_use(facts, resource, since, set(), all_fail=disabling, moves=False))
        own = sorted(g.id for g in about if g.resource_type == "secret")
        return {
            "state": {"from": secret.state, "to": to, "changes": changes},
            "resources": [entry],
            "resources_total": 1,
            # The grants stay and read again once it is enabled: none is unused for good.
            "unused_after": {"grants": [], "secrets": []},
            "grants_naming_only_this_secret": own,
        }

    # -- deleting or rotating a secret: who is affected -------------------------------------------

    async def _secret_action(self, facts: _Facts, action: str, secret_id: str, since: int) -> dict[str, Any]:
        reader = facts.reader
        secret = await reader.secrets.get(secret_id)
        if secret is None:
            raise NotFound("no such secret", code="secret_not_found")
        resource = _Resource("secret", secret.id, secret.folder, SECRETS.summary(secret), secret)
        about = await reader.grants.about("secret", secret.id, ancestors(secret.folder), facts.now)
        access = access_view(secret_ref(secret), about, facts.now)
        entry = _resource_view(resource)
        uses = await reader.usage.grant_uses(resource_id=secret.id)
        report: dict[str, Any] = {}
        if action == "delete_secret":
            entry["lose"] = [
                {
                    "subject": a["subject"],
                    "operations": a["operations"],
                    "through": sorted(g["id"] for g in a["grants"] if not g["no_access"]),
                }
                for a in access
            ]
            entry["keep"] = []
            entry.update(await _secret_use(facts, resource, since, set(), all_fail=True, moves=True))
            # Grants on this secret alone name nothing afterwards; folder grants used only for it
            # are unused afterwards (they may still cover other secrets).
            own = sorted(g.id for g in about if g.resource_type == "secret")
            used_here: dict[str, set[str]] = {}
            for use in uses:
                used_here.setdefault(use.grant_id, set())
            scope_ids = [g.id for g in about if g.resource_type == SCOPE]
            elsewhere = {
                u.grant_id
                for u in (await reader.usage.grant_uses(grant_ids=scope_ids) if scope_ids else [])
                if u.resource_id != secret.id
            }
            only_here = sorted(g for g in scope_ids if g in used_here and g not in elsewhere)
            report["unused_after"] = {"grants": sorted(set(own) | set(only_here)), "secrets": [secret.id]}
            report["grants_naming_only_this_secret"] = own
        else:
            entry["lose"] = []
            entry["keep"] = [
                {
                    "subject": a["subject"],
                    "operations": a["operations"],
                    "through": sorted(g["id"] for g in a["grants"] if not g["no_access"]),
                }
                for a in access
            ]
            entry.update(await _secret_use(facts, resource, since, set(), all_fail=False))
            versions = await reader.secrets.versions(secret.id)
            report["versions"] = {
                "current": secret.current_version,
                "next": secret.current_version + 1,
                "held_by": secret.backend,
                "all": [_version_state(v) for v in versions],
            }
            # Grants whose reads were all of versions older than the one being replaced: they follow
            # no rotation (a pinned version), so keep them only while those versions are needed.
            report["older_grants"] = [
                {
                    "grant_id": u.grant_id,
                    "principal_id": u.principal_id,
                    "versions": [u.min_version, u.max_version],
                    "last_at": iso(u.last_at),
                    "advice": "only ever used for older versions: keep while they are needed, then revoke",
                }
                for u in uses
                if u.max_version is not None and u.max_version < secret.current_version
            ]
            report["unused_after"] = {"grants": [], "secrets": []}
        report["resources"] = [entry]
        report["resources_total"] = 1
        return report


async def _group_change(
    facts: _Facts, entry: dict[str, Any], resource: _Resource, group: str, without: set[str]
) -> None:
    """The group itself as a subject (its own grants about the resource): what it loses or keeps."""
    about = await facts.reader.grants.about(resource.type, resource.id, ancestors(resource.scope), facts.now)
    held = tuple(to_grant(g) for g in about if g.group_name == group)
    before = _allowed("", frozenset({group}), held, resource, facts.now)
    after = _allowed(
        "", frozenset({group}), tuple(g for g in held if g.grant_id not in without), resource, facts.now
    )
    lost = sorted(set(before) - set(after))
    if lost:
        entry["lose"].insert(
            0,
            {"subject": f"group:{group}", "operations": lost, "through": sorted({before[op] for op in lost})},
        )
    if after:
        entry["keep"].insert(
            0,
            {
                "subject": f"group:{group}",
                "operations": sorted(after),
                "through": sorted(set(after.values())),
            },
        )


def _names(grant: Any, resource: _Resource) -> bool:
    """Whether ``grant`` is about ``resource``: by id, or a folder at or above it."""
    if grant.resource_type == SCOPE:
        prefix = grant.resource_id
        return resource.scope == prefix or resource.scope.startswith(prefix + "/")
    return bool(grant.resource_type == resource.type and grant.resource_id == resource.id)


def _version_state(version: Any) -> dict[str, Any]:
    """A version as the report shows it: its number, creation, and any state fields it carries."""
    view: dict[str, Any] = {"version": version.version, "created_at": iso(version.created_at)}
    for name in ("state", "overlap_until", "staged", "expires_at"):
        value = getattr(version, name, None)
        if value is not None:
            view[name] = iso(value) if isinstance(value, datetime) else value
    return view


def _resource_view(resource: _Resource) -> dict[str, Any]:
    return {"type": resource.type, "id": resource.id, **resource.summary}


async def _key_use(facts: _Facts, resource: _Resource) -> list[dict[str, Any]]:
    uses = await facts.reader.usage.grant_uses(resource_id=resource.id)
    return [
        {"principal_id": u.principal_id, "grant_id": u.grant_id, "uses": u.uses, "last_at": iso(u.last_at)}
        for u in uses
    ]


async def _secret_use(
    facts: _Facts, resource: _Resource, since: int, losing: set[str], *, all_fail: bool, moves: bool = False
) -> dict[str, Any]:
    """Fetches in the window (who, which workload, how often, when last), references resolved to the
    secret and its declared consumers, each marked failing or not. ``moves``: the secret goes away (a
    short reference may then find another of the same name higher up)."""
    reader = facts.reader
    secret = resource.secret
    assert secret is not None
    fetched = await reader.usage.fetches_of(secret.id, since)
    failing_workloads = {f.workload for f in fetched if all_fail or f.principal_id in losing}
    kept_workloads = {f.workload for f in fetched if not (all_fail or f.principal_id in losing)}
    references = []
    for ref in await reader.usage.references_to(secret.id):
        status = "fails" if all_fail or ref.principal_id in losing else "keeps"
        entry: dict[str, Any] = {
            "reference": ref.reference,
            "workspace": ref.workspace or None,
            "principal_id": ref.principal_id,
            "uses": ref.uses,
            "last_at": iso(ref.last_at),
        }
        if status == "fails" and moves and ref.workspace and "/" not in ref.reference.split("#")[0]:
            # A name alone looks upward from its workspace: without this secret, an ancestor folder's
            # secret of the same name answers instead.
            name = ref.reference.split("#")[0].split("@")[0]
            for folder in reversed(ancestors(ref.workspace)):
                if folder == secret.folder:
                    continue
                other = await reader.secrets.by_name(folder, name)
                if other is not None and other.id != secret.id and len(folder) < len(secret.folder):
                    status = "resolves_elsewhere"
                    entry["resolves_to"] = other.id
                    break
        entry["status"] = status
        references.append(entry)
    consumers = []
    for name in secret.consumers:
        if all_fail or (name in failing_workloads and name not in kept_workloads):
            status = "fails"
        elif name in kept_workloads:
            status = "keeps"
        else:
            status = "fails" if losing and not kept_workloads and all_fail else "not_seen"
        consumers.append({"name": name, "status": status})
    ordered = sorted(fetched, key=lambda f: (-f.fetches, f.principal_id, f.workload))
    return {
        # The most frequent fetchers (at most MAX_FETCHERS); the totals count every one.
        "fetched": [
            {
                "principal_id": f.principal_id,
                "workload": f.workload or None,
                "fetches": f.fetches,
                "last_at": iso(f.last_at),
                "last_version": f.last_version,
                "fails": all_fail or f.principal_id in losing,
            }
            for f in ordered[:MAX_FETCHERS]
        ],
        "fetchers_total": len(fetched),
        "fetches_total": sum(f.fetches for f in fetched),
        "workloads_failing": sorted(w for w in failing_workloads if w),
        "every_fetcher_fails": bool(fetched) and all(all_fail or f.principal_id in losing for f in fetched),
        "references": references,
        "consumers": consumers,
    }


def _unused_secrets(resources: list[dict[str, Any]]) -> list[str]:
    """Secrets fetched in the window whose every fetcher loses its read."""
    return sorted(r["id"] for r in resources if r["type"] == "secret" and r.get("every_fetcher_fails"))


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    losing_p: set[str] = set()
    losing_g: set[str] = set()
    keeping: set[str] = set()
    gaining: set[str] = set()
    workloads: set[str] = set()
    references = 0
    consumers: set[str] = set()
    fetches = 0
    for resource in report.get("resources", []):
        for item in resource.get("lose", []):
            (losing_g if item["subject"].startswith("group:") else losing_p).add(item["subject"])
        for item in resource.get("keep", []):
            keeping.add(item["subject"])
        for item in resource.get("gain", []):
            gaining.add(item["subject"])
        fetches += resource.get("fetches_total", 0)
        workloads.update(resource.get("workloads_failing", []))
        references += sum(1 for r in resource.get("references", []) if r["status"] != "keeps")
        consumers |= {c["name"] for c in resource.get("consumers", []) if c["status"] == "fails"}
    return {
        "principals_losing": sorted(s.split(":", 1)[1] for s in losing_p),
        "groups_losing": sorted(s.split(":", 1)[1] for s in losing_g),
        "subjects_keeping": sorted(keeping),
        "subjects_gaining": sorted(gaining),
        "workloads_failing": sorted(workloads),
        "consumers_failing": sorted(consumers),
        "references_failing": references,
        "fetches_in_window": fetches,
        "grants_unused_after": report.get("unused_after", {}).get("grants", []),
        "secrets_unused_after": report.get("unused_after", {}).get("secrets", []),
        "older_grants": [g["grant_id"] for g in report.get("older_grants", [])],
    }


def compact(report: dict[str, Any]) -> dict[str, Any]:
    """Counts and at most ``AUDIT_IDS`` ids per list: what the action's audit event carries."""
    summary = report["summary"]
    out: dict[str, Any] = {"action": report["action"], "days": report["days"], "counts": {}}
    for name, value in summary.items():
        if isinstance(value, list):
            out["counts"][name] = len(value)
            out[name] = value[:AUDIT_IDS]
        else:
            out["counts"][name] = value
    out["counts"]["resources"] = report.get("resources_total", 0)
    return out


def window_start(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
