"""Approval requests, their votes, and the approvers' public keys.

Owns the ``approval_requests``, ``approval_votes`` and ``approver_keys`` tables: opening a request,
locking it for a decision (PostgreSQL row lock; SQLite's write lock already serialises), recording a
vote against the request's stored digest, moving a request between states, and the approvers' keys
that verify votes. ``backlog`` also counts undelivered webhook calls (the outbox is the approvals'
notification queue) for metrics. It decides nothing: the approvals service does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update

from signer.errors import Conflict, NotFound
from signer.store import schema as t
from signer.store.checks import aware, nonempty, one_of
from signer.store.records import (
    APPROVAL_STATES,
    APPROVER_KEY_SCHEMES,
    VOTE_DECISIONS,
    ApprovalRequestRecord,
    ApprovalVoteRecord,
    ApproverKeyRecord,
)
from signer.store.tx import Statements, WriteStatements


def _approval_request(row: Any) -> ApprovalRequestRecord:
    m = row._mapping
    return ApprovalRequestRecord(
        id=m["id"],
        kind=m["kind"],
        resource_id=m["resource_id"],
        requester_id=m["requester_id"],
        payload=dict(m["payload"]),
        payload_digest=m["payload_digest"],
        view=dict(m["view"]),
        requirements=dict(m["requirements"]),
        state=m["state"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        updated_at=m["updated_at"],
        result=None if m["result"] is None else dict(m["result"]),
        result_fetched_at=m["result_fetched_at"],
    )


_VOTE_SELECT = (
    select(
        t.approval_votes,
        t.principals.c.name.label("principal_name"),
        t.principals.c.role.label("principal_role"),
        t.principals.c.disabled_at.label("principal_disabled_at"),
        t.tokens.c.id.label("token_found"),
        t.tokens.c.revoked_at.label("token_revoked_at"),
    )
    .select_from(
        t.approval_votes.join(t.principals, t.approval_votes.c.approver_id == t.principals.c.id).outerjoin(
            t.tokens, t.approval_votes.c.token_id == t.tokens.c.id
        )
    )
    .order_by(t.approval_votes.c.created_at, t.approval_votes.c.approver_id)
)


def _vote(row: Any) -> ApprovalVoteRecord:
    m = row._mapping
    return ApprovalVoteRecord(
        request_id=m["request_id"],
        approver_id=m["approver_id"],
        token_id=m["token_id"],
        decision=m["decision"],
        digest=m["digest"],
        created_at=m["created_at"],
        signature_scheme=m["signature_scheme"],
        signature=m["signature"],
        principal_name=m["principal_name"],
        principal_role=m["principal_role"],
        principal_disabled_at=m["principal_disabled_at"],
        token_revoked_at=m["token_revoked_at"],
        token_found=m["token_found"] is not None,
    )


class ApprovalReads:
    """Reads of approval requests, votes and approver keys."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Statements) -> None:
        self._tx = tx

    async def get(self, request_id: str) -> ApprovalRequestRecord | None:
        row = await self._tx._first(select(t.approval_requests).where(t.approval_requests.c.id == request_id))
        return None if row is None else _approval_request(row)

    async def all(
        self,
        *,
        states: Sequence[str] | None = None,
        requester_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[ApprovalRequestRecord]:
        """Requests ordered by id (ids sort by creation); ``after`` is the last id of the previous page."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        c = t.approval_requests.c
        query: Select[Any] = select(t.approval_requests)
        if states is not None:
            query = query.where(c.state.in_(list(states)))
        if requester_id is not None:
            query = query.where(c.requester_id == requester_id)
        if after is not None:
            query = query.where(c.id > after)
        rows = await self._tx._all(query.order_by(c.id).limit(limit))
        return [_approval_request(r) for r in rows]

    async def votes(self, request_id: str) -> list[ApprovalVoteRecord]:
        """Every vote on a request with the voter's principal and voting token as they are now."""
        rows = await self._tx._all(_VOTE_SELECT.where(t.approval_votes.c.request_id == request_id))
        return [_vote(r) for r in rows]

    async def get_approver_key(self, principal_id: str) -> ApproverKeyRecord | None:
        row = await self._tx._first(
            select(t.approver_keys).where(t.approver_keys.c.principal_id == principal_id)
        )
        if row is None:
            return None
        m = row._mapping
        return ApproverKeyRecord(
            principal_id=m["principal_id"],
            scheme=m["scheme"],
            public_key=m["public_key"],
            created_at=m["created_at"],
        )

    async def backlog(self, now: datetime) -> tuple[int, int]:
        """(approval requests pending and not yet expired, webhook calls not yet delivered)."""
        a, o = t.approval_requests.c, t.webhook_outbox.c
        pending = await self._tx._first(select(func.count()).where(a.state == "pending", a.expires_at > now))
        undelivered = await self._tx._first(select(func.count()).where(o.delivered_at.is_(None)))
        return int(pending[0]), int(undelivered[0])


class ApprovalWrites(ApprovalReads):
    """Writes of approval requests, votes and approver keys (in a write transaction)."""

    __slots__ = ()
    _tx: WriteStatements

    def __init__(self, tx: WriteStatements) -> None:
        super().__init__(tx)

    async def insert(self, record: ApprovalRequestRecord) -> None:
        """Store a new approval request; ``Conflict(approval_exists)`` on a taken id."""
        for name in ("id", "kind", "resource_id", "requester_id", "payload_digest"):
            nonempty(getattr(record, name), f"approval {name}")
        one_of(record.state, APPROVAL_STATES, "approval state")
        for name in ("created_at", "expires_at", "updated_at"):
            aware(getattr(record, name), name)
        await self._tx._insert_new(
            t.approval_requests,
            {
                "id": record.id,
                "kind": record.kind,
                "resource_id": record.resource_id,
                "requester_id": record.requester_id,
                "payload": dict(record.payload),
                "payload_digest": record.payload_digest,
                "view": dict(record.view),
                "requirements": dict(record.requirements),
                "state": record.state,
                "created_at": record.created_at,
                "expires_at": record.expires_at,
                "updated_at": record.updated_at,
                "result": record.result,
                "result_fetched_at": record.result_fetched_at,
            },
            Conflict("an approval request with that id exists", code="approval_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    async def lock(self, request_id: str) -> ApprovalRequestRecord | None:
        """Read a request for a decision about it: PostgreSQL locks the row (``FOR UPDATE``) until this
        transaction ends. SQLite needs no row lock: this writer already holds the database's write lock
        (``BEGIN IMMEDIATE``), which serialises every writer, in every process."""
        query = select(t.approval_requests).where(t.approval_requests.c.id == request_id)
        if self._tx.backend == "postgresql":
            query = query.with_for_update()
        row = await self._tx._first(query)
        return None if row is None else _approval_request(row)

    async def insert_vote(self, vote: ApprovalVoteRecord) -> None:
        """Record a vote (its ``principal_*``/``token_*`` fields are ignored); one per identity and
        request: a second one is ``Conflict(approval_already_voted)``. A vote whose digest is not the
        request's stored digest, byte for byte, is ``Conflict(approval_mismatch)`` and is not recorded:
        the tally counts what is stored, so nothing stored may name another spelling or payload."""
        for name in ("request_id", "approver_id", "token_id", "digest"):
            nonempty(getattr(vote, name), f"vote {name}")
        one_of(vote.decision, VOTE_DECISIONS, "vote decision")
        aware(vote.created_at, "created_at")
        c = t.approval_requests.c
        stored = await self._tx._first(select(c.payload_digest).where(c.id == vote.request_id))
        if stored is None:
            raise NotFound("no such approval request", code="approval_not_found")
        if stored[0] != vote.digest:
            raise Conflict(
                "the vote names another payload than the one stored under this id", code="approval_mismatch"
            )
        await self._tx._insert_new(
            t.approval_votes,
            {
                "request_id": vote.request_id,
                "approver_id": vote.approver_id,
                "token_id": vote.token_id,
                "decision": vote.decision,
                "digest": vote.digest,
                "signature_scheme": vote.signature_scheme,
                "signature": vote.signature,
                "created_at": vote.created_at,
            },
            Conflict("this identity has already voted on the request", code="approval_already_voted"),
            missing_parent=NotFound("no such approval request", code="approval_not_found"),
        )

    async def transition(
        self,
        request_id: str,
        from_states: Sequence[str],
        state: str,
        now: datetime,
        *,
        result: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move a request from one of ``from_states`` to ``state`` (compare-and-set); True if it moved.
        ``result`` is stored with the move when given."""
        one_of(state, APPROVAL_STATES, "approval state")
        for old in from_states:
            one_of(old, APPROVAL_STATES, "approval state")
        aware(now, "now")
        c = t.approval_requests.c
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if result is not None:
            values["result"] = dict(result)
        moved = await self._tx._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state.in_(list(from_states)))
            .values(**values)
        )
        return bool(moved.rowcount)

    async def mark_result_fetched(self, request_id: str, now: datetime, *, state: str = "signed") -> bool:
        """Mark a request's result as handed out (a ``signed`` one's stored result, or a ``released``
        one's response given straight to its requester); True only for the first caller."""
        aware(now, "now")
        one_of(state, APPROVAL_STATES, "approval state")
        c = t.approval_requests.c
        moved = await self._tx._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state == state, c.result_fetched_at.is_(None))
            .values(result_fetched_at=now)
        )
        return bool(moved.rowcount)

    async def set_approver_key(self, record: ApproverKeyRecord) -> None:
        """Register (or replace) a principal's approval-signing public key."""
        nonempty(record.principal_id, "principal id")
        nonempty(record.public_key, "public key")
        one_of(record.scheme, APPROVER_KEY_SCHEMES, "approver key scheme")
        aware(record.created_at, "created_at")
        c = t.approver_keys.c
        replaced = await self._tx._write(
            update(t.approver_keys)
            .where(c.principal_id == record.principal_id)
            .values(scheme=record.scheme, public_key=record.public_key, created_at=record.created_at)
        )
        if replaced.rowcount:
            return
        await self._tx._insert_new(
            t.approver_keys,
            {
                "principal_id": record.principal_id,
                "scheme": record.scheme,
                "public_key": record.public_key,
                "created_at": record.created_at,
            },
            Conflict("an approver key exists", code="approver_key_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )
