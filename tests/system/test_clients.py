"""Real clients on a real node: web3.py and ethers v6 pointed at the signer's JSON-RPC endpoint, anvil (from
npm, offline) as the chain. The signer's addresses are funded from anvil's dev accounts; transactions of
types 0, 1, 2 and 4 signed through the signer are mined by anvil and move balances; ethers verifies the
typed data and messages the signer signed; a policy denial and an approval wait reach each client as
errors that say so. Installed by ``scripts/setup --test`` (tests/js/package.json, web3 in the test extra).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# web3 is in the test extra and tests/js is installed by scripts/setup --test (scripts/test runs it):
# prerequisites of the suite, so a missing one fails here instead of skipping silently.
from eth_account import Account
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3RPCError

from tests.service_harness import (
    TREE,
    Server,
    attach_policy,
    free_port,
    grant,
    make_key,
    make_service,
    unlock_policy,
)
from tests.system.support import HANG_GUARD, wait_until

JS = TREE / "tests" / "js"
ANVIL = JS / "node_modules" / ".bin" / "anvil"

DELEGATE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[str]:
    if not ANVIL.exists():
        pytest.fail("run scripts/setup --test: it installs tests/js (anvil, ethers) with npm ci")
    port = free_port()
    log = open(tmp_path / "anvil.log", "w", encoding="utf-8")
    process = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    node = Web3(HTTPProvider(url, request_kwargs={"timeout": 5}))

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError((tmp_path / "anvil.log").read_text())
        try:
            return node.eth.chain_id == 31337
        except OSError:  # not listening yet (requests.ConnectionError is an OSError)
            return False

    try:
        wait_until(up, HANG_GUARD, "anvil to answer")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def relayer(server: Server, name: str, operations: list[str]) -> tuple[str, dict[str, Any]]:
    service = make_service(server, name)
    key = make_key(server, label=name)
    grant(server, service["principal"]["id"], key["id"], operations)
    return service["credentials"]["access_token"], key


def fund(node: Web3, address: str, wei: int) -> None:
    tx = node.eth.send_transaction({"from": node.eth.accounts[0], "to": address, "value": wei})
    assert node.eth.wait_for_transaction_receipt(tx, timeout=HANG_GUARD)["status"] == 1


def post(server: Server, token: str, method: str, params: list[Any]) -> dict[str, Any]:
    call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    request = urllib.request.Request(f"{server.url}/v1/rpc", data=json.dumps(call).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=HANG_GUARD) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def through_signer(server: Server, token: str) -> Web3:
    # request_kwargs headers replace web3.py's own, Content-Type included.
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return Web3(HTTPProvider(f"{server.url}/v1/rpc", request_kwargs={"headers": headers, "timeout": 30}))


def test_web3py_sends_every_type_through_the_signer(server: Server, unique_name: str, anvil: str) -> None:
    token, key = relayer(server, unique_name, ["sign_transaction", "sign_message", "sign_typed_data"])
    attach_policy(server, unlock_policy(f"unlock-{unique_name}"[:60], [DELEGATE]), key_id=key["id"])
    node = Web3(HTTPProvider(anvil))
    signer = through_signer(server, token)
    address = signer.eth.accounts[0]
    assert address == key["address"]
    fund(node, address, 10**19)

    recipient = Account.create().address
    chain_id = node.eth.chain_id
    base_fee = node.eth.get_block("latest")["baseFeePerGas"]
    authority = Account.create()
    sent = 0
    for tx_type in (0, 1, 2, 4):
        tx: dict[str, Any] = {
            "from": address,
            "to": recipient,
            "value": 1000 + tx_type,
            "gas": 100_000,
            "nonce": node.eth.get_transaction_count(address),
            "chainId": chain_id,
        }
        if tx_type in (0, 1):
            tx["gasPrice"] = hex(2 * base_fee)
        if tx_type == 1:
            tx["accessList"] = [{"address": recipient, "storageKeys": []}]
        if tx_type in (2, 4):
            tx.update(maxFeePerGas=hex(2 * base_fee + 10**9), maxPriorityFeePerGas=hex(10**9))
        if tx_type == 4:
            auth = authority.sign_authorization({"chainId": chain_id, "address": DELEGATE, "nonce": 0})
            tx["authorizationList"] = [
                {"chainId": hex(chain_id), "address": DELEGATE, "nonce": "0x0",
                 "yParity": hex(auth.y_parity), "r": hex(auth.r), "s": hex(auth.s)}
            ]  # fmt: skip
        # web3.py's w3.eth.sign_transaction expects geth's {raw, tx}; Web3Signer's answer is the raw hex.
        raw = signer.manager.request_blocking("eth_signTransaction", [tx])
        receipt = node.eth.wait_for_transaction_receipt(
            node.eth.send_raw_transaction(raw), timeout=HANG_GUARD
        )
        assert receipt["status"] == 1 and receipt["type"] == tx_type and receipt["from"] == address
        sent += 1000 + tx_type
    assert node.eth.get_balance(recipient) == sent
    assert node.eth.get_code(authority.address).hex().startswith("ef0100")  # the 7702 delegation landed

    message_signature = signer.eth.sign(address, text="hello")
    assert Account.recover_message(_defunct(b"hello"), signature=message_signature) == address


def _defunct(data: bytes) -> Any:
    from eth_account.messages import encode_defunct

    return encode_defunct(data)


def test_web3py_sees_denials_and_approval_waits(server: Server, unique_name: str, anvil: str) -> None:
    token, key = relayer(server, unique_name, ["sign_transaction"])
    attach_policy(
        server,
        {
            "id": f"clients-{unique_name}"[:60],
            "rules": [
                {"id": "local-chain-only", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [31337]},
                {"id": "big", "kind": "value_cap", "effect": "require_approval", "max_value": "1000",
                 "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600}},
            ],
        },
        key_id=key["id"],
    )  # fmt: skip
    signer = through_signer(server, token)
    tx = {"from": key["address"], "to": DELEGATE, "value": 1, "gas": 21000, "gasPrice": 1, "nonce": 0}
    with pytest.raises(Web3RPCError) as denied:
        signer.manager.request_blocking("eth_signTransaction", [{**tx, "chainId": 1}])
    assert "denied" in str(denied.value) and "local-chain-only" in str(denied.value)
    with pytest.raises(Web3RPCError) as waiting:
        signer.manager.request_blocking("eth_signTransaction", [{**tx, "chainId": 31337, "value": 10**6}])
    assert "approval required" in str(waiting.value) and "/v1/approvals/" in str(waiting.value)


def test_ethers_json_rpc_signer(server: Server, unique_name: str, anvil: str) -> None:
    token, key = relayer(server, unique_name, ["sign_transaction", "sign_message", "sign_typed_data"])
    attach_policy(
        server,
        {"id": f"ethers-{unique_name}"[:60],
         "rules": [{"id": "local-only", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [31337]},
                   {"id": "big", "kind": "value_cap", "effect": "require_approval", "max_value": "100000",
                    "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600}}]},
        key_id=key["id"],
    )  # fmt: skip
    fund(Web3(HTTPProvider(anvil)), key["address"], 10**19)
    env = {
        **os.environ,
        "SIGNER_RPC_URL": f"{server.url}/v1/rpc",
        "SIGNER_TOKEN": token,
        "ANVIL_URL": anvil,
        "SIGNER_ADDRESS": key["address"],
        "DENIED_CHAIN_ID": "1",
    }
    done = subprocess.run(
        ["node", str(JS / "ethers_client.mjs")],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 3,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    address = key["address"]
    assert out["accounts"] == [address]
    assert out["recoveredFrom"] == address and out["receiptStatus"] == 1
    assert out["recipientBalance"] == "12345"
    assert out["typedDataSigner"] == address and out["messageSigner"] == address
    assert out["denied"]["code"] == -32003 and out["denied"]["data"]["code"] == "policy_denied", out["denied"]
    waiting = out["waiting"]
    assert waiting["code"] == -32010 and waiting["message"].startswith("approval required"), waiting
    assert waiting["data"]["approval"]["id"] and waiting["data"]["wait"].startswith("GET /v1/approvals/")


@pytest.mark.parametrize("workers", [1, 2])
def test_upstream_send_fills_signs_submits_and_keeps_nonces_gapless(
    own_installation: Any, launch: Any, anvil: str, unique_name: str, workers: int
) -> None:
    """matrix L-06: with eth_upstream_url, eth_sendTransaction fills nonce, gas and fees from the node,
    checks the chain id, signs under policy and submits; other methods are proxied; 100 concurrent sends
    from one address get nonces 0..99 once each, all mined."""
    # 100 sends from one address are serialised: the last one waits for 99 others, beyond the default
    # 5 s request deadline on a loaded machine.
    # With two workers, each keeps its own count: a nonce the other took is retried with the next one.
    server = launch(
        own_installation,
        workers=workers,
        env={"SIGNER_ETH_UPSTREAM_URL": anvil, "SIGNER_REQUEST_DEADLINE_SECONDS": "60"},
    )
    token, key = relayer(server, unique_name, ["sign_transaction"])
    address = key["address"]
    node = Web3(HTTPProvider(anvil))
    fund(node, address, 10**20)
    signer = through_signer(server, token)
    assert signer.eth.chain_id == 31337 and signer.eth.block_number >= 1  # proxied to anvil

    recipient = Account.create().address
    first = signer.eth.send_transaction({"from": address, "to": recipient, "value": 7})
    receipt = signer.eth.wait_for_transaction_receipt(first, timeout=HANG_GUARD)
    assert receipt["status"] == 1 and receipt["type"] == 2 and node.eth.get_balance(recipient) == 7
    # web3.py checks the chain id itself; the signer checks it for any client.
    mismatch = post(server, token, "eth_sendTransaction", [{"from": address, "to": recipient, "chainId": 1}])
    assert mismatch["error"]["data"] == {"code": "chain_id_mismatch", "field": "chainId"}, mismatch
    with pytest.raises(Web3RPCError):
        signer.manager.request_blocking("anvil_setBalance", [address, "0x1"])  # test-node controls stay out

    def send(i: int) -> str:
        call = {"jsonrpc": "2.0", "id": i, "method": "eth_sendTransaction",
                "params": [{"from": address, "to": recipient, "value": hex(100 + i)}]}  # fmt: skip
        request = urllib.request.Request(
            f"{server.url}/v1/rpc", data=json.dumps(call).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=HANG_GUARD) as response:
            answer = json.loads(response.read())
        assert "result" in answer, answer
        return str(answer["result"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        hashes = list(pool.map(send, range(100)))
    assert len(set(hashes)) == 100
    nonces = sorted(node.eth.get_transaction(h)["nonce"] for h in hashes)
    assert nonces == list(range(1, 101))  # the first send above took nonce 0
    assert all(node.eth.wait_for_transaction_receipt(h, timeout=HANG_GUARD)["status"] == 1 for h in hashes)
    assert node.eth.get_transaction_count(address) == 101
    assert node.eth.get_balance(recipient) == 7 + sum(100 + i for i in range(100))
