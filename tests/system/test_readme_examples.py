"""The README's first hour, run as written: ``signer init --credentials-out`` (what ``scripts/quickstart``
runs), the quick start's curl block executed by bash against a real server (only the address and the
credentials file's place are substituted), the init printout used as a token file, the recovery of lost
admin credentials, "signer ready" logged with the address it listens on, and the CLI's exit code for a
request that waits for approval.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.service_harness import SIGNER, TREE, Installation, attach_policy, base_env, grant, make_key
from tests.system.support import HANG_GUARD

README = TREE / "README.md"


def readme_block(name: str) -> str:
    """The sh block that follows ``<!-- readme-example: NAME -->`` in the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-example: {re.escape(name)} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README has no example block {name!r}"
    return match.group(1)


def run_block(block: str, port: int, admin_file: Path, cwd: Path) -> str:
    script = block.replace("localhost:8080", f"127.0.0.1:{port}").replace(".data/admin.json", str(admin_file))
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 3,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def json_values(text: str) -> list[object]:
    """Every JSON value in ``text`` (curl prints answers without a newline between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


def signer(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIGNER, *args],
        env=env,
        cwd=TREE,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 3,
        check=False,
    )


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the README uses curl and jq")
def test_first_hour_as_written(tmp_path: Path, launch) -> None:
    data_dir = tmp_path / "data"
    env = base_env(data_dir)
    admin_file = data_dir / "admin.json"
    first = signer(env, "init", "--credentials-out", str(admin_file))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "" and "sat_" not in first.stderr
    assert stat.S_IMODE(admin_file.stat().st_mode) == 0o600
    credentials = json.loads(admin_file.read_text())
    server = launch(
        Installation(data_dir=data_dir, env=env, admin={"credentials": credentials}),
    )

    # "signer ready" names where it listens, and is logged once it accepts connections.
    ready = [json.loads(line) for line in server.log_text().splitlines() if '"signer ready"' in line]
    assert ready and ready[0]["address"] == f"127.0.0.1:{server.port}", ready

    # The JSON-RPC examples run in the same shell, after the quick start set $RELAYER.
    out = run_block(
        readme_block("quickstart") + 'echo "=== jsonrpc"\n' + readme_block("jsonrpc"),
        server.port,
        admin_file,
        tmp_path,
    )
    out, rpc_out = out.split("=== jsonrpc\n")
    answers = json_values(out)
    granted, signed = answers[-2], answers[-1]
    rpc_tx, rpc_message = json_values(rpc_out)
    assert rpc_tx["id"] == 2 and Account.recover_transaction(rpc_tx["result"]) == signed["signer"], rpc_tx
    assert (
        Account.recover_message(encode_defunct(b"hello"), signature=rpc_message["result"]) == signed["signer"]
    )
    assert sorted(granted["operations"]) == ["sign_message", "sign_transaction"], granted
    raw = bytes.fromhex(signed["raw_transaction"][2:])
    assert Account.recover_transaction(raw) == signed["signer"]

    # The token file the quick start wrote works with the CLI.
    url = ["--server", server.url]
    me = signer(env, "whoami", "--json", *url, "--token-file", str(admin_file))
    assert me.returncode == 0 and json.loads(me.stdout)["role"] == "admin", me.stderr

    # A lost printout: the recovery issues new credentials, printed as init prints them, and that
    # printout saved as it is works as a token file. The old token keeps working until revoked.
    again = signer(env, "init")
    assert again.returncode == 0 and again.stdout.strip() == ""
    assert "--new-admin-credentials" in again.stderr
    recovered = signer(env, "init", "--new-admin-credentials")
    assert recovered.returncode == 0, recovered.stderr
    printout = tmp_path / "printout.json"
    printout.write_text(recovered.stdout)
    printout.chmod(0o600)
    me = signer(env, "whoami", "--json", *url, "--token-file", str(printout))
    assert me.returncode == 0 and json.loads(me.stdout)["role"] == "admin", me.stderr
    assert json.loads(recovered.stdout)["credentials"]["access_token"] != credentials["access_token"]
    me = signer(env, "whoami", "--json", *url, "--token-file", str(admin_file))
    assert me.returncode == 0, me.stderr
    nobody = signer(env, "init", "--new-admin-credentials", "--admin-name", "nobody")
    assert nobody.returncode != 0 and nobody.stdout.strip() == ""


def test_cli_exits_10_while_waiting_for_approval(tmp_path: Path, own_installation, launch) -> None:
    server = launch(own_installation)
    key = make_key(server, label="approval-exit")
    admin_file = tmp_path / "admin.json"
    admin_file.write_text(json.dumps(own_installation.admin))
    admin_file.chmod(0o600)
    created = signer(
        own_installation.env,
        "principals",
        "create",
        "relayer-exit",
        "--role",
        "service",
        "--server",
        server.url,
        "--token-file",
        str(admin_file),
        "--credentials-out",
        str(tmp_path / "relayer.json"),
        "--json",
    )
    assert created.returncode == 0, created.stderr
    grant(server, json.loads(created.stdout)["principal"]["id"], key["id"], ["sign_transaction"])
    attach_policy(
        server,
        {
            "id": "exit-code-approval",
            "rules": [
                {
                    "id": "all-need-approval",
                    "kind": "value_cap",
                    "effect": "require_approval",
                    "max_value": "0",
                    "approval": {"quorum": 1, "group": "treasury", "expires_in_seconds": 600},
                }
            ],
        },
        key_id=key["id"],
    )
    tx = {"type": 2, "chainId": 1, "nonce": 0, "gas": 21000, "to": "0x" + "5a" * 20,
          "value": "1", "maxFeePerGas": "3000000000", "maxPriorityFeePerGas": "1"}  # fmt: skip
    relayer_file = ["--server", server.url, "--token-file", str(tmp_path / "relayer.json")]
    waiting = signer(
        own_installation.env, "sign", "transaction", key["id"], "--json", *relayer_file, stdin=json.dumps(tx)
    )
    assert waiting.returncode == 10, (waiting.returncode, waiting.stderr)
    answer = json.loads(waiting.stdout)
    assert answer["state"] == "pending_approval"
    assert f"signer approvals result {answer['approval']['id']}" in waiting.stderr
    still = signer(
        own_installation.env, "approvals", "result", answer["approval"]["id"], "--json", *relayer_file
    )
    assert still.returncode == 10, (still.returncode, still.stderr)
