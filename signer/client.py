"""A small synchronous REST client for a running signer: one typed method per API operation.

Why the standard library (``urllib``) and not aiohttp: the CLI makes one request at a time and exits, so
an event loop buys nothing; the client stays importable without aiohttp (whose only homes are
``signer.app`` and ``signer.http``), starts fast, and scripts can use it from plain synchronous code.

Safety:

- the bearer token is a ``Secret``: it goes into the ``Authorization`` header and nowhere else (never an
  exception message, never a log line);
- TLS certificates are verified (``ca_file`` adds a private CA); redirects are refused, because urllib would
  otherwise forward the ``Authorization`` header to wherever the redirect points;
- every error answer becomes ``ApiError`` carrying the problem document's ``status``, ``code``, ``detail``,
  ``reasons`` and ``request_id``; a server that cannot be reached becomes ``ClientConnectionError``.

Adding an endpoint is one method: ``return self.request("POST", f"/v1/things/{_q(thing_id)}", body)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from signer.secret_value import Secret

DEFAULT_SERVER = "http://127.0.0.1:8080"


class ClientError(Exception):
    """Base of the client's errors."""


class ClientConfigError(ClientError):
    """The client's own configuration (server URL, token file, CA file, config file) is unusable."""


class ClientConnectionError(ClientError):
    """The server could not be reached or answered with something that is not HTTP/JSON."""


class ApiError(ClientError):
    """The server answered with an error (an RFC 9457 problem document)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        reasons: list[Any] | None = None,
        request_id: str | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.reasons = reasons or []
        self.request_id = request_id
        self.problem = dict(problem) if problem else {"status": status, "code": code, "detail": detail}
        super().__init__(f"{status} {code}: {detail}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise ClientConnectionError(f"the server answered {code} (redirect); refusing to follow it")


def _q(part: str) -> str:
    """One path segment, quoted so an id can never change the route."""
    return urllib.parse.quote(part, safe="")


@dataclass(frozen=True)
class ClientConfig:
    server: str
    token: Secret | None
    ca_file: Path | None
    timeout: float = 30.0
    token_file: Path | None = None  # where the token was read from, if from a file


def default_client_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "signer" / "client.toml"


def read_token_file(path: Path, field: str = "access_token") -> Secret:
    """A token from a file: either the token alone, or the credentials JSON the signer prints (``field``)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ClientConfigError(f"token file cannot be read: {path} ({exc.strerror})") from None
    if text.startswith("{"):
        try:
            document = json.loads(text)
            # `signer init` and `principals create` print {"principal": ..., "credentials": {...}}.
            nested = document.get("credentials")
            value = document.get(field) if field in document or not isinstance(nested, dict) else None
            if value is None and isinstance(nested, dict):
                value = nested.get(field)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise ClientConfigError(f"token file {path} is JSON without a '{field}'")
        return Secret(value)
    if not text:
        raise ClientConfigError(f"token file is empty: {path}")
    return Secret(text)


