"""F-05 at server level: ``signer serve --workers 2`` runs two processes, each with its own HSM session.

Evidence is read from outside, without adding anything to the API: the supervisor's children in
``/proc``, one "signer ready" line per worker pid in the log (logged after that worker opened the token,
checked its inventory and passed its self-test), the PKCS#11 module mapped into each worker but never
into the supervisor (which therefore has nothing a child could inherit), and the worker that holds the
server side of each TCP connection we sign over. SIGTERM to the supervisor must take every worker down
(a worker that dies alone is replaced: see test_fault_recovery). Keys made through either worker (while
the other is still starting, and concurrently) must sign through both: the workers share SoftHSM's file
store through separate sessions, which SoftHSM 2.6 alone does not keep consistent.
"""

from __future__ import annotations

import asyncio
import http.client
import json

import aiohttp
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.service_harness import Installation, Server, grant, make_key, make_service
from tests.system.support import (
    children_of,
    cmdline,
    connection_owner,
    maps_module,
    wait_all_workers_ready,
    wait_exited,
)

MODULE = "libsofthsm2"


def sign_and_find_worker(server: Server, workers: list[int], token: str, key: dict, n: int) -> int | None:
    """Sign over a fresh keep-alive connection, verify the signature, return the worker that answered."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        message = f"which worker {n}"
        connection.request(
            "POST",
            f"/v1/keys/{key['id']}/sign/message",
            body=json.dumps({"message": message, "encoding": "utf8"}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        signature = bytes.fromhex(body["signature"][2:])
        assert Account.recover_message(encode_defunct(text=message), signature=signature) == key["address"]
        assert connection.sock is not None
        # Keep-alive: the worker that answered still holds the server side until we close ours.
        return connection_owner(workers, server.port, connection.sock.getsockname()[1])
    finally:
        connection.close()


def workers_of(server: Server) -> list[int]:
    # The supervisor's other child, multiprocessing's resource tracker, serves nothing.
    return [pid for pid in children_of(server.process.pid) if "spawn_main" in cmdline(pid)]


def test_two_workers_each_with_their_own_hsm_session_stop_with_the_supervisor(
    own_installation: Installation, launch
) -> None:
    server = launch(own_installation, workers=2)
    ready = wait_all_workers_ready(server, 2)
    supervisor = server.process.pid
    workers = workers_of(server)
    assert len(workers) == 2, (workers, children_of(supervisor))
    assert sorted(ready) == sorted(workers)  # each child opened the token itself and said so
    for pid in workers:
        assert maps_module(pid, MODULE), f"worker {pid} has no PKCS#11 module loaded"
    assert not maps_module(supervisor, MODULE), "the supervisor loaded the PKCS#11 module"

    service = make_service(server, "which-worker")
    token = service["credentials"]["access_token"]
    key = make_key(server, "secp256k1", "workers")
    grant(server, service["principal"]["id"], key["id"], ["sign_message"])

    served_by: set[int] = set()
    for n in range(200):  # connections go to whichever worker accepts first; 200 is a hang guard
        owner = sign_and_find_worker(server, workers, token, key, n)
        assert owner in workers
        served_by.add(owner)
        if served_by == set(workers):
            break
    assert served_by == set(workers), "only one worker ever signed"

    everything = children_of(supervisor)  # the workers and multiprocessing's resource tracker
    assert server.stop() == 0
    for pid in everything:
        wait_exited(pid, 30, f"child {pid} to exit after SIGTERM")


def pinned_connections(server: Server, workers: list[int]) -> dict[int, http.client.HTTPConnection]:
    """One keep-alive connection to each worker (connections land where the kernel puts them; keep the
    first one that reaches each worker and close the rest)."""
    pinned: dict[int, http.client.HTTPConnection] = {}
    for _ in range(200):  # a hang guard, not a count anything depends on
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        assert connection.sock is not None
        owner = connection_owner(workers, server.port, connection.sock.getsockname()[1])
        if owner in workers and owner not in pinned:
            pinned[owner] = connection
            if len(pinned) == len(workers):
                return pinned
        else:
            connection.close()
    for connection in pinned.values():
        connection.close()
    raise AssertionError("could not reach every worker")


def sign_via(connection: http.client.HTTPConnection, token: str, key: dict) -> tuple[int, dict]:
    message = f"made anywhere, signed everywhere {key['id']}"
    connection.request(
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        body=json.dumps({"message": message, "encoding": "utf8"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    if response.status == 200:
        signature = bytes.fromhex(body["signature"][2:])
        assert Account.recover_message(encode_defunct(text=message), signature=signature) == key["address"]
    return response.status, body


async def create_keys_concurrently(server: Server, clients: int, each: int) -> list[dict]:
    admin = server.installation.admin_token

    async def client(n: int) -> list[dict]:
        made = []
        async with aiohttp.ClientSession(server.url, headers={"Authorization": f"Bearer {admin}"}) as session:
            for m in range(each):
                async with session.post("/v1/keys", json={"curve": "secp256k1", "label": f"c{n}-{m}"}) as r:
                    body = await r.json()
                    assert r.status == 201, body
                    made.append(body)
        return made

    batches = await asyncio.gather(*(client(n) for n in range(clients)))
    return [key for batch in batches for key in batch]


@pytest.mark.slow
def test_keys_made_on_any_worker_sign_on_every_worker_and_survive_a_restart(
    own_installation: Installation, launch
) -> None:
    """SoftHSM's file store is shared by the workers' separate PKCS#11 sessions: keys written by one
    process, concurrently with the other's writes and with the other still starting up, must be found
    by every process, and the token must still pass the start-up inventory afterwards."""
    server = launch(own_installation, workers=2)
    keys = asyncio.run(create_keys_concurrently(server, clients=6, each=4))  # the 2nd worker may be starting
    wait_all_workers_ready(server, 2)
    workers = workers_of(server)
    relayer = make_service(server, "everywhere")
    token = relayer["credentials"]["access_token"]
    for key in keys:
        grant(server, relayer["principal"]["id"], key["id"], ["sign_message"])

    failures = []
    connections = pinned_connections(server, workers)
    try:
        for pid, connection in connections.items():
            for key in keys:
                status, body = sign_via(connection, token, key)
                if status != 200:
                    failures.append((pid, key["id"], status, body.get("code")))
    finally:
        for connection in connections.values():
            connection.close()
    assert not failures, failures

    server.stop()
    again = launch(own_installation)
    assert "registered key is missing from the token" not in again.log_text()
    for key in keys:
        status, _, body = again.call(
            "POST",
            f"/v1/keys/{key['id']}/sign/message",
            {"message": "after restart", "encoding": "utf8"},
            token,
        )
        assert status == 200, (key["id"], body)
