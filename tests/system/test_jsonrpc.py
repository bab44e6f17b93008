"""Ethereum JSON-RPC (``POST /v1/rpc``) against the real server: every method, the clients' spellings of a
transaction, batches, JSON-RPC 2.0 errors, and grants, policy and approvals reaching the caller as errors.
Signatures are checked by eth_account's own recovery, not by the signer's code."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from tests.service_harness import Server, attach_policy, grant, make_key, make_service, unlock_policy

TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
TYPED = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
        "Mail": [{"name": "contents", "type": "string"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "Ether Mail", "chainId": 1},
    "message": {"contents": "Hello"},
}


def rpc(server: Server, body: Any, token: str, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}/v1/rpc", data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode() or "null")


def call(server: Server, token: str, method: str, *params: Any) -> dict[str, Any]:
    status, answer = rpc(server, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}, token)
    assert status == 200 and answer["id"] == 7 and answer["jsonrpc"] == "2.0", answer
    return answer


def audit_tail(server: Server) -> str:
    """The audit log's last 1,000 events, JSON lines (the shared server holds other tests' events too)."""
    admin = server.installation.admin_token
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=admin)
    tail = max(0, int(headers["X-Audit-Head"]) - 1000)
    status, _, events = server.call("GET", f"/v1/audit/events?after={tail}&limit=1000", token=admin)
    assert status == 200 and isinstance(events, str)
    return events


def relayer(server: Server, name: str, operations: list[str]) -> tuple[str, dict[str, Any]]:
    service = make_service(server, name)
    key = make_key(server, label=name)
    grant(server, service["principal"]["id"], key["id"], operations)
    return service["credentials"]["access_token"], key


def test_methods_and_client_spellings(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name, ["sign_transaction", "sign_message", "sign_typed_data"])
    address = key["address"]
    assert call(server, token, "eth_accounts")["result"] == [address]
    assert call(server, token, "health_status")["result"] == "ok"

    base = {"from": address.lower(), "to": TO, "nonce": "0x0", "gas": "21000", "chainId": "0x1", "value": 5}
    shapes = {
        0: {**base, "gasPrice": "0x3b9aca00"},
        1: {**base, "gasPrice": 10**9, "accessList": [[TO, ["0x" + "00" * 32]]]},
        2: {**base, "maxFeePerGas": "0x77359400", "maxPriorityFeePerGas": "1", "input": "0x"},
        4: {
            **base,
            "maxFeePerGas": "2000000000",
            "maxPriorityFeePerGas": "0x1",
            "data": "0x",
            "gasLimit": "21000",
            "authorizationList": [
                {"chainId": "0x1", "address": TO, "nonce": "0x0", "v": "0x1b", "r": "0x1", "s": "0x2"}
            ],
        },
    }
    del shapes[4]["gas"]
    for expected_type, tx in shapes.items():
        if expected_type == 4:
            # EIP-7702 delegates are denied unless a delegate_allowlist lists them: a clear -32003.
            denied = call(server, token, "eth_signTransaction", tx)["error"]
            assert denied["code"] == -32003 and denied["data"]["reasons"], denied
            attach_policy(server, unlock_policy(f"unlock-{unique_name}"[:60], [TO]), key_id=key["id"])
        answer = call(server, token, "eth_signTransaction", tx)
        assert "result" in answer, (expected_type, answer)
        raw = bytes.fromhex(answer["result"][2:])
        assert (raw[0] if raw[0] < 0x7F else 0) == expected_type
        assert Account.recover_transaction(raw) == address

    signature = call(server, token, "eth_sign", address, "0x" + b"hello".hex())["result"]
    assert Account.recover_message(encode_defunct(b"hello"), signature=signature) == address
    signature = call(server, token, "personal_sign", "0x" + b"hi".hex(), address)["result"]
    assert Account.recover_message(encode_defunct(b"hi"), signature=signature) == address
    for method, document in (("eth_signTypedData_v4", json.dumps(TYPED)), ("eth_signTypedData", TYPED)):
        signature = call(server, token, method, address, document)["result"]
        assert Account.recover_message(encode_typed_data(full_message=TYPED), signature=signature) == address


def test_batches_and_errors(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name, ["sign_message"])
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"},
        {"jsonrpc": "2.0", "method": "eth_accounts"},  # a notification: run, not answered
        {"jsonrpc": "2.0", "id": "b", "method": "eth_nope", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_sign", "params": [key["address"], "not-hex"]},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_sign", "params": [TO, "0x00"]},
        {"jsonrpc": "2.0", "id": 5, "method": "eth_signTransaction", "params": [{"from": key["address"]}]},
        {"id": 6, "method": "eth_accounts"},
        17,
    ]
    status, answers = rpc(server, batch, token)
    assert status == 200 and len(answers) == 7, answers
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert by_id[1]["result"] == [key["address"]]
    assert by_id["b"]["error"]["code"] == -32601
    assert by_id[3]["error"]["code"] == -32602 and by_id[3]["error"]["data"]["field"] == "data"
    assert by_id[4]["error"]["code"] == -32000  # not a key this caller holds: on record, like REST's 404
    refused = [
        json.loads(json.loads(line)["event"]) for line in audit_tail(server).splitlines() if line.strip()
    ]
    assert any(
        e["kind"] == "request.refused"
        and e.get("action") == "eth_sign"
        and e["error"]["code"] == "key_not_found"
        and e["actor"]["name"] == unique_name
        for e in refused
    )
    # no sign_transaction grant: refused as a denial, by its reason
    assert by_id[5]["error"]["code"] in (-32602, -32003), by_id[5]
    assert by_id[6]["error"]["code"] == -32600
    assert [a["error"]["code"] for a in answers if a["id"] is None] == [-32600]
    assert "not-hex" not in json.dumps(answers)

    status, answer = rpc(server, None, token, raw=b'{"jsonrpc": "2.0", "id": 1,')
    assert status == 400 and answer["error"]["code"] == -32700 and answer["id"] is None
    assert answer["code"] == "malformed_json"  # also a problem document, like every 400
    status, answer = rpc(server, "eth_accounts", token)
    assert status == 400 and answer["error"]["code"] == -32600 and answer["code"] == "invalid_jsonrpc_body"
    status, answer = rpc(server, [], token)
    assert status == 200 and answer["error"]["code"] == -32600
    status, answer = rpc(server, {"jsonrpc": "2.0", "method": "eth_accounts"}, token)
    assert status == 204 and answer is None
    status, problem = rpc(server, {"jsonrpc": "2.0", "id": 1, "method": "eth_accounts"}, "sat_wrong")
    assert status == 401 and problem["code"]


def test_policy_denial_and_approval_reach_the_caller(server: Server, unique_name: str) -> None:
    token, key = relayer(server, unique_name, ["sign_transaction"])
    attach_policy(
        server,
        {
            "id": f"rpc-{unique_name}"[:60],
            "rules": [
                {"id": "mainnet", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]},
                {
                    "id": "big",
                    "kind": "value_cap",
                    "effect": "require_approval",
                    "max_value": "1000",
                    "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600},
                },
            ],
        },
        key_id=key["id"],
    )
    tx = {"from": key["address"], "to": TO, "nonce": 0, "gas": 21000, "gasPrice": 1, "chainId": 1}
    denied = call(server, token, "eth_signTransaction", {**tx, "chainId": 5})["error"]
    assert denied["code"] == -32003 and denied["data"]["code"] == "policy_denied", denied
    assert any(r.get("rule") == "mainnet" or "mainnet" in json.dumps(r) for r in denied["data"]["reasons"])
    waiting = call(server, token, "eth_signTransaction", {**tx, "value": 10**6})["error"]
    assert waiting["code"] == -32010, waiting
    approval = waiting["data"]["approval"]
    assert approval["id"] and waiting["data"]["wait"] == f"GET {approval['result_url']}?wait=60"
    status, _, view = server.call("GET", approval["result_url"], token=token)
    assert status == 202 and view["state"] == "pending", view
    assert "result" in call(server, token, "eth_signTransaction", {**tx, "value": 10})


def test_another_callers_key_looks_missing(server: Server, unique_name: str) -> None:
    """An address the endpoint has already resolved (for its owner) answers a caller without a grant on
    it exactly as an address of no key at all."""
    owner_token, key = relayer(server, unique_name, ["sign_message"])
    assert "result" in call(server, owner_token, "eth_sign", key["address"], "0x00")
    stranger_token, _ = relayer(server, unique_name + "-x", ["sign_message"])
    theirs = call(server, stranger_token, "eth_sign", key["address"], "0x00")["error"]
    nobody = call(server, stranger_token, "eth_sign", TO, "0x00")["error"]
    assert (
        theirs
        == nobody
        == {
            "code": -32000,
            "message": "no key you hold a grant on has that address",
            "data": {"code": "key_not_found"},
        }
    )
