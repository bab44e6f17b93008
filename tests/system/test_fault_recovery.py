"""Issue 10 section 4: transient faults heal without a restart; a port is never shared by accident.

Every fault is real and made from outside a running ``signer serve`` (real SoftHSM token, SQLite file or
PostgreSQL database):

- SQLite file made read-only (sign requests; and secret reads: no value without its audit record),
  two ways that bind a process running as root: ``chattr +i`` on the
  database and its WAL (an immutable file cannot be opened for writing, and writes through descriptors
  opened before fail, whoever asks), and ``chmod 0444`` with the server run under ``setpriv`` without
  CAP_DAC_OVERRIDE (what a service user sees; as plain root the mode would mean nothing to the kernel).
  While it lasts, sign requests fail closed and ``/readyz`` says the database is down (it commits a
  real write, not just a SELECT); once it is over, signing works within a bounded number of polls and
  then EVERY request succeeds: no connection opened read-only during the fault (SQLite does that
  silently) or broken by it is left in the pool. The regression: 12 of 20 failed a minute later.
- Disk full: the database on a tiny tmpfs, filled up with a filler file, then the filler removed.
- PostgreSQL: ``pg_terminate_backend`` of every connection of the server, several times, between and
  during requests.
- ``kill -9`` of one worker of ``--workers 2``: the other keeps serving, the dead one is replaced and
  logged with its exit status; a crash loop stops the service with a clear message.
- A second, unrelated ``signer serve`` on a port in use fails at once, naming the address, and the first
  keeps every request (the regression: the kernel split connections between the two).

No sleeps: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlalchemy.engine import make_url

from tests import service_harness
from tests.dbfixtures import pg_execute, run_sync
from tests.service_harness import (
    SIGNER,
    Installation,
    Server,
    grant,
    init_installation,
    make_key,
    make_service,
)
from tests.system.support import (
    HANG_GUARD,
    children_of,
    cli_audit_verify,
    cmdline,
    export_audit,
    is_running,
    wait_all_workers_ready,
    wait_until,
    without_dac_override,
)

DOWN_CODES = {"db_unavailable", "audit_unavailable"}
_numbers = count()


class Signer:
    """A service principal with a key, signing messages and checking every signature independently."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        service = make_service(server, name)
        self.token = service["credentials"]["access_token"]
        self.key = make_key(server, "secp256k1", name)
        grant(server, service["principal"]["id"], self.key["id"], ["sign_message"])

    def sign(self) -> tuple[int, str | None]:
        message = f"fault recovery {next(_numbers)}"
        status, _, body = self.server.call(
            "POST",
            f"/v1/keys/{self.key['id']}/sign/message",
            {"message": message, "encoding": "utf8"},
            self.token,
        )
        if status == 200:
            signature = bytes.fromhex(body["signature"][2:])
            recovered = Account.recover_message(encode_defunct(text=message), signature=signature)
            assert recovered == self.key["address"]
            return status, None
        assert not {"signature", "r", "s", "v"} & set(body or {}), "a signature without its audit record"
        return status, (body or {}).get("code")

    def sign_many(self, n: int, threads: int = 16) -> list[tuple[int, str | None]]:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda _: self.sign(), range(n)))


def ready_status(server: Server) -> tuple[int, Any]:
    status, _, body = server.call("GET", "/readyz")
    return status, body


def admin_read(server: Server) -> tuple[int, str | None]:
    status, _, body = server.call("GET", "/v1/principals", token=server.installation.admin_token)
    return status, None if status == 200 else (body or {}).get("code")


def assert_fails_closed(warm: Signer, cold: Signer) -> None:
    """Sign requests fail closed and /readyz says the database is down, while concurrent reads (and a
    principal whose token and grants were never cached) make the server open new connections: that is
    when SQLite hands out connections that stay read-only, the way the pool used to be poisoned."""
    server = warm.server
    calls = [warm.sign, cold.sign, lambda: admin_read(server)] * 24
    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(lambda call: call(), calls))
    signs = [o for call, o in zip(calls, outcomes, strict=True) if call is not calls[2]]
    assert all(status == 503 and code in DOWN_CODES for status, code in signs), signs
    reads = outcomes[2::3]
    assert all(status == 200 or code in DOWN_CODES for status, code in reads), reads
    status, body = ready_status(server)
    assert status == 503 and body["checks"]["database"] == "down", body


