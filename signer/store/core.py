"""The tables' reads and writes, mixed into ``Reader`` and ``Writer`` over the transaction mechanics of
``signer.store.tx`` (being split into one module per table family).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, or_, select, update

from signer.audit import AuditRecord
from signer.errors import (
    Conflict,
    NotFound,
)
from signer.store import schema as t
from signer.store.console_rows import ConsoleReads, ConsoleWrites
from signer.store.policy_rows import PolicyReads, PolicyWrites, grant_from_row
from signer.store.records import (
    APPROVAL_STATES,
    APPROVER_KEY_SCHEMES,
    GRANT_RESOURCE_TYPES,
    KEY_STATES,
    ROLES,
    TOKEN_KINDS,
    VOTE_DECISIONS,
    ApprovalRequestRecord,
    ApprovalVoteRecord,
    ApproverKeyRecord,
    GrantRecord,
    KeyRecord,
    OutboxRecord,
    PrincipalRecord,
    TokenRecord,
    WebhookRecord,
)
from signer.store.tx import ReadTx, WriteTx


def _aware(value: datetime | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _text(value: Any, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def _one_of(value: str, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of: {', '.join(sorted(allowed))}")


# -- row -> record ----------------------------------------------------------------------------------

_TOKEN_SELECT = select(
    t.tokens,
    t.principals.c.name.label("principal_name"),
    t.principals.c.role.label("principal_role"),
    t.principals.c.disabled_at.label("principal_disabled_at"),
).select_from(t.tokens.join(t.principals, t.tokens.c.principal_id == t.principals.c.id))


def _principal(row: Any) -> PrincipalRecord:
    m = row._mapping
    return PrincipalRecord(
        id=m["id"],
        name=m["name"],
        role=m["role"],
        created_at=m["created_at"],
        created_by=m["created_by"],
        disabled_at=m["disabled_at"],
    )


def _token(row: Any) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=m["id"],
        principal_id=m["principal_id"],
        kind=m["kind"],
        digest=bytes(m["digest"]),
        family_id=m["family_id"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        principal_name=m["principal_name"],
        principal_role=m["principal_role"],
        principal_disabled_at=m["principal_disabled_at"],
    )


def _key(row: Any) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        label=m["label"],
        curve=m["curve"],
        public_key=m["public_key"],
        address=m["address"],
        scope=m["scope"],
        tags=list(m["tags"]),
        state=m["state"],
        hsm_id=m["hsm_id"],
        attributes=dict(m["attributes"]),
        created_by=m["created_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


_grant = grant_from_row


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


def _outbox(row: Any) -> OutboxRecord:
    m = row._mapping
    return OutboxRecord(
        id=m["id"],
        group_name=m["group_name"],
        url=m["url"],
        event=dict(m["event"]),
        created_at=m["created_at"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        delivered_at=m["delivered_at"],
        last_error=m["last_error"],
    )


def _audit(row: Any) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        seq=int(m["seq"]),
        at=m["at"],
        request_id=m["request_id"],
        kind=m["kind"],
        event=m["event"],
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


# -- readers and writers ----------------------------------------------------------------------------


class _Queries(PolicyReads, ConsoleReads):
    """The read queries Reader and Writer share; every statement goes through ``_execute``."""

    # tokens and principals

    async def get_token(self, token_id: str) -> TokenRecord | None:
        row = await self._first(_TOKEN_SELECT.where(t.tokens.c.id == token_id))
        return None if row is None else _token(row)

    async def get_principal(self, principal_id: str) -> PrincipalRecord | None:
        row = await self._first(select(t.principals).where(t.principals.c.id == principal_id))
        return None if row is None else _principal(row)

    async def get_principal_by_name(self, name: str) -> PrincipalRecord | None:
        row = await self._first(select(t.principals).where(t.principals.c.name == name))
        return None if row is None else _principal(row)

    async def list_principals(self) -> list[PrincipalRecord]:
        rows = await self._all(select(t.principals).order_by(t.principals.c.name))
        return [_principal(r) for r in rows]

    # keys

    async def get_key(self, key_id: str) -> KeyRecord | None:
        row = await self._first(select(t.keys).where(t.keys.c.id == key_id))
        return None if row is None else _key(row)

    async def get_key_by_hsm_id(self, hsm_id: str) -> KeyRecord | None:
        row = await self._first(select(t.keys).where(t.keys.c.hsm_id == hsm_id))
        return None if row is None else _key(row)

    async def list_keys(
        self, *, state: str | None = None, limit: int = 100, after: str | None = None
    ) -> list[KeyRecord]:
        """Keys ordered by id; pass the last id seen as ``after`` for the next page."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        query: Select[Any] = select(t.keys)
        if state is not None:
            query = query.where(t.keys.c.state == state)
        if after is not None:
            query = query.where(t.keys.c.id > after)
        rows = await self._all(query.order_by(t.keys.c.id).limit(limit))
        return [_key(r) for r in rows]

    # grants

    async def get_grant(self, grant_id: str) -> GrantRecord | None:
        row = await self._first(select(t.grants).where(t.grants.c.id == grant_id))
        return None if row is None else _grant(row)

    async def active_grants(
        self, principal_id: str, resource_type: str, resource_id: str, now: datetime
    ) -> list[GrantRecord]:
        """Grants of ``principal_id`` on the resource that are neither revoked nor expired at ``now``."""
        _aware(now, "now")
        g = t.grants.c
        rows = await self._all(
            select(t.grants)
            .where(
                g.principal_id == principal_id,
                g.resource_type == resource_type,
                g.resource_id == resource_id,
                g.revoked_at.is_(None),
                or_(g.expires_at.is_(None), g.expires_at > now),
            )
            .order_by(g.created_at, g.id)
        )
        return [_grant(r) for r in rows]

    async def list_grants(self, principal_id: str | None = None) -> list[GrantRecord]:
        """Every grant (revoked and expired included), optionally of one principal."""
        query: Select[Any] = select(t.grants)
        if principal_id is not None:
            query = query.where(t.grants.c.principal_id == principal_id)
        rows = await self._all(query.order_by(t.grants.c.created_at, t.grants.c.id))
        return [_grant(r) for r in rows]

    # approvals

    async def get_approval_request(self, request_id: str) -> ApprovalRequestRecord | None:
        row = await self._first(select(t.approval_requests).where(t.approval_requests.c.id == request_id))
        return None if row is None else _approval_request(row)

    async def list_approval_requests(
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
        rows = await self._all(query.order_by(c.id).limit(limit))
        return [_approval_request(r) for r in rows]

    async def approval_votes(self, request_id: str) -> list[ApprovalVoteRecord]:
        """Every vote on a request with the voter's principal and voting token as they are now."""
        rows = await self._all(_VOTE_SELECT.where(t.approval_votes.c.request_id == request_id))
        return [_vote(r) for r in rows]

    async def get_approver_key(self, principal_id: str) -> ApproverKeyRecord | None:
        row = await self._first(select(t.approver_keys).where(t.approver_keys.c.principal_id == principal_id))
        if row is None:
            return None
        m = row._mapping
        return ApproverKeyRecord(
            principal_id=m["principal_id"],
            scheme=m["scheme"],
            public_key=m["public_key"],
            created_at=m["created_at"],
        )

    async def webhooks_for(self, groups: Sequence[str]) -> dict[str, str]:
        """The webhook URL of each of ``groups`` that has one."""
        c = t.approval_webhooks.c
        rows = await self._all(select(c.group_name, c.url).where(c.group_name.in_(list(groups))))
        return {r[0]: r[1] for r in rows}

    async def get_webhook(self, group: str) -> WebhookRecord | None:
        row = await self._first(select(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group))
        if row is None:
            return None
        m = row._mapping
        return WebhookRecord(
            group_name=m["group_name"],
            url=m["url"],
            created_at=m["created_at"],
            created_by=m["created_by"],
            secret_salt=m["secret_salt"],
            previous_secret_salt=m["previous_secret_salt"],
            previous_secret_until=m["previous_secret_until"],
        )

    async def get_outbox(self, outbox_id: str) -> OutboxRecord | None:
        row = await self._first(select(t.webhook_outbox).where(t.webhook_outbox.c.id == outbox_id))
        return None if row is None else _outbox(row)

    async def due_outbox(self, now: datetime, limit: int = 20) -> list[OutboxRecord]:
        """Undelivered calls whose next attempt is due at ``now``, oldest first."""
        c = t.webhook_outbox.c
        rows = await self._all(
            select(t.webhook_outbox)
            .where(c.delivered_at.is_(None), c.next_attempt_at <= now)
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        return [_outbox(r) for r in rows]

    # audit and meta

    async def audit_events(self, after_seq: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Committed audit records with ``seq > after_seq``, in order."""
        if type(limit) is not int or limit < 1:
            raise ValueError("limit must be a positive integer")
        rows = await self._all(
            select(t.audit_events)
            .where(t.audit_events.c.seq > after_seq)
            .order_by(t.audit_events.c.seq)
            .limit(limit)
        )
        return [_audit(r) for r in rows]

    async def get_meta(self, name: str) -> str | None:
        row = await self._first(select(t.meta.c.value).where(t.meta.c.name == name))
        return None if row is None else str(row[0])


class Reader(_Queries, ReadTx):
    """Reads on a pooled connection; holds no write lock (see ``ReadTx``)."""


class Writer(PolicyWrites, ConsoleWrites, _Queries, WriteTx):
    """One write transaction holding the write lock (see ``WriteTx``), with every table's writes."""

    async def insert_principal(self, principal: PrincipalRecord) -> PrincipalRecord:
        """Insert ``principal``; ``Conflict(principal_exists)`` if its id or name is taken."""
        _text(principal.id, "principal id")
        _text(principal.name, "principal name")
        _one_of(principal.role, ROLES, "role")
        _aware(principal.created_at, "created_at")
        _aware(principal.disabled_at, "disabled_at", optional=True)
        await self._insert_new(
            t.principals,
            {
                "id": principal.id,
                "name": principal.name,
                "role": principal.role,
                "created_at": principal.created_at,
                "created_by": principal.created_by,
                "disabled_at": principal.disabled_at,
            },
            Conflict("a principal with that id or name exists", code="principal_exists"),
        )
        return principal

    async def set_principal_disabled(self, principal_id: str, disabled_at: datetime | None) -> None:
        """Disable (an aware datetime) or re-enable (None) a principal; bumps the epoch on change."""
        _aware(disabled_at, "disabled_at", optional=True)
        p = t.principals.c
        changed = (p.disabled_at.is_(None)) if disabled_at is not None else (p.disabled_at.is_not(None))
        result = await self._write(
            update(t.principals).where(p.id == principal_id, changed).values(disabled_at=disabled_at)
        )
        if result.rowcount:
            self.bump_epoch()
            return
        if await self.get_principal(principal_id) is None:
            raise NotFound("no such principal", code="principal_not_found")

    # tokens

    async def insert_token(self, token: TokenRecord) -> None:
        """Insert a token (its ``principal_*`` fields are ignored); ``Conflict(token_exists)`` on a
        taken id, ``NotFound(principal_not_found)`` for an unknown principal."""
        _text(token.id, "token id")
        _text(token.principal_id, "principal id")
        _text(token.family_id, "family id")
        _one_of(token.kind, TOKEN_KINDS, "token kind")
        if not isinstance(token.digest, bytes | bytearray) or len(token.digest) != 32:
            raise ValueError("token digest must be 32 bytes")
        _aware(token.created_at, "created_at")
        _aware(token.expires_at, "expires_at", optional=True)
        _aware(token.revoked_at, "revoked_at", optional=True)
        await self._insert_new(
            t.tokens,
            {
                "id": token.id,
                "principal_id": token.principal_id,
                "kind": token.kind,
                "digest": bytes(token.digest),
                "family_id": token.family_id,
                "created_at": token.created_at,
                "expires_at": token.expires_at,
                "revoked_at": token.revoked_at,
            },
            Conflict("a token with that id exists", code="token_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )

    async def revoke_token(self, token_id: str, now: datetime) -> bool:
        """Revoke one token; True if it was live, False if already revoked; NotFound if unknown."""
        _aware(now, "now")
        c = t.tokens.c
        result = await self._write(
            update(t.tokens).where(c.id == token_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        row = await self._first(select(c.id).where(c.id == token_id))
        if row is None:
            raise NotFound("no such token", code="token_not_found")
        return False

    async def revoke_token_family(self, family_id: str, now: datetime) -> int:
        """Revoke every live token of a refresh lineage; returns how many were revoked."""
        _aware(now, "now")
        c = t.tokens.c
        result = await self._write(
            update(t.tokens).where(c.family_id == family_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        count = int(result.rowcount or 0)
        if count:
            self.bump_epoch()
        return count

    # keys

    async def insert_key(self, key: KeyRecord) -> None:
        """Register a key; ``Conflict(key_exists)`` if its id or hsm_id is taken."""
        for name in ("id", "label", "curve", "public_key", "scope", "hsm_id"):
            _text(getattr(key, name), f"key {name}")
        _one_of(key.state, KEY_STATES, "key state")
        _aware(key.created_at, "created_at")
        _aware(key.updated_at, "updated_at")
        await self._insert_new(
            t.keys,
            {
                "id": key.id,
                "label": key.label,
                "curve": key.curve,
                "public_key": key.public_key,
                "address": key.address,
                "scope": key.scope,
                "tags": list(key.tags),
                "state": key.state,
                "hsm_id": key.hsm_id,
                "attributes": dict(key.attributes),
                "created_by": key.created_by,
                "created_at": key.created_at,
                "updated_at": key.updated_at,
            },
            Conflict("a key with that id or token object exists", code="key_exists"),
        )

    async def set_key_state(self, key_id: str, state: str, now: datetime) -> None:
        """Change a key's state; bumps the epoch on change; NotFound(key_not_found) if unknown."""
        _one_of(state, KEY_STATES, "key state")
        _aware(now, "now")
        c = t.keys.c
        result = await self._write(
            update(t.keys).where(c.id == key_id, c.state != state).values(state=state, updated_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return
        if await self.get_key(key_id) is None:
            raise NotFound("no such key", code="key_not_found")

    # grants

    async def insert_grant(self, grant: GrantRecord) -> None:
        """Insert a grant and bump the epoch.

        ``Conflict(grant_exists)`` on a taken id, ``NotFound(principal_not_found)`` for an unknown principal.
        """
        _text(grant.id, "grant id")
        if (grant.principal_id is None) == (grant.group_name is None):
            raise ValueError("a grant names exactly one principal or group")
        _text(grant.principal_id, "principal id", optional=True)
        _text(grant.group_name, "group name", optional=True)
        _text(grant.resource_id, "resource id")
        if grant.max_uses is not None and (isinstance(grant.max_uses, bool) or grant.max_uses < 0):
            raise ValueError("max_uses must be a non-negative integer")
        _one_of(grant.resource_type, GRANT_RESOURCE_TYPES, "resource type")
        if isinstance(grant.operations, str) or not all(isinstance(op, str) for op in grant.operations):
            raise ValueError("operations must be a list of strings")
        _aware(grant.created_at, "created_at")
        _aware(grant.expires_at, "expires_at", optional=True)
        _aware(grant.revoked_at, "revoked_at", optional=True)
        await self._insert_new(
            t.grants,
            {
                "id": grant.id,
                "principal_id": grant.principal_id,
                "resource_type": grant.resource_type,
                "resource_id": grant.resource_id,
                "operations": list(grant.operations),
                "expires_at": grant.expires_at,
                "created_by": grant.created_by,
                "created_at": grant.created_at,
                "revoked_at": grant.revoked_at,
                "group_name": grant.group_name,
                "max_uses": grant.max_uses,
                "value_budgets": {k: str(v) for k, v in grant.value_budgets.items()},
            },
            Conflict("a grant with that id exists", code="grant_exists"),
            missing_parent=NotFound("no such principal", code="principal_not_found"),
        )
        self.bump_epoch()

    async def revoke_grant(self, grant_id: str, now: datetime) -> bool:
        """Revoke a grant; True if it was live, False if already revoked; NotFound if unknown."""
        _aware(now, "now")
        c = t.grants.c
        result = await self._write(
            update(t.grants).where(c.id == grant_id, c.revoked_at.is_(None)).values(revoked_at=now)
        )
        if result.rowcount:
            self.bump_epoch()
            return True
        if await self.get_grant(grant_id) is None:
            raise NotFound("no such grant", code="grant_not_found")
        return False

    # approvals

    async def insert_approval_request(self, record: ApprovalRequestRecord) -> None:
        """Store a new approval request; ``Conflict(approval_exists)`` on a taken id."""
        for name in ("id", "kind", "resource_id", "requester_id", "payload_digest"):
            _text(getattr(record, name), f"approval {name}")
        _one_of(record.state, APPROVAL_STATES, "approval state")
        for name in ("created_at", "expires_at", "updated_at"):
            _aware(getattr(record, name), name)
        await self._insert_new(
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

    async def lock_approval_request(self, request_id: str) -> ApprovalRequestRecord | None:
        """Read a request for a decision about it: PostgreSQL locks the row (``FOR UPDATE``) until this
        transaction ends. SQLite needs no row lock: this writer already holds the database's write lock
        (``BEGIN IMMEDIATE``), which serialises every writer, in every process."""
        query = select(t.approval_requests).where(t.approval_requests.c.id == request_id)
        if self._store.backend == "postgresql":
            query = query.with_for_update()
        row = await self._first(query)
        return None if row is None else _approval_request(row)

    async def insert_approval_vote(self, vote: ApprovalVoteRecord) -> None:
        """Record a vote (its ``principal_*``/``token_*`` fields are ignored); one per identity and
        request: a second one is ``Conflict(approval_already_voted)``. A vote whose digest is not the
        request's stored digest, byte for byte, is ``Conflict(approval_mismatch)`` and is not recorded:
        the tally counts what is stored, so nothing stored may name another spelling or payload."""
        for name in ("request_id", "approver_id", "token_id", "digest"):
            _text(getattr(vote, name), f"vote {name}")
        _one_of(vote.decision, VOTE_DECISIONS, "vote decision")
        _aware(vote.created_at, "created_at")
        c = t.approval_requests.c
        stored = await self._first(select(c.payload_digest).where(c.id == vote.request_id))
        if stored is None:
            raise NotFound("no such approval request", code="approval_not_found")
        if stored[0] != vote.digest:
            raise Conflict(
                "the vote names another payload than the one stored under this id", code="approval_mismatch"
            )
        await self._insert_new(
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

    async def transition_approval(
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
        _one_of(state, APPROVAL_STATES, "approval state")
        for old in from_states:
            _one_of(old, APPROVAL_STATES, "approval state")
        _aware(now, "now")
        c = t.approval_requests.c
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if result is not None:
            values["result"] = dict(result)
        moved = await self._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state.in_(list(from_states)))
            .values(**values)
        )
        return bool(moved.rowcount)

    async def mark_approval_result_fetched(self, request_id: str, now: datetime) -> bool:
        """Mark a signed request's result as handed out; True only for the first caller."""
        _aware(now, "now")
        c = t.approval_requests.c
        moved = await self._write(
            update(t.approval_requests)
            .where(c.id == request_id, c.state == "signed", c.result_fetched_at.is_(None))
            .values(result_fetched_at=now)
        )
        return bool(moved.rowcount)

    async def set_approver_key(self, record: ApproverKeyRecord) -> None:
        """Register (or replace) a principal's approval-signing public key."""
        _text(record.principal_id, "principal id")
        _text(record.public_key, "public key")
        _one_of(record.scheme, APPROVER_KEY_SCHEMES, "approver key scheme")
        _aware(record.created_at, "created_at")
        c = t.approver_keys.c
        replaced = await self._write(
            update(t.approver_keys)
            .where(c.principal_id == record.principal_id)
            .values(scheme=record.scheme, public_key=record.public_key, created_at=record.created_at)
        )
        if replaced.rowcount:
            return
        await self._insert_new(
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

    # webhooks

    async def set_webhook(
        self, group: str, url: str, now: datetime, by: str | None, *, secret_salt: str
    ) -> None:
        """Point the group's webhook at ``url``; a new row takes ``secret_salt``, an existing one keeps
        its secrets (only a rotation changes them)."""
        _text(group, "group")
        _text(url, "url")
        _text(secret_salt, "secret_salt")
        _aware(now, "now")
        c = t.approval_webhooks.c
        replaced = await self._write(
            update(t.approval_webhooks)
            .where(c.group_name == group)
            .values(url=url, created_at=now, created_by=by)
        )
        if not replaced.rowcount:
            await self._insert_new(
                t.approval_webhooks,
                {
                    "group_name": group,
                    "url": url,
                    "created_at": now,
                    "created_by": by,
                    "secret_salt": secret_salt,
                    "previous_secret_salt": None,
                    "previous_secret_until": None,
                },
                Conflict("a webhook exists for that group", code="webhook_exists"),
            )

    async def rotate_webhook_secret(
        self, group: str, new_salt: str, previous_until: datetime
    ) -> WebhookRecord | None:
        """The current secret becomes the previous one (until ``previous_until``; an older previous one
        is dropped) and ``new_salt`` the current one. None when the group has no webhook."""
        _text(new_salt, "new_salt")
        _aware(previous_until, "previous_until")
        current = await self.get_webhook(group)
        if current is None:
            return None
        c = t.approval_webhooks.c
        values = {
            "secret_salt": new_salt,
            "previous_secret_salt": current.secret_salt,
            "previous_secret_until": previous_until,
        }
        result = await self._write(
            update(t.approval_webhooks)
            .where(c.group_name == group, c.secret_salt.is_not_distinct_from(current.secret_salt))
            .values(**values)
        )
        if not result.rowcount:
            raise Conflict("the webhook changed meanwhile: try again", code="webhook_changed")
        return WebhookRecord(
            group_name=group,
            url=current.url,
            created_at=current.created_at,
            created_by=current.created_by,
            secret_salt=new_salt,
            previous_secret_salt=current.secret_salt,
            previous_secret_until=previous_until,
        )

    async def delete_webhook(self, group: str) -> bool:
        result = await self._write(
            delete(t.approval_webhooks).where(t.approval_webhooks.c.group_name == group)
        )
        return bool(result.rowcount)

    async def enqueue_webhook(self, record: OutboxRecord) -> None:
        _text(record.id, "outbox id")
        _aware(record.created_at, "created_at")
        _aware(record.next_attempt_at, "next_attempt_at")
        await self._insert_new(
            t.webhook_outbox,
            {
                "id": record.id,
                "group_name": record.group_name,
                "url": record.url,
                "event": dict(record.event),
                "created_at": record.created_at,
                "attempts": record.attempts,
                "next_attempt_at": record.next_attempt_at,
                "delivered_at": None,
                "last_error": None,
            },
            Conflict("an outbox entry with that id exists", code="outbox_exists"),
        )

    async def claim_outbox(self, outbox_id: str, due: datetime, lease_until: datetime) -> bool:
        """Take a due call for delivery (compare-and-set on its next attempt): one claimer wins, in
        every process; a claimer that dies lets the lease run out and the call becomes due again."""
        c = t.webhook_outbox.c
        result = await self._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id, c.delivered_at.is_(None), c.next_attempt_at <= due)
            .values(next_attempt_at=lease_until)
        )
        return bool(result.rowcount)

    async def finish_outbox(
        self,
        outbox_id: str,
        *,
        delivered_at: datetime | None,
        attempts: int,
        next_attempt_at: datetime,
        error: str | None,
    ) -> None:
        c = t.webhook_outbox.c
        await self._write(
            update(t.webhook_outbox)
            .where(c.id == outbox_id)
            .values(
                delivered_at=delivered_at,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                last_error=error,
            )
        )

    # meta

    async def set_meta(self, name: str, value: str, *, replace: bool = False) -> None:
        """Store a setting; without ``replace`` an existing name is ``Conflict(meta_exists)``."""
        _text(name, "meta name")
        if not isinstance(value, str):
            raise ValueError("meta value must be a string")
        if replace:
            result = await self._write(update(t.meta).where(t.meta.c.name == name).values(value=value))
            if result.rowcount:
                return
        await self._insert_new(
            t.meta, {"name": name, "value": value}, Conflict("setting exists", code="meta_exists")
        )


__all__ = ["Reader", "Writer"]
