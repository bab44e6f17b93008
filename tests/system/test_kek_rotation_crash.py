"""Matrix F-13 for KEK rotation: ``kill -9`` half-way through, resumed, under reads and writes in flight.

A real server (two workers, SoftHSM token, SQLite file or PostgreSQL) holds a scope of sealed secrets,
each version with two fields written together. Its KEK is rotated while readers fetch the current
version of random secrets and writers add versions; once about a third is rewrapped, the server and its
workers are killed with SIGKILL. Every read answered before, during and after must be a complete
version that some writer sent (both fields from one write, never a mix, never an error; a read that
raced a writer's new version is refused whole with ``secret_changed``, as designed), the restarted
server resumes the rotation by itself (both workers: the check-and-set lets one write each row) under
the same load, and when it reports ``finished`` nothing of the scope is left under another KEK and every
version of every secret opens with exactly the value acknowledged for it.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, http, init_installation, start_server
from tests.system.test_kek_rotation import fetch, grant_all

SECRETS = 60
VERSIONS_EACH = 6  # 360 versions to rewrap before the writers add more
READERS = 6
WRITERS = 2
MIN_OPERATIONS = 1000


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


@pytest.fixture(params=["sqlite", "postgres"])
def installation_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    with ExitStack() as stack:
        url = stack.enter_context(private_pg_database("signer_kekx")) if request.param == "postgres" else None
        yield tmp_path / "data", url


class Load:
    """Readers and writers against one server until stopped; every answer checked as it comes."""

    def __init__(self, admin: str, ids: list[str], sent: dict[str, set[tuple[str, str]]]) -> None:
        self.admin = admin
        self.ids = ids
        self.sent = sent  # secret id -> every (user, password) pair a writer sent (or the first)
        self.acknowledged: dict[tuple[str, int], tuple[str, str]] = {}
        self.lock = threading.Lock()
        self.operations = 0
        self.retried = 0
        self.failures: list[Any] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def run(self, url: str) -> None:
        self.stop.clear()
        self.threads = [threading.Thread(target=self._reader, args=(url,)) for _ in range(READERS)]
        self.threads += [threading.Thread(target=self._writer, args=(url,)) for _ in range(WRITERS)]
        for thread in self.threads:
            thread.start()

    def halt(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _reader(self, url: str) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            secret_id = rng.choice(self.ids)
            try:
                status, _, body = http(
                    "POST", f"{url}/v1/secrets/{secret_id}/fetch", {}, self.admin, timeout=30
                )
            except OSError:
                return  # the server is gone
            with self.lock:
                self.operations += 1
                if status == 409 and body.get("code") == "secret_changed":
                    # A writer made a new version current while this read was judged: by design the
                    # read is refused whole ("fetch again"), never answered with a mix.
                    self.retried += 1
                    continue
                if status != 200:
                    self.failures.append(("read", status, body))
                    continue
                pair = (body["values"].get("user"), body["values"].get("password"))
                if sorted(body["values"]) != ["password", "user"] or pair not in self.sent[secret_id]:
                    self.failures.append(("read", "not a complete version", secret_id, body["version"]))

    def _writer(self, url: str) -> None:
        rng = random.Random()
        while not self.stop.is_set():
            secret_id = rng.choice(self.ids)
            pair = ("w-" + secrets.token_hex(4), "p-" + secrets.token_hex(8))
            with self.lock:
                self.sent[secret_id].add(pair)
            try:
                status, _, body = http(
                    "POST",
                    f"{url}/v1/secrets/{secret_id}/versions",
                    {"fields": {"user": pair[0], "password": pair[1]}},
                    self.admin,
                    timeout=30,
                )
            except OSError:
                return
            with self.lock:
                self.operations += 1
                if status == 201:
                    self.acknowledged[(secret_id, body["current_version"])] = pair
                elif (status, body.get("code")) != (409, "secret_version_exists"):
                    self.failures.append(("write", status, body))


def _progress(server: Server, admin: str) -> dict[str, Any]:
    # On a machine shared with other work, a poll may meet the server's own request deadline (504
    # request_timeout) while the rotation and the load saturate it: ask again (the deadlines below
    # still bound the wait).
    for _ in range(5):
        status, _, body = server.call("GET", "/v1/secrets/keks/acme/rotation", token=admin)
        if (status, body.get("code")) != (504, "request_timeout"):
            break
    assert status == 200, body
    return dict(body)


@pytest.mark.timeout(900)
def test_kek_rotation_killed_half_way_resumes_and_every_read_is_a_whole_version(
    installation_url: tuple[Path, str | None],
) -> None:
    data_dir, database_url = installation_url
    installation = init_installation(data_dir, database_url)
    admin = installation.admin_token
    server = start_server(installation, workers=2)
    sent: dict[str, set[tuple[str, str]]] = {}
    first_pairs: dict[tuple[str, int], tuple[str, str]] = {}
    try:
        grant_all(server, admin, installation.admin["principal"]["id"], "acme")
        for n in range(SECRETS):
            pair = (f"u{n}", "p-" + secrets.token_hex(8))
            status, _, body = server.call(
                "POST",
                "/v1/secrets",
                {
                    "folder": f"acme/app{n % 4}",
                    "name": f"s{n}",
                    "owner_group": "ops",
                    "fields": {"user": pair[0], "password": pair[1]},
                },
                admin,
            )
            assert status == 201, body
            sent[body["id"]] = {pair}
            first_pairs[(body["id"], 1)] = pair
            for version in range(2, VERSIONS_EACH + 1):
                pair = (f"u{n}", "p-" + secrets.token_hex(8))
                status, _, added = server.call(
                    "POST",
                    f"/v1/secrets/{body['id']}/versions",
                    {"fields": {"user": pair[0], "password": pair[1]}},
                    admin,
                )
                assert status == 201 and added["current_version"] == version, added
                sent[body["id"]].add(pair)
                first_pairs[(body["id"], version)] = pair
        load = Load(admin, sorted(sent), sent)
        load.acknowledged.update(first_pairs)
        load.run(server.url)
        try:
            status, _, started = server.call("POST", "/v1/secrets/keks/acme/rotate", None, admin)
            assert status == 202, started
            # Kill once about a third is rewrapped (watching the reported progress, with a deadline
            # generous enough for a machine shared with other test runs).
            deadline = time.monotonic() + 360
            while True:
                progress = _progress(server, admin)
                assert progress["state"] != "finished", "the rotation ended before it could be killed"
                if progress["total"] and progress["rewrapped"] * 3 >= progress["total"]:
                    break
                assert time.monotonic() < deadline, progress
        finally:
            for pid in [server.process.pid, *_descendants(server.process.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            server.process.wait(timeout=30)
            load.halt()
    finally:
        server.stop()
    killed_at = progress
    assert killed_at["state"] == "rewrapping"

    restarted = start_server(installation, workers=2)
    try:
        load.run(restarted.url)
        try:
            deadline = time.monotonic() + 300
            while True:
                progress = _progress(restarted, admin)
                if progress["state"] == "finished" and load.operations >= MIN_OPERATIONS:
                    break
                assert time.monotonic() < deadline, (progress, load.operations)
                time.sleep(0.05)  # polling the reported state with a deadline
        finally:
            load.halt()
        assert load.failures == [], load.failures[:5]
        assert load.operations >= MIN_OPERATIONS
        assert progress["id"] == started["id"] and progress["remaining"] == 0
        assert progress["rewrapped"] >= killed_at["rewrapped"]
        # Every version of every secret opens with exactly the pair acknowledged for it.
        for (secret_id, version), pair in sorted(load.acknowledged.items()):
            body = fetch(restarted, admin, secret_id, version)
            assert (body["values"]["user"], body["values"]["password"]) == pair, (secret_id, version)
        # With the writers stopped: no version of the scope is under another KEK (both workers sealed
        # under the new one from the switch on).
        status, _, again = restarted.call("GET", "/v1/secrets/keks/acme/rotation", token=admin)
        assert again["state"] == "finished" and again["remaining"] == 0, again
        print(
            f"\nkilled at {killed_at['rewrapped']}/{killed_at['total']}; "
            f"{load.operations} reads and writes ({load.retried} reads answered 'fetch again'); "
            f"rewrapped {progress['rewrapped']}/{progress['total']}"
        )
    finally:
        restarted.stop()