def assert_heals(signer: Signer, pid: int) -> None:
    """Signing works again within a bounded number of polls, then every request succeeds."""

    def signs() -> bool:
        status, code = signer.sign()
        assert status == 200 or (status == 503 and code in DOWN_CODES), (status, code)
        return status == 200

    wait_until(signs, 30, "signing to work again", interval=0.1)
    outcomes = signer.sign_many(40)
    assert all(status == 200 for status, _ in outcomes), outcomes
    assert [signer.sign() for _ in range(20)] == [(200, None)] * 20
    status, body = ready_status(signer.server)
    assert status == 200, body
    assert signer.server.process.poll() is None and signer.server.process.pid == pid  # no restart


# -- SQLite: read-only file --------------------------------------------------------------------------


def chattr(flag: str, *paths: Path) -> bool:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.parametrize("how", ["immutable", "chmod"])
def test_sqlite_read_only_file_fails_closed_then_heals_without_restart(
    tmp_path: Path, launch, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "immutable" and shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    if how == "chmod":
        prefix = without_dac_override()
        if prefix is None:
            pytest.skip("running as root without setpriv: mode 0444 would not keep the server out")
        monkeypatch.setattr(service_harness, "SIGNER", [*prefix, *service_harness.SIGNER])
    installation = init_installation(tmp_path / "data")
    server = launch(installation)
    signer = Signer(server, "read-only-file")
    cold = Signer(server, "read-only-cold")  # never used before the fault: nothing of it cached
    assert signer.sign() == (200, None)  # warm: the pool holds writable connections
    db = installation.data_dir / "signer.db"
    files = [db, db.with_name(db.name + "-wal")]

    if how == "immutable":
        if not chattr("+i", *files):
            pytest.skip("this filesystem (or user) cannot set the immutable attribute")
        try:
            assert_fails_closed(signer, cold)
        finally:
            assert chattr("-i", *files)
    else:
        db.chmod(0o444)
        try:
            assert_fails_closed(signer, cold)
        finally:
            db.chmod(0o600)
    assert_heals(signer, server.process.pid)
    assert_heals(cold, server.process.pid)


# -- SQLite: disk full -------------------------------------------------------------------------------


@contextmanager
def tiny_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of ``directory``'s filesystem (ENOSPC is the point)."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError:
                break
        while True:  # the last partial chunk's worth, a block at a time
            try:
                handle.write(chunk[:4096])
            except OSError:
                break
    return filler


def test_sqlite_disk_full_fails_closed_then_heals_without_restart(tmp_path: Path, launch) -> None:
    with tiny_filesystem(tmp_path / "small", "16m") as small:
        installation = init_installation(tmp_path / "data", f"sqlite+aiosqlite:///{small / 'signer.db'}")
        server = launch(installation)
        try:
            signer = Signer(server, "disk-full")
            assert signer.sign() == (200, None)
            filler = fill(small)
            # Writes that need no new block can still land (SQLite reuses its WAL's space); the ones
            # that need one fail, closed. Sign until one does: a hang guard bounds the count.
            failed = False
            for _ in range(5000):
                status, code = signer.sign()
                if status != 200:
                    assert status == 503 and code in DOWN_CODES, (status, code)
                    failed = True
                    break
            assert failed, "the full disk never refused a write"
            filler.unlink()
            assert_heals(signer, server.process.pid)
            lines = export_audit(server)  # nothing half-written: the chain verifies offline
            code, report = cli_audit_verify(lines, tmp_path, installation.env)
            assert code == 0 and report["ok"], report
        finally:
            server.stop()


# -- PostgreSQL: backends terminated ----------------------------------------------------------------


def test_postgres_terminated_backends_heal_without_restart(
    tmp_path: Path, pg_url: str, pg_admin_url: str, launch
) -> None:
    installation = init_installation(tmp_path / "data", pg_url)
    server = launch(installation)
    signer = Signer(server, "pg-terminated")
    name = make_url(pg_url).database

    def terminate() -> int:
        rows = run_sync(
            lambda: pg_execute(
                pg_admin_url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND application_name = 'signer'",
            )
        )
        return int(rows[0][0])

    for _ in range(3):
        assert signer.sign_many(32) == [(200, None)] * 32  # the pool holds several connections
        assert terminate() >= 1
        assert_heals(signer, server.process.pid)

    # Terminated while requests are in flight: each fails closed or succeeds, then all succeed again.
    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(terminate)
        outcomes = signer.sign_many(64)
        killed.result()
    assert all(status == 200 or code in DOWN_CODES for status, code in outcomes), outcomes
    assert_heals(signer, server.process.pid)


# -- secret reads (F-06: no secret leaves without its audit record) ------------------------------------


class SecretReader:
    """A service principal granted ``read_value`` on one secret, whose value is a canary."""

    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        admin = server.installation.admin_token
        admin_id = server.installation.admin["principal"]["id"]
        org = f"org-{name}"
        status, _, body = server.call(
            "POST", "/v1/grants", {"principal_id": admin_id, "operations": ["create"], "scope": org}, admin
        )
        assert status == 201, body
        self.value = "canary-" + os.urandom(12).hex()
        status, _, created = server.call(
            "POST",
            "/v1/secrets",
            {
                "folder": f"{org}/prod",
                "name": "db",
                "owner_group": "payments",
                "category": "api_key",
                "fields": {"PASSWORD": self.value},
            },
            admin,
        )
        assert status == 201, created
        self.secret_id = created["id"]
        service = make_service(server, name)
        self.token = service["credentials"]["access_token"]
        status, _, body = server.call(
            "POST",
            "/v1/grants",
            {
                "principal_id": service["principal"]["id"],
                "operations": ["read_value"],
                "secret_id": self.secret_id,
            },
            admin,
        )
        assert status == 201, body

    def fetch(self) -> tuple[int, str | None]:
        status, _, body = self.server.call(
            "POST", f"/v1/secrets/{self.secret_id}/fetch", {"workload": "billing"}, self.token
        )
        if status == 200:
            assert self.value in json.dumps(body)
            return status, None
        assert self.value not in json.dumps(body), "a secret value without its audit record"
        return status, (body or {}).get("code")


def assert_secret_reads_fail_closed_then_heal(reader: SecretReader, fault: Any, heal: Any) -> None:
    assert reader.fetch() == (200, None)  # warm: grants, the secret's row and its KEK handle cached
    fault()
    try:
        outcomes = [reader.fetch() for _ in range(5)]
    finally:
        heal()
    assert all(status == 503 and code in DOWN_CODES for status, code in outcomes), outcomes

    def reads() -> bool:
        status, code = reader.fetch()
        assert status == 200 or (status == 503 and code in DOWN_CODES), (status, code)
        return status == 200

    wait_until(reads, 30, "secret reads to work again", interval=0.1)
    assert [reader.fetch() for _ in range(10)] == [(200, None)] * 10
    # The audit log records the reads (never the value).
    fetched = [e for e in map(json.loads, export_audit(reader.server)) if reader.secret_id in json.dumps(e)]
    assert fetched and reader.value not in json.dumps(fetched)


def test_secret_reads_fail_closed_on_a_read_only_sqlite_file_then_heal(tmp_path: Path, launch) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    installation = init_installation(tmp_path / "data")
    server = launch(installation)
    reader = SecretReader(server, "ro-secret")
    db = installation.data_dir / "signer.db"
    files = [db, db.with_name(db.name + "-wal")]
    if not chattr("+i", *files):
        pytest.skip("this filesystem (or user) cannot set the immutable attribute")
    chattr("-i", *files)
    assert_secret_reads_fail_closed_then_heal(
        reader, lambda: chattr("+i", *files), lambda: chattr("-i", *files)
    )
    assert server.process.poll() is None


def test_secret_reads_fail_closed_while_postgres_refuses_then_heal(
    tmp_path: Path, pg_url: str, pg_admin_url: str, launch
) -> None:
    installation = init_installation(tmp_path / "data", pg_url)
    server = launch(installation)
    reader = SecretReader(server, "pg-secret")
    name = make_url(pg_url).database

    def take() -> None:
        run_sync(
            lambda: pg_execute(
                pg_admin_url,
                f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
            )
        )

    def give() -> None:
        run_sync(lambda: pg_execute(pg_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))

    assert_secret_reads_fail_closed_then_heal(reader, take, give)
    assert server.process.poll() is None


# -- workers -----------------------------------------------------------------------------------------


def workers_of(server: Server) -> list[int]:
    # The supervisor's other child, multiprocessing's resource tracker, serves nothing.
    return [pid for pid in children_of(server.process.pid) if "spawn_main" in cmdline(pid)]


def log_records(server: Server, event: str) -> list[dict[str, Any]]:
    found = []
    for line in server.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            found.append(record)
    return found


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(
    own_installation: Installation, launch
) -> None:
    server = launch(own_installation, workers=2)
    wait_all_workers_ready(server, 2)
    signer = Signer(server, "worker-killed")
    victim, survivor = workers_of(server)
    os.kill(victim, signal.SIGKILL)

    # Served by the survivor while the victim is replaced (connections wait in the shared queue).
    assert [signer.sign() for _ in range(10)] == [(200, None)] * 10
    died = wait_until(
        lambda: [r for r in log_records(server, "worker died; replacing it") if r["pid"] == victim],
        HANG_GUARD,
        "the supervisor to log the dead worker",
    )
    assert died[0]["status"] == "killed by SIGKILL" and died[0]["exit_code"] == -signal.SIGKILL

    def replaced() -> list[int] | None:
        now = workers_of(server)
        return now if len(now) == 2 and victim not in now and survivor in now else None

    workers = wait_until(replaced, HANG_GUARD, "a replacement worker")
    (replacement,) = set(workers) - {survivor}
    wait_until(
        lambda: any(r["pid"] == replacement for r in log_records(server, "signer ready")),
        HANG_GUARD,
        "the replacement to be ready",
    )
    assert server.process.poll() is None
    assert signer.sign_many(40) == [(200, None)] * 40

    everything = children_of(server.process.pid)
    assert server.stop() == 0  # graceful stop still stops every worker
    for pid in everything:
        wait_until(lambda pid=pid: not is_running(pid), 30, f"child {pid} to exit")


def test_a_crash_loop_stops_the_service_with_a_clear_message(own_installation: Installation, launch) -> None:
    server = launch(own_installation, workers=2)
    wait_all_workers_ready(server, 2)
    killed: set[int] = set()

    def kill_new_workers() -> bool:
        if server.process.poll() is not None:
            return True
        for pid in workers_of(server):
            if pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
        return False

    # Five deaths within the window (signer.cli.CRASH_LOOP_DEATHS): the replacements' back-off adds
    # up to a few seconds; the guard only stops a hang.
    wait_until(kill_new_workers, 120, "the supervisor to give up on a crash loop", interval=0.05)
    assert server.process.returncode not in (0, None)
    output = server.log_text()
    assert "signer: error: workers died 5 times within 60 s" in output, output[-2000:]
    assert "Traceback" not in output


# -- one port, one service ---------------------------------------------------------------------------


def run_second(installation: Installation, port: int, workers: int) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [*SIGNER, "serve", "--port", str(port), "--workers", str(workers)],
        env=installation.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # if it did start, it is stopped with all its workers
    )
    try:
        out, err = process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"a second signer on port {port} kept running:\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize(("first", "second"), [(2, 2), (1, 2), (2, 1)])
def test_a_second_instance_on_a_port_in_use_fails_and_the_first_keeps_it(
    tmp_path: Path, launch, first: int, second: int
) -> None:
    one = init_installation(tmp_path / "one")
    other = init_installation(tmp_path / "other")  # unrelated: its own token, database and admin
    server = launch(one, workers=first)
    if first > 1:
        wait_all_workers_ready(server, first)
    done = run_second(other, server.port, second)
    assert done.returncode != 0, done.stderr
    assert f"signer: error: cannot listen on 127.0.0.1:{server.port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
    # Every call reaches the first instance: its admin token is good on all of them.
    for _ in range(20):
        status, _, body = server.call("GET", "/v1/principals", token=one.admin_token)
        assert status == 200, body
