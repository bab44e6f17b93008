"""F-16: ``signer serve`` refuses to start, with a non-zero exit and a clear one-line reason, when it cannot
run safely: wrong PIN, missing token, unloadable PKCS#11 module, unreadable PIN file, unusable database,
or a private key on the token whose attributes say it could leave it (the key is named by its id).

The output is checked for what it must never carry: the real PINs, the wrong PIN we tried, the admin's
tokens, a Python traceback. A refusing ``--workers 2`` supervisor must leave no worker behind.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from signer.config import default_module_path
from tests.service_harness import SIGNER, Installation, free_port, http, init_installation
from tests.system.support import (
    HANG_GUARD,
    assert_no_secret,
    installation_secrets,
    wait_until,
)

WRONG_PIN = "wrong-pin-canary-7c1e"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    """One installation for the refusals that change only the environment (nothing is written)."""
    return init_installation(tmp_path_factory.mktemp("refusals") / "data")


def refused(installation: Installation, env: dict[str, str], workers: int = 1) -> str:
    """Run ``signer serve``; it must exit non-zero by itself. Returns everything it printed."""
    port = free_port()
    log = installation.data_dir.parent / f"refusal-{port}.log"
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(
            [*SIGNER, "serve", "--port", str(port), "--workers", str(workers)],
            env={**installation.env, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a server that does start is stopped with all its workers
        )

    def exited_or_serving() -> str:
        if process.poll() is not None:
            return "exited"
        try:
            http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)
        except OSError:
            return ""
        return "serving"

    try:
        outcome = wait_until(exited_or_serving, HANG_GUARD, "signer serve to exit", interval=0.1)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text(encoding="utf-8", errors="replace")
    assert outcome == "exited", f"signer serve did not refuse: it is serving\n{output}"
    assert process.returncode != 0, output
    assert "signer: error:" in output, output
    assert "Traceback" not in output, output
    assert_no_secret(output, {**installation_secrets(installation), "the wrong PIN": WRONG_PIN}, "the output")

    # Nothing of the session may linger: the supervisor stops its workers, and multiprocessing's resource
    # tracker follows once its pipe closes (soon after, not at once: poll with a deadline).
    def session_empty() -> bool:
        found = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True, check=False)
        return found.stdout.strip() == ""

    wait_until(session_empty, 30, "every process of the refusing server to exit")
    return output


@pytest.mark.parametrize("workers", [1, 2])
def test_wrong_pin(shared: Installation, workers: int) -> None:
    output = refused(shared, {"SIGNER_HSM_PIN": WRONG_PIN}, workers)
    assert "PIN" in output


@pytest.mark.parametrize("workers", [1, 2])
def test_missing_token(shared: Installation, workers: int) -> None:
    output = refused(shared, {"SIGNER_HSM_TOKEN_LABEL": "nope"}, workers)
    assert "token 'nope'" in output


def test_bad_module_path(shared: Installation) -> None:
    output = refused(shared, {"SIGNER_HSM_MODULE": "/nonexistent/libpkcs11.so"})
    assert "PKCS#11 module" in output


def test_missing_pin_file(shared: Installation, tmp_path: Path) -> None:
    output = refused(shared, {"SIGNER_HSM_PIN_FILE": str(tmp_path / "nowhere" / "pin")})
    assert "PIN file" in output


def test_unreachable_database(shared: Installation) -> None:
    closed_port = free_port()
    output = refused(
        shared, {"SIGNER_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/x"}
    )
    assert "database" in output


def test_damaged_database_file(shared: Installation, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database\n" * 200)
    output = refused(shared, {"SIGNER_DATABASE_URL": f"sqlite+aiosqlite:///{junk}"})
    assert "database" in output


def test_database_from_an_unknown_newer_build(shared: Installation, tmp_path: Path) -> None:
    future = tmp_path / "future.db"
    with sqlite3.connect(future) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")
    output = refused(shared, {"SIGNER_DATABASE_URL": f"sqlite+aiosqlite:///{future}"})
    assert "database" in output


def test_unsupported_database_url(shared: Installation) -> None:
    output = refused(shared, {"SIGNER_DATABASE_URL": "mysql://root@127.0.0.1/signer"})
    assert "database" in output


def test_missing_sqlite_database_is_refused_not_created(shared: Installation, tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "signer.db"
    output = refused(shared, {"SIGNER_DATABASE_URL": f"sqlite+aiosqlite:///{missing}"})
    assert "database" in output
    assert not missing.exists()


PLANT = """
import os, sys
import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
lib = pkcs11.lib(sys.argv[1])
pin = open(sys.argv[3]).read().strip()
with lib.get_token(token_label=sys.argv[2]).open(rw=True, user_pin=pin) as session:
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: bytes.fromhex("06052b8104000a")}, local=True
    )
    params.generate_keypair(
        id=bytes.fromhex(sys.argv[4]), label="planted", store=True, mechanism=Mechanism.EC_KEY_PAIR_GEN,
        private_template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: True, Attribute.SIGN: True},
    )
"""


def test_extractable_key_on_the_token_is_named_and_refused(tmp_path: Path) -> None:
    installation = init_installation(tmp_path / "data")
    planted_id = "0bad" + "5eed" * 7
    # Planted in a process of its own against this installation's token: never PKCS#11 in pytest's.
    done = subprocess.run(
        [
            SIGNER[0],
            "-c",
            PLANT,
            default_module_path(),
            "signer",
            str(installation.data_dir / "hsm-user-pin"),
            planted_id,
        ],
        env=installation.env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = refused(installation, {})
    assert planted_id in output and "refusing to start" in output


def test_unmigrated_sqlite_database(shared: Installation, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    with sqlite3.connect(empty) as connection:
        connection.execute("CREATE TABLE unrelated (x INTEGER)")
    output = refused(shared, {"SIGNER_DATABASE_URL": f"sqlite+aiosqlite:///{empty}"})
    assert "database" in output and "migrate" in output


def test_unmigrated_postgres_database(shared: Installation, pg_url: str) -> None:
    output = refused(shared, {"SIGNER_DATABASE_URL": pg_url})
    assert "database" in output and "migrate" in output
