"""Replicas of one relayer sharing one credential file, through a real server: with
``refresh_reuse_grace_seconds`` set, two clients that read the same file and refresh at the same moment both
get working credentials, round after round (each writes the file back; the other's next refresh may use
the token it already used). Reuse after the grace is still a replay: the whole family is revoked. A refresh
token an admin revoked gets no grace. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.service_harness import Installation, Server, init_installation, make_service
from tests.system.support import HANG_GUARD, wait_until


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    return init_installation(tmp_path / "data", request.getfixturevalue("pg_url"))


def refresh(server: Server, refresh_token: str) -> tuple[int, Any]:
    status, _, body = server.call("POST", "/v1/auth/refresh", {"refresh_token": refresh_token})
    return status, body


def test_two_replicas_sharing_a_credential_file(
    launch: Callable[..., Server], installation: Installation, tmp_path: Path
) -> None:
    server = launch(installation, env={"SIGNER_REFRESH_REUSE_GRACE_SECONDS": "60"})
    relayer = make_service(server, "relayer")
    shared = tmp_path / "relayer.json"
    shared.write_text(json.dumps(relayer["credentials"]))
    lock = threading.Lock()  # the file's writes only; the refreshes race freely

    def replica(results: list[Any], start: threading.Barrier) -> None:
        for _ in range(4):
            token = json.loads(shared.read_text())["refresh_token"]
            start.wait(HANG_GUARD)
            status, body = refresh(server, token)
            results.append((status, body))
            if status != 200:
                return
            with lock:
                shared.write_text(json.dumps(body))
            status, _, me = server.call("GET", "/v1/whoami", token=body["access_token"])
            results.append((status, me))
            start.wait(HANG_GUARD)  # both read the file again only after both wrote it

    start = threading.Barrier(2)
    outcomes: list[list[Any]] = [[], []]
    threads = [threading.Thread(target=replica, args=(outcomes[i], start)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
    assert not any(thread.is_alive() for thread in threads)
    for results in outcomes:
        assert len(results) == 8 and all(status == 200 for status, _ in results), results
    # Every pair handed out still works (nothing was revoked as a replay).
    for results in outcomes:
        for _, body in results[0::2]:
            assert server.call("GET", "/v1/whoami", token=body["access_token"])[0] == 200
    status, _, text = server.call(
        "GET", "/v1/audit/events?after=0&limit=1000", token=installation.admin_token
    )
    assert status == 200
    events = [json.loads(json.loads(line)["event"]) for line in text.splitlines() if line]
    refreshes = [e for e in events if e["kind"] == "auth.refresh"]
    assert len(refreshes) == 8 and sum(e["reused_within_grace"] for e in refreshes) == 4, refreshes
    assert not [e for e in events if e["kind"] == "auth.refresh_replayed"]


def test_reuse_after_the_grace_and_an_admins_revoke_are_replays(
    launch: Callable[..., Server], installation: Installation
) -> None:
    server = launch(installation, env={"SIGNER_REFRESH_REUSE_GRACE_SECONDS": "1"})
    first = make_service(server, "relayer")["credentials"]
    status, second = refresh(server, first["refresh_token"])
    assert status == 200, second
    # Inside the grace the used token works again (another replica); past it, it is a replay that
    # revokes the whole family. Waits on the server's answer, not a sleep.
    later: list[Any] = []

    def replayed() -> bool:
        status, body = refresh(server, first["refresh_token"])
        later.append(body)
        return status == 401

    wait_until(replayed, HANG_GUARD, "the grace to end")
    assert later[-1]["code"] == "token_revoked", later[-1]
    for pair in (second, *[b for b in later if "access_token" in b]):
        status, _, body = server.call("GET", "/v1/whoami", token=pair["access_token"])
        assert (status, body["code"]) == (401, "token_revoked"), body

    # A refresh token an admin revoked is not "used": no grace for it.
    other = make_service(server, "relayer-2")["credentials"]
    admin = installation.admin_token
    assert server.call("DELETE", f"/v1/tokens/{other['refresh_token_id']}", token=admin)[0] == 200
    status, body = refresh(server, other["refresh_token"])
    assert (status, body["code"]) == (401, "token_revoked"), body
