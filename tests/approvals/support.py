"""The approvals test world: real services wired as ``signer.app`` wires them, a controllable clock, and
helpers to make principals, keys, grants, group members and pending requests.

``World.request`` creates a pending request exactly as the signing commit unit does (``ApprovalsService.
create`` inside a store unit, from the payload prepared by ``signing.prepare_payload``) with a
``Decision`` built here, so a test can pick any quorum and expiry without writing a policy; the tests in
``test_policy_path.py`` go through real policies and ``SigningService`` instead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes

from policy import ApprovalRequirement, Decision, Effect, PolicyRef, Reason, parse_policy_document
from signer.hsm import Curve, Hsm
from signer.identity import Role
from signer.services.admin import AdminService
from signer.services.approvals import ApprovalsService
from signer.services.auth import AuthService
from signer.services.context import RequestContext
from signer.services.facts import FactsCache
from signer.services.keys import KeyService
from signer.services.policies import PolicyService
from signer.services.signing import SigningService, prepare_payload
from signer.store import ApprovalRequestRecord, KeyRecord, Store, Writer

RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TTL = {"admin": 3600, "service": 900, "approver": 3600, "auditor": 3600}


class Clock:
    """The approvals service's clock: real time plus an offset the test moves (forwards or back)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class Person:
    ctx: RequestContext
    token: str

    @property
    def id(self) -> str:
        return self.ctx.caller.principal_id


@dataclass
class World:
    store: Store
    hsm: Hsm
    auth: AuthService
    admin: AdminService
    keys: KeyService
    signing: SigningService
    approvals: ApprovalsService
    clock: Clock
    admin_person: Person
    policies: PolicyService

    async def person(self, role: str = "approver", name: str | None = None) -> Person:
        made = await self.admin.create_principal(None, name or f"{role}-{secrets.token_hex(4)}", Role(role))
        return await self.login(made["credentials"]["access_token"])

    async def login(self, token: str) -> Person:
        ctx = await self.auth.authenticate(f"Bearer {token}", "req-" + secrets.token_hex(4))
        return Person(ctx, token)

    async def new_token(self, person: Person) -> Person:
        issued = await self.auth.issue_for_principal(self.admin_person.ctx, person.id)
        return await self.login(issued["access_token"])

    async def key(self) -> KeyRecord:
        made = await self.keys.create(self.admin_person.ctx, Curve.SECP256K1, "k", "default", [])
        async with self.store.read() as reader:
            record = await reader.keys.get(made["id"])
        assert record is not None
        return record

    async def requester(self, key: KeyRecord) -> Person:
        service = await self.person("service")
        await self.admin.create_grant(
            self.admin_person.ctx,
            principal_id=service.id,
            group=None,
            key_id=key.id,
            scope=None,
            operations=["sign_transaction", "sign_message", "sign_typed_data"],
            expires_at=None,
        )
        return service

    async def join(self, group: str, person: Person) -> None:
        await self.policies.add_member(self.admin_person.ctx, group, person.id)

    async def leave(self, group: str, person: Person) -> None:
        await self.policies.remove_member(self.admin_person.ctx, group, person.id)

    async def require_approval(
        self,
        key: KeyRecord,
        group: str,
        quorum: int,
        *,
        expires_in: int = 3600,
        above_wei: int = 10**18,
        **extra: Any,
    ) -> None:
        """Put in force at ``key`` the next version of a policy: values above ``above_wei`` need
        ``quorum`` of ``group``."""
        policy_id = f"p-{key.id}"
        async with self.store.read() as reader:
            version = len(await reader.policies.versions(policy_id)) + 1
        document = parse_policy_document(
            {
                "id": policy_id,
                "version": version,
                "rules": [
                    {
                        "id": "big",
                        "kind": "value_cap",
                        "effect": "require_approval",
                        "max_value": str(above_wei),
                        "approval": {
                            "quorum": quorum,
                            "group": group,
                            "expires_in_seconds": expires_in,
                            **extra,
                        },
                    }
                ],
            }
        )
        await self.policies.create_version(self.admin_person.ctx, document)
        await self.policies.attach(
            self.admin_person.ctx, policy_id, version, scope=None, key_id=key.id, mode="live"
        )

    async def request(
        self,
        requester: Person,
        key: KeyRecord,
        body: dict[str, Any] | None = None,
        *,
        operation: str = "sign_transaction",
        quorum: dict[str, int] | None = None,
        expires_in: float = 3600,
        reject_quorum: int = 1,
        signed_approvals: bool = False,
    ) -> ApprovalRequestRecord:
        body = body if body is not None else {"transaction": tx_fields()}
        now = self.clock()
        decision = approval_decision(quorum or {"treasury": 2}, now + timedelta(seconds=expires_in))
        prepared = prepare_payload(operation, body, key)

        async def unit(writer: Writer) -> ApprovalRequestRecord:
            return await self.approvals.create(
                writer,
                requester.ctx,
                operation=operation,
                key=key,
                prepared=prepared,
                decision=decision,
                now=now,
                reject_quorum=reject_quorum,
                signed_approvals=signed_approvals,
            )

        return await self.store.submit(unit)


def approval_decision(quorum: dict[str, int], expires_at: datetime) -> Decision:
    return Decision(
        Effect.REQUIRE_APPROVAL,
        (Reason("big-value", "value_above_cap", "value is above the cap", "treasury-policy@1"),),
        policies=(PolicyRef("treasury-policy", 1, "d" * 64, "key:any"),),
        approvals=tuple(
            ApprovalRequirement(group, count, expires_at, ("big-value",)) for group, count in quorum.items()
        ),
    )


def tx_fields(
    nonce: int = 0, value: int = 5 * 10**18, to: str = RECIPIENT, chain_id: int = 1
) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": 21000,
        "to": to,
        "value": value,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


def recover_sender(result: dict[str, Any]) -> str:
    """Independent check: eth-account recovers the signed transaction's sender."""
    return Account.recover_transaction(bytes.fromhex(result["raw_transaction"][2:]))


async def make_world(store: Store, hsm: Hsm, webhooks: Any = None) -> World:
    facts = FactsCache()
    auth = AuthService(store, facts, secrets.token_bytes(32), access_ttl=TTL, refresh_ttl=86400)
    admin = AdminService(store, auth)
    signing = SigningService(store, hsm, facts, auth)
    clock = Clock()
    approvals = ApprovalsService(store, signing, clock=clock, poll_interval=0.05, webhooks=webhooks)
    made = await admin.create_principal(None, "root", Role.ADMIN)
    ctx = await auth.authenticate(f"Bearer {made['credentials']['access_token']}", "req-root")
    world = World(
        store=store,
        hsm=hsm,
        auth=auth,
        admin=admin,
        keys=KeyService(store, hsm, facts),
        signing=signing,
        approvals=approvals,
        clock=clock,
        admin_person=Person(ctx, made["credentials"]["access_token"]),
        policies=PolicyService(store),
    )
    return world


def signed_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The signed transaction's fields as eth-account decodes them (to, value, chainId, ...)."""
    return dict(TypedTransaction.from_bytes(HexBytes(result["raw_transaction"])).as_dict())
