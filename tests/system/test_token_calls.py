"""Issue 10 section 1 through a running server (real SoftHSM; SQLite and PostgreSQL): token calls that
do not decode strictly are refused, and permits are counted.

The attack that found the hole: ERC-20 ``transfer`` calldata with one extra byte, 32 trailing bytes, or
dirty high bytes in the address word was not decoded, so it counted as nothing and its recipient was
never checked. Each policy it walked around is here (token spend limit, token value cap, approval
requirement, recipient denylist naming the token recipient), with the canonical call judged as before
and every mutation refused with 400 ``calldata_not_canonical``, also on a key with no policy at all,
through the serialised (``raw``) entry point and the dry run. An EIP-2612 ``Permit`` for 2**256-1
under an allowlisted domain is refused by the token's value cap; a smaller one is signed. Every
signature that comes back is recovered with eth-account.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_account.messages import encode_typed_data

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, attach_policy, grant, init_installation, make_service, start_server

TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
CAROL = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
ALL_OPS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]


def transfer_data(recipient: str, amount: int) -> str:
    return "0xa9059cbb" + recipient[2:].lower().rjust(64, "0") + format(amount, "064x")


def mutations(recipient: str, amount: int) -> dict[str, str]:
    """The attack's three shapes, and the class around them: each one a Solidity token would execute."""
    canonical = transfer_data(recipient, amount)
    return {
        "one_extra_byte": canonical + "00",
        "32_trailing_bytes": canonical + "00" * 32,
        "dirty_address_high_bytes": "0xa9059cbb" + "ff" * 12 + canonical[2 + 8 + 24 :],
        "short": canonical[:-2],
    }


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def token_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_calldata"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("calldata")) / "data", database_url)
        server = start_server(installation)
        try:
            yield server
        finally:
            server.stop()


