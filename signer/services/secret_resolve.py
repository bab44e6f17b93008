"""Resolving many secret references in one call, and every readable secret under a scope.

Takes references as ``signer.secret_refs`` parses them (``secret://folder/name``, ``sec_ID``, or a name
alone looked up from a workspace folder upward: the narrowest folder holding a secret of that name that
the caller can see wins), finds the secrets, then fetches each through the secrets service's fetch, so
every read goes through the one decision pipeline (grants, every policy rule, one ``secret.fetch``
audit event per secret, never a value). With a ``scope`` it also fetches every secret under that folder
the caller may both ``list`` and ``read_value``; a disabled one there is skipped (named, with its state),
while a reference naming a disabled secret is refused with ``409 secret_disabled`` like its fetch.

All or nothing: the answer carries every value or none. A reference that names no secret the caller can
see (missing, or held by no grant that reaches it) is ``404 secret_not_found`` with its ``index``,
exactly as the fetch answers a missing id; a secret the caller can see but may not read is refused as
its fetch would be (403, 409, 429), with the ``index``. Every secret is judged before any value is
opened, and one that would be refused is fetched first (so the refusal is the pipeline's own, audited);
only a refusal that appears between that check and the commit (a rate limit spent by the batch itself,
a grant revoked meanwhile) leaves fetches already audited as allowed whose values were then discarded:
one ``secret.resolve`` event (denied, with the error) names them. The short
form reads every level of the workspace whatever it finds, so its time does not depend on where (or
whether) an unreadable secret of that name lies.

It must never return a value outside the answer's items, put one in an error, or tell a missing secret
from one the caller cannot see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from policy import Effect
from signer.audit import ErrorRef, Outcome
from signer.errors import Conflict, InvalidRequest, SignerError, Unprocessable
from signer.secret_refs import ReferenceRefused, SecretReference, check_folder, parse_reference
from signer.services.authorization import (
    Subject,
    load_policies,
    load_subject,
    optimistic_facts,
    policy_request,
    refusal,
)
from signer.services.context import Clock, RequestContext, utcnow
from signer.services.naming import NameKind, check_name
from signer.services.pipeline import judge
from signer.services.resources import ResourceRef
from signer.services.secret_kind import FETCH, not_found, secret_ref
from signer.services.secrets import SecretsService
from signer.store import Reader, SecretRecord, Store, Writer

MAX_REFERENCES = 100
MAX_SCOPE_SECRETS = 200
# Fetches in flight at once for one call (the group commit batches their audit events).
_CONCURRENCY = 8
_LIST_PAGE = 1000


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One fetch to make: which secret, version and field (None: all)."""

    secret_id: str
    folder: str
    version: int | None
    field: str | None
    # The secret's state when found: a disabled one is fetched first (refused before any value opens).
    state: str = "active"


def _indexed(exc: SignerError, index: int | None) -> SignerError:
    """``exc`` naming which reference it is about (None: a secret found under the scope)."""
    if index is None:
        exc.extra["scope"] = True
    else:
        exc.extra["index"] = index
    return exc


class ReferenceSink(Protocol):
    """Told which reference resolved to which secret (``signer.services.usage.UsageRecorder``)."""

    def referenced(
        self, secret_id: str, principal_id: str, reference: str, workspace: str | None
    ) -> None: ...


