"""Run the real signer as users do: `signer init` and `signer serve` in subprocesses, talk HTTP to it.

Each data directory gets its own SoftHSM configuration and token, so servers under test never share
PKCS#11 state with the pytest process. Readiness is awaited by polling /readyz with a hard deadline.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIGNER = [sys.executable, "-m", "signer.cli"]
# ``python -m`` puts the working directory first on sys.path: the server and ``signer init`` run from this
# tree, so they run this tree's code whichever directory a test or a bench was started from.
TREE = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(data_dir: Path, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNER_", "SOFTHSM2_CONF"))}
    env["SIGNER_DATA_DIR"] = str(data_dir)
    env["SOFTHSM2_CONF"] = str(data_dir / "softhsm2.conf")
    if database_url:
        env["SIGNER_DATABASE_URL"] = database_url
    return env


@dataclass
class Installation:
    """A data directory after `signer init`: token, database, and the first admin's credentials."""

    data_dir: Path
    env: dict[str, str]
    admin: dict[str, Any]

    @property
    def admin_token(self) -> str:
        return self.admin["credentials"]["access_token"]


def init_installation(data_dir: Path, database_url: str | None = None) -> Installation:
    env = base_env(data_dir, database_url)
    done = subprocess.run(
        [*SIGNER, "init"], env=env, cwd=TREE, capture_output=True, text=True, timeout=180, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"signer init failed ({done.returncode}): {done.stderr}")
    return Installation(data_dir=data_dir, env=env, admin=json.loads(done.stdout))


def http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], Any]:
    """A small synchronous JSON client; returns (status, headers, parsed body or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, hdrs, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, payload = exc.code, dict(exc.headers), exc.read()
    text = payload.decode("utf-8", "replace")
    try:
        return status, hdrs, json.loads(text) if text else None
    except ValueError:
        return status, hdrs, text


@dataclass
class Server:
    installation: Installation
    port: int
    process: subprocess.Popen[str]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None, token: str | None = None, **kw: Any):
        return http(method, self.url + path, body, token, **kw)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode


def start_server(
    installation: Installation,
    *,
    workers: int = 1,
    port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    expect_ready: bool = True,
    command: list[str] | None = None,
) -> Server:
    """``signer serve`` on ``installation``; ``command`` replaces ``python -m signer.cli`` (a test that
    registers something of its own first, such as ``tests.fake_kind``)."""
    port = port or free_port()
    log_path = installation.data_dir / f"server-{port}-{time.monotonic_ns()}.log"
    merged = {**installation.env, **(env or {})}
    handle = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(
        [*(command or SIGNER), "serve", "--port", str(port), "--workers", str(workers)],
        env=merged,
        cwd=TREE,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    handle.close()
    server = Server(installation, port, process, log_path, env or {})
    if not expect_ready:
        return server
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            status, _, _ = server.call("GET", "/readyz", timeout=2)
            # The supervisor's socket is served as soon as one worker is up: wait for every worker, so
            # a test's "before" reading (metrics, HSM calls) is not moved by a late worker's self-test.
            if status == 200 and server.log_text().count('"event": "signer ready"') >= workers:
                return server
        except OSError:
            pass
        time.sleep(0.1)  # polling for readiness with a hard deadline, not synchronising on timing
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout}s:\n{server.log_text()}")


def make_service(server: Server, name: str) -> dict[str, Any]:
    status, _, body = server.call(
        "POST", "/v1/principals", {"name": name, "role": "service"}, server.installation.admin_token
    )
    assert status == 201, body
    return body


def make_key(server: Server, curve: str = "secp256k1", label: str = "k") -> dict[str, Any]:
    status, _, body = server.call(
        "POST", "/v1/keys", {"curve": curve, "label": label}, server.installation.admin_token
    )
    assert status == 201, body
    return body


def grant(server: Server, principal_id: str, key_id: str, operations: list[str]) -> dict[str, Any]:
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {"principal_id": principal_id, "key_id": key_id, "operations": operations},
        server.installation.admin_token,
    )
    assert status == 201, body
    return body


def put_policy(server: Server, document: dict[str, Any]) -> dict[str, Any]:
    """Store ``document`` as the next version of its policy (its ``version`` is filled in)."""
    admin = server.installation.admin_token
    status, _, body = server.call("GET", f"/v1/policies/{document['id']}", token=admin)
    version = body["versions"][-1]["version"] + 1 if status == 200 else 1
    status, _, body = server.call("POST", "/v1/policies", {**document, "version": version}, admin)
    assert status == 201, body
    return body


def attach_policy(
    server: Server,
    document: dict[str, Any],
    *,
    key_id: str | None = None,
    scope: str | None = None,
    resource: dict[str, str] | None = None,
    mode: str = "live",
) -> dict[str, Any]:
    """Store ``document`` as a new version and put it in force at ``key_id``, ``resource`` (a
    reference: ``{"type", "id"}``) or ``scope``."""
    stored = put_policy(server, document)
    if resource is not None:
        where: dict[str, Any] = {"resource": resource}
    else:
        where = {"key_id": key_id} if key_id is not None else {"scope": scope}
    status, _, body = server.call(
        "POST",
        f"/v1/policies/{document['id']}/attachments",
        {"version": stored["version"], "mode": mode, **where},
        server.installation.admin_token,
    )
    assert status == 201, body
    return body


def unlock_policy(policy_id: str, delegates: list[str]) -> dict[str, Any]:
    """A policy that unlocks what is denied by default: raw digests and the given 7702 delegates."""
    rules: list[dict[str, Any]] = [{"id": "blind-signing", "kind": "raw_digest", "effect": "allow"}]
    if delegates:
        rules.append(
            {"id": "delegates", "kind": "delegate_allowlist", "effect": "allow", "delegates": delegates}
        )
    return {"id": policy_id, "rules": rules}