class Desk:
    """A service principal with its own key, granted every signing operation on it."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        service = make_service(server, name)
        self.token = service["credentials"]["access_token"]
        admin = server.installation.admin_token
        status, _, self.key = server.call(
            "POST", "/v1/keys", {"curve": "secp256k1", "label": name[:60]}, admin
        )
        assert status == 201, self.key
        grant(server, service["principal"]["id"], self.key["id"], ALL_OPS)
        self.name = name

    def policy(self, *rules: dict[str, Any]) -> None:
        attach_policy(self.server, {"id": f"p-{self.name[:50]}", "rules": list(rules)}, key_id=self.key["id"])

    def sign(self, nonce: int, data: str) -> tuple[int, Any]:
        status, _, body = self.server.call(
            "POST",
            f"/v1/keys/{self.key['id']}/sign/transaction",
            {"transaction": token_tx(nonce, data)},
            self.token,
        )
        if status == 200:
            raw = bytes.fromhex(body["raw_transaction"][2:])
            assert Account.recover_transaction(raw) == self.key["address"] == body["signer"]
        return status, body

    def sign_raw(self, nonce: int, data: str) -> tuple[int, Any]:
        unsigned = b"\x02" + rlp.encode(
            [1, nonce, 10**9, 3 * 10**9, 90000, bytes.fromhex(TOKEN[2:]), 0, bytes.fromhex(data[2:]), []]
        )
        status, _, body = self.server.call(
            "POST",
            f"/v1/keys/{self.key['id']}/sign/transaction",
            {"raw": "0x" + unsigned.hex()},
            self.token,
        )
        return status, body

    def dry_run(self, data: str) -> tuple[int, Any]:
        status, _, body = self.server.call(
            "POST",
            "/v1/policy/dry-run",
            {"key_id": self.key["id"], "operation": "sign_transaction", "transaction": token_tx(0, data)},
            self.token,
        )
        return status, body

    def sign_typed(self, typed: dict[str, Any]) -> tuple[int, Any]:
        status, _, body = self.server.call(
            "POST", f"/v1/keys/{self.key['id']}/sign/typed-data", {"typed_data": typed}, self.token
        )
        if status == 200:
            signable = encode_typed_data(full_message=typed)
            signer = Account.recover_message(signable, signature=bytes.fromhex(body["signature"][2:]))
            assert signer == self.key["address"]
        return status, body


def token_tx(nonce: int, data: str) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 90000,
        "to": TOKEN,
        "value": 0,
        "data": data,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


@pytest.fixture
def desk(token_server: Server, unique_name: str) -> Desk:
    return Desk(token_server, unique_name)


def assert_not_canonical(status: int, body: Any) -> None:
    assert status == 400, body
    assert body["code"] == "calldata_not_canonical", body
    assert body.get("field") == "data"
    assert "raw_transaction" not in body and "signature" not in body


def assert_mutations_refused(desk: Desk, recipient: str, amount: int, nonce: int) -> None:
    for data in mutations(recipient, amount).values():
        assert_not_canonical(*desk.sign(nonce, data))
        assert_not_canonical(*desk.sign_raw(nonce, data))


def test_without_any_policy_a_non_canonical_token_call_is_refused(desk: Desk) -> None:
    assert desk.sign(0, transfer_data(BOB, 5))[0] == 200
    assert_mutations_refused(desk, BOB, 5, 1)
    assert_not_canonical(*desk.dry_run(mutations(BOB, 5)["one_extra_byte"]))


def test_token_spend_limit(desk: Desk) -> None:
    desk.policy(
        {
            "id": "usdc",
            "kind": "spend_limit",
            "effect": "deny",
            "max_value": "100",
            "asset": TOKEN,
            "window_seconds": 3600,
            "per": "key",
        }
    )
    assert desk.sign(0, transfer_data(BOB, 60))[0] == 200
    # Over the limit: each mutation that used to count as nothing is refused before the HSM.
    assert_mutations_refused(desk, BOB, 41, 1)
    status, body = desk.sign(1, transfer_data(BOB, 41))
    assert status == 403 and body["reasons"][0]["code"] == "spend_limit_exceeded", body
    # Approvals count like transfers: an unbounded approve and an increaseAllowance over the rest.
    increase = "0x39509351" + BOB[2:].lower().rjust(64, "0") + format(41, "064x")
    status, body = desk.sign(1, increase)
    assert status == 403 and body["reasons"][0]["code"] == "spend_limit_exceeded", body
    assert desk.sign(1, transfer_data(BOB, 40))[0] == 200


def test_token_value_cap(desk: Desk) -> None:
    desk.policy({"id": "cap", "kind": "value_cap", "effect": "deny", "max_value": "10", "asset": TOKEN})
    assert desk.sign(0, transfer_data(BOB, 10))[0] == 200
    assert_mutations_refused(desk, BOB, 11, 1)
    status, body = desk.sign(1, transfer_data(BOB, 11))
    assert status == 403 and body["reasons"][0]["code"] == "value_cap_exceeded", body
    # setApprovalForAll(operator, true) grants everything: any cap on the contract refuses it.
    for_all = "0xa22cb465" + BOB[2:].lower().rjust(64, "0") + format(1, "064x")
    status, body = desk.sign(1, for_all)
    assert status == 403 and body["reasons"][0]["code"] == "value_cap_exceeded", body
    dirty_bool = "0xa22cb465" + BOB[2:].lower().rjust(64, "0") + format(2, "064x")
    assert_not_canonical(*desk.sign(1, dirty_bool))


def test_approval_requirement(desk: Desk) -> None:
    desk.policy(
        {
            "id": "big",
            "kind": "value_cap",
            "effect": "require_approval",
            "max_value": "10",
            "asset": TOKEN,
            "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 3600},
        }
    )
    assert desk.sign(0, transfer_data(BOB, 10))[0] == 200
    # A mutation is refused outright: it neither slips through nor waits for approvers.
    assert_mutations_refused(desk, BOB, 11, 1)
    status, body = desk.sign(1, transfer_data(BOB, 11))
    assert status == 202 and body["state"] == "pending_approval", body
    # What approvers read: the decoded call, its counterparty and the amount counted.
    status, _, shown = desk.server.call(
        "GET", f"/v1/approvals/{body['approval']['id']}", token=desk.server.installation.admin_token
    )
    assert status == 200, shown
    call = shown["view"]["token_call"]
    assert (call["method"], call["recipient"], call["amount"]) == ("transfer", BOB, "11"), call


def test_recipient_denylist_naming_the_token_recipient(desk: Desk) -> None:
    desk.policy({"id": "sanctioned", "kind": "recipient_denylist", "effect": "deny", "addresses": [BOB]})
    assert desk.sign(0, transfer_data(CAROL, 5))[0] == 200
    status, body = desk.sign(1, transfer_data(BOB, 5))
    assert status == 403 and body["reasons"][0]["code"] == "recipient_denied", body
    assert_mutations_refused(desk, BOB, 5, 1)
    for data in mutations(BOB, 5).values():
        assert_not_canonical(*desk.dry_run(data))
    status, body = desk.dry_run(transfer_data(BOB, 5))
    assert status == 200 and body["effect"] == "deny", body


def permit(value: int) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": TOKEN},
        "message": {"owner": CAROL, "spender": BOB, "value": value, "nonce": 0, "deadline": 2**40},
    }


def test_a_permit_for_the_maximum_is_counted_against_the_token_value_cap(desk: Desk) -> None:
    desk.policy(
        {
            "id": "domains",
            "kind": "typed_data_domain_allowlist",
            "effect": "deny",
            "domains": [{"chain_id": 1, "verifying_contract": TOKEN}],
        },
        {"id": "cap", "kind": "value_cap", "effect": "deny", "max_value": "1000", "asset": TOKEN},
    )
    status, body = desk.sign_typed(permit(2**256 - 1))
    assert status == 403, body
    assert [r["code"] for r in body["reasons"]] == ["value_cap_exceeded"], body
    status, body = desk.sign_typed(permit(1000))
    assert status == 200, body
    # A "Permit" that is not exactly a permit shape the service knows is refused, never signed uncounted.
    odd = permit(5)
    odd["types"]["Permit"].append({"name": "extra", "type": "uint256"})
    odd["message"]["extra"] = 1
    status, body = desk.sign_typed(odd)
    assert status == 400 and body["code"] == "permit_not_canonical", body


def test_a_permit_spender_on_the_denylist_is_refused(desk: Desk) -> None:
    desk.policy({"id": "sanctioned", "kind": "recipient_denylist", "effect": "deny", "addresses": [BOB]})
    status, body = desk.sign_typed(permit(1))
    assert status == 403 and body["reasons"][0]["code"] == "recipient_denied", body


# Calls to a limited token that the signer does not decode: each one a real way to move tokens.
UNDECODED_CALLS = {
    # ERC-677 transferAndCall(address,uint256,bytes) (LINK): moves tokens, no transfer selector.
    "transferAndCall": "0x4000aea0"
    + BOB[2:].lower().rjust(64, "0")
    + format(10**6, "064x")
    + format(96, "064x")
    + format(0, "064x"),
    # ERC-777 send(address,uint256,bytes).
    "erc777_send": "0x9bd9bbc6"
    + BOB[2:].lower().rjust(64, "0")
    + format(10**6, "064x")
    + format(96, "064x")
    + format(0, "064x"),
    # multicall(bytes[]) wrapping a transfer: the token's own batch entry point.
    "multicall": "0xac9650d8"
    + format(32, "064x")
    + format(1, "064x")
    + format(32, "064x")
    + format(68, "064x")
    + transfer_data(BOB, 10**6)[2:]
    + "00" * 28,
    # Old OpenZeppelin increaseApproval(address,uint256).
    "increaseApproval": "0xd73dd623" + BOB[2:].lower().rjust(64, "0") + format(10**6, "064x"),
    # A fallback call: calldata shorter than a selector.
    "fallback": "0x01",
}


def delegation() -> dict[str, Any]:
    """A governance-token delegation (COMP-style): EIP-712 data verified by the token, not a permit."""
    return {
        "types": {
            "EIP712Domain": permit(0)["types"]["EIP712Domain"],
            "Delegation": [
                {"name": "delegatee", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "expiry", "type": "uint256"},
            ],
        },
        "primaryType": "Delegation",
        "domain": {"name": "Token", "version": "1", "chainId": 1, "verifyingContract": TOKEN},
        "message": {"delegatee": BOB, "nonce": 0, "expiry": 2**40},
    }


def transfer_with_authorization(value: int) -> dict[str, Any]:
    """EIP-3009 (USDC): a signed transfer anyone may submit; no permit, yet it moves the signer's tokens."""
    return {
        "types": {
            "EIP712Domain": permit(0)["types"]["EIP712Domain"],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": TOKEN},
        "message": {
            "from": CAROL,
            "to": BOB,
            "value": value,
            "validAfter": 0,
            "validBefore": 2**40,
            "nonce": "0x" + "11" * 32,
        },
    }


@pytest.mark.parametrize(
    "limit",
    [
        {"kind": "spend_limit", "effect": "deny", "window_seconds": 3600, "per": "key"},
        {"kind": "value_cap", "effect": "deny"},
    ],
    ids=["spend_limit", "value_cap"],
)
def test_a_call_to_a_limited_token_that_does_not_decode_is_refused(desk: Desk, limit: dict[str, Any]) -> None:
    desk.policy({"id": "token-limit", "max_value": "100", "asset": TOKEN, **limit})
    for name, data in UNDECODED_CALLS.items():
        status, body = desk.sign(0, data)
        assert status == 403, (name, body)
        assert [r["code"] for r in body["reasons"]] == ["token_call_not_counted"], (name, body)
        status, body = desk.dry_run(data)
        assert status == 200 and body["effect"] == "deny", (name, body)
    status, body = desk.sign_typed(delegation())
    assert status == 403 and [r["code"] for r in body["reasons"]] == ["token_call_not_counted"], body
    # An EIP-3009 transfer authorisation is decoded: its value is counted like any transfer.
    status, body = desk.sign_typed(transfer_with_authorization(10**6))
    assert status == 403 and [r["code"] for r in body["reasons"]] == [f"{limit['kind']}_exceeded"], body
    status, body = desk.sign_typed(transfer_with_authorization(100))
    assert status == 200, body
    # What the signer can count is still judged by amount; calls to other contracts are not the token's.
    assert desk.sign(0, transfer_data(BOB, 100 if limit["kind"] == "value_cap" else 0))[0] == 200
    other = {**token_tx(1, UNDECODED_CALLS["transferAndCall"]), "to": CAROL}
    status, _, body = desk.server.call(
        "POST", f"/v1/keys/{desk.key['id']}/sign/transaction", {"transaction": other}, desk.token
    )
    assert status == 200, body


def test_a_grant_budgeting_a_token_does_not_cover_an_undecoded_call_to_it(
    token_server: Server, unique_name: str
) -> None:
    admin = token_server.installation.admin_token
    service = make_service(token_server, unique_name)
    status, _, key = token_server.call(
        "POST", "/v1/keys", {"curve": "secp256k1", "label": unique_name[:60]}, admin
    )
    assert status == 201, key
    status, _, body = token_server.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": service["principal"]["id"],
            "key_id": key["id"],
            "operations": ["sign_transaction"],
            "value_budgets": {"native": "0", TOKEN: "1000"},
        },
        admin,
    )
    assert status == 201, body
    token = service["credentials"]["access_token"]
    path = f"/v1/keys/{key['id']}/sign/transaction"
    status, _, body = token_server.call(
        "POST", path, {"transaction": token_tx(0, transfer_data(BOB, 10))}, token
    )
    assert status == 200, body
    for name, data in UNDECODED_CALLS.items():
        status, _, body = token_server.call("POST", path, {"transaction": token_tx(1, data)}, token)
        assert status == 403, (name, body)
        assert "token_call_not_counted" in [r["code"] for r in body["reasons"]], (name, body)


