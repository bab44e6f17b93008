"""L-03 and L-04 on PostgreSQL: two server processes share one database, one key and one policy.

Requests spread across both replicas at once must never overshoot a spend limit, and one idempotency
key fired at both must be executed once: every answer is the same stored signature.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests.service_harness import attach_policy, grant, http, init_installation, make_key, make_service
from tests.system.support import events, export_audit

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def tx(nonce: int, value: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": A,
        "value": value,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


@pytest.mark.timeout(240)
def test_two_replicas_never_overshoot_and_execute_an_idempotency_key_once(
    tmp_path: Path, pg_url: str, launch
) -> None:
    installation = init_installation(tmp_path / "data", pg_url)
    a = launch(installation)
    b = launch(installation)
    service = make_service(a, "replicated-spender")
    token = service["credentials"]["access_token"]
    key = make_key(a, "secp256k1", "shared")
    grant(a, service["principal"]["id"], key["id"], ["sign_transaction"])
    attach_policy(
        b,
        {
            "id": "replica-cap",
            "rules": [
                {
                    "id": "daily",
                    "kind": "spend_limit",
                    "effect": "deny",
                    "max_value": "23",
                    "window_seconds": 86400,
                    "per": "key",
                }
            ],
        },
        key_id=key["id"],
    )
    path = f"/v1/keys/{key['id']}/sign/transaction"

    def spend(i: int) -> tuple[int, Any]:
        server = (a, b)[i % 2]
        status, _, body = http("POST", server.url + path, {"transaction": tx(i, 1)}, token)
        return status, body

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(spend, range(60)))
    assert Counter(s for s, _ in results) == {200: 23, 403: 37}
    for status, body in results:
        if status == 200:
            assert Account.recover_transaction(bytes.fromhex(body["raw_transaction"][2:])) == key["address"]

    # The cap is reached; a zero-value transaction with one idempotency key, at both replicas at once.
    def same(i: int) -> tuple[int, Any]:
        server = (a, b)[i % 2]
        status, _, body = http(
            "POST",
            server.url + path,
            {"transaction": tx(999, 0)},
            token,
            headers={"Idempotency-Key": "pay-1"},
        )
        return status, body

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(same, range(20)))
    assert {s for s, _ in answers} == {200}
    assert len({body["raw_transaction"] for _, body in answers}) == 1

    allowed = [
        e
        for e in events(export_audit(a))
        if e.get("kind") == "sign.transaction" and e.get("outcome") == "allowed"
    ]
    # 23 spends and exactly one execution for the idempotency key.
    assert len(allowed) == 24
