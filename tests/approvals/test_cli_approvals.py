"""``signer approvals ...`` against the running server, with a signed (Ed25519) approval checked offline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from eth_account import Account

from signer.services.approvals import approval_message
from tests.approvals.test_api_approvals import Desk, desk, tx  # noqa: F401
from tests.service_harness import SIGNER, Server


def cli(server: Server, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.installation.env, "SIGNER_TOKEN": token, "SIGNER_SERVER": server.url}
    return subprocess.run(
        [*SIGNER, "approvals", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_list_show_approve_with_a_signed_approval(desk: Desk, server: Server, tmp_path: Path) -> None:  # noqa: F811
    status, pending = desk.sign(tx())
    assert status == 202
    approval_id, digest = pending["approval_id"], pending["payload_digest"]

    listed = cli(server, desk.approvers[0], "list", "--state", "pending")
    assert listed.returncode == 0, listed.stderr
    assert approval_id in [item["id"] for item in json.loads(listed.stdout)["items"]]
    shown = json.loads(cli(server, desk.approvers[0], "show", approval_id).stdout)
    assert shown["view"]["value_eth"] == "2" and shown["payload_digest"] == digest

    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "approver.pem"
    key_file.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    registered = cli(server, desk.approvers[0], "register-key", "--ed25519-key", str(key_file))
    assert registered.returncode == 0, registered.stderr

    wrong = cli(server, desk.approvers[0], "approve", approval_id, "--digest", "cd" * 32)
    assert wrong.returncode == 3 and "approval_mismatch" in wrong.stderr
    signed = cli(
        server, desk.approvers[0], "approve", approval_id, "--digest", digest, "--ed25519-key", str(key_file)
    )
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["state"] == "pending"
    done = cli(server, desk.approvers[1], "approve", approval_id)
    assert json.loads(done.stdout)["state"] == "signed", done.stderr

    # An auditor checks offline that this approver approved exactly this payload.
    votes = json.loads(cli(server, desk.approvers[1], "show", approval_id).stdout)["votes"]
    vote = next(v for v in votes if v["signature"])
    assert vote["signature_scheme"] == "ed25519" and vote["digest"] == digest
    public = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    public.verify(bytes.fromhex(vote["signature"]), approval_message(approval_id, "approve", digest))

    result = json.loads(cli(server, desk.requester, "result", approval_id, "--wait", "5").stdout)
    raw = bytes.fromhex(result["result"]["raw_transaction"][2:])
    assert Account.recover_transaction(raw) == desk.key["address"]


def test_cli_without_a_token_fails_cleanly(server: Server) -> None:
    env = {k: v for k, v in server.installation.env.items() if k != "SIGNER_TOKEN"}
    done = subprocess.run(
        [*SIGNER, "approvals", "list", "--server", server.url],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "SIGNER_TOKEN" in done.stderr
