"""L-10 (and F-11) at server level: the database is held by someone else; requests wait a bounded time,
then 503, the blocked audit write is alerted (an error log, ``signer_audit_write_failures_total``) and
its recovery logged.

The server runs with a one-connection pool and a 0.5 s pool timeout while this test holds SQLite's write
lock (``BEGIN IMMEDIATE`` on the server's own file). Concurrent sign requests must each come back with
503 ``db_unavailable`` (or ``audit_unavailable``) and no signature, never hang (the client's timeout is
the hang guard), while ``/healthz`` keeps answering; once the lock is released signing works again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

from eth_account import Account
from eth_account.messages import encode_defunct

from tests.service_harness import Installation, Server, grant, make_key, make_service
from tests.system.support import HANG_GUARD, export_audit, sign_outcomes, wait_until

DOWN_CODES = {"db_unavailable", "audit_unavailable"}
CONCURRENT = 8


def sign(server: Server, token: str, key: dict, request_id: str) -> tuple[int, dict]:
    status, _, body = server.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        {"message": request_id, "encoding": "utf8"},
        token,
        headers={"X-Request-Id": request_id},
        timeout=HANG_GUARD,
    )
    return status, body


def held_lock_scenario(installation: Installation, launch) -> tuple[list, list, list]:
    """Sign while this test holds the write lock: (known-token results, new-token results, health)."""
    server = launch(installation, env={"SIGNER_DB_POOL_SIZE": "1", "SIGNER_DB_POOL_TIMEOUT_SECONDS": "0.5"})
    relayer = make_service(server, "pool")
    token = relayer["credentials"]["access_token"]
    second = make_service(server, "pool-uncached")
    stranger = second["credentials"]["access_token"]  # never used before the lock: nothing cached
    key = make_key(server, "secp256k1", "pool")
    for principal in (relayer, second):
        grant(server, principal["principal"]["id"], key["id"], ["sign_message"])
    assert sign(server, token, key, "before")[0] == 200  # the token, key and grant are now cached

    holder = sqlite3.connect(installation.data_dir / "signer.db", isolation_level=None)
    with contextlib.closing(holder):
        holder.execute("BEGIN IMMEDIATE")
        try:
            with ThreadPoolExecutor(CONCURRENT + 2) as pool:
                known = [pool.submit(sign, server, token, key, f"held-{n}") for n in range(CONCURRENT)]
                new = [pool.submit(sign, server, stranger, key, f"stranger-{n}") for n in range(2)]
                health = []
                while True:  # at least once, and again for as long as any sign request is pending
                    health.append(server.call("GET", "/healthz", timeout=HANG_GUARD)[0])
                    if all(future.done() for future in known + new):
                        break
                known_results = [future.result() for future in known]
                new_results = [future.result() for future in new]
        finally:
            holder.execute("ROLLBACK")

    attempts = iter(range(10_000))

    def signs_again() -> bool:
        request_id = f"released-{next(attempts)}"
        status, body = sign(server, token, key, request_id)
        if status != 200:
            return False
        signature = bytes.fromhex(body["signature"][2:])
        return Account.recover_message(encode_defunct(text=request_id), signature=signature) == key["address"]

    wait_until(signs_again, 30, "signing to work once the lock is released", interval=0.1)
    # F-11: the blocked audit write was alerted once and counted, and its recovery logged.
    log = server.log_text()
    assert log.count("audit log cannot be written") == 1 and "audit log writes recovered" in log
    metrics = server.call("GET", "/metrics")[2]
    assert 'signer_audit_write_failures_total{code="' in metrics
    recorded = sign_outcomes(export_audit(server))
    for request_id in [f"held-{n}" for n in range(CONCURRENT)] + ["stranger-0", "stranger-1"]:
        assert "allowed" not in recorded.get(request_id, [])
    return known_results, new_results, health


def test_held_write_lock_is_a_bounded_503_and_health_answers_meanwhile(
    own_installation: Installation, launch
) -> None:
    known, new, health = held_lock_scenario(own_installation, launch)
    assert set(health) == {200}
    # Cached callers queue for the write and hear 503 when the lock wait (below the request deadline)
    # ends; uncached callers wait the pool timeout for the one connection, or read in a gap between
    # batches and then queue like the others: 503 either way, never a hang, never a signature.
    for status, body in known + new:
        assert status == 503 and body["code"] in DOWN_CODES, json.dumps(body)
        assert not {"signature", "r", "s", "v"} & set(body), "a signature left without its audit record"
