"""F-05 at server level: ``signer serve --workers 2`` runs two processes, each with its own HSM session.

Evidence is read from outside, without adding anything to the API: the supervisor's children in
``/proc``, one "signer ready" line per worker pid in the log (logged after that worker opened the token,
checked its inventory and passed its self-test), the PKCS#11 module mapped into each worker but never
into the supervisor (which therefore has nothing a child could inherit), and the worker that holds the
server side of each TCP connection we sign over. SIGTERM to the supervisor must take every worker down.
"""

from __future__ import annotations

import http.client
import json
import os
import signal

from eth_account import Account
from eth_account.messages import encode_defunct

from tests.service_harness import Installation, Server, grant, make_key, make_service
from tests.system.support import (
    children_of,
    cmdline,
    connection_owner,
    is_running,
    maps_module,
    wait_all_workers_ready,
    wait_until,
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
    for n in range(200):  # the kernel spreads connections over both listeners; 200 is a hang guard
        owner = sign_and_find_worker(server, workers, token, key, n)
        assert owner in workers
        served_by.add(owner)
        if served_by == set(workers):
            break
    assert served_by == set(workers), "only one worker ever signed"

    everything = children_of(supervisor)  # the workers and multiprocessing's resource tracker
    assert server.stop() == 0
    for pid in everything:
        wait_until(lambda pid=pid: not is_running(pid), 30, f"child {pid} to exit after SIGTERM")


def test_a_worker_that_dies_takes_the_service_down_with_it(own_installation: Installation, launch) -> None:
    """No half-alive service: a worker killed outright makes the supervisor stop the rest and fail."""
    server = launch(own_installation, workers=2)
    wait_all_workers_ready(server, 2)
    victim, survivor = workers_of(server)
    everything = children_of(server.process.pid)
    os.kill(victim, signal.SIGKILL)
    server.process.wait(timeout=60)
    assert server.process.returncode != 0
    assert survivor in everything
    for pid in everything:
        wait_until(lambda pid=pid: not is_running(pid), 30, f"child {pid} to be stopped")
