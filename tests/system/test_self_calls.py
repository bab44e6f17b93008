"""Issue 10's red-team gap (a) through a running server (real SoftHSM; SQLite and PostgreSQL): once an
account has delegated (EIP-7702), a transaction to its own address runs the delegate's code: an ERC-7821
batch ``execute`` whose inner calls move tokens and value the signer does not decode. Such a self-call
with calldata is counted as uncounted for every asset, so every spend limit, value cap (native included)
and budgeted grant refuses it (``token_call_not_counted``) unless a rule allows it; a self-transfer
without calldata runs no code and is judged as before. JSON fields, ``raw`` and a type-4 transaction that
delegates in the same breath are all covered; every signature that comes back is recovered.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_abi import encode
from eth_account import Account

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, attach_policy, grant, init_installation, make_service, start_server

TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
CAROL = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
DELEGATE = "0x63c0c19a282a1B52b07dD5a65b58948A07DAE32B"
BATCH_MODE = bytes.fromhex("01" + "00" * 31)  # ERC-7821: a batch of calls, revert on failure


def execute_batch(*calls: tuple[str, int, bytes]) -> str:
    """ERC-7821 ``execute(bytes32 mode, bytes executionData)`` with ``executionData = abi.encode(Call[])``."""
    inner = encode(["(address,uint256,bytes)[]"], [list(calls)])
    return "0xe9ae5c53" + encode(["bytes32", "bytes"], [BATCH_MODE, inner]).hex()


def transfer(recipient: str, amount: int) -> bytes:
    return bytes.fromhex("a9059cbb" + recipient[2:].lower().rjust(64, "0") + format(amount, "064x"))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_selfcall"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("selfcall")) / "data", database_url)
        running = start_server(installation)
        try:
            yield running
        finally:
            running.stop()


class Account7702:
    """A service principal with its own key, granted transactions on it, and a policy on the key."""

    def __init__(self, server: Server, name: str, grant_extra: dict[str, Any] | None = None) -> None:
        self.server = server
        service = make_service(server, name)
        self.token = service["credentials"]["access_token"]
        admin = server.installation.admin_token
        status, _, self.key = server.call("POST", "/v1/keys", {"curve": "secp256k1", "label": name}, admin)
        assert status == 201, self.key
        if grant_extra is None:
            grant(server, service["principal"]["id"], self.key["id"], ["sign_transaction"])
        else:
            body = {"principal_id": service["principal"]["id"], "key_id": self.key["id"]}
            status, _, made = server.call(
                "POST", "/v1/grants", {**body, "operations": ["sign_transaction"], **grant_extra}, admin
            )
            assert status == 201, made
        self.address = self.key["address"]
        self.name = name

    def policy(self, *rules: dict[str, Any]) -> None:
        attach_policy(self.server, {"id": f"p-{self.name}", "rules": list(rules)}, key_id=self.key["id"])

    def tx(self, nonce: int, data: str, *, delegate: bool = False) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "type": 4 if delegate else 2,
            "chainId": 1,
            "nonce": nonce,
            "gas": 200000,
            "to": self.address,
            "value": 0,
            "data": data,
            "maxFeePerGas": 3 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        if delegate:
            fields["authorizationList"] = [
                {"chainId": 1, "address": DELEGATE, "nonce": nonce + 1, "yParity": 0, "r": 1, "s": 1}
            ]
        return fields

    def sign(self, body: dict[str, Any]) -> tuple[int, Any]:
        status, _, answer = self.server.call(
            "POST", f"/v1/keys/{self.key['id']}/sign/transaction", body, self.token
        )
        if status == 200:
            assert Account.recover_transaction(answer["raw_transaction"]) == self.address
        return status, answer

    def sign_raw(self, nonce: int, data: str) -> tuple[int, Any]:
        unsigned = b"\x02" + rlp.encode(
            [
                1,
                nonce,
                10**9,
                3 * 10**9,
                200000,
                bytes.fromhex(self.address[2:]),
                0,
                bytes.fromhex(data[2:]),
                [],
            ]
        )
        return self.sign({"raw": "0x" + unsigned.hex()})


def reasons(body: Any) -> list[tuple[str, str]]:
    return [(r["rule_id"], r["code"]) for r in body["decision"]["reasons"]]


SPEND = {
    "id": "token-daily",
    "kind": "spend_limit",
    "effect": "deny",
    "asset": TOKEN,
    "max_value": "1000",
    "window_seconds": 86400,
    "per": "key",
}
DELEGATES = {"id": "delegates", "kind": "delegate_allowlist", "effect": "allow", "delegates": [DELEGATE]}


def test_a_self_call_is_refused_by_a_limit_on_a_token_it_never_names(server: Server, unique: str) -> None:
    account = Account7702(server, f"self-{unique}")
    account.policy(SPEND, DELEGATES)
    # a batch with one call the signer does not decode: nothing of it can be counted
    batch = execute_batch((TOKEN, 0, transfer(BOB, 5)), (BOB, 0, bytes.fromhex("deadbeef")))
    for status, body in (
        account.sign({"transaction": account.tx(0, batch)}),
        account.sign_raw(0, batch),
        account.sign({"transaction": account.tx(0, batch, delegate=True)}),
        # any calldata to itself, not only a batch the signer might read
        account.sign({"transaction": account.tx(0, "0xdeadbeef")}),
    ):
        assert (status, body["code"]) == (403, "policy_denied"), body
        assert reasons(body) == [("token-daily", "token_call_not_counted")]
    # A self-transfer without calldata runs no code: signed as before.
    assert account.sign({"transaction": account.tx(0, "0x")})[0] == 200
    # The same batch sent to another contract is that contract's business (no limit on it).
    other = account.tx(1, batch)
    other["to"] = BOB
    assert account.sign({"transaction": other})[0] == 200


def test_a_native_value_cap_asks_approvers_for_a_self_call(server: Server, unique: str) -> None:
    account = Account7702(server, f"cap-{unique}")
    account.policy(
        {
            "id": "eth-cap",
            "kind": "value_cap",
            "effect": "require_approval",
            "max_value": "1000000000000000000",
            "approval": {"quorum": 1, "group": f"treasury-{unique}", "expires_in_seconds": 600},
        }
    )
    status, body = account.sign({"transaction": account.tx(0, execute_batch((BOB, 0, b"\x01")))})
    assert status == 202 and body["state"] == "pending_approval", body
    status, _, judged = account.server.call(
        "POST",
        "/v1/policy/dry-run",
        {
            "key_id": account.key["id"],
            "operation": "sign_transaction",
            "transaction": account.tx(0, execute_batch((BOB, 0, b"\x01"))),
        },
        account.token,
    )
    assert status == 200 and [r["code"] for r in judged["reasons"]] == ["token_call_not_counted"], judged
    # decoded, the batch's native payments are counted: under the cap it is signed
    assert account.sign({"transaction": account.tx(0, execute_batch((BOB, 10**17, b"")))})[0] == 200


def test_a_budgeted_grant_is_not_used_for_a_self_call(server: Server, unique: str) -> None:
    account = Account7702(server, f"budget-{unique}", {"value_budgets": {"native": "1000000000000000000"}})
    status, body = account.sign({"transaction": account.tx(0, execute_batch((BOB, 1, b"\x01")))})
    assert (status, body["code"]) == (403, "policy_denied"), body
    assert [code for rule_id, code in reasons(body) if rule_id.startswith("grant:")] == [
        "token_call_not_counted"
    ]
    assert account.sign({"transaction": account.tx(0, "0x")})[0] == 200


def test_no_policy_no_limit_nothing_refused(server: Server, unique: str) -> None:
    account = Account7702(server, f"free-{unique}")
    assert account.sign({"transaction": account.tx(0, execute_batch((TOKEN, 0, transfer(BOB, 5))))})[0] == 200


@pytest.fixture
def unique() -> str:
    return secrets.token_hex(4)


def test_a_decoded_batch_is_counted_call_by_call(server: Server, unique: str) -> None:
    account = Account7702(server, f"batch-{unique}")
    account.policy(
        SPEND, {"id": "payees", "kind": "recipient_allowlist", "effect": "deny", "addresses": [BOB]}
    )
    status, body = account.sign(
        {
            "transaction": account.tx(
                0, execute_batch((TOKEN, 0, transfer(BOB, 400)), (TOKEN, 0, transfer(BOB, 500)))
            )
        }
    )
    assert status == 200, body
    # 900 of 1000 spent: 200 more in one batch is over the limit, also through raw
    over = execute_batch((TOKEN, 0, transfer(BOB, 100)), (TOKEN, 0, transfer(BOB, 100)))
    for status, body in (account.sign({"transaction": account.tx(1, over)}), account.sign_raw(1, over)):
        assert (status, body["code"]) == (403, "policy_denied"), body
        assert reasons(body) == [("token-daily", "spend_limit_exceeded")]
    # every inner counterparty is checked against the allowlist
    status, body = account.sign({"transaction": account.tx(1, execute_batch((TOKEN, 0, transfer(CAROL, 1))))})
    assert (status, body["code"]) == (403, "policy_denied") and reasons(body) == [
        ("payees", "recipient_not_allowed")
    ]


def test_a_batch_that_is_not_canonical_is_refused_before_any_policy(server: Server, unique: str) -> None:
    account = Account7702(server, f"strict-{unique}")  # no policy at all
    batch = execute_batch((TOKEN, 0, transfer(BOB, 5)))
    for data in (batch + "00", batch[:-2], execute_batch((TOKEN, 0, transfer(BOB, 5) + b"\x00"))):
        status, body = account.sign({"transaction": account.tx(0, data)})
        assert (status, body["code"], body.get("field")) == (400, "calldata_not_canonical", "data"), body
    assert account.sign({"transaction": account.tx(0, batch)})[0] == 200
