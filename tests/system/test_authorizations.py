"""EIP-7702 authorisations signed on their own, through a real server and SoftHSM token.

A signed authorisation recovers to the key's address by eth-account and an RLP encoding of our own (not
the service's code); the delegate allowlist decides (default deny, unlocked per delegate, denylist and
chain allowlist apply); approvers read the decoded fields; bad input is a stable 4xx that never echoes;
the CLI and the client sign one; and anvil accepts a type-4 transaction carrying an authorisation the
signer signed, after which the key's account runs the delegate's code.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_utils import keccak

from tests.service_harness import (
    SIGNER,
    TREE,
    Server,
    attach_policy,
    grant,
    make_key,
    make_service,
    unlock_policy,
)
from tests.system.support import HANG_GUARD
from tests.system.test_clients import HTTPProvider, Web3, anvil

__all__ = ["anvil"]  # the fixture, shared with the other client tests

DELEGATE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
OTHER = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def authority_of(signed: dict[str, Any]) -> str:
    """Recover the authority with eth-account over a digest computed here, not by the service."""
    preimage = b"\x05" + rlp.encode(
        [int(signed["chainId"], 16), bytes.fromhex(signed["address"][2:]), int(signed["nonce"], 16)]
    )
    vrs = (int(signed["yParity"], 16), int(signed["r"], 16), int(signed["s"], 16))
    return Account._recover_hash(keccak(preimage), vrs=vrs)


def relayer(server: Server, name: str) -> tuple[str, dict[str, Any]]:
    service = make_service(server, name)
    key = make_key(server, label=name)
    grant(server, service["principal"]["id"], key["id"], ["sign_authorization"])
    return service["credentials"]["access_token"], key


def sign(server: Server, token: str, key_id: str, body: Any) -> tuple[int, Any]:
    status, _, answer = server.call("POST", f"/v1/keys/{key_id}/sign/authorization", body, token)
    return status, answer


def test_signed_authorization_recovers_to_the_key(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name)
    attach_policy(server, unlock_policy(f"auth-{unique_name}"[:60], [DELEGATE]), key_id=key["id"])
    for chain_id, nonce in ((31337, 0), (0, 7), ("0x1", "0x2a"), ("10", "18446744073709551615")):
        status, body = sign(
            server, token, key["id"], {"chain_id": chain_id, "delegate": DELEGATE, "nonce": nonce}
        )
        assert status == 200, body
        signed = body["authorization"]
        assert body["signer"] == key["address"] and signed["address"] == DELEGATE
        assert int(signed["chainId"], 16) == int(str(chain_id), 0)
        assert int(signed["nonce"], 16) == int(str(nonce), 0)
        assert authority_of(signed) == key["address"]
        assert int(signed["s"], 16) <= 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
    # A lower-case delegate is the same delegate.
    status, body = sign(server, token, key["id"], {"chain_id": 1, "delegate": DELEGATE.lower(), "nonce": 0})
    assert status == 200 and body["authorization"]["address"] == DELEGATE


def test_the_delegate_allowlist_decides(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name)
    request = {"chain_id": 1, "delegate": DELEGATE, "nonce": 0}
    status, body = sign(server, token, key["id"], request)
    assert status == 403 and body["code"] == "policy_denied", body
    assert any(r["code"] == "delegate_not_allowed" for r in body["reasons"]), body
    attach_policy(
        server,
        {
            "id": f"auth-{unique_name}"[:60],
            "rules": [
                {"id": "delegates", "kind": "delegate_allowlist", "effect": "allow", "delegates": [DELEGATE]},
                {"id": "chains", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1, 31337]},
            ],
        },
        key_id=key["id"],
    )
    assert sign(server, token, key["id"], request)[0] == 200
    status, body = sign(server, token, key["id"], {**request, "delegate": OTHER})
    assert status == 403 and any(r["code"] == "delegate_not_allowed" for r in body["reasons"]), body
    # Chain 0 (any chain) is allowed only where 0 is listed.
    status, body = sign(server, token, key["id"], {**request, "chain_id": 0})
    assert status == 403 and any(r["code"] == "chain_not_allowed" for r in body["reasons"]), body
    # Another operation's grant does not sign authorisations.
    other = make_service(server, f"{unique_name}-o")
    grant(server, other["principal"]["id"], key["id"], ["sign_raw"])
    status, body = sign(server, other["credentials"]["access_token"], key["id"], request)
    assert status == 403, body
    # A dry run names the same decision.
    status, _, judged = server.call(
        "POST",
        "/v1/policy/dry-run",
        {
            "key_id": key["id"],
            "operation": "sign_authorization",
            "authorization": {**request, "delegate": OTHER},
        },
        token,
    )
    assert status == 200 and judged["effect"] == "deny", judged


def test_approvers_read_the_authorization_decoded(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name)
    attach_policy(
        server,
        {
            "id": f"auth-{unique_name}"[:60],
            "rules": [
                {"id": "delegates", "kind": "delegate_allowlist", "effect": "require_approval",
                 "delegates": [DELEGATE],
                 "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600}},
            ],
        },
        key_id=key["id"],
    )  # fmt: skip
    status, body = sign(server, token, key["id"], {"chain_id": 0, "delegate": DELEGATE, "nonce": 3})
    assert status == 202 and body["state"] == "pending_approval", body
    status, _, shown = server.call(
        "GET", f"/v1/approvals/{body['approval']['id']}", token=server.installation.admin_token
    )
    assert status == 200, shown
    view = shown["view"]
    assert view["scheme"] == "eip7702_authorization"
    assert (view["delegate"], view["chain_id"], view["any_chain"], view["nonce"]) == (
        DELEGATE,
        "0",
        True,
        "3",
    )
    assert view["authority"] == key["address"]


@pytest.mark.parametrize(
    "body",
    [
        {"chain_id": 1, "delegate": "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "nonce": 0},  # bad checksum
        {"chain_id": 1, "delegate": DELEGATE, "nonce": 2**64},
        {"chain_id": -1, "delegate": DELEGATE, "nonce": 0},
        {"chain_id": "0xzz", "delegate": DELEGATE, "nonce": 0},
        {"chain_id": 1, "delegate": DELEGATE},
        {"chain_id": 1, "delegate": DELEGATE, "nonce": 0, "extra": "secret-canary"},
        {"chain_id": 1.5, "delegate": DELEGATE, "nonce": 0},
    ],
)
def test_bad_authorizations_are_refused(server: Server, unique_name: str, body: dict[str, Any]) -> None:
    token, key = relayer(server, unique_name)
    status, answer = sign(server, token, key["id"], body)
    assert status in (400, 422) and answer["code"] in (
        "invalid_request", "invalid_field", "missing_field", "unknown_field", "invalid_hex",
        "invalid_address", "value_out_of_range",
    ), answer  # fmt: skip
    assert "secret-canary" not in json.dumps(answer) and "0xzz" not in json.dumps(answer)


def test_other_curves_cannot_sign_authorizations(server: Server, unique_name: str) -> None:
    service = make_service(server, unique_name)
    key = make_key(server, curve="ed25519", label=unique_name)
    grant(server, service["principal"]["id"], key["id"], ["sign_authorization"])
    status, body = sign(
        server,
        service["credentials"]["access_token"],
        key["id"],
        {"chain_id": 1, "delegate": DELEGATE, "nonce": 0},
    )
    assert status == 422 and body["code"] == "unsupported_operation", body


def test_cli_signs_an_authorization(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name)
    attach_policy(server, unlock_policy(f"auth-{unique_name}"[:60], [DELEGATE]), key_id=key["id"])
    env = {**server.installation.env, "SIGNER_SERVER": server.url, "SIGNER_TOKEN": token}
    done = subprocess.run(
        [*SIGNER, "sign", "authorization", "--json", key["id"],
         "--chain-id", "31337", "--delegate", DELEGATE, "--nonce", "0x5"],
        env=env, cwd=TREE, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    signed = json.loads(done.stdout)["authorization"]
    assert authority_of(signed) == key["address"] and signed["nonce"] == "0x5"


def test_anvil_runs_the_delegate_for_the_signer_key(server: Server, unique_name: str, anvil: str) -> None:
    """A sponsor (an anvil dev account) sends a type-4 transaction carrying the signer's authorisation:
    the key's account then holds the 7702 delegation designator to the delegate."""
    token, key = relayer(server, unique_name)
    attach_policy(server, unlock_policy(f"auth-{unique_name}"[:60], [DELEGATE]), key_id=key["id"])
    node = Web3(HTTPProvider(anvil))
    chain_id = node.eth.chain_id
    nonce = node.eth.get_transaction_count(key["address"])
    status, body = sign(
        server, token, key["id"], {"chain_id": chain_id, "delegate": DELEGATE, "nonce": nonce}
    )
    assert status == 200, body
    sponsor = node.eth.accounts[0]
    base_fee = node.eth.get_block("latest")["baseFeePerGas"]
    sent = node.eth.send_transaction(
        {
            "type": 4, "from": sponsor, "to": sponsor, "value": 0, "gas": 100_000, "chainId": chain_id,
            "maxFeePerGas": 2 * base_fee + 10**9, "maxPriorityFeePerGas": 10**9,
            "authorizationList": [body["authorization"]],
        }
    )  # fmt: skip
    assert node.eth.wait_for_transaction_receipt(sent, timeout=HANG_GUARD)["status"] == 1
    code = node.eth.get_code(key["address"])
    assert code == bytes.fromhex("ef0100" + DELEGATE[2:].lower())