class SecretResolver:
    def __init__(self, store: Store, secrets: SecretsService, *, clock: Clock = utcnow) -> None:
        self._store = store
        self._secrets = secrets
        self._clock = clock
        # Counts which reference spellings resolved to which secret (signer.app sets it).
        self.usage: ReferenceSink | None = None

    async def resolve(
        self,
        ctx: RequestContext,
        references: Sequence[str],
        *,
        workspace: str | None = None,
        scope: str | None = None,
        workload: str | None = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """The values every reference names (in order) and, with ``scope``, of every secret under it
        the caller may list and read; or a refusal naming the first reference that failed."""
        if len(references) > MAX_REFERENCES:
            raise InvalidRequest(
                f"at most {MAX_REFERENCES} references in one call", code="too_many_references"
            )
        if not references and scope is None:
            raise InvalidRequest("give references, a scope, or both", code="nothing_to_resolve")
        parsed = [_parse(text, index) for index, text in enumerate(references)]
        workspace = None if workspace is None else _folder(workspace, "workspace")
        scope = None if scope is None else _folder(scope, "scope")
        if workload is not None:
            workload = check_name(workload, field="workload", kind=NameKind.TAG)
        if workspace is None and any(ref.form == "short" for ref in parsed):
            index = next(i for i, ref in enumerate(parsed) if ref.form == "short")
            raise InvalidRequest(
                "a reference by name alone needs a workspace folder to look it up from",
                code="workspace_required",
                index=index,
            )
        async with self._store.read() as reader:
            now = self._clock()
            policies = await load_policies(reader)
            subject = await load_subject(reader, ctx.caller.principal_id, now, policies)
            wanted: list[_Wanted] = []
            for index, ref in enumerate(parsed):
                secret = await _find(reader, subject, ref, workspace)
                if secret is None:
                    raise _indexed(not_found(), index)
                wanted.append(_Wanted(secret.id, secret.folder, ref.version, ref.field, secret.state))
        in_scope, skipped = ([], []) if scope is None else await self._scope(ctx, subject, scope)
        jobs: list[tuple[int | None, _Wanted]] = [*enumerate(wanted), *((None, w) for w in in_scope)]
        fetched = await self._fetch_all(ctx, subject, jobs, workload, source)
        if self.usage is not None:
            for text, ref, want in zip(references, parsed, wanted, strict=True):
                where = workspace if ref.form == "short" else None
                self.usage.referenced(want.secret_id, ctx.caller.principal_id, text, where)
        return {
            "references": [fetched[w] for w in wanted],
            "scope": [fetched[w] for w in in_scope],
            "skipped": skipped,
        }

    async def _scope(
        self, ctx: RequestContext, subject: Subject, scope: str
    ) -> tuple[list[_Wanted], list[dict[str, str]]]:
        """Every secret under ``scope`` the caller may list: those it may also read, and the others
        (named: the caller may list them)."""
        readable: list[_Wanted] = []
        skipped: list[dict[str, str]] = []
        cursor: str | None = None
        known = optimistic_facts(self._store.ledger_cache.at_least)
        now = self._clock()
        while True:
            page = await self._secrets.list(ctx, scope, limit=_LIST_PAGE, after=cursor)
            for view in page["items"]:
                if view["state"] != "active":
                    # Disabled: no version of it is read; named here, as one the caller may not read.
                    skipped.append(
                        {
                            "secret_id": view["id"],
                            "name": view["name"],
                            "folder": view["folder"],
                            "state": view["state"],
                        }
                    )
                    continue
                ref = ResourceRef("secret", view["id"], view["folder"], "active")
                decision = judge(
                    policy_request(subject, ref, "read_value", {}), subject.policy_set, known, now
                )
                if decision.effect is not Effect.ALLOW and (
                    refusal(decision, subject, ref).code == "operation_not_granted"
                ):
                    skipped.append(
                        {
                            "secret_id": view["id"],
                            "name": view["name"],
                            "folder": view["folder"],
                            "state": "active",
                        }
                    )
                    continue
                readable.append(_Wanted(view["id"], view["folder"], None, None))
                if len(readable) > MAX_SCOPE_SECRETS:
                    raise Unprocessable(
                        f"the scope holds more than {MAX_SCOPE_SECRETS} secrets you may read; name a "
                        "narrower one",
                        code="too_many_secrets",
                    )
            cursor = page["next"]
            if cursor is None:
                return readable, skipped

    async def _fetch_all(
        self,
        ctx: RequestContext,
        subject: Subject,
        jobs: list[tuple[int | None, _Wanted]],
        workload: str | None,
        source: str | None,
    ) -> dict[_Wanted, dict[str, Any]]:
        """Each distinct fetch once, through the pipeline; those a check now would refuse go first, one
        at a time, so a refusal stops the batch before any value is opened."""
        first: dict[_Wanted, int | None] = {}
        for index, want in jobs:
            first.setdefault(want, index)
        now = self._clock()
        known = optimistic_facts(self._store.ledger_cache.at_least)
        doubtful = [
            want
            for want in first
            if ctx.caller.role not in FETCH.actors
            or want.state != "active"
            or judge(
                policy_request(
                    subject, ResourceRef("secret", want.secret_id, want.folder, want.state), "read_value", {}
                ),
                subject.policy_set,
                known,
                now,
            ).effect
            is not Effect.ALLOW
        ]
        fetched: dict[_Wanted, dict[str, Any]] = {}

        async def fetch(want: _Wanted) -> None:
            try:
                answer = await self._secrets.fetch(
                    ctx,
                    want.secret_id,
                    version=want.version,
                    field=want.field,
                    workload=workload,
                    source=source,
                )
                if answer.get("state") == "pending_approval":
                    # Policy sent this read to approvers (the request is open, nothing was read): the
                    # batch stops here; once approved, its requester releases it by the approval's id.
                    approval = answer["approval"]["id"]
                    raise Conflict(
                        f"reading this secret needs approval: request {approval} is waiting; once "
                        "approved, its requester releases the read with POST /v1/secrets/{id}/fetch "
                        "and approval_id",
                        code="approval_required",
                        approval_id=approval,
                    )
                fetched[want] = answer
            except SignerError as exc:
                raise _indexed(exc, first[want]) from None

        try:
            for want in sorted(doubtful, key=lambda w: _order(first[w])):
                await fetch(want)
            rest = [want for want in first if want not in fetched]
            gate = asyncio.Semaphore(_CONCURRENCY)

            async def bounded(want: _Wanted) -> None:
                async with gate:
                    await fetch(want)

            outcomes = await asyncio.gather(*(bounded(w) for w in rest), return_exceptions=True)
            failures = [
                (_order(first[w]), exc) for w, exc in zip(rest, outcomes, strict=True) if exc is not None
            ]
            if failures:
                _, exc = min(failures, key=lambda pair: pair[0])
                if isinstance(exc, BaseException):
                    raise exc
        except SignerError as exc:
            if fetched:
                await self._record_discarded(ctx, sorted({w.secret_id for w in fetched}), exc)
            fetched.clear()
            raise
        return fetched

    async def _record_discarded(self, ctx: RequestContext, secret_ids: list[str], exc: SignerError) -> None:
        """One ``secret.resolve`` event: the batch was refused after these secrets' values were opened
        (each fetch audited as allowed); none of them left."""
        event = ctx.audit_event(
            "secret.resolve",
            self._clock(),
            outcome=Outcome.DENIED,
            error=ErrorRef(exc.code, exc.status),
            discarded=secret_ids,
        )

        async def unit(writer: Writer) -> None:
            writer.append_audit(event)

        try:
            await self._store.submit(unit)
        except SignerError:
            # The refusal is what the caller needs; the store logged its own failure.
            pass


def _order(index: int | None) -> int:
    # References in their order, then the scope's secrets.
    return MAX_REFERENCES if index is None else index


def _parse(text: str, index: int) -> SecretReference:
    try:
        return parse_reference(text)
    except ReferenceRefused as exc:
        raise InvalidRequest(str(exc), code="invalid_secret_reference", index=index) from None


def _folder(text: str, field: str) -> str:
    try:
        return check_folder(text)
    except ReferenceRefused as exc:
        raise InvalidRequest(str(exc), code="invalid_name", field=field) from None


async def _find(
    reader: Reader, subject: Subject, ref: SecretReference, workspace: str | None
) -> SecretRecord | None:
    """The secret ``ref`` names that the caller can see (a grant about it reaches it), or None."""
    if ref.form == "id":
        assert ref.secret_id is not None
        found = await reader.secrets.get(ref.secret_id)
        return found if found is not None and subject.reaches(secret_ref(found)) else None
    assert ref.name is not None
    folders = [ref.folder] if ref.form == "path" else ref.folders(workspace or "")
    # Every level is read whatever an earlier one held: the time does not tell where a secret lies.
    candidates = [await reader.secrets.by_name(folder, ref.name) for folder in folders if folder]
    return next((c for c in candidates if c is not None and subject.reaches(secret_ref(c))), None)
