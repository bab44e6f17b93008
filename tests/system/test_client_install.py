"""The client installs alone: clients/python into a fresh virtualenv (no system site packages), offline
from the wheels ``scripts/setup --test`` downloads, holds no server dependency (python-pkcs11,
SQLAlchemy, aiohttp, pydantic, the eth stack), and its Python client and ``signer-client`` command work
against a running server: whoami, key listing and an EIP-7702 authorisation signed and recovered.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.service_harness import TREE, Server, attach_policy, grant, make_key, make_service, unlock_policy
from tests.system.test_authorizations import authority_of

WHEELS = TREE / ".cache" / "client-wheels"
SERVER_ONLY = ("pkcs11", "sqlalchemy", "aiohttp", "pydantic", "eth_account", "alembic", "asyncpg")
DELEGATE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (WHEELS / ".signer-downloaded").exists():
        # A prerequisite of the suite, not of the machine: scripts/test installs it; never skip silently.
        pytest.fail("run scripts/setup --test: it downloads the client's wheels into .cache/client-wheels")
    venv = tmp_path_factory.mktemp("client") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--find-links", str(WHEELS), str(TREE / "clients" / "python")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return venv


def test_the_client_venv_holds_no_server_dependency(client_venv: Path) -> None:
    probe = "import importlib.util, json; print(json.dumps([m for m in %r if importlib.util.find_spec(m)]))"
    done = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", probe % (SERVER_ONLY,)],
        capture_output=True, text=True, timeout=60, check=True, cwd=client_venv,
    )  # fmt: skip
    assert json.loads(done.stdout) == []


def test_the_client_alone_talks_to_a_server(client_venv: Path, server: Server, unique_name: str) -> None:
    service = make_service(server, unique_name)
    key = make_key(server, label=unique_name)
    grant(server, service["principal"]["id"], key["id"], ["sign_authorization"])
    attach_policy(server, unlock_policy(f"client-{unique_name}"[:60], [DELEGATE]), key_id=key["id"])
    token = service["credentials"]["access_token"]
    script = textwrap.dedent(
        f"""
        import json, sys
        from signer.client import SignerClient
        from signer.secret_value import Secret
        client = SignerClient({server.url!r}, Secret(sys.stdin.read().strip()))
        me = client.whoami()
        signed = client.sign_authorization({key["id"]!r}, 31337, {DELEGATE!r}, 4)
        print(json.dumps({{"me": me, "signed": signed, "modules": sorted(sys.modules)}}))
        """
    )
    # Run outside the tree, so only the installed client can be imported.
    done = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", script],
        input=token, capture_output=True, text=True, timeout=60, check=False, cwd=client_venv,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["me"]["principal_id"] == service["principal"]["id"], answer["me"]
    signed = answer["signed"]["authorization"]
    assert authority_of(signed) == key["address"]
    assert not {m.split(".")[0] for m in answer["modules"]} & set(SERVER_ONLY)

    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(client_venv),
        "SIGNER_SERVER": server.url,
        "SIGNER_TOKEN": token,
    }
    done = subprocess.run(
        [str(client_venv / "bin" / "signer-client"), "keys", "list", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False, cwd=client_venv,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert key["id"] in done.stdout
