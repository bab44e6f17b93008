"""The CLI's server commands against the real running server (session fixture: real SoftHSM token, SQLite).

Each command is run through click's runner in this process (the server is a subprocess); signatures made
through the CLI are checked by recovery with eth-account, independently of the server. Every output is
collected and searched for the bearer tokens in use: none may ever be printed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import pkgutil
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
import rlp
from aiohttp import web
from click.testing import CliRunner
from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from signer import cli_api
from signer.cli import main
from signer.client import (
    ApiError,
    ClientConfigError,
    ClientConnectionError,
    SignerClient,
    load_client_config,
)
from signer.config import Secret
from tests.service_harness import Server, free_port
from tests.system.support import wait_until
from tests.test_api_signing import RECIPIENT, TYPED, tx_fields

ALL_OPS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"]


INVOKED: set[tuple[str, ...]] = set()
REQUESTED: set[tuple[str, str]] = set()


@pytest.fixture(autouse=True)
def _record_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remember every (method, path) the CLI's client sends, for the route coverage test."""
    original = SignerClient._open

    def recording(self: SignerClient, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        REQUESTED.add((method, path))
        return original(self, method, path, *args, **kwargs)

    monkeypatch.setattr(SignerClient, "_open", recording)


@dataclass
class Cli:
    """Runs `signer ...` against one server with one token file; remembers every output."""

    server: Server
    home: Path
    token_file: Path
    secrets: list[str]
    outputs: list[str] = field(default_factory=list)

    def env(self, **extra: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SIGNER_")}
        env.update(
            SIGNER_SERVER=self.server.url,
            SIGNER_TOKEN_FILE=str(self.token_file),
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
        )
        env.update(extra)
        return env

    def run(self, *args: str, input: str | bytes | None = None, env: dict[str, Any] | None = None):
        result = CliRunner().invoke(main, list(args), input=input, env=env or self.env())
        words = [a for a in args[:3] if not a.startswith("-")]
        # A command's path: one to three words (``audit proof inclusion``); an argument after a shorter
        # path only adds a path no command has.
        INVOKED.update(tuple(words[:n]) for n in range(1, len(words) + 1))
        self.outputs.append(result.stdout + result.stderr)
        return result

    def ok(self, *args: str, input: str | None = None) -> Any:
        result = self.run(*args, "--json", input=input)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def check_no_secret(self) -> None:
        for output in self.outputs:
            for secret in self.secrets:
                assert secret not in output


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Iterator[Cli]:
    token_file = tmp_path / "admin-token"
    token_file.write_text(server.installation.admin_token + "\n")
    token_file.chmod(0o600)
    (tmp_path / "home").mkdir()
    runner = Cli(server, tmp_path / "home", token_file, [server.installation.admin_token])
    yield runner
    runner.check_no_secret()


def _service(cli: Cli, name: str, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    creds = tmp_path / f"{name}.json"
    created = cli.ok("principals", "create", name, "--role", "service", "--credentials-out", str(creds))
    stored = json.loads(creds.read_text())
    assert (creds.stat().st_mode & 0o777) == 0o600
    assert "access_token" not in created["credentials"] and stored["access_token"]
    cli.secrets += [stored["access_token"], stored["refresh_token"]]
    return created["principal"], creds


def test_admin_workflow_and_signing_recovers_to_the_key(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    me = cli.ok("whoami")
    assert me["role"] == "admin"

    principal, creds = _service(cli, unique_name, tmp_path)
    listed = cli.run("principals", "list")
    assert listed.exit_code == 0 and unique_name in listed.stdout and listed.stdout.startswith("ID ")

    key = cli.ok(
        "keys",
        "create",
        "--curve",
        "secp256k1",
        "--label",
        unique_name[:60],
        "--tag",
        "cli",
        "--scope",
        "acme/cli",
    )
    assert key["tags"] == ["cli"] and key["scope"] == "acme/cli" and key["attributes"]
    assert cli.ok("keys", "show", key["id"])["address"] == key["address"]
    table = cli.run("keys", "list", "--limit", "1000")
    assert table.exit_code == 0 and key["id"] in table.stdout
    assert any(k["id"] == key["id"] for k in cli.ok("keys", "list", "--limit", "1000")["items"])

    grant_args = ["grants", "create", "--principal", principal["id"], "--key", key["id"]]
    granted = cli.ok(*grant_args, *[arg for op in ALL_OPS for arg in ("--operation", op)])
    assert granted["operations"] == sorted(ALL_OPS)
    assert [g["id"] for g in cli.ok("grants", "list", "--principal", principal["id"])["items"]] == [
        granted["id"]
    ]
    assert granted["id"] in cli.run("grants", "list").stdout

    relayer = Cli(cli.server, cli.home, creds, cli.secrets)
    assert relayer.ok("whoami")["principal_id"] == principal["id"]

    # transaction from a file, then from stdin
    tx_file = tmp_path / "tx.json"
    tx_file.write_text(json.dumps(tx_fields(2)))
    signed = relayer.ok("sign", "transaction", key["id"], str(tx_file))
    assert Account.recover_transaction(signed["raw_transaction"]) == key["address"]
    signed = relayer.ok("sign", "transaction", key["id"], input=json.dumps(tx_fields(0, nonce=1)))
    assert Account.recover_transaction(signed["raw_transaction"]) == key["address"]
    # an unsigned serialised EIP-1559 transaction
    payload = [1, 7, 10**9, 10**10, 50000, bytes.fromhex(RECIPIENT[2:]), 1, b"", []]
    raw_file = tmp_path / "tx.hex"
    raw_file.write_text("0x" + (b"\x02" + rlp.encode(payload)).hex() + "\n")
    signed = relayer.ok("sign", "transaction", key["id"], str(raw_file), "--raw")
    assert Account.recover_transaction(signed["raw_transaction"]) == key["address"]

    # the JSON-RPC endpoint: a signature, and an error answer's exit code
    assert relayer.ok("sign", "rpc", "eth_accounts")["result"] == [key["address"]]
    rpc_tx = {**tx_fields(2, nonce=3), "from": key["address"]}
    answer = relayer.ok("sign", "rpc", "eth_signTransaction", "-", input=json.dumps([rpc_tx]))
    assert Account.recover_transaction(answer["result"]) == key["address"]
    unknown = relayer.run("sign", "rpc", "eth_nope")
    assert unknown.exit_code == cli_api.EXIT_INVALID and "-32601" in unknown.stderr

    # messages: text, hex, base64, a file, stdin
    def recovered(body: dict[str, Any], plain: bytes) -> str:
        return Account.recover_message(encode_defunct(primitive=plain), signature=body["signature"])

    assert recovered(relayer.ok("sign", "message", key["id"], "hello"), b"hello") == key["address"]
    assert (
        recovered(relayer.ok("sign", "message", key["id"], "0xdead", "--encoding", "hex"), b"\xde\xad")
        == (key["address"])
    )
    b64 = base64.b64encode(b"\x00\x01binary").decode()
    body = relayer.ok("sign", "message", key["id"], b64, "--encoding", "base64")
    assert recovered(body, b"\x00\x01binary") == key["address"]
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    assert (
        recovered(relayer.ok("sign", "message", key["id"], "--file", str(blob)), bytes(range(256)))
        == (key["address"])
    )
    assert (
        recovered(relayer.ok("sign", "message", key["id"], input="from stdin"), b"from stdin")
        == key["address"]
    )

    # typed data from stdin
    body = relayer.ok("sign", "typed-data", key["id"], input=json.dumps(TYPED))
    signable = encode_typed_data(full_message=TYPED)
    assert Account.recover_message(signable, signature=body["signature"]) == key["address"]

    # an EIP-7702 authorisation: denied by default (no delegate_allowlist here), exit code 4
    denied = relayer.run(
        "sign", "authorization", key["id"], "--chain-id", "1", "--delegate", "0x" + "de" * 20, "--nonce", "0"
    )
    assert denied.exit_code == cli_api.EXIT_DENIED and "delegate_not_allowed" in denied.stderr, denied.stderr

    # human output of a signature: name/value lines, nothing secret
    human = relayer.run("sign", "message", key["id"], "hello")
    assert human.exit_code == 0 and "signature" in human.stdout and key["address"] in human.stdout

    # disable the key (the old name of suspend): signing is a conflict (7); enable: it signs again
    assert cli.ok("keys", "disable", key["id"])["state"] == "suspended"
    refused = relayer.run("sign", "message", key["id"], "hello")
    assert refused.exit_code == cli_api.EXIT_CONFLICT, refused.stderr
    assert "409 key_disabled" in refused.stderr
    assert cli.ok("keys", "enable", key["id"])["state"] == "active"
    assert relayer.run("sign", "message", key["id"], "hello").exit_code == 0

    # a grant that expires: its expiry is shown in the table
    later = cli.ok(*grant_args, "--operation", "sign_message", "--expires-at", "2099-01-01T00:00:00Z")
    assert later["expires_at"].startswith("2099-01-01")
    assert "2099-01-01" in cli.run("grants", "list", "--principal", principal["id"]).stdout
    assert cli.ok("grants", "revoke", later["id"])["revoked"] is True

    # revoke the grant: the key now looks missing to the relayer
    assert cli.ok("grants", "revoke", granted["id"])["revoked"] is True
    gone = relayer.run("sign", "message", key["id"], "hello")
    assert gone.exit_code in (cli_api.EXIT_DENIED, cli_api.EXIT_NOT_FOUND), gone.stderr
    relayer.check_no_secret()


def test_key_lifecycle_commands(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``keys create --inactive``, ``keys activate|suspend|deactivate|compromise|destroy``: signing works
    only while active (recovered with eth-account), a refused transition is a conflict (exit 7) naming
    ``invalid_key_transition``, compromise and destroy need ``--confirm`` with the key's label."""
    principal, creds = _service(cli, f"life-{unique_name}", tmp_path)
    label = f"life {unique_name}"[:60]
    key = cli.ok("keys", "create", "--curve", "secp256k1", "--label", label, "--inactive")
    assert key["state"] == "pre_activation" and key["can_sign"] is False
    cli.ok(
        "grants", "create", "--principal", principal["id"], "--key", key["id"], "--operation", "sign_message"
    )
    signer = Cli(cli.server, cli.home, creds, cli.secrets)

    def signs() -> bool:
        result = signer.run("sign", "message", key["id"], "hello", "--json")
        if result.exit_code != 0:
            assert result.exit_code == cli_api.EXIT_CONFLICT, result.stderr
            return False
        signature = json.loads(result.stdout)["signature"]
        assert Account.recover_message(encode_defunct(text="hello"), signature=signature) == key["address"]
        return True

    assert not signs()
    assert cli.ok("keys", "activate", key["id"], "--reason", "ceremony done")["state"] == "active"
    assert signs()
    assert cli.ok("keys", "suspend", key["id"])["state"] == "suspended"
    refused = signer.run("sign", "message", key["id"], "hello")
    assert "409 key_disabled" in refused.stderr
    assert cli.ok("keys", "activate", key["id"])["state"] == "active"
    assert cli.ok("keys", "deactivate", key["id"], "--reason", "retired")["state"] == "deactivated"
    assert not signs()
    again = cli.run("keys", "activate", key["id"])
    assert again.exit_code == cli_api.EXIT_CONFLICT and "invalid_key_transition" in again.stderr
    assert cli.run("keys", "destroy", key["id"]).exit_code != 0  # --confirm is required
    wrong = cli.run("keys", "destroy", key["id"], "--confirm", "not the label")
    assert wrong.exit_code == cli_api.EXIT_INVALID and "confirmation_mismatch" in wrong.stderr
    compromised = cli.ok(
        "keys", "compromise", key["id"], "--confirm", label, "--compromised-at", "2026-12-01T00:00:00Z"
    )
    assert compromised["state"] == "compromised" and compromised["compromised_at"] == "2026-12-01T00:00:00Z"
    destroyed = cli.ok("keys", "destroy", key["id"], "--confirm", label, "--reason", "end of life")
    assert destroyed["state"] == "destroyed_compromised" and destroyed["destroyed_in_token"] is True
    shown = cli.ok("keys", "show", key["id"])
    assert shown["public_key"] == key["public_key"] and shown["compromised"] is True
    assert not signs()


def test_a_no_access_grant_through_the_cli(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``grants create --no-access`` closes a scope below a group's scope grant; the list shows it."""
    principal, creds = _service(cli, unique_name, tmp_path)
    relayer = Cli(cli.server, cli.home, creds, cli.secrets)
    scope = f"cli/{unique_name}"
    open_key = cli.ok("keys", "create", "--curve", "secp256k1", "--label", "open", "--scope", f"{scope}/ops")
    closed_key = cli.ok(
        "keys", "create", "--curve", "secp256k1", "--label", "closed", "--scope", f"{scope}/prod"
    )
    group = f"dev-{unique_name}"[:60]
    cli.ok("groups", "add-member", group, principal["id"])
    cli.ok("grants", "create", "--group", group, "--scope", scope, "--operation", "sign_message")
    closed = cli.ok("grants", "create", "--group", group, "--scope", f"{scope}/prod", "--no-access")
    assert closed["no_access"] is True and closed["operations"] == []
    table = cli.run("grants", "list")
    assert table.exit_code == 0 and "NO_ACCESS" in table.stdout.upper() and closed["id"] in table.stdout
    assert relayer.run("sign", "message", open_key["id"], "hi").exit_code == 0
    gone = relayer.run("sign", "message", closed_key["id"], "hi")
    assert gone.exit_code == cli_api.EXIT_NOT_FOUND and "key_not_found" in gone.stderr, gone.stderr
    both = cli.run(
        "grants", "create", "--group", group, "--scope", scope, "--no-access", "--operation", "sign_raw"
    )
    neither = cli.run("grants", "create", "--group", group, "--scope", scope)
    assert both.exit_code == 2 and neither.exit_code == 2
    relayer.check_no_secret()


def test_grants_name_a_resource_through_the_cli(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``grants create --resource TYPE:ID`` (and ``--key``, its older spelling) grant on one resource; the
    answer and the list name it by reference; a malformed reference, a kind nobody registered and an
    operation of another kind are refused."""
    principal, creds = _service(cli, unique_name, tmp_path)
    relayer = Cli(cli.server, cli.home, creds, cli.secrets)
    key = cli.ok("keys", "create", "--curve", "secp256k1", "--label", "ref", "--scope", f"cli/{unique_name}")
    by_ref = cli.ok(
        "grants", "create", "--principal", principal["id"], "--resource", f"key:{key['id']}",
        "--operation", "sign_message",
    )  # fmt: skip
    assert by_ref["resource"] == {"type": "key", "id": key["id"]} and by_ref["scope"] is None
    by_key = cli.ok(
        "grants", "create", "--principal", principal["id"], "--key", key["id"], "--operation", "sign_raw"
    )
    assert by_key["resource"] == by_ref["resource"] and by_key["resource_type"] == "key"
    listed = cli.ok("grants", "list", "--principal", principal["id"])["items"]
    assert [g["resource"] for g in listed] == [by_ref["resource"]] * 2
    assert "key" in cli.run("grants", "list", "--principal", principal["id"]).stdout
    assert relayer.run("sign", "message", key["id"], "hi").exit_code == 0
    malformed = cli.run("grants", "create", "--principal", principal["id"], "--resource", key["id"])
    assert malformed.exit_code == 2
    unknown = cli.run(
        "grants", "create", "--principal", principal["id"], "--resource", "planet:p1", "--operation", "list"
    )
    assert unknown.exit_code == cli_api.EXIT_INVALID and "invalid_grant" in unknown.stderr, unknown.stderr
    other = cli.run(
        "grants", "create", "--principal", principal["id"], "--resource", f"key:{key['id']}",
        "--operation", "read_value",
    )  # fmt: skip
    assert other.exit_code == cli_api.EXIT_INVALID and "invalid_operations" in other.stderr, other.stderr
    relayer.check_no_secret()


def test_groups_policies_dry_run_and_idempotency(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    principal, creds = _service(cli, unique_name, tmp_path)
    relayer = Cli(cli.server, cli.home, creds, cli.secrets)
    scope = f"cli/{unique_name}"
    key = cli.ok("keys", "create", "--curve", "secp256k1", "--label", "grp", "--scope", f"{scope}/hot")
    group = f"g-{unique_name}"[:60]

    # a grant to a group on a scope, with a use limit and a budget
    granted = cli.ok(
        "grants", "create", "--group", group, "--scope", scope, "--max-uses", "50",
        "--budget", "native=1000000000000000000",
        *[arg for op in ("sign_transaction", "sign_message", "sign_raw") for arg in ("--operation", op)],
    )  # fmt: skip
    assert granted["group"] == group and granted["max_uses"] == 50
    assert granted["value_budgets"] == {"native": "1000000000000000000"}
    bad_budget = cli.run("grants", "create", "--group", group, "--scope", scope, "--operation", "sign_raw",
                         "--budget", "native")  # fmt: skip
    assert bad_budget.exit_code == 2

    assert relayer.run("sign", "message", key["id"], "hi").exit_code in (4, 5)  # not a member yet
    cli.ok("groups", "add-member", group, principal["id"])
    assert any(g["group"] == group for g in cli.ok("groups", "list")["items"])
    assert group in cli.run("groups", "list").stdout
    assert principal["id"] in json.dumps(cli.ok("groups", "show", group))

    # a YAML policy that unlocks raw digests on this key, attached through the CLI
    policy_id = f"cli-{unique_name}"[:60]
    document = tmp_path / "unlock.yaml"
    rule = "  - id: blind-signing\n    kind: raw_digest\n    effect: allow\n"
    document.write_text(f"id: {policy_id}\nversion: 1\nrules:\n{rule}")
    stored = cli.ok("policies", "create", str(document))
    assert stored["policy_id"] == policy_id and stored["version"] == 1
    assert policy_id in cli.run("policies", "list").stdout
    assert (
        cli.ok("policies", "show", policy_id)["versions"][0]["document"]["rules"][0]["kind"] == "raw_digest"
    )
    attached = cli.ok("policies", "attach", policy_id, "--version", "1", "--key", key["id"])
    assert attached["mode"] == "live"
    # --resource TYPE:ID names the same place: it replaces the attachment made with --key
    again = cli.ok("policies", "attach", policy_id, "--version", "1", "--resource", f"key:{key['id']}")
    assert again["resource"] == {"type": "key", "id": key["id"]} and again["key_id"] == key["id"]
    assert again["id"] != attached["id"]
    assert cli.run("policies", "attach", policy_id, "--version", "1", "--resource", "no-colon").exit_code == 2
    assert (
        "invalid_attachment"
        in cli.run("policies", "attach", policy_id, "--version", "1", "--resource", "vault:x").stderr
    )
    attached = again
    assert any(a["id"] == attached["id"] for a in cli.ok("policies", "attachments")["items"])

    digest = hashlib.sha256(b"blind from the cli").hexdigest()
    body = relayer.ok("sign", "digest", key["id"], "0x" + digest)
    signature = bytes.fromhex(body["signature"][2:])
    public = PublicKey.from_signature_and_message(
        signature[:64] + bytes([signature[64] - 27]), bytes.fromhex(digest), hasher=None
    )
    assert public.format(compressed=False).hex() == key["public_key"][2:]

    # dry run (JSON policy from stdin as a candidate) judges without signing
    strict = {"id": f"strict-{unique_name}"[:60], "version": 1,
              "rules": [{"id": "cap", "kind": "value_cap", "effect": "deny", "max_value": "1"}]}  # fmt: skip
    assert cli.ok("policies", "create", "--format", "json", input=json.dumps(strict))["version"] == 1
    request = json.dumps({"transaction": tx_fields(2)})
    judged = relayer.ok(
        "policies", "dry-run", "--key", key["id"], "--operation", "sign_transaction", input=request
    )
    assert judged["effect"] == "allow", judged
    judged = cli.ok(
        "policies", "dry-run", "--key", key["id"], "--operation", "sign_transaction",
        "--principal", principal["id"], "--candidate", f"{strict['id']}:1", "--candidate-key", key["id"],
        input=request,
    )  # fmt: skip
    assert judged["effect"] == "deny" and judged["reasons"][0]["code"] == "value_cap_exceeded", judged

    # shadow: recorded, never enforced; then detached
    shadow = cli.ok(
        "policies", "attach", strict["id"], "--version", "1", "--key", key["id"], "--mode", "shadow"
    )
    signed = relayer.ok("sign", "transaction", key["id"], input=json.dumps(tx_fields(2)))
    assert Account.recover_transaction(signed["raw_transaction"]) == key["address"]
    report = cli.ok("policies", "shadow-report", shadow["id"])
    assert report["evaluated"] >= 1 and report["differing"] >= 1
    assert cli.ok("policies", "detach", shadow["id"]) == {"id": shadow["id"], "detached": True}
    assert shadow["id"] in cli.run("policies", "attachments", "--include-detached").stdout

    # idempotency: the same key and request give the same answer; the key with another request is refused
    first = relayer.ok("sign", "message", key["id"], "once", "--idempotency-key", f"k-{unique_name}"[:100])
    again = relayer.ok("sign", "message", key["id"], "once", "--idempotency-key", f"k-{unique_name}"[:100])
    assert first["signature"] == again["signature"]
    other = relayer.run("sign", "message", key["id"], "other", "--idempotency-key", f"k-{unique_name}"[:100])
    assert other.exit_code == cli_api.EXIT_INVALID and "idempotency_key_reused" in other.stderr

    # leaving the group ends the grant
    cli.ok("groups", "remove-member", group, principal["id"])
    assert relayer.run("sign", "message", key["id"], "hi").exit_code in (4, 5)
    relayer.check_no_secret()


def test_principal_state_tokens_and_refresh(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    principal, creds = _service(cli, unique_name, tmp_path)
    relayer = Cli(cli.server, cli.home, creds, cli.secrets)
    assert relayer.ok("whoami")["name"] == unique_name

    assert cli.ok("principals", "disable", principal["id"])["disabled"] is True
    denied = relayer.run("whoami")
    assert denied.exit_code == cli_api.EXIT_DENIED and "denied: 401" in denied.stderr
    assert cli.ok("principals", "enable", principal["id"])["disabled"] is False

    # new credentials for the principal, written to a file; revoke the access token by id
    fresh = tmp_path / "fresh.json"
    issued = cli.ok("tokens", "issue", principal["id"], "--credentials-out", str(fresh))
    stored = json.loads(fresh.read_text())
    cli.secrets += [stored["access_token"], stored["refresh_token"]]
    assert set(issued) >= {"access_token_id", "refresh_token_id"} and "access_token" not in issued
    holder = Cli(cli.server, cli.home, fresh, cli.secrets)
    assert holder.ok("whoami")["principal_id"] == principal["id"]

    # a KMS (SigV4) credential: the secret goes to the file only; revoked like a token, by its id
    kms_file = tmp_path / "kms.json"
    kms = cli.ok(
        "tokens", "issue-kms", principal["id"], "--ttl-seconds", "3600", "--credentials-out", str(kms_file)
    )
    kms_stored = json.loads(kms_file.read_text())
    cli.secrets.append(kms_stored["secret_access_key"])
    assert "secret_access_key" not in kms and kms["access_key_id"] == kms_stored["access_key_id"]
    assert kms["expires_at"] is not None
    assert cli.ok("tokens", "revoke", kms["access_key_id"])["revoked"] is True

    # refresh in place: the file now holds the new pair, the old refresh token stops working
    old = json.loads(fresh.read_text())
    refreshed = holder.ok(
        "auth", "refresh", "--refresh-token-file", str(fresh), "--credentials-out", str(fresh)
    )
    new = json.loads(fresh.read_text())
    cli.secrets += [new["access_token"], new["refresh_token"]]
    assert (
        new["refresh_token"] != old["refresh_token"]
        and refreshed["access_token_id"] == new["access_token_id"]
    )
    assert holder.ok("whoami")["principal_id"] == principal["id"]
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps(old))
    replay = holder.run(
        "auth", "refresh", "--refresh-token-file", str(stale), "--credentials-out", str(stale)
    )
    assert replay.exit_code == cli_api.EXIT_DENIED, replay.stderr

    revoked = cli.ok("tokens", "revoke", new["access_token_id"])
    assert revoked == {"token_id": new["access_token_id"], "revoked": True}
    assert holder.run("whoami").exit_code == cli_api.EXIT_DENIED
    holder.check_no_secret()


def test_client_certificate_commands(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``principals add-cert``, ``list-certs``, ``revoke-cert`` over the API (the CLI test server runs
    plain HTTP: the certificate's use over TLS is tests/system/test_client_certs.py)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    principal, _ = _service(cli, unique_name, tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unique_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    pem_file = tmp_path / "relayer.crt"
    pem_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()

    added = cli.ok("principals", "add-cert", principal["id"], str(pem_file), "--ttl-seconds", "3600")
    assert added["fingerprint"] == fingerprint and added["principal_id"] == principal["id"]
    expires = datetime.datetime.fromisoformat(added["expires_at"].replace("Z", "+00:00"))
    assert expires <= now + datetime.timedelta(seconds=3700)  # the ttl, before the certificate's notAfter
    again = cli.run("principals", "add-cert", principal["id"], str(pem_file))
    assert again.exit_code == cli_api.EXIT_CONFLICT
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    refused = cli.run("principals", "add-cert", principal["id"], str(junk))
    assert refused.exit_code == cli_api.EXIT_INVALID and "not a certificate" not in refused.stderr

    listed = cli.ok("principals", "list-certs", principal["id"])
    assert [c["fingerprint"] for c in listed["items"]] == [fingerprint]
    assert listed["items"][0]["revoked_at"] is None
    table = cli.run("principals", "list-certs", principal["id"])
    assert table.exit_code == 0 and fingerprint in table.stdout
    colons = ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    revoked = cli.ok("principals", "revoke-cert", principal["id"], colons)
    assert revoked == {"fingerprint": fingerprint, "principal_id": principal["id"], "revoked": True}
    assert cli.ok("principals", "list-certs", principal["id"])["items"][0]["revoked_at"] is not None
    missing = cli.run("principals", "revoke-cert", principal["id"], "0" * 64)
    assert missing.exit_code == cli_api.EXIT_NOT_FOUND


def test_exit_codes_distinguish_denied_not_found_invalid_and_failed(
    cli: Cli, tmp_path: Path, unique_name: str
) -> None:
    _, creds = _service(cli, unique_name, tmp_path)
    relayer = Cli(cli.server, cli.home, creds, cli.secrets)

    # 403: a service may not list principals; --json prints the problem document
    denied = relayer.run("principals", "list", "--json")
    assert denied.exit_code == cli_api.EXIT_DENIED == 4
    problem = json.loads(denied.stdout)
    assert problem["status"] == 403 and problem["code"] and "request id:" in denied.stderr

    # 401: a token the server does not know
    bogus = tmp_path / "bogus"
    bogus.write_text("not-a-real-token")
    assert cli.run("whoami", env=cli.env(SIGNER_TOKEN_FILE=str(bogus))).exit_code == cli_api.EXIT_DENIED

    # a token file others can read still works, with a warning
    bogus.chmod(0o644)
    loose = cli.run("whoami", env=cli.env(SIGNER_TOKEN_FILE=str(bogus)))
    assert "readable by others" in loose.stderr
    assert "readable by others" not in cli.run("whoami").stderr

    # 404
    missing = cli.run("keys", "show", "key_doesnotexist")
    assert missing.exit_code == cli_api.EXIT_NOT_FOUND == 5 and "not found: 404" in missing.stderr

    # 400 / 422 from the server
    bad_label = cli.run("keys", "create", "--curve", "secp256k1", "--label", "bad/label!")
    assert bad_label.exit_code == cli_api.EXIT_INVALID == 6, bad_label.stderr
    bad_digest = relayer.run("sign", "digest", "key_x", "0x" + "zz" * 32)
    assert bad_digest.exit_code in (cli_api.EXIT_INVALID, cli_api.EXIT_NOT_FOUND)

    # a credentials file that cannot be written is refused before the server issues anything
    before = cli.ok("principals", "list")["items"]
    nowhere = cli.run(
        "principals",
        "create",
        "never",
        "--role",
        "service",
        "--credentials-out",
        str(tmp_path / "no" / "c.json"),
    )
    assert nowhere.exit_code == 2 and cli.ok("principals", "list")["items"] == before

    # usage errors are click's 2, before any request
    assert cli.run("keys", "create", "--label", "x").exit_code == 2
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    assert relayer.run("sign", "transaction", "key_x", str(bad_json)).exit_code == 2

    # unreachable server: failed (1), and no token in the message
    down = cli.run("whoami", env=cli.env(SIGNER_SERVER=f"http://127.0.0.1:{free_port()}"))
    assert down.exit_code == cli_api.EXIT_FAILED == 1 and "cannot reach" in down.stderr

    # no token at all, or an unreadable token file: configuration error (3)
    none = cli.run("whoami", env=cli.env(SIGNER_TOKEN_FILE=None))
    assert none.exit_code == cli_api.EXIT_CONFIG and "no token" in none.stderr
    unreadable = cli.run("whoami", "--token-file", str(tmp_path / "absent"))
    assert unreadable.exit_code == cli_api.EXIT_CONFIG
    relayer.check_no_secret()


def test_token_and_server_from_env_and_client_config(cli: Cli, tmp_path: Path) -> None:
    token = cli.server.installation.admin_token
    by_env = cli.run("whoami", "--json", env=cli.env(SIGNER_TOKEN_FILE=None, SIGNER_TOKEN=token))
    assert by_env.exit_code == 0 and json.loads(by_env.stdout)["role"] == "admin"

    config_dir = cli.home / ".config" / "signer"
    config_dir.mkdir(parents=True)
    (config_dir / "client.toml").write_text(f'server = "{cli.server.url}"\ntoken_file = "{cli.token_file}"\n')
    from_file = cli.run("whoami", "--json", env=cli.env(SIGNER_SERVER=None, SIGNER_TOKEN_FILE=None))
    assert from_file.exit_code == 0, from_file.stderr

    # flags win over the environment, which wins over the file
    wrong = f"http://127.0.0.1:{free_port()}"
    assert cli.run("whoami", env=cli.env(SIGNER_SERVER=wrong)).exit_code == cli_api.EXIT_FAILED
    assert cli.run("whoami", "--server", cli.server.url, env=cli.env(SIGNER_SERVER=wrong)).exit_code == 0

    other = tmp_path / "other.toml"
    other.write_text('server = "ftp://nowhere"\n')
    bad = cli.run("whoami", env=cli.env(SIGNER_SERVER=None, SIGNER_CLIENT_CONFIG=str(other)))
    assert bad.exit_code == cli_api.EXIT_CONFIG and "http:// or https://" in bad.stderr

    with pytest.raises(ClientConfigError, match="unknown setting"):
        (tmp_path / "typo.toml").write_text('sever = "http://x"\n')
        load_client_config(config_file=str(tmp_path / "typo.toml"), environ={})
    with pytest.raises(ClientConfigError, match="CA file not found"):
        load_client_config(ca_file=str(tmp_path / "no-ca.pem"), environ={"SIGNER_TOKEN": "x"})


def test_status_reports_readiness(cli: Cli) -> None:
    ready = cli.run("status", "--json", env=cli.env(SIGNER_TOKEN_FILE=None))
    assert ready.exit_code == 0 and json.loads(ready.stdout)["status"] == "ready"


def test_metrics_and_openapi(cli: Cli) -> None:
    scraped = cli.run("metrics")
    assert scraped.exit_code == 0, scraped.stderr
    assert "signer_http_requests_total" in scraped.stdout
    document = cli.run("openapi", "--json", env=cli.env(SIGNER_TOKEN_FILE=None))
    assert document.exit_code == 0, document.stderr
    paths = json.loads(document.stdout)["paths"]
    assert "/v1/keys/{key_id}/sign/transaction" in paths


def test_audit_events_export_and_verify(cli: Cli, tmp_path: Path) -> None:
    page = cli.ok("audit", "events", "--limit", "5")
    assert page["head"] >= 1 and [e["seq"] for e in page["items"]] == list(range(1, len(page["items"]) + 1))
    human = cli.run("audit", "events", "--limit", "3")
    assert human.exit_code == 0 and human.stdout.splitlines()[0].split() == [
        "SEQ",
        "AT",
        "KIND",
        "REQUEST_ID",
    ]

    out = tmp_path / "audit.jsonl"
    exported = cli.run("audit", "export", str(out), "--page-size", "7", "--verify", "--json")
    assert exported.exit_code == 0, exported.stderr
    summary = json.loads(exported.stdout)
    # Signed checkpoints travel in the export as their own lines; the events are the rest.
    lines = [line for line in out.read_text().splitlines() if '"checkpoint"' not in line[:20]]
    assert summary["exported"] == len(lines) >= page["head"] and summary["verified"] is True
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(lines) + 1))

    verified = cli.run("audit", "verify", str(out))
    report = json.loads(verified.stdout)
    assert verified.exit_code == 0 and (report["ok"], report["checked"]) == (True, len(lines))

    # an existing export is not replaced without --force; no partial file is left behind
    again = cli.run("audit", "export", str(out))
    assert again.exit_code == 2 and "--force" in again.stderr
    assert cli.run("audit", "export", str(out), "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit")) == ["audit.jsonl"]
    lines = [line for line in out.read_text().splitlines() if '"checkpoint"' not in line[:20]]

    # a tampered export fails verification with exit 1
    records = [json.loads(line) for line in lines]
    records[1]["kind"] = "tampered"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli.run("audit", "verify", str(out)).exit_code == 1

    # from the middle, to stdout
    middle = cli.run("audit", "export", "-", "--after", "2", "--page-size", "3")
    assert middle.exit_code == 0
    # From the middle the export starts with the tree's edge there; checkpoints follow their events.
    records = [json.loads(line) for line in middle.stdout.splitlines()]
    assert [r["seq"] for r in records if "seq" in r][:2] == [3, 4]
    assert all(set(r) in ({"tree_start"}, {"checkpoint"}) for r in records if "seq" not in r)

    # checkpoints, proofs and the published key
    key = cli.ok("audit", "public-key")
    assert key["verifier_key"]
    # The server signs a checkpoint within its interval (10 s) once the log has grown: wait for one.
    wait_until(lambda: cli.run("audit", "checkpoint", "--json").exit_code == 0, 60, "a signed checkpoint")
    newest = cli.ok("audit", "checkpoint")
    size = int(newest["size"])
    listed = cli.ok("audit", "checkpoints")
    assert size in {int(c["size"]) for c in listed["items"]}
    inclusion = cli.ok("audit", "proof", "inclusion", "--seq", "1", "--size", str(size))
    assert isinstance(inclusion["proof"], list)
    consistency = cli.ok("audit", "proof", "consistency", "--first", "1", "--second", str(size))
    assert isinstance(consistency["proof"], list)
    assert cli.ok("audit", "rollback", "status")["detected"] is False
    # nothing to acknowledge on a healthy server: the answer says so (an admin may still call it)
    acknowledged = cli.run("audit", "rollback", "acknowledge", "--json")
    assert acknowledged.exit_code == 0, acknowledged.stderr
    assert cli.ok("audit", "rollback", "status")["detected"] is False

    # a filtered search, JSONL and CSV, to a file and to stdout
    found = tmp_path / "fetches.jsonl"
    searched = cli.ok("audit", "search", str(found), "--action", "audit.export")
    assert searched["head"] >= 1
    kinds = {json.loads(line)["kind"] for line in found.read_text().splitlines() if line.strip()}
    assert kinds <= {"audit.export"} and kinds
    as_csv = cli.run("audit", "search", "-", "--format", "csv", "--outcome", "allowed")
    assert as_csv.exit_code == 0 and as_csv.stdout.splitlines()[0].startswith("seq,")
    assert cli.run("audit", "search", str(found)).exit_code == 2  # exists: --force needed

    # auditors only: a service is denied
    denied = cli.run(
        "audit", "export", str(tmp_path / "x.jsonl"), env=cli.env(SIGNER_TOKEN="x", SIGNER_TOKEN_FILE=None)
    )
    assert denied.exit_code == cli_api.EXIT_DENIED


def test_audit_key_checkpoint_hmac_archive_and_prunes(cli: Cli, tmp_path: Path) -> None:
    key = cli.ok("audit", "public-key")
    assert key["algorithm"] == "ed25519" and key["verifier_key"].startswith(key["origin"] + "+")
    checkpoint = cli.run("audit", "checkpoint", "--json")
    assert checkpoint.exit_code in (0, 5), checkpoint.stderr  # 5: none signed yet
    first = cli.ok("audit", "hmac", "idempotency_key", input="order-1\n")
    assert cli.ok("audit", "hmac", "idempotency_key", input="order-1\n")["hmac"] == first["hmac"]
    assert "order-1" not in json.dumps(first)
    assert cli.run("audit", "hmac", "idempotency_key", input="\n").exit_code == 2
    # Archiving needs a signed checkpoint; without one the answer is a clear 409.
    archived = cli.run("audit", "archive", "--before", "3", "--out", str(tmp_path / "a.jsonl"), "--json")
    assert archived.exit_code in (0, 7), archived.stdout + archived.stderr
    refused = cli.run("audit", "prune", "--before", "3", "--archive-digest", "00" * 32, "--json")
    assert refused.exit_code == 5 and "archive_not_found" in refused.stdout
    assert cli.ok("audit", "prune-ledger")["rows_deleted"] >= 0


def test_audit_key_rotation_and_verify_with_the_first_key(cli: Cli, tmp_path: Path) -> None:
    """`signer audit key rotate`, the published keys with their validity, and `signer audit verify` of
    a whole export holding only the first key (it follows the rotation from the log)."""
    before = cli.ok("audit", "public-key")
    first = before["keys"][0]["verifier_key"]
    rotated = cli.ok("audit", "key", "rotate")
    assert rotated["old_key"] == before["verifier_key"] and rotated["new_key"] != rotated["old_key"]
    note = rotated["checkpoint"]["note"] if rotated["checkpoint"] else None
    assert note is None or len(note.partition("\n\n")[2].splitlines()) == 2  # old key and new key
    after = cli.ok("audit", "public-key")
    assert after["verifier_key"] == rotated["new_key"] == after["keys"][-1]["verifier_key"]
    assert after["keys"][-2]["state"] == "retired" and after["keys"][-2]["private_key"] == "destroyed"
    out = tmp_path / "rotated.jsonl"
    assert cli.run("audit", "export", str(out)).exit_code == 0
    keyring = tmp_path / "keyring"
    keyring.write_text(f"# the first audit key\n{first}\n")
    for held in (("--public-key", first), ("--keyring", str(keyring))):
        verified = cli.run("audit", "verify", str(out), *held)
        assert verified.exit_code == 0, verified.stdout + verified.stderr
        report = json.loads(verified.stdout)
        assert rotated["new_key"] in [k["verifier_key"] for k in report["keys"]]
    assert cli.run("audit", "verify", str(out), "--public-key", "garbage").exit_code == 2


def test_audit_export_shows_progress_on_a_terminal(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_api.audit, "progress_wanted", lambda stream=None: True)
    out = tmp_path / "audit.jsonl"
    result = cli.run("audit", "export", str(out), "--page-size", "4")
    assert result.exit_code == 0, result.stderr
    assert "exporting audit events" in result.stderr
    assert "signer audit verify" in result.stderr
    exported = dict(line.split(None, 1) for line in result.stdout.splitlines())
    records = [
        line for line in out.read_text().splitlines() if '"seq":' in line and '"checkpoint"' not in line
    ]
    assert int(exported["exported"]) == len(records) > 0


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, 4),
        (403, 4),
        (404, 5),
        (400, 6),
        (413, 6),
        (422, 6),
        (409, 7),
        (429, 8),
        (503, 9),
        (504, 9),
        (500, 1),
    ],
)
def test_status_to_exit_code(status: int, code: int) -> None:
    assert cli_api.exit_code_for_status(status) == code
    assert cli_api.report_api_error(ApiError(status, "x", "y"), as_json=False) == code


def test_client_raises_typed_errors_and_refuses_non_http_urls(server: Server) -> None:
    with pytest.raises(ClientConfigError):
        SignerClient("file:///etc/passwd")
    with pytest.raises(ApiError) as raised:
        SignerClient(server.url).whoami()
    assert raised.value.status == 401 and raised.value.code == "unauthenticated"
    assert raised.value.request_id and raised.value.problem["status"] == 401


def test_client_never_follows_a_redirect_with_the_token() -> None:
    seen: list[str | None] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = SignerClient(f"http://127.0.0.1:{httpd.server_port}", Secret("tok-CANARY"))
        with pytest.raises(ClientConnectionError, match="redirect") as raised:
            client.whoami()
        assert "tok-CANARY" not in str(raised.value)
    finally:
        httpd.shutdown()
        thread.join()
    assert seen == ["Bearer tok-CANARY"]  # sent once, to the server named, never to the redirect target


def _api_commands(command: click.Command, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found = {path} if getattr(command.callback, "signer_api_command", False) else set()
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found |= _api_commands(sub, (*path, name))
    return found


def test_secrets_commands(cli: Cli, server: Server, tmp_path: Path, unique_name: str) -> None:
    """``signer secrets create|list|show|update|set-value|delete|fetch`` and ``grants create --secret``:
    a value goes in from a file or stdin (never argv), comes out only of ``fetch``, and a rotated value
    is what the next fetch returns."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"cli-{unique_name}"
    cli.ok(
        "grants",
        "create",
        "--principal",
        admin_id,
        "--scope",
        org,
        *[
            arg
            for op in ("create", "update", "delete", "read_metadata", "list")
            for arg in ("--operation", op)
        ],
    )
    value, rotated = "canary-" + secrets.token_hex(12), "canary-" + secrets.token_hex(12)
    (tmp_path / "value").write_text(value + "\n")
    created = cli.ok(
        "secrets",
        "create",
        "--folder",
        f"{org}/payments",
        "--name",
        "stripe-live",
        "--owner-group",
        "payments",
        "--category",
        "api_key",
        "--tag",
        "production",
        "--value-from",
        f"STRIPE_SECRET={tmp_path / 'value'}",
    )
    assert value not in json.dumps(created)
    generated = cli.ok(
        "secrets",
        "create",
        "--folder",
        f"{org}/infra",
        "--name",
        "db-password",
        "--owner-group",
        "dbas",
        "--generate",
        "chars",
        "--length",
        "24",
        "--class",
        "lower",
        "--class",
        "digits",
    )
    assert generated["origin"] == "generated"
    service, creds = _service(cli, f"{unique_name}-reader", tmp_path)
    cli.ok(
        "grants",
        "create",
        "--principal",
        service["id"],
        "--secret",
        created["id"],
        "--operation",
        "read_value",
    )
    as_service = cli.env(SIGNER_TOKEN_FILE=str(creds))
    fetched = cli.run(
        "secrets", "fetch", created["id"], "--workload", "billing-api", "--json", env=as_service
    )
    assert fetched.exit_code == 0, fetched.stdout
    assert json.loads(fetched.stdout)["values"] == {"STRIPE_SECRET": value}
    assert {s["id"] for s in cli.ok("secrets", "list", "--folder", org)["items"]} == {
        created["id"],
        generated["id"],
    }
    shown = cli.ok("secrets", "show", created["id"])
    assert shown["last_fetched_by"] == service["id"] and value not in json.dumps(shown)
    assert (
        cli.ok("secrets", "update", created["id"], "--description", "Stripe live key")["description"]
        == "Stripe live key"
    )
    cli.ok("secrets", "set-value", created["id"], "--value-from", "STRIPE_SECRET=-", input=rotated + "\n")
    fetched = cli.run("secrets", "fetch", created["id"], "--field", "STRIPE_SECRET", "--json", env=as_service)
    assert json.loads(fetched.stdout)["values"] == {"STRIPE_SECRET": rotated}
    assert cli.ok("secrets", "delete", generated["id"])["deleted"] is True
    missing = cli.run("secrets", "fetch", generated["id"], "--json", env=as_service)
    assert (
        missing.exit_code == cli_api.EXIT_NOT_FOUND
        and json.loads(missing.stdout)["code"] == "secret_not_found"
    )


def test_secret_versions_commands(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``secrets versions|rotate|promote|disable-version|enable-version|destroy-version``, ``update
    --pin/--overlap-seconds`` and ``--if-match``: a stale ETag is refused (exit for 409), a staged
    version becomes current when promoted, a destroyed one stays destroyed; no value is printed."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"cliv-{unique_name}"
    cli.ok(
        "grants",
        "create",
        "--principal",
        admin_id,
        "--scope",
        org,
        *[
            arg
            for op in ("create", "update", "delete", "read_metadata", "read_value", "list")
            for arg in ("--operation", op)
        ],
    )
    value, staged = "canary-" + secrets.token_hex(12), "canary-" + secrets.token_hex(12)
    (tmp_path / "v").write_text(value)
    made = cli.ok(
        "secrets", "create", "--folder", f"{org}/app", "--name", "api", "--owner-group", "ops",
        "--value-from", f"KEY={tmp_path / 'v'}",
    )  # fmt: skip
    sid = made["id"]
    etag = f'"r{made["revision"]}"'
    updated = cli.ok("secrets", "update", sid, "--overlap-seconds", "3600", "--if-match", etag)
    assert updated["overlap_seconds"] == 3600
    stale = cli.run("secrets", "update", sid, "--description", "x", "--if-match", etag, "--json")
    assert stale.exit_code == cli_api.EXIT_CONFLICT and json.loads(stale.stdout)["code"] == "if_match_failed"
    rotated = cli.ok(
        "secrets", "rotate", sid, "--value-from", "KEY=-", "--stage", "--if-match", "1", input=staged
    )
    assert rotated["current_version"] == 1
    promoted = cli.ok("secrets", "promote", sid, "2", "--if-match", f'"r{rotated["revision"]}"')
    assert promoted["current_version"] == 2
    assert cli.ok("secrets", "update", sid, "--pin", "legacy=1")["pins"] == {"legacy": 1}
    cli.ok("secrets", "update", sid, "--unpin-all")
    cli.ok("secrets", "disable-version", sid, "1", "--reason", "suspected leak")
    cli.ok("secrets", "enable-version", sid, "1")
    cli.ok("secrets", "destroy-version", sid, "1", "--reason", "leaked")
    versions = cli.ok("secrets", "versions", sid)
    assert [(v["version"], v["state"]) for v in versions] == [(1, "destroyed"), (2, "current")]
    gone = cli.run("secrets", "fetch", sid, "--version", "1", "--json")
    assert json.loads(gone.stdout)["code"] == "secret_version_destroyed"
    # Nothing before the one fetch that prints values printed either value.
    assert all(value not in out and staged not in out for out in cli.outputs)
    assert cli.ok("secrets", "fetch", sid)["values"] == {"KEY": staged}
    generated = cli.ok(
        "secrets", "create", "--folder", f"{org}/app", "--name", "tok", "--owner-group", "ops",
        "--generate", "hex", "--bytes", "16",
    )  # fmt: skip
    assert cli.ok("secrets", "rotate", generated["id"])["current_version"] == 2
    # Folder defaults: a secret created below gets them (the narrowest folder setting each wins).
    cli.ok(
        "secrets", "folder-defaults", org, "--rotation-interval-seconds", "86400", "--overlap-seconds", "60"
    )
    cli.ok("secrets", "folder-defaults", f"{org}/app", "--overlap-seconds", "120")
    effective = cli.ok("secrets", "folder-defaults", f"{org}/app/db")
    assert (effective["rotation_interval_seconds"], effective["overlap_seconds"]) == (86400, 120)
    (tmp_path / "d").write_text("x-" + secrets.token_hex(8))
    inherited = cli.ok(
        "secrets", "create", "--folder", f"{org}/app/db", "--name", "pw", "--owner-group", "ops",
        "--value-from", f"P={tmp_path / 'd'}",
    )  # fmt: skip
    assert (inherited["rotation_interval_seconds"], inherited["overlap_seconds"]) == (86400, 120)
    assert inherited["rotation_due_at"] is not None
    table = cli.run("secrets", "versions", sid)
    assert table.exit_code == 0 and "destroyed" in table.stdout


def test_secrets_disable_and_enable_commands(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``secrets disable|enable NAME_OR_ID [--dry-run] [--reason]``: the dry run (by the secret's path)
    names who loses reads and changes nothing; disabled, a fetch and ``secrets env`` exit as a conflict
    with ``secret_disabled``; enabled, the value reads again; an unknown path is not found."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"clid-{unique_name}"
    cli.ok(
        "grants", "create", "--principal", admin_id, "--scope", org,
        *[arg for op in ("create", "update", "read_metadata", "read_value") for arg in ("--operation", op)],
        "--operation", "list",
    )  # fmt: skip
    value = "canary-" + secrets.token_hex(12)
    (tmp_path / "v").write_text(value)
    made = cli.ok(
        "secrets", "create", "--folder", f"{org}/app", "--name", "api", "--owner-group", "ops",
        "--consumer", "billing-api", "--value-from", f"KEY={tmp_path / 'v'}",
    )  # fmt: skip
    sid = made["id"]
    review = cli.ok("secrets", "disable", f"secret://{org}/app/api", "--dry-run", "--days", "7")
    assert (review["action"], review["dry_run"], review["days"]) == ("disable_secret", True, 7)
    assert review["target"] == {"type": "secret", "id": sid}
    assert review["summary"]["principals_losing"] == [admin_id]
    assert review["summary"]["consumers_failing"] == ["billing-api"]
    assert cli.ok("secrets", "show", sid)["state"] == "active"
    disabled = cli.ok("secrets", "disable", f"{org}/app/api", "--reason", "suspected leak")
    assert (disabled["id"], disabled["state"]) == (sid, "disabled")
    assert disabled["state_reason"] == "suspected leak"
    refused = cli.run("secrets", "fetch", sid, "--json")
    assert refused.exit_code == cli_api.EXIT_CONFLICT
    assert json.loads(refused.stdout)["code"] == "secret_disabled"
    env = cli.run("secrets", "env", f"secret://{org}/app/api")
    assert env.exit_code == cli_api.EXIT_CONFLICT and value not in env.stdout
    stale = cli.run("secrets", "enable", sid, "--if-match", f'"r{made["revision"]}"', "--json")
    assert stale.exit_code == cli_api.EXIT_CONFLICT and json.loads(stale.stdout)["code"] == "if_match_failed"
    assert cli.ok("secrets", "enable", sid, "--dry-run")["state"]["changes"] is True
    assert cli.ok("secrets", "enable", sid)["state"] == "active"
    assert cli.ok("secrets", "fetch", sid)["values"] == {"KEY": value}
    missing = cli.run("secrets", "disable", f"{org}/app/nope", "--json")
    assert missing.exit_code == cli_api.EXIT_NOT_FOUND


def test_secrets_env_and_exec(cli: Cli, server: Server, tmp_path: Path, unique_name: str) -> None:
    """``signer secrets env`` prints values that read back exactly (``shell`` sourced by bash, ``dotenv``
    by python-dotenv and by bash); ``signer exec`` starts a command with them and returns its exit status;
    ``signer secrets import`` creates secrets from a .env file without printing a value."""
    import dotenv

    admin_id = cli.ok("whoami")["principal_id"]
    org = f"env-{unique_name}"
    ops = ("create", "read_value", "list")
    cli.ok(
        "grants",
        "create",
        "--principal",
        admin_id,
        "--scope",
        org,
        *[a for op in ops for a in ("--operation", op)],
    )
    tricky = 'line one\nit\'s "quoted" $HOME \\ end ' + secrets.token_hex(8)
    plain = 'two\nlines "quoted" $(touch /tmp/x) `id` ${HOME} ' + secrets.token_hex(8)
    (tmp_path / "tricky").write_text(tricky + "\n")
    (tmp_path / "plain").write_text(plain + "\n")
    (tmp_path / "user").write_text("app\n")
    created = cli.ok(
        "secrets",
        "create",
        "--folder",
        org,
        "--name",
        "mysql-primary",
        "--owner-group",
        "dbas",
        "--value-from",
        f"PASSWORD={tmp_path / 'tricky'}",
        "--value-from",
        f"USERNAME={tmp_path / 'user'}",
        "--value-from",
        f"PLAIN={tmp_path / 'plain'}",
    )
    ref = created["id"]
    everything = {
        "MYSQL_PRIMARY_PASSWORD": tricky,
        "MYSQL_PRIMARY_USERNAME": "app",
        "MYSQL_PRIMARY_PLAIN": plain,
    }
    as_json = json.loads(cli.run("secrets", "env", ref, "--format", "json").stdout)
    assert as_json == everything
    show = "import json, os, sys; print(json.dumps({k: os.environ[k] for k in sys.argv[1:]}))"

    def sourced(text: str, names: list[str]) -> dict[str, str]:
        script = f"set -a; eval \"$(cat)\"; exec {sys.executable} -c '{show}' {' '.join(names)}"
        ran = subprocess.run(["bash", "-c", script], input=text, capture_output=True, text=True, check=True)
        return json.loads(ran.stdout)

    printed = cli.run("secrets", "env", f"DB_PASS={ref}#PASSWORD", ref, "--format", "shell")
    assert printed.exit_code == 0, printed.stderr
    assert sourced(printed.stdout, ["DB_PASS", *everything]) == {"DB_PASS": tricky, **everything}
    # dotenv: read back exactly by python-dotenv (no interpolation) and by bash, and runs nothing.
    wanted = {"DB_PASS": plain, "USER": "app"}
    printed = cli.run("secrets", "env", f"DB_PASS={ref}#PLAIN", f"USER={ref}#USERNAME", "--format", "dotenv")
    assert printed.exit_code == 0, printed.stderr
    assert dict(dotenv.dotenv_values(stream=io.StringIO(printed.stdout), interpolate=False)) == wanted
    assert sourced(printed.stdout, list(wanted)) == wanted
    # A quote and a $ in one value: no dotenv spelling reads the same everywhere; refused, nothing printed.
    refused = cli.run("secrets", "env", f"DB_PASS={ref}#PASSWORD", "--format", "dotenv")
    assert refused.exit_code == 2 and "DB_PASS" in refused.stderr and tricky not in refused.stdout
    collision = cli.run("secrets", "env", f"X={ref}#PASSWORD", f"X={ref}#USERNAME")
    assert (
        collision.exit_code != 0
        and "reference 1 and reference 2 both set X" in collision.stderr
        and tricky not in collision.stdout
    )
    bad_name = cli.run("secrets", "env", f"1X={ref}#PASSWORD")
    assert bad_name.exit_code != 0 and "not a valid environment variable name" in bad_name.stderr
    digest = hashlib.sha256(tricky.encode()).hexdigest()
    check = (
        "import hashlib, os, sys; "
        f"sys.exit(7 if hashlib.sha256(os.environ['DB_PASS'].encode()).hexdigest() == '{digest}' else 1)"
    )
    ran = cli.run("exec", "--secret", f"DB_PASS={ref}#PASSWORD", "--", sys.executable, "-c", check)
    assert ran.exit_code == 7, ran.stderr
    assert tricky not in ran.stdout + ran.stderr
    # A scope and a name alone, looked up from it.
    check = "import os, sys; sys.exit(9 if os.environ['MYSQL_PRIMARY_USERNAME'] == os.environ['U'] else 1)"
    ran = cli.run(
        "exec", "--scope", org, "--secret", "U=mysql-primary#USERNAME", "--", sys.executable, "-c", check
    )
    assert ran.exit_code == 9, ran.stderr

    # Import: one secret per key of a .env file; no value printed, not even for a refused line.
    imported = secrets.token_hex(8)
    env_file = tmp_path / "app.env"
    env_file.write_text(f"# app\nAPI_KEY='{imported}'\nexport DB_URL=\"postgres://u:{imported}@db/x\"\n")
    report = cli.ok("secrets", "import", str(env_file), "--folder", f"{org}/app", "--owner-group", "dbas")
    assert [(r["name"], r["outcome"]) for r in report["items"]] == [
        ("api-key", "created"),
        ("db-url", "created"),
    ]
    again = cli.run(
        "secrets", "import", str(env_file), "--folder", f"{org}/app", "--owner-group", "dbas", "--json"
    )
    assert again.exit_code == cli_api.EXIT_CONFLICT
    assert [r["outcome"] for r in json.loads(again.stdout)["items"]] == ["failed", "not_tried"]
    skipped = cli.ok(
        "secrets",
        "import",
        str(env_file),
        "--folder",
        f"{org}/app",
        "--owner-group",
        "dbas",
        "--skip-existing",
    )
    assert [r["outcome"] for r in skipped["items"]] == ["exists", "exists"]
    fetched = cli.ok("secrets", "env", "secret://" + org + "/app/api-key#value", "--format", "json")
    assert fetched == {"API_KEY_VALUE": imported}
    (tmp_path / "bad.env").write_text(f"GOOD=x\nthis is {imported} not an assignment\n")
    bad = cli.run("secrets", "import", str(tmp_path / "bad.env"), "--folder", org, "--owner-group", "dbas")
    assert bad.exit_code == 2 and "line 2" in bad.stderr and imported not in bad.stdout + bad.stderr


def test_approvals_commands_with_a_signed_approval(
    cli: Cli, server: Server, tmp_path: Path, unique_name: str
) -> None:
    """``signer approvals ...`` and ``signer groups set-webhook`` / ``rotate-webhook-secret``: list,
    show, approve (Ed25519-signed, checked offline), reject, cancel, result; a wrong digest is a
    conflict."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from signer.services.approvals import approval_message
    from tests.approvals.test_api_approvals import Desk, tx

    desk = Desk(server, unique_name)
    cli.secrets += [desk.requester, *desk.approvers]

    def as_(token: str, name: str) -> dict[str, Any]:
        path = tmp_path / name
        path.write_text(token + "\n")
        path.chmod(0o600)
        return cli.env(SIGNER_TOKEN_FILE=str(path))

    a0, a1, req = as_(desk.approvers[0], "a0"), as_(desk.approvers[1], "a1"), as_(desk.requester, "req")

    def ok(env: dict[str, Any], *args: str) -> Any:
        result = cli.run(*args, "--json", env=env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    status, pending = desk.sign(tx())
    assert status == 202
    approval_id, digest = pending["approval"]["id"], pending["payload_digest"]
    assert approval_id in [i["id"] for i in ok(a0, "approvals", "list", "--state", "pending")]
    assert ok(a0, "approvals", "show", approval_id)["view"]["value_eth"] == "2"

    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "approver.pem"
    key_file.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    ok(a0, "approvals", "register-key", "--ed25519-key", str(key_file))
    wrong = cli.run("approvals", "approve", approval_id, "--digest", "cd" * 32, "--json", env=a0)
    assert (
        wrong.exit_code == cli_api.EXIT_CONFLICT and json.loads(wrong.stdout)["code"] == "approval_mismatch"
    )
    first = ok(a0, "approvals", "approve", approval_id, "--digest", digest, "--ed25519-key", str(key_file))
    assert first["state"] == "pending"
    assert ok(a1, "approvals", "approve", approval_id)["state"] == "signed"
    vote = next(v for v in ok(a1, "approvals", "show", approval_id)["votes"] if v["signature"])
    private.public_key().verify(
        bytes.fromhex(vote["signature"]), approval_message(approval_id, "approve", digest)
    )
    result = ok(req, "approvals", "result", approval_id, "--wait", "5")["result"]
    assert Account.recover_transaction(bytes.fromhex(result["raw_transaction"][2:])) == desk.key["address"]

    _, second = desk.sign(tx(nonce=1))
    assert ok(a0, "approvals", "reject", second["approval"]["id"])["state"] == "rejected"
    _, third = desk.sign(tx(nonce=2))
    assert ok(req, "approvals", "cancel", third["approval"]["id"])["state"] == "cancelled"

    # A name that never resolves (RFC 6761) is accepted when no allowlist is set: delivery checks it.
    hook = ok(cli.env(), "groups", "set-webhook", desk.group, "https://hooks.example.invalid/hook")
    assert len(bytes.fromhex(hook["secret"])) == 32
    rotated = ok(cli.env(), "groups", "rotate-webhook-secret", desk.group, "--overlap", "60")
    assert len(bytes.fromhex(rotated["secret"])) == 32 and rotated["secret"] != hook["secret"]
    assert ok(cli.env(), "groups", "delete-webhook", desk.group)["deleted"] is True
    cli.check_no_secret()


def test_an_approved_read_through_the_cli(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``secrets fetch`` prints the pending request when policy sends the read to approvers (``env``
    refuses, naming it); once approved, ``secrets fetch --approval`` releases the value once."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"ar-{unique_name}"
    cli.ok("grants", "create", "--principal", admin_id, "--scope", org, "--operation", "create")
    value = "approved-" + secrets.token_hex(8)
    cli.secrets.append(value)
    (tmp_path / "value").write_text(value + "\n")
    created = cli.ok(
        "secrets", "create", "--folder", org, "--name", "gated", "--owner-group", "dbas",
        "--value-from", f"TOKEN={tmp_path / 'value'}",
    )  # fmt: skip
    service, creds = _service(cli, f"{unique_name}-gated", tmp_path)
    cli.ok(
        "grants",
        "create",
        "--principal",
        service["id"],
        "--secret",
        created["id"],
        "--operation",
        "read_value",
    )
    approver_creds = tmp_path / "approver.json"
    approver = cli.ok(
        "principals",
        "create",
        f"{unique_name}-ap",
        "--role",
        "approver",
        "--credentials-out",
        str(approver_creds),
    )["principal"]
    cli.secrets.append(json.loads(approver_creds.read_text())["access_token"])
    group = f"gate-{unique_name}"[:60]
    cli.ok("groups", "add-member", group, approver["id"])
    today = datetime.now(UTC).strftime("%a").lower()
    rule = {
        "id": "gated-reads",
        "kind": "time_window",
        "effect": "require_approval",
        "approval": {"quorum": 1, "group": group, "expires_in_seconds": 600},
        "windows": [{"days": [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today],
                     "start": "00:00", "end": "23:59"}],
    }  # fmt: skip
    document = tmp_path / "gate.json"
    policy_id = f"gate-{unique_name}"[:60]
    document.write_text(json.dumps({"id": policy_id, "version": 1, "rules": [rule]}))
    cli.ok("policies", "create", str(document))
    cli.ok("policies", "attach", policy_id, "--version", "1", "--scope", org)
    as_service = cli.env(SIGNER_TOKEN_FILE=str(creds))
    pending = cli.run("secrets", "fetch", created["id"], "--json", env=as_service)
    assert pending.exit_code == 0, pending.stdout
    waiting = json.loads(pending.stdout)
    assert waiting["state"] == "pending_approval" and value not in pending.stdout
    refused = cli.run("secrets", "env", created["id"], env=as_service)
    assert refused.exit_code != 0 and "needs approval: request apr_" in refused.stderr
    as_approver = cli.env(SIGNER_TOKEN_FILE=str(approver_creds))
    voted = cli.run(
        "approvals", "approve", waiting["approval"]["id"], "--digest", waiting["payload_digest"], "--json",
        env=as_approver,
    )  # fmt: skip
    assert voted.exit_code == 0 and json.loads(voted.stdout)["state"] == "approved", voted.stdout
    args = ("secrets", "fetch", created["id"], "--approval", waiting["approval"]["id"], "--json")
    released = cli.run(*args, env=as_service)
    assert released.exit_code == 0 and json.loads(released.stdout)["values"] == {"TOKEN": value}
    again = cli.run(*args, env=as_service)
    assert (
        again.exit_code == cli_api.EXIT_CONFLICT
        and json.loads(again.stdout)["code"] == "result_already_fetched"
    )
    cli.outputs.remove(released.stdout + released.stderr)


def test_a_key_destroy_behind_approvers_through_the_cli(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``keys destroy`` under a ``key_lifecycle`` rule prints the pending request and exits 10 (nothing
    changed); an approver votes with a signed approval; ``keys destroy --approval --wait`` completes it
    once, and the ``key.destroy`` event carries the approver and its vote's signature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from signer.services.approvals import approval_message

    label = f"cli doomed {secrets.token_hex(3)}"
    key = cli.ok("keys", "create", "--curve", "p256", "--label", label, "--inactive")
    approver_creds = tmp_path / "keeper.json"
    approver = cli.ok(
        "principals", "create", f"{unique_name}-keeper", "--role", "approver",
        "--credentials-out", str(approver_creds),
    )["principal"]  # fmt: skip
    cli.secrets.append(json.loads(approver_creds.read_text())["access_token"])
    group = f"keep-{unique_name}"[:60]
    cli.ok("groups", "add-member", group, approver["id"])
    rule = {
        "id": "irreversible",
        "kind": "key_lifecycle",
        "effect": "require_approval",
        "actions": ["destroy"],
        "approval": {"quorum": 1, "group": group, "expires_in_seconds": 600, "signed": True},
    }
    document = tmp_path / "keep.json"
    policy_id = f"keep-{unique_name}"[:60]
    document.write_text(json.dumps({"id": policy_id, "version": 1, "rules": [rule]}))
    cli.ok("policies", "create", str(document))
    cli.ok("policies", "attach", policy_id, "--version", "1", "--key", key["id"])

    pending = cli.run("keys", "destroy", key["id"], "--confirm", label, "--reason", "unused", "--json")
    assert pending.exit_code == 10, pending.stdout + pending.stderr
    waiting = json.loads(pending.stdout)
    approval_id, digest = waiting["approval"]["id"], waiting["payload_digest"]
    assert f"--approval {approval_id}" in pending.stderr
    assert cli.ok("keys", "show", key["id"])["state"] == "pre_activation"

    as_approver = cli.env(SIGNER_TOKEN_FILE=str(approver_creds))
    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "keeper.pem"
    key_file.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert (
        cli.run("approvals", "register-key", "--ed25519-key", str(key_file), env=as_approver).exit_code == 0
    )
    shown = cli.run("approvals", "show", approval_id, "--json", env=as_approver)
    view = json.loads(shown.stdout)["view"]
    assert (view["action"], view["key_label"], view["reason"]) == ("destroy", label, "unused")
    voted = cli.run(
        "approvals", "approve", approval_id, "--digest", digest, "--ed25519-key", str(key_file), "--json",
        env=as_approver,
    )  # fmt: skip
    assert voted.exit_code == 0 and json.loads(voted.stdout)["state"] == "approved", voted.stdout

    args = ("keys", "destroy", key["id"], "--confirm", label, "--approval", approval_id, "--wait", "5")
    done = cli.ok(*args)
    assert (done["state"], done["destroyed_in_token"]) == ("destroyed", True)
    again = cli.run(*args, "--json")
    assert (
        again.exit_code == cli_api.EXIT_CONFLICT
        and json.loads(again.stdout)["code"] == "result_already_fetched"
    )

    page = cli.ok(
        "audit", "events", "--after", str(max(0, cli.ok("audit", "events", "--limit", "1")["head"] - 50))
    )
    events = [json.loads(item["event"]) for item in page["items"]]
    event = next(e for e in events if e["kind"] == "key.destroy" and e["outcome"] == "allowed")
    assert event["key_id"] == key["id"]
    assert event["approval"]["approvers"] == {group: [approver["id"]]}
    (vote,) = event["approval"]["votes"]
    private.public_key().verify(
        bytes.fromhex(vote["signature"]), approval_message(approval_id, "approve", digest)
    )


def test_secrets_rotate_kek(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``signer secrets rotate-kek SCOPE --wait`` rotates the scope's KEK and waits for the end; the
    secret still opens; ``kek-rotation`` shows the progress; ``destroy-kek`` keeps a KEK in its grace."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"kr-{unique_name}"
    ops = ("create", "read_value", "list")
    cli.ok(
        "grants",
        "create",
        "--principal",
        admin_id,
        "--scope",
        org,
        *[a for op in ops for a in ("--operation", op)],
    )
    value = "canary-" + secrets.token_hex(12)
    cli.secrets.append(value)
    (tmp_path / "kek-value").write_text(value + "\n")
    created = cli.ok(
        "secrets",
        "create",
        "--folder",
        f"{org}/app",
        "--name",
        "db",
        "--owner-group",
        "dbas",
        "--value-from",
        f"PASSWORD={tmp_path / 'kek-value'}",
    )
    rotated = cli.ok("secrets", "rotate-kek", org, "--wait")
    assert rotated["state"] == "finished" and rotated["rewrapped"] == rotated["total"] == 1
    shown = cli.ok("secrets", "kek-rotation", org)
    assert shown["id"] == rotated["id"] and shown["remaining"] == 0
    kept = cli.run("secrets", "destroy-kek", org, shown["old_kek_id"], "--json")
    assert kept.exit_code == cli_api.EXIT_CONFLICT and json.loads(kept.stdout)["code"] == "kek_in_grace"
    fetched = cli.run("secrets", "fetch", created["id"], "--json")
    assert fetched.exit_code == 0, fetched.stdout
    assert json.loads(fetched.stdout)["values"] == {"PASSWORD": value}
    cli.outputs.remove(fetched.stdout + fetched.stderr)


def test_impact_usage_and_checklist_commands(cli: Cli, tmp_path: Path, unique_name: str) -> None:
    """``signer impact``, ``checklist`` and ``usage report|secret|grant`` against a live server: the
    dry run names who loses access and changes nothing; the reports never carry a value."""
    admin_id = cli.ok("whoami")["principal_id"]
    org = f"imp-{unique_name}"
    grant = cli.ok(
        "grants",
        "create",
        "--principal",
        admin_id,
        "--scope",
        org,
        *[arg for op in ("create", "read_metadata", "list", "read_value") for arg in ("--operation", op)],
    )
    value = "canary-" + secrets.token_hex(12)
    (tmp_path / "value").write_text(value + "\n")
    created = cli.ok(
        "secrets",
        "create",
        "--folder",
        f"{org}/infra",
        "--name",
        "db-password",
        "--owner-group",
        "dbas",
        "--value-from",
        f"password={tmp_path / 'value'}",
    )
    assert cli.ok("secrets", "fetch", created["id"], "--workload", "billing")["values"]["password"] == value

    report = cli.ok("impact", "revoke_grant", grant["id"], "--days", "7")
    assert report["action"] == "revoke_grant" and value not in json.dumps(report)
    # A dry run: the grant still works.
    assert cli.ok("secrets", "show", created["id"])["id"] == created["id"]
    rotate = cli.ok("impact", "rotate_secret", created["id"])
    assert rotate["action"] == "rotate_secret"

    checklist = cli.ok("checklist", "--days", "0", "--limit", "5")
    assert isinstance(checklist, dict) and value not in json.dumps(checklist)
    # No alerts webhook here: nothing undelivered (tests/services/test_anomalies.py fills the list).
    alerts = cli.ok("alerts", "--limit", "5")
    assert (alerts["pending"], alerts["alerts"], alerts["truncated"]) == (0, [], False)

    overview = cli.ok("usage", "report", "--days", "1", "--limit", "5")
    assert value not in json.dumps(overview)
    one = cli.ok("usage", "secret", created["id"], "--days", "7")
    assert value not in json.dumps(one)
    assert cli.ok("usage", "grant", grant["id"]) is not None
    # Not a known action: refused by the CLI before any request.
    assert cli.run("impact", "explode", grant["id"]).exit_code == 2


def test_books_commands(cli: Cli, tmp_path: Path) -> None:
    """The console's books through the CLI: addresses, tokens, functions (one signature or an ABI)."""
    payroll = "0x" + secrets.token_hex(20)
    usdc = "0x" + secrets.token_hex(20)
    added = cli.ok(
        "books", "address", "add", payroll.upper().replace("0X", "0x"), "payroll", "--note", "monthly"
    )
    assert (added["address"], added["label"], added["note"]) == (payroll, "payroll", "monthly")
    assert any(e["address"] == payroll for e in cli.ok("books", "address", "list"))
    bad = cli.run("books", "address", "add", "0x12", "short")
    assert bad.exit_code == cli_api.EXIT_INVALID and "invalid_address" in bad.stdout + bad.stderr
    assert cli.ok("books", "address", "remove", payroll)["removed"] is True
    assert cli.run("books", "address", "remove", payroll).exit_code == cli_api.EXIT_NOT_FOUND

    token = cli.ok("books", "token", "add", "1", usdc, "USDC", "6")
    assert (token["chain_id"], token["symbol"], token["decimals"]) == (1, "USDC", 6)
    assert any(e["contract"] == usdc for e in cli.ok("books", "token", "list"))
    assert cli.ok("books", "token", "remove", "1", usdc)["removed"] is True

    (one,) = cli.ok("books", "abi", "add", "--signature", "payout(address,uint256)")
    assert one["selector"] == "0x117de2fd" and one["contract"] is None
    abi_file = tmp_path / "vault.json"
    abi_file.write_text(
        json.dumps(
            {
                "abi": [
                    {"type": "function", "name": "sweep", "inputs": [{"name": "to", "type": "address"}]},
                    {"type": "event", "name": "Swept", "inputs": []},
                ]
            }
        )
    )
    (sweep,) = cli.ok("books", "abi", "add", "--abi-file", str(abi_file), "--contract", usdc)
    assert sweep["signature"] == "sweep(address)" and sweep["contract"] == usdc
    listed = {(e["selector"], e["contract"]) for e in cli.ok("books", "abi", "list")}
    assert {("0x117de2fd", None), (sweep["selector"], usdc)} <= listed
    refused = cli.run("books", "abi", "add", "--signature", "payout(address, uint256)")
    assert (
        refused.exit_code == cli_api.EXIT_INVALID and "invalid_signature" in refused.stdout + refused.stderr
    )
    assert cli.ok("books", "abi", "remove", sweep["selector"], "--contract", usdc)["removed"] is True
    assert cli.ok("books", "abi", "remove", "0x117de2fd")["removed"] is True


def test_every_server_command_was_run(request: pytest.FixtureRequest) -> None:
    """Last in this file: fails while a command made with ``api_call`` has no live-server test."""
    here = [item.name.split("[")[0] for item in request.session.items if item.path == request.path]
    everything = {name for name in globals() if name.startswith("test_")}
    if not everything <= set(here):
        pytest.skip("only part of this file ran")
    commands = _api_commands(main)
    assert len(commands) >= 20
    assert commands - INVOKED == set()


def _server_routes() -> set[tuple[str, str]]:
    """Every (method, path template) in every route table of ``signer.http``."""
    import signer.http

    found = set()
    for info in pkgutil.iter_modules(signer.http.__path__):
        module = importlib.import_module(f"signer.http.{info.name}")
        for value in vars(module).values():
            if isinstance(value, web.RouteTableDef):
                found |= {(r.method, r.path) for r in value if isinstance(r, web.RouteDef)}
    return found


def test_every_api_route_is_reachable_from_the_cli(request: pytest.FixtureRequest) -> None:
    """Last in this file: fails while an API operation has no CLI command (run by the tests above)."""
    here = [item.name.split("[")[0] for item in request.session.items if item.path == request.path]
    if not {name for name in globals() if name.startswith("test_")} <= set(here):
        pytest.skip("only part of this file ran")
    # /healthz is for load balancers, /docs and the approvers' console (/console) are HTML for browsers:
    # none of them is an operation for scripts.
    routes = {r for r in _server_routes() if not r[1].startswith("/console")}
    routes -= {("GET", "/healthz"), ("GET", "/docs")}
    # /v1/kms speaks AWS KMS with SigV4 for AWS SDKs (tests/system/test_kms.py drives it with boto3).
    routes -= {("POST", "/v1/kms")}
    assert len(routes) >= 30
    missing = set()
    for method, template in routes:
        pattern = re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")
        if not any(m == method and pattern.match(path) for m, path in REQUESTED):
            missing.add(f"{method} {template}")
    assert missing == set(), "API operations without a CLI command (see signer.cli_api's docstring)"
