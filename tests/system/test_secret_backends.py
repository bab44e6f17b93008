"""Secrets held by reference in AWS Secrets Manager and OpenBao KV v2, against real servers (issue 12).

moto's standalone server (``moto_server``) stands in for AWS and ``bao server -dev`` is OpenBao, each a
real process on a free loopback port, reached by the signer through a TCP proxy that a test can take
down. The signer (a real server on SQLite and PostgreSQL) holds only the record and the reference:
grants, no-access grants, policy rules and the audit log apply to these reads exactly as to sealed
ones; a value rotated in the backend is what the next fetch returns; a backend that is down answers a
stable 502 with nothing leaked; and no value or backend credential reaches the server's log, the audit
export, the database or an error body.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner

from signer.cli import main
from tests.dbfixtures import private_pg_database
from tests.service_harness import (
    Server,
    attach_policy,
    free_port,
    init_installation,
    make_service,
    start_server,
)
from tests.system.support import TcpProxy

BIN = Path(sys.executable).parent
REGION = "us-east-1"


def canary() -> str:
    return "canary-" + secrets.token_hex(12)


def _wait_http(url: str, what: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 (a readiness poll with a hard deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in {timeout}s")


@contextmanager
def _process(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@dataclass
class Backends:
    aws_url: str  # moto, direct (for the test's own boto3 client)
    aws_proxy: TcpProxy  # what the signer connects through
    aws_secret_key: str
    bao_url: str
    bao_proxy: TcpProxy
    bao_token: str
    files: Path

    def aws(self) -> Any:
        return boto3.session.Session(
            aws_access_key_id="AKIDTESTTEST", aws_secret_access_key="test", region_name=REGION
        ).client("secretsmanager", endpoint_url=self.aws_url)

    def bao(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            f"{self.bao_url}/v1/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"X-Vault-Token": self.bao_token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def kv_put(self, path: str, data: dict[str, Any]) -> int:
        return int(self.bao("POST", f"secret/data/{path}", {"data": data})["data"]["version"])


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    root = Path(tmp_path_factory.mktemp("backends"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BAO_", "VAULT_"))}
    env["HOME"] = str(root)
    aws_port, bao_port = free_port(), free_port()
    bao_token = "devroot-canary-" + secrets.token_hex(12)
    with ExitStack() as stack:
        moto = stack.enter_context(
            _process(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(aws_port)], root / "moto.log", env
            )
        )
        bao = stack.enter_context(
            _process(
                [
                    str(BIN / "bao"),
                    "server",
                    "-dev",
                    f"-dev-listen-address=127.0.0.1:{bao_port}",
                    f"-dev-root-token-id={bao_token}",
                    "-dev-no-store-token",
                ],
                root / "bao.log",
                env,
            )
        )
        _wait_http(f"http://127.0.0.1:{aws_port}/moto-api/", "moto_server", moto)
        _wait_http(f"http://127.0.0.1:{bao_port}/v1/sys/health", "bao server -dev", bao)
        aws_proxy = stack.enter_context(TcpProxy("127.0.0.1", aws_port))
        bao_proxy = stack.enter_context(TcpProxy("127.0.0.1", bao_port))
        files = root / "credentials"
        files.mkdir()
        aws_secret_key = "awssecret" + secrets.token_hex(16)
        (files / "aws-key-id").write_text("AKIDSIGNERTEST\n")
        (files / "aws-secret").write_text(aws_secret_key + "\n")
        (files / "bao-token").write_text(bao_token + "\n")
        yield Backends(
            f"http://127.0.0.1:{aws_port}",
            aws_proxy,
            aws_secret_key,
            f"http://127.0.0.1:{bao_port}",
            bao_proxy,
            bao_token,
            files,
        )


def backend_settings(b: Backends) -> str:
    return json.dumps(
        {
            "aws_secrets_manager": {
                "region": REGION,
                "endpoint_url": f"http://127.0.0.1:{b.aws_proxy.port}",
                "access_key_id_file": str(b.files / "aws-key-id"),
                "secret_access_key_file": str(b.files / "aws-secret"),
                "timeout_seconds": 3,
            },
            "openbao_kv2": {
                "address": f"http://127.0.0.1:{b.bao_proxy.port}",
                "token_file": str(b.files / "bao-token"),
                "timeout_seconds": 3,
            },
        }
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backends: Backends
) -> Iterator[Server]:
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(private_pg_database("signer_backends"))
            if request.param == "postgres"
            else None
        )
        installation = init_installation(Path(tmp_path_factory.mktemp("signer")) / "data", database_url)
        running = start_server(installation, env={"SIGNER_SECRET_BACKENDS": backend_settings(backends)})
        try:
            yield running
        finally:
            running.stop()


class World:
    """An admin granted create/update/delete/show/list on an organisation, and two service principals."""

    def __init__(self, server: Server, backends: Backends, tag: str) -> None:
        self.server = server
        self.b = backends
        self.bodies: list[Any] = []
        self.tag = tag
        self.admin = server.installation.admin_token
        self.org = f"org-{tag}"
        self.folder = f"{self.org}/payments/prod"
        admin_id = server.installation.admin["principal"]["id"]
        self.grant(
            admin_id, scope=self.org, operations=["create", "update", "delete", "read_metadata", "list"]
        )
        made = make_service(server, f"svc-{tag}")
        self.service_id, self.service = made["principal"]["id"], made["credentials"]["access_token"]
        other = make_service(server, f"other-{tag}")
        self.other_id, self.other = other["principal"]["id"], other["credentials"]["access_token"]

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, payload = self.server.call(method, path, body, token or self.admin)
        self.bodies.append(payload)
        return status, payload

    def grant(self, principal_id: str, *, operations: list[str] | None, **target: Any) -> dict[str, Any]:
        what = {"operations": operations} if operations is not None else {}
        status, body = self.call("POST", "/v1/grants", {"principal_id": principal_id, **what, **target})
        assert status == 201, body
        return body

    def create(self, name: str, backend: str, reference: str, **extra: Any) -> dict[str, Any]:
        status, created = self.call(
            "POST",
            "/v1/secrets",
            {
                "folder": self.folder,
                "name": name,
                "owner_group": "payments",
                "backend": backend,
                "reference": reference,
                **extra,
            },
        )
        assert status == 201, created
        return created

    def fetch(self, secret_id: str, token: str | None = None, **body: Any) -> tuple[int, Any]:
        return self.call(
            "POST",
            f"/v1/secrets/{secret_id}/fetch",
            {"workload": "billing-api", **body},
            token or self.service,
        )

    def events(self) -> list[dict[str, Any]]:
        status, exported = self.call("GET", "/v1/audit/events?limit=10000")
        assert status == 200
        # Each exported line holds the event as its hashed JSON text under "event".
        return [json.loads(json.loads(line)["event"]) for line in exported.splitlines() if line.strip()]


@pytest.fixture
def world(server: Server, backends: Backends) -> World:
    return World(server, backends, secrets.token_hex(4))


def _fetch_events(world: World, secret_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in world.events()
        if e.get("kind") == "secret.fetch" and (e.get("resource") or {}).get("id") == secret_id
    ]


def test_aws_by_reference_grants_rotation_versions_and_audit(world: World) -> None:
    first, second = canary(), canary()
    aws = world.b.aws()
    arn = aws.create_secret(
        Name=f"{world.tag}/stripe", SecretString=json.dumps({"STRIPE_SECRET": first, "port": 5432})
    )["ARN"]
    created = world.create("stripe-live", "aws_secrets_manager", arn, category="api_key")
    assert (created["backend"], created["reference"], created["current_version"]) == (
        "aws_secrets_manager",
        arn,
        0,
    )
    secret_id = created["id"]
    status, shown = world.call("GET", f"/v1/secrets/{secret_id}")
    assert status == 200 and shown["reference"] == arn and shown["versions"] == []
    status, listed = world.call("GET", f"/v1/secrets?folder={world.org}")
    assert [(s["id"], s["backend"]) for s in listed["items"]] == [(secret_id, "aws_secrets_manager")]
    # Creating grants nobody anything: the service cannot even tell it exists.
    status, body = world.fetch(secret_id)
    assert (status, body["code"]) == (404, "secret_not_found")
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    status, body = world.fetch(secret_id)
    assert status == 200, body
    assert body["values"] == {"STRIPE_SECRET": first, "port": "5432"}
    assert body["backend"] == "aws_secrets_manager" and body["version"] is None
    first_version = body["backend_version"]
    status, body = world.fetch(secret_id, field="STRIPE_SECRET")
    assert status == 200 and body["values"] == {"STRIPE_SECRET": first}
    # Rotated in AWS: the next fetch returns the new value; AWSPREVIOUS and the old VersionId the old.
    aws.put_secret_value(SecretId=arn, SecretString=json.dumps({"STRIPE_SECRET": second}))
    status, body = world.fetch(secret_id)
    assert status == 200 and body["values"] == {"STRIPE_SECRET": second}
    assert body["backend_version"] != first_version
    for selector in ("AWSPREVIOUS", first_version):
        status, body = world.fetch(secret_id, backend_version=selector, field="STRIPE_SECRET")
        assert status == 200 and body["values"] == {"STRIPE_SECRET": first}, (selector, body)
    status, body = world.fetch(secret_id, backend_version="NO-SUCH-STAGE")
    assert (status, body["code"]) == (404, "backend_secret_missing")
    status, body = world.fetch(secret_id, version=1)
    assert (status, body["code"]) == (400, "backend_version_unsupported")
    status, body = world.fetch(secret_id, field="nope")
    assert (status, body["code"]) == (404, "secret_field_not_found")
    # The value lives in AWS: setting one here is refused.
    status, body = world.call("POST", f"/v1/secrets/{secret_id}/versions", {"fields": {"A": canary()}})
    assert (status, body["code"]) == (409, "secret_held_by_reference")
    # Every read is audited with the backend and reference, never a value.
    fetched = _fetch_events(world, secret_id)
    allowed = [e for e in fetched if e["outcome"] == "allowed"]
    assert len(allowed) == 5, fetched
    # Reads that reached the backend (allowed, or failed there) name it and the reference.
    reached = [e for e in fetched if "request" in e]
    assert len(reached) == 8, fetched
    assert all(e["request"]["backend"] == "aws_secrets_manager" for e in reached)
    assert all(e["request"]["reference"] == arn for e in reached)
    assert allowed[0]["result"]["field_names"] == ["STRIPE_SECRET", "port"]
    assert allowed[0]["result"]["backend_version"] == first_version
    assert first not in json.dumps(fetched) and second not in json.dumps(fetched)


def test_aws_plain_binary_and_missing(world: World) -> None:
    plain = canary()
    aws = world.b.aws()
    plain_arn = aws.create_secret(Name=f"{world.tag}/plain", SecretString=plain)["ARN"]
    binary_arn = aws.create_secret(Name=f"{world.tag}/binary", SecretBinary=b"\x00\x01canary")["ARN"]
    # A reference by name works as by ARN; a name AWS does not hold is found missing at read time only.
    ids = {
        "plain": world.create("plain", "aws_secrets_manager", plain_arn)["id"],
        "binary": world.create("binary", "aws_secrets_manager", binary_arn)["id"],
        "missing": world.create("missing", "aws_secrets_manager", f"{world.tag}/never-created")["id"],
    }
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    status, body = world.fetch(ids["plain"])
    assert status == 200 and body["values"] == {"value": plain}
    status, body = world.fetch(ids["binary"])
    assert (status, body["code"]) == (422, "secret_not_text")
    status, body = world.fetch(ids["missing"])
    assert (status, body["code"]) == (404, "backend_secret_missing")
    # Without read_value the missing reference answers like a missing record: the caller learns nothing.
    status, body = world.fetch(ids["missing"], token=world.other)
    assert (status, body["code"]) == (404, "secret_not_found")
    status, none = world.fetch("sec_0000000000000000", token=world.other)
    assert none["detail"] == body["detail"]


def test_openbao_kv2_versions_rotation_and_deleted_versions(world: World) -> None:
    first, second = canary(), canary()
    path = f"{world.tag}/db"
    assert world.b.kv_put(path, {"username": "app", "password": first}) == 1
    created = world.create("db", "openbao_kv2", f"secret/data/{path}", category="database")
    secret_id = created["id"]
    world.grant(world.service_id, secret_id=secret_id, operations=["read_value"])
    status, body = world.fetch(secret_id)
    assert status == 200, body
    assert body["values"] == {"password": first, "username": "app"} and body["version"] == 1
    assert body["backend"] == "openbao_kv2"
    assert world.b.kv_put(path, {"username": "app", "password": second}) == 2
    status, body = world.fetch(secret_id, field="password")
    assert status == 200 and body["values"] == {"password": second} and body["version"] == 2
    status, body = world.fetch(secret_id, version=1, field="password")
    assert status == 200 and body["values"] == {"password": first} and body["version"] == 1
    status, body = world.fetch(secret_id, version=9)
    assert (status, body["code"]) == (404, "backend_secret_missing")
    status, body = world.fetch(secret_id, backend_version="AWSCURRENT")
    assert (status, body["code"]) == (400, "backend_version_unsupported")
    # A deleted version reads as missing; the current one is untouched.
    world.b.bao("POST", f"secret/delete/{path}", {"versions": [1]})
    status, body = world.fetch(secret_id, version=1)
    assert (status, body["code"]) == (404, "backend_secret_missing")
    status, body = world.fetch(secret_id)
    assert status == 200 and body["version"] == 2
    fetched = _fetch_events(world, secret_id)
    assert {e["request"]["reference"] for e in fetched if "request" in e} == {f"secret/data/{path}"}
    assert first not in json.dumps(fetched) and second not in json.dumps(fetched)


def test_no_access_and_policy_apply_as_to_sealed(world: World) -> None:
    path = f"{world.tag}/rate"
    world.b.kv_put(path, {"token": canary()})
    secret_id = world.create("rate", "openbao_kv2", f"secret/data/{path}")["id"]
    arn = world.b.aws().create_secret(Name=f"{world.tag}/hidden", SecretString=canary())["ARN"]
    hidden_id = world.create("hidden", "aws_secrets_manager", arn)["id"]
    world.grant(world.service_id, scope=world.org, operations=["read_value"])
    # An explicit no-access grant on the narrower folder hides it, as for a sealed secret.
    world.grant(world.other_id, scope=world.org, operations=["read_value"])
    world.grant(world.other_id, scope=world.folder, operations=None, no_access=True)
    status, body = world.fetch(hidden_id, token=world.other)
    assert (status, body["code"]) == (404, "secret_not_found")
    attach_policy(
        world.server,
        {
            "id": f"reads-{world.org}",
            "rules": [
                {
                    "id": "reads",
                    "kind": "rate_limit",
                    "effect": "deny",
                    "max_requests": 2,
                    "window_seconds": 3600,
                    "per": "principal",
                }
            ],
        },
        scope=world.org,
    )
    assert [world.fetch(secret_id)[0] for _ in range(3)] == [200, 200, 429]
    # The denied read is audited as for a sealed secret (and never asked the backend).
    denied = [e for e in _fetch_events(world, secret_id) if e["outcome"] != "allowed"]
    assert [e["error"]["code"] for e in denied] == ["rate_limited"], denied


def test_bad_references_and_shapes_are_refused(world: World) -> None:
    cases = [
        ({"backend": "aws_secrets_manager", "reference": "arn:aws:s3:::bucket"}, "invalid_reference"),
        ({"backend": "openbao_kv2", "reference": "secret/no-data-segment"}, "invalid_reference"),
        ({"backend": "openbao_kv2", "reference": "secret/data/../sys"}, "invalid_reference"),
        ({"backend": "openbao_kv2", "reference": "secret/data/x", "fields": {"A": "b"}}, None),
        ({"reference": "secret/data/x"}, None),
        ({"backend": "aws_secrets_manager"}, None),
    ]
    for extra, code in cases:
        status, body = world.call(
            "POST", "/v1/secrets", {"folder": world.folder, "name": "bad", "owner_group": "g", **extra}
        )
        assert status == 400, (extra, body)
        if code is not None:
            assert body["code"] == code, (extra, body)
        assert "sys" not in body.get("detail", "") and "bucket" not in body.get("detail", "")
    status, listed = world.call("GET", f"/v1/secrets?folder={world.org}")
    assert listed["items"] == []


def test_backend_down_answers_502_and_recovers(world: World) -> None:
    value = canary()
    arn = world.b.aws().create_secret(Name=f"{world.tag}/down", SecretString=value)["ARN"]
    world.b.kv_put(f"{world.tag}/down", {"v": value})
    aws_id = world.create("aws-down", "aws_secrets_manager", arn)["id"]
    bao_id = world.create("bao-down", "openbao_kv2", f"secret/data/{world.tag}/down")["id"]
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    for proxy, secret_id in ((world.b.aws_proxy, aws_id), (world.b.bao_proxy, bao_id)):
        proxy.down()
        try:
            status, body = world.fetch(secret_id)
            assert (status, body["code"]) == (502, "backend_unavailable"), body
            assert value not in json.dumps(body)
            # A caller without read_value still only sees "not found".
            status, body = world.fetch(secret_id, token=world.other)
            assert (status, body["code"]) == (404, "secret_not_found")
        finally:
            proxy.up()
        status, body = world.fetch(secret_id)
        assert status == 200 and value in json.dumps(body["values"])
    refused = [
        e for e in _fetch_events(world, aws_id) + _fetch_events(world, bao_id) if e["outcome"] != "allowed"
    ]
    assert {e["error"]["code"] for e in refused if "error" in e} >= {"backend_unavailable"}, refused


def test_a_disabled_secret_held_by_reference_is_refused_without_asking_its_backend(world: World) -> None:
    value = canary()
    arn = world.b.aws().create_secret(Name=f"{world.tag}/paused", SecretString=value)["ARN"]
    world.b.kv_put(f"{world.tag}/paused", {"v": value})
    aws_id = world.create("aws-paused", "aws_secrets_manager", arn)["id"]
    bao_id = world.create("bao-paused", "openbao_kv2", f"secret/data/{world.tag}/paused")["id"]
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    for proxy, secret_id in ((world.b.aws_proxy, aws_id), (world.b.bao_proxy, bao_id)):
        assert world.fetch(secret_id)[0] == 200
        status, body = world.call("POST", f"/v1/secrets/{secret_id}/disable", {"reason": "paused"})
        assert status == 200 and body["state"] == "disabled", body
        # With the backend unreachable the answer is still the state's, not the backend's 502.
        proxy.down()
        try:
            status, body = world.fetch(secret_id)
            assert (status, body["code"]) == (409, "secret_disabled") and value not in json.dumps(body)
            status, body = world.fetch(secret_id, token=world.other)
            assert (status, body["code"]) == (404, "secret_not_found")
        finally:
            proxy.up()
        assert world.call("POST", f"/v1/secrets/{secret_id}/enable", {})[0] == 200
        status, body = world.fetch(secret_id)
        assert status == 200 and value in json.dumps(body["values"])


def test_cli_creates_and_fetches_by_reference(world: World, tmp_path: Path) -> None:
    value = canary()
    world.b.kv_put(f"{world.tag}/cli", {"API_KEY": value})
    arn = world.b.aws().create_secret(Name=f"{world.tag}/cli", SecretString=json.dumps({"K": value}))["ARN"]
    admin_file, service_file = tmp_path / "admin", tmp_path / "service"
    admin_file.write_text(world.admin + "\n")
    service_file.write_text(world.service + "\n")

    def run(token_file: Path, *args: str) -> Any:
        env = {k: None for k in os.environ if k.startswith("SIGNER_")}
        env.update(SIGNER_SERVER=world.server.url, SIGNER_TOKEN_FILE=str(token_file), HOME=str(tmp_path))
        result = CliRunner().invoke(main, [*args, "--json"], env=env)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return json.loads(result.stdout)

    common = ["secrets", "create", "--folder", world.folder, "--owner-group", "payments"]
    bao = run(
        admin_file,
        *common,
        "--name",
        "cli-bao",
        "--backend",
        "openbao",
        "--ref",
        f"secret/data/{world.tag}/cli",
    )
    aws = run(admin_file, *common, "--name", "cli-aws", "--backend", "aws", "--ref", arn)
    assert (bao["backend"], aws["backend"]) == ("openbao_kv2", "aws_secrets_manager")
    shown = run(admin_file, "secrets", "show", aws["id"])
    assert shown["reference"] == arn
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    assert run(service_file, "secrets", "fetch", bao["id"])["values"] == {"API_KEY": value}
    fetched = run(service_file, "secrets", "fetch", aws["id"], "--backend-version", "AWSCURRENT")
    assert fetched["values"] == {"K": value}


def test_no_value_or_credential_leaks(server: Server, world: World) -> None:
    value = canary()
    arn = world.b.aws().create_secret(Name=f"{world.tag}/scan", SecretString=value)["ARN"]
    world.b.kv_put(f"{world.tag}/scan", {"v": value})
    ids = [
        world.create("scan-aws", "aws_secrets_manager", arn)["id"],
        world.create("scan-bao", "openbao_kv2", f"secret/data/{world.tag}/scan")["id"],
    ]
    world.grant(world.service_id, scope=world.folder, operations=["read_value"])
    for secret_id in ids:
        assert world.fetch(secret_id)[0] == 200
        world.fetch(secret_id, version=77)
        world.fetch(secret_id, backend_version="AWSPENDING")
    world.b.bao_proxy.down()
    try:
        world.fetch(ids[1])
    finally:
        world.b.bao_proxy.up()
    world.bodies = [b for b in world.bodies if not (isinstance(b, dict) and "values" in b)]
    texts = {
        "log": server.log_text(),
        "audit": json.dumps(world.events()),
        "bodies": json.dumps(world.bodies),
    }
    database = server.installation.data_dir / "signer.db"
    if database.exists():
        with sqlite3.connect(database) as conn:
            rows = conn.execute("SELECT * FROM secrets").fetchall()
        texts["database"] = repr(rows) + database.read_bytes().decode("latin-1")
    for where, text in texts.items():
        for secret in (world.b.aws_secret_key, world.b.bao_token, value):
            assert secret not in text, where


def test_hanging_and_refusing_backends(tmp_path: Path, backends: Backends) -> None:
    """AWS behind an endpoint that accepts connections and never answers: 504 ``backend_timeout``
    within the configured timeout. OpenBao with a token whose policy does not cover the path: 502
    ``backend_denied``. Neither answer, nor the log, holds the token."""
    import socket

    policy = 'path "secret/data/allowed/*" { capabilities = ["read"] }'
    backends.bao("PUT", "sys/policies/acl/signer-narrow", {"policy": policy})
    narrow = backends.bao("POST", "auth/token/create", {"policies": ["signer-narrow"], "ttl": "1h"})
    narrow_token = narrow["auth"]["client_token"]
    (tmp_path / "narrow-token").write_text(narrow_token + "\n")
    backends.kv_put("allowed/x", {"v": "fine"})
    backends.kv_put("forbidden/x", {"v": canary()})
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)  # never accepted: connects complete in the kernel, nothing is ever read
        settings = {
            "aws_secrets_manager": {
                "region": REGION,
                "endpoint_url": f"http://127.0.0.1:{blackhole.getsockname()[1]}",
                "access_key_id_file": str(backends.files / "aws-key-id"),
                "secret_access_key_file": str(backends.files / "aws-secret"),
                "timeout_seconds": 1,
            },
            "openbao_kv2": {
                "address": f"http://127.0.0.1:{backends.bao_proxy.port}",
                "token_file": str(tmp_path / "narrow-token"),
                "timeout_seconds": 1,
            },
        }
        installation = init_installation(tmp_path / "data")
        running = start_server(installation, env={"SIGNER_SECRET_BACKENDS": json.dumps(settings)})
        try:
            world = World(running, backends, secrets.token_hex(4))
            hang = world.create("hang", "aws_secrets_manager", "some/name")["id"]
            allowed = world.create("allowed", "openbao_kv2", "secret/data/allowed/x")["id"]
            forbidden = world.create("forbidden", "openbao_kv2", "secret/data/forbidden/x")["id"]
            world.grant(world.service_id, scope=world.folder, operations=["read_value"])
            started = time.monotonic()
            status, body = world.fetch(hang)
            elapsed = time.monotonic() - started
            assert (status, body["code"]) == (504, "backend_timeout"), body
            assert elapsed < 4, elapsed
            status, body = world.fetch(allowed)
            assert status == 200 and body["values"] == {"v": "fine"}, body
            status, body = world.fetch(forbidden)
            assert (status, body["code"]) == (502, "backend_denied"), body
            seen = json.dumps(world.bodies) + running.log_text() + json.dumps(world.events())
            for credential in (narrow_token, backends.bao_token, backends.aws_secret_key):
                assert credential not in seen
        finally:
            running.stop()


def test_tls_with_the_operators_ca(tmp_path: Path, backends: Backends) -> None:
    """OpenBao over TLS (``bao server -dev -dev-tls``): verified against ``ca_file``, the read works; the
    AWS connection pointed at the same TLS server without the CA refuses its certificate (502)."""
    import ssl

    port, certs = free_port(), tmp_path / "bao-tls"
    certs.mkdir()
    token = "devroot-tls-" + secrets.token_hex(8)
    args = [
        str(BIN / "bao"),
        "server",
        "-dev",
        "-dev-tls",
        f"-dev-tls-cert-dir={certs}",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={token}",
        "-dev-no-store-token",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BAO_", "VAULT_"))}
    env["HOME"] = str(tmp_path)
    with _process(args, tmp_path / "bao-tls.log", env) as bao:
        ca = certs / "vault-ca.pem"
        deadline = time.monotonic() + 60
        while True:  # a readiness poll with a hard deadline: the CA file, then a verified health answer
            assert bao.poll() is None and time.monotonic() < deadline, "bao -dev-tls did not start"
            try:
                context = ssl.create_default_context(cafile=str(ca))
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/v1/sys/health", timeout=2, context=context
                ) as answer:
                    if answer.status == 200:
                        break
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.1)
        value = canary()
        put = urllib.request.Request(
            f"https://127.0.0.1:{port}/v1/secret/data/tls/x",
            data=json.dumps({"data": {"v": value}}).encode(),
            method="POST",
            headers={"X-Vault-Token": token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(put, timeout=10, context=context):
            pass
        (tmp_path / "token").write_text(token)
        settings = {
            "openbao_kv2": {
                "address": f"https://127.0.0.1:{port}",
                "token_file": str(tmp_path / "token"),
                "ca_file": str(ca),
            },
            "aws_secrets_manager": {
                "region": REGION,
                "endpoint_url": f"https://127.0.0.1:{port}",
                "access_key_id_file": str(backends.files / "aws-key-id"),
                "secret_access_key_file": str(backends.files / "aws-secret"),
                "timeout_seconds": 2,
            },
        }
        installation = init_installation(tmp_path / "data")
        running = start_server(installation, env={"SIGNER_SECRET_BACKENDS": json.dumps(settings)})
        try:
            world = World(running, backends, secrets.token_hex(4))
            tls_id = world.create("tls", "openbao_kv2", "secret/data/tls/x")["id"]
            untrusted_id = world.create("untrusted", "aws_secrets_manager", "some-name")["id"]
            world.grant(world.service_id, scope=world.folder, operations=["read_value"])
            status, body = world.fetch(tls_id)
            assert status == 200 and body["values"] == {"v": value}, body
            status, body = world.fetch(untrusted_id)
            assert (status, body["code"]) == (502, "backend_unavailable"), body
            assert token not in json.dumps(world.bodies) + running.log_text()
        finally:
            running.stop()
