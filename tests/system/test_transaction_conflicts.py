"""F-08: PostgreSQL aborts the transaction that records a signature (serialization failure, deadlock).

A trigger on the ledger raises SQLSTATE 40001 or 40P01 for the first N inserts (a sequence counts them:
``nextval`` is not rolled back with the failed transaction). The store retries the whole batch a
bounded number of times; the caller gets its signature once the transaction commits, and the database
holds exactly one allowed audit event and one ledger row per signature. Past the retry budget the
caller gets 503 and nothing is recorded as allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests.dbfixtures import pg_execute, run_sync
from tests.service_harness import attach_policy, grant, init_installation, make_key, make_service
from tests.system.support import events, export_audit

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": A,
        "value": 7,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }


def inject(pg_url: str, failures: int, sqlstate: str) -> None:
    run_sync(
        lambda: pg_execute(
            pg_url,
            "DROP SEQUENCE IF EXISTS f08_count",
            "CREATE SEQUENCE f08_count",
            f"""
            CREATE OR REPLACE FUNCTION f08_fail() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('f08_count') <= {failures} THEN
                    RAISE EXCEPTION 'injected conflict' USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NEW;
            END $$
            """,
            "DROP TRIGGER IF EXISTS f08 ON ledger",
            "CREATE TRIGGER f08 BEFORE INSERT ON ledger FOR EACH STATEMENT EXECUTE FUNCTION f08_fail()",
        )
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_aborted_transactions_are_retried_whole_and_recorded_once(
    tmp_path: Path, pg_url: str, launch, sqlstate: str
) -> None:
    installation = init_installation(tmp_path / "data", pg_url)
    server = launch(installation)
    service = make_service(server, "f08-relayer")
    token = service["credentials"]["access_token"]
    key = make_key(server, "secp256k1", "f08")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
    limit = {
        "kind": "spend_limit",
        "effect": "deny",
        "max_value": "1000",
        "window_seconds": 3600,
        "per": "key",
    }
    attach_policy(server, {"id": "f08", "rules": [{"id": "cap", **limit}]}, key_id=key["id"])
    path = f"/v1/keys/{key['id']}/sign/transaction"

    inject(pg_url, 2, sqlstate)  # two aborted attempts, then the third commits
    status, _, body = server.call("POST", path, {"transaction": tx(0)}, token)
    assert status == 200, body
    assert Account.recover_transaction(bytes.fromhex(body["raw_transaction"][2:])) == key["address"]

    inject(pg_url, 100, sqlstate)  # more than the retry budget: refused, nothing kept
    status, _, body = server.call("POST", path, {"transaction": tx(1)}, token)
    assert status == 503 and body["code"] == "db_unavailable", body
    inject(pg_url, 0, sqlstate)

    rows = run_sync(lambda: pg_execute(pg_url, "SELECT limit_key, amount FROM ledger"))
    assert [(r["limit_key"], r["amount"]) for r in rows] == [(f"spend:key:{key['id']}:native", "7")]
    allowed = [
        e
        for e in events(export_audit(server))
        if e.get("kind") == "sign.transaction" and e.get("outcome") == "allowed"
    ]
    assert len(allowed) == 1
