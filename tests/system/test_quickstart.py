"""The README's path, walked as a new user walks it: ``signer init`` (twice), ``signer serve``, then with the
printed admin token: a key, a relayer, a grant, a signed transaction, and an auditor who exports the
audit log and verifies it offline with ``signer audit verify``.

The second ``init`` must change nothing and print no credentials; the first admin's token keeps working.
The state it leaves is private: data directory 0700, PIN and key files 0600.
"""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path

from eth_account import Account

from tests.service_harness import SIGNER, Installation, base_env
from tests.system.support import HANG_GUARD, cli_audit_verify, get_text

README_TX = {
    "type": 2,
    "chainId": 1,
    "nonce": 0,
    "gas": 21000,
    "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "value": "1000000000000000",
    "maxFeePerGas": "30000000000",
    "maxPriorityFeePerGas": "1000000000",
}
PRIVATE_FILES = ("hsm-user-pin", "hsm-so-pin", "token-hmac.key")


def init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIGNER, "init"], env=env, capture_output=True, text=True, timeout=HANG_GUARD * 3, check=False
    )


def fingerprint(data_dir: Path) -> dict[str, str]:
    """Content hashes of the set-up's files (token objects, PINs, keys, configuration), not the database."""
    found = {}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.name.startswith(("signer.db", "server-")):
            found[str(path.relative_to(data_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_quick_start_as_a_user(tmp_path: Path, launch) -> None:
    data_dir = tmp_path / "data"
    env = base_env(data_dir)
    first = init(env)
    assert first.returncode == 0, first.stderr
    admin = json.loads(first.stdout)
    admin_token = admin["credentials"]["access_token"]
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in PRIVATE_FILES:
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    before = fingerprint(data_dir)

    second = init(env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "", "the second init printed something on stdout"
    for secret in (admin_token, admin["credentials"]["refresh_token"], "sat_", "srt_"):
        assert secret not in second.stdout + second.stderr
    assert fingerprint(data_dir) == before, "the second init changed the token, a PIN or a key"

    server = launch(Installation(data_dir=data_dir, env=env, admin=admin))
    status, _, me = server.call("GET", "/v1/whoami", token=admin_token)
    assert status == 200 and me["role"] == "admin"

    status, _, key = server.call("POST", "/v1/keys", {"curve": "secp256k1", "label": "hot-1"}, admin_token)
    assert status == 201, key
    assert key["address"] and "private" not in json.dumps(key).lower()
    status, _, relayer = server.call(
        "POST", "/v1/principals", {"name": "relayer-1", "role": "service"}, admin_token
    )
    assert status == 201, relayer
    status, _, granted = server.call(
        "POST",
        "/v1/grants",
        {"principal_id": relayer["principal"]["id"], "key_id": key["id"], "operations": ["sign_transaction"]},
        admin_token,
    )
    assert status == 201, granted

    status, _, signed = server.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/transaction",
        {"transaction": README_TX},
        relayer["credentials"]["access_token"],
    )
    assert status == 200, signed
    raw = bytes.fromhex(signed["raw_transaction"][2:])
    assert Account.recover_transaction(raw) == key["address"] == signed["signer"]

    status, _, auditor = server.call(
        "POST", "/v1/principals", {"name": "auditor-1", "role": "auditor"}, admin_token
    )
    assert status == 201, auditor
    status, text = get_text(f"{server.url}/v1/audit/events", auditor["credentials"]["access_token"])
    assert status == 200, text
    lines = text.splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert {"principal.create", "key.create", "grant.create", "sign.transaction"} <= set(kinds), kinds
    code, report = cli_audit_verify(lines, tmp_path, env)
    assert code == 0 and report == {"ok": True, "checked": len(lines)}, report