def load_client_config(
    *,
    server: str | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    need_token: bool = True,
) -> ClientConfig:
    """Flags win over ``SIGNER_SERVER`` / ``SIGNER_TOKEN_FILE`` / ``SIGNER_TOKEN`` / ``SIGNER_CA_FILE``, which
    win over the client config file (``--client-config``, ``SIGNER_CLIENT_CONFIG`` or
    ``~/.config/signer/client.toml`` with keys ``server``, ``token_file``, ``ca_file``)."""
    env = os.environ if environ is None else environ
    explicit = config_file or env.get("SIGNER_CLIENT_CONFIG")
    path = Path(explicit) if explicit else default_client_config_path(env)
    file_values: dict[str, Any] = {}
    if explicit or path.exists():
        try:
            with open(path, "rb") as handle:
                file_values = tomllib.load(handle)
        except OSError as exc:
            raise ClientConfigError(f"client config cannot be read: {path} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ClientConfigError(f"client config is not valid TOML: {path}: {exc}") from None
        unknown = sorted(set(file_values) - {"server", "token_file", "ca_file", "timeout"})
        if unknown:
            raise ClientConfigError(f"client config {path}: unknown setting(s) {', '.join(unknown)}")

    chosen_server = server or env.get("SIGNER_SERVER") or file_values.get("server") or DEFAULT_SERVER
    parsed = urllib.parse.urlsplit(str(chosen_server))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientConfigError(f"server must be an http:// or https:// URL, not {chosen_server!r}")

    token: Secret | None = None
    token_path: Path | None = None
    if token_file or env.get("SIGNER_TOKEN_FILE"):
        token_path = Path(token_file or env["SIGNER_TOKEN_FILE"])
    elif env.get("SIGNER_TOKEN"):
        token = Secret(env["SIGNER_TOKEN"].strip())
    elif file_values.get("token_file"):
        token_path = Path(str(file_values["token_file"])).expanduser()
    if token_path is not None:
        token = read_token_file(token_path)
    if need_token and token is None:
        raise ClientConfigError(
            "no token: pass --token-file FILE, or set SIGNER_TOKEN_FILE or SIGNER_TOKEN, "
            "or token_file in the client config"
        )

    chosen_ca = ca_file or env.get("SIGNER_CA_FILE") or file_values.get("ca_file")
    ca_path = Path(str(chosen_ca)).expanduser() if chosen_ca else None
    if ca_path is not None and not ca_path.is_file():
        raise ClientConfigError(f"CA file not found: {ca_path}")
    timeout = file_values.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise ClientConfigError(f"client config {path}: timeout must be a number of seconds in (0, 600]")
    return ClientConfig(str(chosen_server).rstrip("/"), token, ca_path, float(timeout), token_path)


class SignerClient:
    """The signer's REST API, one method per operation; answers are the server's JSON, unchanged."""

    def __init__(
        self,
        server: str,
        token: Secret | None = None,
        *,
        ca_file: Path | None = None,
        timeout: float = 30.0,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        if urllib.parse.urlsplit(server).scheme not in ("http", "https"):
            raise ClientConfigError("server must be an http:// or https:// URL")
        self.server = server.rstrip("/")
        self._token = token
        self._timeout = timeout
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if client_cert is not None:  # (certificate, key) PEM files, for tls_client_auth on the server
            context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )

    @classmethod
    def from_config(cls, config: ClientConfig) -> SignerClient:
        return cls(config.server, config.token, ca_file=config.ca_file, timeout=config.timeout)

    # -- transport ---------------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        sink: BinaryIO | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One request; with ``sink``, a successful answer's body is streamed into it (and b"" returned)
        instead of read into memory."""
        url = self.server + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode("utf-8"))
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked in __init__
        request.add_header(
            "Accept", "application/json, application/problem+json, application/x-ndjson, text/csv"
        )
        if data is not None:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token.reveal()}")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                if sink is not None:
                    shutil.copyfileobj(response, sink, 64 * 1024)
                    return response.status, dict(response.headers), b""
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers or {}), exc.read()
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise ClientConnectionError(f"cannot reach {self.server}: {reason}") from None
        except (TimeoutError, ConnectionError) as exc:
            raise ClientConnectionError(f"cannot reach {self.server}: {exc.__class__.__name__}") from None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send one request; return the parsed JSON answer or raise ``ApiError``. ``options``: ``headers``,
        and ``raw`` bytes with their ``content_type`` instead of a JSON ``body``."""
        status, _, payload = self._open(method, path, body, query, **options)
        return self._parse(status, payload)

    def _parse(self, status: int, payload: bytes) -> Any:
        text = payload.decode("utf-8", "replace")
        try:
            document = json.loads(text) if text else None
        except ValueError:
            document = None
        if status >= 400:
            if isinstance(document, dict) and isinstance(document.get("code"), str):
                raise ApiError(
                    status,
                    document["code"],
                    str(document.get("detail", "")),
                    reasons=document.get("reasons"),
                    request_id=document.get("request_id"),
                    problem=document,
                )
            raise ApiError(status, "http_error", f"HTTP {status} without a problem document")
        if document is None and text:
            raise ClientConnectionError(
                f"the server at {self.server} answered with something that is not JSON"
            )
        return document

    # -- health and identity -----------------------------------------------------------------------

    def ready(self) -> tuple[bool, Any]:
        """``(ready, checks)`` from ``/readyz``: a 503 here is an answer, not an error."""
        status, _, payload = self._open("GET", "/readyz")
        if status == 503:
            try:
                return False, json.loads(payload.decode("utf-8", "replace") or "null")
            except ValueError:
                return False, None
        return True, self._parse(status, payload)

    def metrics(self) -> str:
        """The Prometheus text from ``/metrics`` (loopback callers may need no token)."""
        status, _, payload = self._open("GET", "/metrics")
        if status >= 400:
            self._parse(status, payload)
        return payload.decode("utf-8", "replace")

    def openapi(self) -> Any:
        """The server's OpenAPI document."""
        return self.request("GET", "/openapi.json")

    def whoami(self) -> Any:
        return self.request("GET", "/v1/whoami")

    def refresh(self, refresh_token: Secret) -> Any:
        return self.request("POST", "/v1/auth/refresh", {"refresh_token": refresh_token.reveal()})

    # -- principals and tokens ---------------------------------------------------------------------

    def create_principal(self, name: str, role: str) -> Any:
        return self.request("POST", "/v1/principals", {"name": name, "role": role})

    def list_principals(self) -> Any:
        return self.request("GET", "/v1/principals")

    def set_principal_disabled(self, principal_id: str, disabled: bool) -> Any:
        return self.request("POST", f"/v1/principals/{_q(principal_id)}/state", {"disabled": disabled})

    def issue_tokens(self, principal_id: str) -> Any:
        return self.request("POST", f"/v1/principals/{_q(principal_id)}/tokens")

    def issue_kms_credential(self, principal_id: str, ttl_seconds: int | None = None) -> Any:
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return self.request("POST", f"/v1/principals/{_q(principal_id)}/kms-credentials", body)

    def add_client_certificate(self, principal_id: str, pem: str, ttl_seconds: int | None = None) -> Any:
        body: dict[str, Any] = {"certificate": pem}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self.request("POST", f"/v1/principals/{_q(principal_id)}/client-certificates", body)

    def list_client_certificates(self, principal_id: str) -> Any:
        return self.request("GET", f"/v1/principals/{_q(principal_id)}/client-certificates")

    def revoke_client_certificate(self, principal_id: str, fingerprint: str) -> Any:
        path = f"/v1/principals/{_q(principal_id)}/client-certificates/{_q(fingerprint)}"
        return self.request("DELETE", path)

    def revoke_token(self, token_id: str) -> Any:
        return self.request("DELETE", f"/v1/tokens/{_q(token_id)}")

    # -- keys --------------------------------------------------------------------------------------

    def create_key(
        self,
        curve: str,
        label: str,
        scope: str | None = None,
        tags: list[str] | None = None,
        inactive: bool = False,
    ) -> Any:
        body: dict[str, Any] = {"curve": curve, "label": label}
        if scope is not None:
            body["scope"] = scope
        if tags:
            body["tags"] = tags
        if inactive:
            body["inactive"] = True
        return self.request("POST", "/v1/keys", body)

    def list_keys(self, limit: int = 100, after: str | None = None) -> Any:
        return self.request("GET", "/v1/keys", query={"limit": limit, "after": after})

    def get_key(self, key_id: str) -> Any:
        return self.request("GET", f"/v1/keys/{_q(key_id)}")

    def disable_key(self, key_id: str) -> Any:
        return self.request("POST", f"/v1/keys/{_q(key_id)}/disable")

    def enable_key(self, key_id: str) -> Any:
        return self.request("POST", f"/v1/keys/{_q(key_id)}/enable")

    def key_transition(
        self,
        key_id: str,
        action: str,
        reason: str | None = None,
        confirm: str | None = None,
        compromised_at: str | None = None,
        approval_id: str | None = None,
    ) -> Any:
        """``activate``, ``suspend``, ``deactivate``, ``compromise`` or ``destroy`` a key (compromise and
        destroy need ``confirm``: the key's label). A transition policy sends to approvers answers its
        pending request; ``approval_id`` completes it once approved."""
        body: dict[str, Any] = {}
        named = (
            ("reason", reason),
            ("confirm", confirm),
            ("compromised_at", compromised_at),
            ("approval_id", approval_id),
        )
        for name, value in named:
            if value is not None:
                body[name] = value
        return self.request("POST", f"/v1/keys/{_q(key_id)}/{_q(action)}", body)

    # -- secrets: only fetch_secret's answer carries values ---------------------------------------

    def create_secret(
        self,
        folder: str,
        name: str,
        *,
        owner_principal: str | None = None,
        owner_group: str | None = None,
        fields: Mapping[str, str] | None = None,
        generate: Mapping[str, Any] | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        category: str | None = None,
        consumers: list[str] | None = None,
        backend: str | None = None,
        reference: str | None = None,
    ) -> Any:
        body = {
            "backend": backend,
            "reference": reference,
            "folder": folder,
            "name": name,
            "owner_principal": owner_principal,
            "owner_group": owner_group,
            "fields": dict(fields) if fields is not None else None,
            "generate": dict(generate) if generate is not None else None,
            "description": description,
            "tags": tags or None,
            "category": category,
            "consumers": consumers or None,
        }
        return self.request("POST", "/v1/secrets", {k: v for k, v in body.items() if v is not None})

    def list_secrets(self, folder: str | None = None, limit: int = 100, after: str | None = None) -> Any:
        return self.request("GET", "/v1/secrets", query={"folder": folder, "limit": limit, "after": after})

    def get_secret(self, secret_id: str) -> Any:
        return self.request("GET", f"/v1/secrets/{_q(secret_id)}")

    def update_secret(self, secret_id: str, changes: Mapping[str, Any], if_match: str | None = None) -> Any:
        return self.request(
            "PATCH", f"/v1/secrets/{_q(secret_id)}", dict(changes), headers=_if_match(if_match)
        )

    def set_secret_value(
        self,
        secret_id: str,
        fields: Mapping[str, str] | None = None,
        generate: Mapping[str, Any] | None = None,
        *,
        from_rule: bool = False,
        stage: bool = False,
        if_match: str | None = None,
    ) -> Any:
        body: dict[str, Any] = {"fields": fields, "generate": generate}
        if from_rule:
            body["from_rule"] = True
        if stage:
            body["stage"] = True
        return self.request(
            "POST",
            f"/v1/secrets/{_q(secret_id)}/versions",
            {k: v for k, v in body.items() if v is not None},
            headers=_if_match(if_match),
        )

    def secret_folder_defaults(self, folder: str) -> Any:
        return self.request("GET", "/v1/secret-folder-defaults", query={"folder": folder})

    def set_secret_folder_defaults(
        self, folder: str, rotation_interval_seconds: int | None, overlap_seconds: int | None
    ) -> Any:
        body = {
            "folder": folder,
            "rotation_interval_seconds": rotation_interval_seconds,
            "overlap_seconds": overlap_seconds,
        }
        return self.request("PUT", "/v1/secret-folder-defaults", body)

    def list_secret_versions(self, secret_id: str) -> Any:
        return self.request("GET", f"/v1/secrets/{_q(secret_id)}/versions")

    def secret_version_action(
        self,
        secret_id: str,
        version: int,
        action: str,
        reason: str | None = None,
        if_match: str | None = None,
    ) -> Any:
        """``promote``, ``disable``, ``enable`` or ``destroy`` one version."""
        body = None if action == "promote" else ({"reason": reason} if reason is not None else {})
        return self.request(
            "POST",
            f"/v1/secrets/{_q(secret_id)}/versions/{int(version)}/{_q(action)}",
            body,
            headers=_if_match(if_match),
        )

    def delete_secret(self, secret_id: str) -> Any:
        return self.request("DELETE", f"/v1/secrets/{_q(secret_id)}")

    def set_secret_state(
        self, secret_id: str, action: str, reason: str | None = None, if_match: str | None = None
    ) -> Any:
        """``disable`` or ``enable`` the whole secret."""
        if action not in ("disable", "enable"):
            raise ValueError("action is disable or enable")
        body = {"reason": reason} if reason is not None else {}
        return self.request(
            "POST", f"/v1/secrets/{_q(secret_id)}/{action}", body, headers=_if_match(if_match)
        )

    def find_secret(self, name_or_id: str) -> str:
        """A secret's id from its id (``sec_...``) or its path (``folder/name``, ``secret://folder/name``):
        the path is looked up among the secrets the caller may list in that folder."""
        text = name_or_id.removeprefix("secret://")
        folder, _, name = text.rpartition("/")
        if not folder:
            return name_or_id
        after: str | None = None
        while True:
            page = self.list_secrets(folder, limit=1000, after=after)
            for item in page["items"]:
                if item["folder"] == folder and item["name"] == name:
                    return str(item["id"])
            after = page.get("next")
            if after is None:
                detail = "no secret you may list has that path"
                raise ApiError(404, "secret_not_found", detail)

    def rotate_kek(self, scope: str) -> Any:
        return self.request("POST", f"/v1/secrets/keks/{_q(scope)}/rotate")

    def kek_rotation(self, scope: str) -> Any:
        return self.request("GET", f"/v1/secrets/keks/{_q(scope)}/rotation")

    def destroy_retired_kek(self, scope: str, kek_id: str) -> Any:
        return self.request("DELETE", f"/v1/secrets/keks/{_q(scope)}/retired/{_q(kek_id)}")

    def resolve_secrets(
        self,
        references: list[str],
        *,
        workspace: str | None = None,
        scope: str | None = None,
        workload: str | None = None,
    ) -> Any:
        body = {"references": references, "workspace": workspace, "scope": scope, "workload": workload}
        return self.request("POST", "/v1/secrets/resolve", {k: v for k, v in body.items() if v is not None})

    def fetch_secret(
        self,
        secret_id: str,
        *,
        version: int | None = None,
        field: str | None = None,
        workload: str | None = None,
        backend_version: str | None = None,
        approval_id: str | None = None,
    ) -> Any:
        body = {
            "version": version,
            "backend_version": backend_version,
            "field": field,
            "workload": workload,
            "approval_id": approval_id,
        }
        return self.request(
            "POST", f"/v1/secrets/{_q(secret_id)}/fetch", {k: v for k, v in body.items() if v is not None}
        )

    # -- grants ------------------------------------------------------------------------------------

    def create_grant(
        self,
        operations: list[str] | None,
        *,
        principal_id: str | None = None,
        group: str | None = None,
        key_id: str | None = None,
        scope: str | None = None,
        expires_at: str | None = None,
        max_uses: int | None = None,
        secret_id: str | None = None,
        value_budgets: Mapping[str, str] | None = None,
        no_access: bool = False,
        resource: tuple[str, str] | None = None,
        approval_id: str | None = None,
    ) -> Any:
        """To one principal or a group; on one resource (``resource``: kind and id; ``key_id`` and
        ``secret_id`` name a key or a secret) or every resource under a scope (fields left out are
        unset). ``no_access`` (with no operations) makes it an explicit no-access grant. A grant on a
        key that policy sends to approvers answers its pending request; ``approval_id`` (with the same
        fields) makes it once approved."""
        # A key or a secret is sent as a reference; more than one target is sent as given, to be refused.
        if resource is None and key_id is not None and secret_id is None:
            resource, key_id = ("key", key_id), None
        elif resource is None and secret_id is not None and key_id is None:
            resource, secret_id = ("secret", secret_id), None
        fields = {
            "principal_id": principal_id,
            "group": group,
            "resource": None if resource is None else {"type": resource[0], "id": resource[1]},
            "key_id": key_id,
            "secret_id": secret_id,
            "scope": scope,
            "operations": operations,
            "expires_at": expires_at,
            "max_uses": max_uses,
            "value_budgets": dict(value_budgets) if value_budgets else None,
            "no_access": True if no_access else None,
            "approval_id": approval_id,
        }
        return self.request("POST", "/v1/grants", {k: v for k, v in fields.items() if v is not None})

    def list_grants(self, principal_id: str | None = None) -> Any:
        return self.request("GET", "/v1/grants", query={"principal_id": principal_id})

    def revoke_grant(self, grant_id: str, approval_id: str | None = None) -> Any:
        """Revoke a grant; ``approval_id`` completes an approved revocation of a grant on a key."""
        return self.request("DELETE", f"/v1/grants/{_q(grant_id)}", query=_present(approval_id=approval_id))

    # -- signing -----------------------------------------------------------------------------------

    # ``idempotency_key`` travels as the Idempotency-Key header: a retry executes at most once.

    def _sign(self, key_id: str, kind: str, body: Mapping[str, Any], idempotency_key: str | None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return self.request("POST", f"/v1/keys/{_q(key_id)}/sign/{kind}", dict(body), headers=headers)

    def json_rpc(self, method: str, params: list[Any] | dict[str, Any]) -> Any:
        """One Ethereum JSON-RPC call on ``/v1/rpc``; the JSON-RPC answer (``result`` or ``error``)."""
        return self.request(
            "POST", "/v1/rpc", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )

    def sign_transaction(
        self,
        key_id: str,
        transaction: Mapping[str, Any] | None = None,
        raw: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        body = {"raw": raw} if raw is not None else {"transaction": dict(transaction or {})}
        return self._sign(key_id, "transaction", body, idempotency_key)

    def sign_message(
        self, key_id: str, message: str, encoding: str = "utf8", *, idempotency_key: str | None = None
    ) -> Any:
        return self._sign(key_id, "message", {"message": message, "encoding": encoding}, idempotency_key)

    def sign_typed_data(
        self, key_id: str, typed_data: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Any:
        return self._sign(key_id, "typed-data", {"typed_data": dict(typed_data)}, idempotency_key)

    def sign_digest(self, key_id: str, digest: str, *, idempotency_key: str | None = None) -> Any:
        return self._sign(key_id, "digest", {"digest": digest}, idempotency_key)

    def sign_authorization(
        self,
        key_id: str,
        chain_id: int | str,
        delegate: str,
        nonce: int | str,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """An EIP-7702 authorisation; ``result["authorization"]`` goes into a type-4 transaction's
        ``authorizationList`` as it is."""
        body = {"chain_id": chain_id, "delegate": delegate, "nonce": nonce}
        return self._sign(key_id, "authorization", body, idempotency_key)

    # -- approvals ---------------------------------------------------------------------------------

    def list_approvals(
        self, *, state: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Any:
        query = {k: v for k, v in {"state": state, "limit": limit, "after": after}.items() if v is not None}
        return self.request("GET", "/v1/approvals", query=query or None)

    def get_approval(self, approval_id: str) -> Any:
        return self.request("GET", f"/v1/approvals/{_q(approval_id)}")

    def vote_approval(
        self, approval_id: str, decision: str, digest: str, signature: str | None = None
    ) -> Any:
        """``decision`` is ``approve`` or ``reject``; ``digest`` names the payload the approver checked."""
        body: dict[str, Any] = {"digest": digest}
        if signature is not None:
            body["signature"] = signature
        return self.request("POST", f"/v1/approvals/{_q(approval_id)}/{_q(decision)}", body)

    def cancel_approval(self, approval_id: str) -> Any:
        return self.request("POST", f"/v1/approvals/{_q(approval_id)}/cancel")

    def approval_result(self, approval_id: str, *, wait: int = 0) -> Any:
        return self.request("GET", f"/v1/approvals/{_q(approval_id)}/result", query={"wait": wait})

    def register_approver_key(self, scheme: str, public_key: str) -> Any:
        return self.request("PUT", "/v1/approvers/me/key", {"scheme": scheme, "public_key": public_key})

    def set_group_webhook(self, group: str, url: str) -> Any:
        return self.request("PUT", f"/v1/groups/{_q(group)}/webhook", {"url": url})

    def undelivered_alerts(self, limit: int | None = None) -> Any:
        return self.request("GET", "/v1/alerts", query=_present(limit=limit))

    def rotate_group_webhook_secret(self, group: str, overlap_seconds: int | None = None) -> Any:
        body = {} if overlap_seconds is None else {"overlap_seconds": overlap_seconds}
        return self.request("POST", f"/v1/groups/{_q(group)}/webhook/rotate-secret", body)

    def delete_group_webhook(self, group: str) -> Any:
        return self.request("DELETE", f"/v1/groups/{_q(group)}/webhook")

    # -- groups ------------------------------------------------------------------------------------

    # -- impact review, usage, the operator checklist ----------------------------------------------

    def impact(self, action: str, target_id: str, days: int = 30) -> Any:
        return self.request("POST", "/v1/impact", {"action": action, "id": target_id, "days": days})

    def checklist(
        self, days: int | None = None, limit: int | None = None, rotated_days: int | None = None
    ) -> Any:
        query = _present(days=days, limit=limit, rotated_days=rotated_days)
        return self.request("GET", "/v1/checklist", query=query)

    def usage_report(self, days: int | None = None, limit: int | None = None) -> Any:
        return self.request("GET", "/v1/usage", query=_present(days=days, limit=limit))

    def secret_usage(self, secret_id: str, days: int | None = None) -> Any:
        return self.request("GET", f"/v1/usage/secrets/{_q(secret_id)}", query=_present(days=days))

    def grant_usage(self, grant_id: str) -> Any:
        return self.request("GET", f"/v1/usage/grants/{_q(grant_id)}")

    # -- the console's books ----------------------------------------------------------------------

    def list_addresses(self) -> Any:
        return self.request("GET", "/v1/books/addresses")

    def put_address(self, address: str, label: str, note: str | None = None) -> Any:
        body = {"label": label, **({"note": note} if note is not None else {})}
        return self.request("PUT", f"/v1/books/addresses/{_q(address)}", body)

    def remove_address(self, address: str) -> Any:
        return self.request("DELETE", f"/v1/books/addresses/{_q(address)}")

    def list_tokens(self) -> Any:
        return self.request("GET", "/v1/books/tokens")

    def put_token(self, chain_id: int, contract: str, symbol: str, decimals: int) -> Any:
        path = f"/v1/books/tokens/{int(chain_id)}/{_q(contract)}"
        return self.request("PUT", path, {"symbol": symbol, "decimals": decimals})

    def remove_token(self, chain_id: int, contract: str) -> Any:
        return self.request("DELETE", f"/v1/books/tokens/{int(chain_id)}/{_q(contract)}")

    def list_functions(self) -> Any:
        return self.request("GET", "/v1/books/functions")

    def register_functions(
        self, *, signature: str | None = None, abi: Any = None, contract: str | None = None
    ) -> Any:
        body = _present(signature=signature, abi=abi, contract=contract)
        return self.request("POST", "/v1/books/functions", body)

    def remove_function(self, selector: str, contract: str | None = None) -> Any:
        path = f"/v1/books/functions/{_q(selector)}"
        return self.request("DELETE", path, query=_present(contract=contract))

    def list_groups(self) -> Any:
        return self.request("GET", "/v1/groups")

    def get_group(self, group: str) -> Any:
        return self.request("GET", f"/v1/groups/{_q(group)}")

    def add_group_member(self, group: str, principal_id: str) -> Any:
        return self.request("PUT", f"/v1/groups/{_q(group)}/members/{_q(principal_id)}")

    def remove_group_member(self, group: str, principal_id: str) -> Any:
        return self.request("DELETE", f"/v1/groups/{_q(group)}/members/{_q(principal_id)}")

    # -- policies ----------------------------------------------------------------------------------

    def create_policy(self, document: bytes, content_type: str = "application/json") -> Any:
        """Store the next version of a policy; ``document`` is JSON or YAML text, sent as it is."""
        return self.request("POST", "/v1/policies", raw=document, content_type=content_type)

    def list_policies(self) -> Any:
        return self.request("GET", "/v1/policies")

    def get_policy(self, policy_id: str) -> Any:
        return self.request("GET", f"/v1/policies/{_q(policy_id)}")

    def attach_policy(
        self,
        policy_id: str,
        version: int,
        *,
        key_id: str | None = None,
        scope: str | None = None,
        resource: tuple[str, str] | None = None,
        mode: str = "live",
    ) -> Any:
        reference = None if resource is None else {"type": resource[0], "id": resource[1]}
        fields = {"version": version, "key_id": key_id, "scope": scope, "resource": reference, "mode": mode}
        return self.request(
            "POST",
            f"/v1/policies/{_q(policy_id)}/attachments",
            {k: v for k, v in fields.items() if v is not None},
        )

    def list_attachments(self, include_detached: bool = False) -> Any:
        return self.request(
            "GET",
            "/v1/policy-attachments",
            query={"include_detached": "true" if include_detached else "false"},
        )

    def detach_policy(self, attachment_id: str) -> Any:
        return self.request("DELETE", f"/v1/policy-attachments/{_q(attachment_id)}")

    def shadow_report(self, attachment_id: str) -> Any:
        return self.request("GET", f"/v1/policy-attachments/{_q(attachment_id)}/shadow-report")

    def dry_run(self, request: Mapping[str, Any]) -> Any:
        """Judge a sign request without signing: ``key_id``, ``operation`` and that operation's fields,
        optionally ``principal_id`` and a ``candidate`` policy version."""
        return self.request("POST", "/v1/policy/dry-run", dict(request))

    # -- audit -------------------------------------------------------------------------------------

    def audit_page(self, after: int = 0, limit: int = 1000) -> tuple[list[str], int]:
        """One page of the audit log as JSONL lines (each with its newline), and the head seq."""
        status, headers, payload = self._open(
            "GET", "/v1/audit/events", query={"after": after, "limit": limit}
        )
        if status >= 400:
            self._parse(status, payload)
        head = next((v for k, v in headers.items() if k.lower() == "x-audit-head"), None)
        if head is None or not head.isdigit():
            raise ClientConnectionError("the audit answer carries no X-Audit-Head")
        lines = [line + "\n" for line in payload.decode("utf-8").splitlines() if line.strip()]
        return lines, int(head)

    def audit_public_key(self) -> Any:
        return self.request("GET", "/v1/audit/public-key")

    def audit_key_rotate(self) -> Any:
        return self.request("POST", "/v1/audit/key/rotate", {})

    def audit_checkpoint(self, size: int | None = None) -> Any:
        return self.request("GET", "/v1/audit/checkpoint", query=None if size is None else {"size": size})

    def audit_checkpoints(self, after: int = 0) -> tuple[list[dict[str, Any]], list[str] | None]:
        """Every checkpoint with size > ``after`` and the tree's right edge at ``after``."""
        items: list[dict[str, Any]] = []
        edge: list[str] | None = None
        cursor, first = after, True
        while True:
            page = self.request("GET", "/v1/audit/checkpoints", query={"after": cursor, "limit": 1000})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise ClientConnectionError("the checkpoint answer is not a page of checkpoints")
            if first:
                edge, first = page["edge"], False
            items.extend(page["items"])
            if len(page["items"]) < 1000:
                return items, edge
            cursor = page["items"][-1]["size"]

    def audit_retained_after(self) -> int:
        """The seq up to which the log was archived and pruned (0: nothing was)."""
        try:
            page = self.request("GET", "/v1/audit/checkpoints", query={"after": 0, "limit": 1})
        except ApiError as exc:
            if exc.status != 404:
                raise
            return 0  # an older server: no checkpoints, nothing pruned
        return int(page.get("retained_after", 0)) if isinstance(page, dict) else 0

    def audit_archive(self, out: Any, before_seq: int | None, before: str | None) -> tuple[int, int, str]:
        """Stream an archive into the binary file ``out``; (first seq, last seq, SHA-256 hex of the bytes)."""
        digest = hashlib.sha256()

        class _Hashing:
            # What is written is hashed on the way: the digest ``audit prune`` names.
            def write(self, chunk: bytes) -> int:
                digest.update(chunk)
                return int(out.write(chunk))

        query = {"before_seq": before_seq, "before": before}
        status, headers, payload = self._open("GET", "/v1/audit/archive", query=query, sink=_Hashing())  # type: ignore[arg-type]
        if status >= 400:
            self._parse(status, payload)
        found = {k.lower(): v for k, v in headers.items()}
        first = int(found.get("x-archive-first", "0"))
        through = int(found.get("x-archive-through", "0"))
        return first, through, digest.hexdigest()

    def audit_prune(self, before_seq: int, archive_digest: str) -> Any:
        return self.request(
            "POST", "/v1/audit/prune", {"before_seq": before_seq, "archive_digest": archive_digest}
        )

    def audit_hmac(self, field: str, value: str) -> Any:
        return self.request("POST", "/v1/audit/hmac", {"field": field, "value": value})

    def ledger_prune(self) -> Any:
        return self.request("POST", "/v1/ledger/prune")

    def audit_proof(self, kind: str, query: Mapping[str, int]) -> Any:
        return self.request("GET", f"/v1/audit/proofs/{kind}", query=query)

    def audit_rollback(self) -> Any:
        return self.request("GET", "/v1/audit/rollback")

    def acknowledge_rollback(self) -> Any:
        return self.request("POST", "/v1/audit/rollback/acknowledge", {})

    def audit_filtered(self, fmt: str, filters: Mapping[str, str | None], sink: BinaryIO) -> int:
        """Stream a filtered export (``jsonl`` or ``csv``) into ``sink`` without holding it in memory;
        the answer is the head seq the export stopped at (``X-Audit-Head``)."""
        path = "/v1/audit/export" if fmt == "jsonl" else "/v1/audit/export/csv"
        status, headers, payload = self._open("GET", path, query=filters, sink=sink)
        if status >= 400:
            self._parse(status, payload)
        head = next((v for k, v in headers.items() if k.lower() == "x-audit-head"), "")
        if not head.isdigit():
            raise ClientConnectionError("the export answer carries no X-Audit-Head")
        return int(head)

    def audit_export(self, after: int = 0, page_size: int = 1000) -> Iterator[tuple[str, int, int]]:
        """Every event after ``after`` up to the head seen by the first page, as ``(line, seq, head)``.

        Each page appends its own ``audit.export`` event, so paging "until empty" would never end: this
        stops once ``after`` reaches the first page's head.
        """
        head: int | None = None
        while True:
            lines, page_head = self.audit_page(after, page_size)
            head = page_head if head is None else head
            for line in lines:
                try:
                    seq = int(json.loads(line)["seq"])
                except (ValueError, KeyError, TypeError):
                    raise ClientConnectionError("the audit answer holds a line without a seq") from None
                if seq > head:
                    return
                yield line, seq, head
                after = seq
            if not lines or after >= head:
                return


def _if_match(value: str | None) -> dict[str, str] | None:
    return None if value is None else {"If-Match": value}


def _present(**values: Any) -> dict[str, Any]:
    """The query parameters given (None: left to the server's default)."""
    return {name: value for name, value in values.items() if value is not None}
