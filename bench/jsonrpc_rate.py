"""JSON-RPC against REST on the sign path: the same EIP-1559 transaction signed through
``POST /v1/rpc`` (``eth_signTransaction``) and ``POST /v1/keys/{id}/sign/transaction``, in one run.

    .venv/bin/python bench/jsonrpc_rate.py [--requests N] [--clients C] [--rounds R]

A fresh installation and one server (one worker); C keep-alive aiohttp clients post N requests per
round, REST then JSON-RPC, R rounds, so drifting background load hits both. Prints each round's rate
and the mean of each; every answer must be a signature (an error exits 1) and the last answer of each
round is recovered with eth-account to the key's address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from eth_account import Account

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.service_harness import grant, init_installation, make_key, make_service, start_server

TX = {"type": 2, "chainId": 1, "nonce": 0, "gas": 21000, "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
      "value": "1", "maxFeePerGas": "30000000000", "maxPriorityFeePerGas": "1000000000"}  # fmt: skip
TTL = '{"admin": 3600, "service": 3600, "approver": 3600, "auditor": 3600}'


async def load(url: str, body: bytes, token: str, requests: int, clients: int) -> tuple[float, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent = 0
    last = b""

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal sent, last
        while sent < requests:
            sent += 1
            async with session.post(url, data=body, headers=headers) as response:
                last = await response.read()
                if response.status != 200 or b'"error"' in last:
                    raise SystemExit(f"bench: unexpected answer {response.status}")

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return requests / (time.perf_counter() - started), last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    installation = init_installation(Path(tempfile.mkdtemp()) / "data")
    server = start_server(installation, env={"SIGNER_ACCESS_TOKEN_TTL_SECONDS": TTL})
    try:
        service = make_service(server, "bench-rpc")
        key = make_key(server, label="bench rpc")
        grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
        token = service["credentials"]["access_token"]
        rest = (
            f"{server.url}/v1/keys/{key['id']}/sign/transaction",
            json.dumps({"transaction": TX}).encode(),
        )
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_signTransaction",
            "params": [{**TX, "from": key["address"]}],
        }
        rpc = (f"{server.url}/v1/rpc", json.dumps(call).encode())
        rates: dict[str, list[float]] = {"rest": [], "jsonrpc": []}
        for round_no in range(args.rounds):
            for name, (url, body) in (("rest", rest), ("jsonrpc", rpc)):
                rate, last = asyncio.run(load(url, body, token, args.requests, args.clients))
                answer = json.loads(last)
                raw = answer["raw_transaction"] if name == "rest" else answer["result"]
                if Account.recover_transaction(raw) != key["address"]:
                    raise SystemExit("bench: a signature does not recover to the key")
                rates[name].append(rate)
                print(f"round {round_no + 1} {name:8} {rate:7.0f} signed transactions/s")
        rest_mean, rpc_mean = statistics.mean(rates["rest"]), statistics.mean(rates["jsonrpc"])
        print(f"mean rest {rest_mean:.0f}/s, jsonrpc {rpc_mean:.0f}/s, ratio {rpc_mean / rest_mean:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