def test_the_allowlist_sees_native_value_sent_beside_a_token_call(desk: Desk) -> None:
    """transfer(listed payee) to a contract that is not listed, with native value: the value goes to the
    contract, so the allowlist refuses it; the same call without value is judged by its payee."""
    desk.policy({"id": "payees", "kind": "recipient_allowlist", "effect": "deny", "addresses": [BOB]})
    assert desk.sign(0, transfer_data(BOB, 5))[0] == 200
    paying = {**token_tx(1, transfer_data(BOB, 5)), "value": 10**18}
    status, _, body = desk.server.call(
        "POST", f"/v1/keys/{desk.key['id']}/sign/transaction", {"transaction": paying}, desk.token
    )
    assert status == 403 and [r["code"] for r in body["reasons"]] == ["recipient_not_allowed"], body
    status, body = desk.sign(1, transfer_data(CAROL, 5))
    assert status == 403 and [r["code"] for r in body["reasons"]] == ["recipient_not_allowed"], body


def test_an_eip3009_transfer_is_checked_against_recipient_lists(desk: Desk) -> None:
    desk.policy({"id": "payees", "kind": "recipient_allowlist", "effect": "deny", "addresses": [CAROL]})
    status, body = desk.sign_typed(transfer_with_authorization(5))  # pays BOB
    assert status == 403 and [r["code"] for r in body["reasons"]] == ["recipient_not_allowed"], body
