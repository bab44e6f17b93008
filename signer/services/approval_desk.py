"""The approver's desk: what the web console shows around an approval request, beyond the request itself.

``ApprovalsService`` says what a request is and who voted; an approver deciding also wants to know who
else can still vote, whether they themselves can, how long is left, and which key (if any) their vote
may be signed with. This service reads those, for one request (``page``) or for the console's lists
(``listing`` with the filters ``pending``, ``mine`` = pending and waiting for the caller's vote,
``decided``, ``all``). It only reads: votes go through ``ApprovalsService`` like every other vote.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from signer.identity import Role
from signer.services.approvals import ApprovalsService
from signer.services.context import RequestContext
from signer.services.pending import groups_of, request_groups
from signer.store import Reader, Store

FILTERS = ("pending", "mine", "decided", "all")


class ApprovalDesk:
    def __init__(self, store: Store, approvals: ApprovalsService, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._approvals = approvals
        self._clock = clock

    async def page(self, ctx: RequestContext, approval_id: str) -> dict[str, Any]:
        """The request (as ``GET /v1/approvals/{id}`` shows it) plus: ``seconds_left``, ``can_vote``
        (the caller could cast a counted vote now), ``my_vote``, ``still_to_vote`` (per group, the names of
        enabled approvers who have not voted, the requester left out) and ``my_key`` (the scheme and public
        key the caller's signed votes verify with, or None)."""
        item = await self._approvals.show(ctx, approval_id)
        async with self._store.read() as reader:
            record = await reader.approvals.get(approval_id)
            assert record is not None  # show() found it
            voted = {v["approver_id"] for v in item["votes"]}
            still: dict[str, list[str]] = {}
            if item["state"] == "pending":
                for group in sorted(request_groups(record)):
                    names = []
                    for member in await reader.groups.members(group):
                        if member in voted or member == record.requester_id:
                            continue
                        principal = await reader.principals.get(member)
                        if principal is None or principal.disabled or principal.role != Role.APPROVER.value:
                            continue
                        names.append(principal.name)
                    still[group] = sorted(names)
            mine = await groups_of(reader, ctx.caller.principal_id)
            key = await reader.approvals.get_approver_key(ctx.caller.principal_id)
        my_vote = next(
            (v["decision"] for v in item["votes"] if v["approver_id"] == ctx.caller.principal_id), None
        )
        return {
            "item": item,
            "seconds_left": self._seconds_left(item),
            "can_vote": self._can_vote(ctx, item, mine, my_vote is not None),
            "my_vote": my_vote,
            "still_to_vote": still,
            "my_key": None if key is None else {"scheme": key.scheme, "public_key": key.public_key},
        }

    async def listing(self, ctx: RequestContext, which: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """Requests the caller may see, newest first, filtered; each with ``seconds_left`` and, for
        ``mine``, only those the caller can still vote on."""
        state = "pending" if which in ("pending", "mine") else None
        items = await self._approvals.list_requests(ctx, state=state, limit=limit)
        if which == "decided":
            items = [i for i in items if i["state"] != "pending"]
        if which == "mine":
            async with self._store.read() as reader:
                mine = await groups_of(reader, ctx.caller.principal_id)
                kept = []
                for item in items:
                    voted = await self._voted(reader, item["id"], ctx.caller.principal_id)
                    if self._can_vote(ctx, item, mine, voted):
                        kept.append(item)
            items = kept
        for item in items:
            item["seconds_left"] = self._seconds_left(item)
        return items

    @staticmethod
    async def _voted(reader: Reader, approval_id: str, principal_id: str) -> bool:
        return any(v.approver_id == principal_id for v in await reader.approvals.votes(approval_id))

    @staticmethod
    def _can_vote(ctx: RequestContext, item: dict[str, Any], mine: frozenset[str], voted: bool) -> bool:
        groups = {r["group"] for r in item["requirements"]}
        return (
            item["state"] == "pending"
            and ctx.caller.role is Role.APPROVER
            and ctx.caller.principal_id != item["requester_id"]
            and not voted
            and bool(groups & mine)
        )

    def _seconds_left(self, item: dict[str, Any]) -> int | None:
        if item["state"] != "pending":
            return None
        expires = datetime.fromisoformat(item["expires_at"].replace("Z", "+00:00"))
        return max(0, int((expires - self._clock()).total_seconds()))
