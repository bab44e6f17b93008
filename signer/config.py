"""Settings: one validated model read from a TOML file and ``SIGNER_*`` environment variables.

The environment wins over the file. PINs and keys come from a file path or the environment, never from
argv. Values that must not be shown are wrapped in ``Secret``, whose ``repr`` and ``str`` hide them, so a
settings object can be logged or printed without leaking. Nothing here opens the HSM or the database.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from signer.errors import ConfigurationError
from signer.secret_value import Secret as Secret  # re-exported: settings hold secrets

_DESTINATION_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\.?$")


DEFAULT_SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def default_module_path() -> str:
    for path in DEFAULT_SOFTHSM_MODULES:
        if Path(path).exists():
            return path
    return DEFAULT_SOFTHSM_MODULES[0]


def host_name(host: str) -> str:
    """A Host header (or an ``allowed_hosts`` entry) as compared: lower case, no port, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


class _BackendSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(default=None, description="PEM bundle that verifies the backend's TLS")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, description="Per call to the backend")


def _credential(name: str, file: Path | None, env: str | None, environ: Mapping[str, str]) -> Secret | None:
    """A credential from its file or its environment variable (never from the settings themselves);
    errors name the setting, never the value or the file's content."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{name} file cannot be read: {file.name} ({exc.strerror})") from None
        if not value:
            raise ConfigurationError(f"{name} file is empty: {file.name}")
        return Secret(value)
    if env is not None:
        value = environ.get(env, "").strip()
        if not value:
            raise ConfigurationError(f"{name}: environment variable {env} is not set")
        return Secret(value)
    return None


class AwsSecretsManagerSettings(_BackendSettings):
    """Where and as whom the signer reads secrets held by reference in AWS Secrets Manager. Credentials
    come from a file or an environment variable each; with neither, botocore's default chain."""

    region: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    endpoint_url: str | None = Field(default=None, description="e.g. a VPC endpoint; default: AWS's")
    access_key_id_file: Path | None = None
    access_key_id_env: str | None = None
    secret_access_key_file: Path | None = None
    secret_access_key_env: str | None = None
    session_token_file: Path | None = None
    session_token_env: str | None = None

    def credentials(
        self, environ: Mapping[str, str] | None = None
    ) -> tuple[Secret, Secret, Secret | None] | None:
        env = os.environ if environ is None else environ
        key_id = _credential("aws access_key_id", self.access_key_id_file, self.access_key_id_env, env)
        secret = _credential(
            "aws secret_access_key", self.secret_access_key_file, self.secret_access_key_env, env
        )
        session = _credential("aws session_token", self.session_token_file, self.session_token_env, env)
        if key_id is None and secret is None:
            return None
        if key_id is None or secret is None:
            raise ConfigurationError("aws: give both access_key_id and secret_access_key, or neither")
        return key_id, secret, session


class OpenBaoSettings(_BackendSettings):
    """Where and with which token the signer reads KV v2 secrets held by reference in OpenBao or Vault."""

    address: str = Field(pattern=r"^https?://[^\s/@]+(:[0-9]+)?/?$", description="e.g. https://bao:8200")
    token_file: Path | None = None
    token_env: str | None = None
    namespace: str | None = Field(default=None, max_length=256)

    def token(self, environ: Mapping[str, str] | None = None) -> Secret:
        env = os.environ if environ is None else environ
        token = _credential("openbao token", self.token_file, self.token_env, env)
        if token is None:
            raise ConfigurationError("openbao: give token_file or token_env")
        return token


class SecretBackendsSettings(BaseModel):
    """The external stores a secret may be held in by reference (none configured: sealed only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aws_secrets_manager: AwsSecretsManagerSettings | None = None
    openbao_kv2: OpenBaoSettings | None = None


class AuditSinkSettings(BaseModel):
    """One external audit sink fed from the database: an append-only file, syslog (RFC 5424 over UDP,
    or TCP with octet counting) or a webhook (through the webhook destination allowlist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    type: Literal["file", "syslog", "webhook"]
    path: Path | None = None
    address: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]{1,255}:[0-9]{1,5}$")
    protocol: Literal["udp", "tcp"] = "udp"
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]{1,2040}$")

    @model_validator(mode="after")
    def _target(self) -> AuditSinkSettings:
        wanted = {"file": "path", "syslog": "address", "webhook": "url"}[self.type]
        if getattr(self, wanted) is None:
            raise ValueError(f"a {self.type} sink needs {wanted}")
        return self


class Settings(BaseModel):
    """Everything the service needs to start. Paths are absolute once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    data_dir: Path = Field(default=Path(".data"), description="Local state: SQLite file, keys, token dir")
    database_url: str = Field(default="", description="SQLAlchemy async URL; empty = SQLite in data_dir")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)

    hsm_module: str = Field(default_factory=default_module_path)
    hsm_token_label: str = "signer"  # noqa: S105 - a label, not a secret
    hsm_pin: Secret | None = Field(default=None, description="User PIN; prefer hsm_pin_file")
    hsm_pin_file: Path | None = None
    hsm_deadline_seconds: float = Field(default=2.0, gt=0, le=60)
    hsm_queue_size: int = Field(default=1024, ge=1)
    softhsm_conf: Path | None = Field(default=None, description="SOFTHSM2_CONF for a SoftHSM token")

    token_key_file: Path | None = Field(default=None, description="HMAC key for stored token digests")
    access_token_ttl_seconds: Mapping[str, int] = Field(
        default_factory=lambda: {"admin": 3600, "service": 900, "approver": 3600, "auditor": 3600}
    )
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    refresh_reuse_grace_seconds: int = Field(
        default=0,
        ge=0,
        le=300,
        description="For this long after a refresh token was used, presenting it again gets another new "
        "pair of the same family (replicas sharing one credential file); 0: any reuse revokes the family",
    )
    kms_credential_ttl_seconds: int = Field(
        default=90 * 24 * 3600, ge=0, description="Default lifetime of a KMS (SigV4) credential; 0: none"
    )

    allowed_hosts: tuple[str, ...] = Field(
        default=(), description="Host header names accepted (port ignored); empty accepts any"
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    secret_max_value_bytes: int = Field(
        default=64 * 1024, ge=1, le=16 * 1024 * 1024, description="Largest value of one secret field"
    )
    request_deadline_seconds: float = Field(default=5.0, gt=0)
    secret_backends: SecretBackendsSettings = Field(
        default_factory=SecretBackendsSettings,
        description="AWS Secrets Manager / OpenBao connections for secrets held by reference",
    )

    @property
    def secret_body_bytes(self) -> int:
        """The body limit of the secrets' routes: room for a value at the limit, JSON-escaped."""
        return self.max_body_bytes + 6 * self.secret_max_value_bytes

    header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="A request's line and headers must arrive within this"
    )
    keepalive_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="An idle keep-alive connection is closed after this"
    )
    db_pool_size: int = Field(default=10, ge=1)
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    db_lock_timeout_seconds: float = Field(default=2.0, gt=0, description="Wait for the write lock")
    audit_batch_max: int = Field(default=256, ge=1)
    audit_checkpoints: bool = Field(
        default=True, description="sign checkpoints of the audit log with an audit key held in the token"
    )
    audit_checkpoint_origin: str = Field(
        default="signer.local/audit",
        pattern=r"^[!-*,-~]{1,255}$",
        description="the checkpoints' origin line and the audit key's name (printable, no space or '+')",
    )
    audit_checkpoint_every_events: int = Field(
        default=1000, ge=0, description="checkpoint once this many events were committed (0: by time only)"
    )
    audit_sinks: tuple[AuditSinkSettings, ...] = Field(
        default=(), description="external audit sinks fed from the database (file, syslog, webhook)"
    )
    audit_sink_alert_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="a sink failing this long raises an alert"
    )
    audit_anchor_file: Path | None = Field(
        default=None,
        description="the last signed checkpoint, kept outside the database (default: in data_dir)",
    )
    audit_checkpoint_interval_seconds: float = Field(
        default=10.0, gt=0, le=86400, description="checkpoint at least this often while the log grows"
    )
    usage_flush_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="write the counted fetches and grant uses this often"
    )
    anomaly_detection: bool = Field(
        default=True, description="flag unusual access (new source address, burst, off hours, denials)"
    )
    anomaly_burst_window_seconds: int = Field(
        default=60, ge=1, le=3600, description="a burst is counted over windows this long"
    )
    anomaly_burst_factor: float = Field(
        default=5.0, ge=1, le=1000, description="a burst is this many times the principal's recent average"
    )
    anomaly_burst_min_requests: int = Field(
        default=20, ge=1, le=10**6, description="and at least this many requests in one burst window"
    )
    anomaly_baseline_seconds: int = Field(
        default=3600, ge=60, le=86400, description="the recent average is taken over this long"
    )
    anomaly_usual_hours_days: int = Field(
        default=14,
        ge=1,
        le=90,
        description="usual hours are the UTC hours a principal used in this many days",
    )
    anomaly_usual_hours_min_requests: int = Field(
        default=100, ge=1, le=10**6, description="off-hours is flagged once a principal has this much history"
    )
    anomaly_denials_threshold: int = Field(
        default=5, ge=1, le=10**6, description="this many refusals in the denials window are repeated denials"
    )
    anomaly_denials_window_seconds: int = Field(
        default=300, ge=1, le=86400, description="refusals are counted over this long"
    )
    anomaly_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="read the other workers' counts (the shared baselines) this often",
    )
    alerts_webhook_url: str | None = Field(
        default=None, description="each anomaly flagged is POSTed here (webhook destination rules apply)"
    )
    alerts_webhook_secret_file: Path | None = Field(
        default=None, description="a file holding the key the alerts are HMAC signed with"
    )
    alerts_webhook_expiry_seconds: int = Field(
        default=86400,
        ge=1,
        le=30 * 86400,
        description="an alert is retried (with back-off) until delivered or this long after it was flagged",
    )
    webhook_outbox_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="delivered webhook and alert calls, and those given up on, are deleted this long after",
    )
    checklist_interval_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="recompute the operator checklist's gauges this often"
    )
    checklist_large_group_members: int = Field(
        default=20,
        ge=1,
        le=1_000_000,
        description="a group's grant on secrets is broad (operator checklist) from this many members",
    )
    checklist_wide_folder_secrets: int = Field(
        default=500,
        ge=1,
        le=100_000_000,
        description="a folder grant is broad (operator checklist) when this many secrets are under it",
    )
    metrics_public_on_loopback: bool = Field(
        default=True, description="/metrics needs no token from a loopback caller when we listen on loopback"
    )
    metrics_token_file: Path | None = Field(
        default=None, description="a bearer token for /metrics (besides admin and auditor access tokens)"
    )
    tls_cert_file: Path | None = Field(
        default=None,
        description="serve HTTPS with this PEM certificate chain (with tls_key_file); reloaded on change",
    )
    tls_key_file: Path | None = Field(default=None, description="the PEM private key of tls_cert_file")
    tls_client_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle that verifies client certificates (with tls_client_auth)"
    )
    tls_client_auth: Literal["none", "optional", "required"] = Field(
        default="none",
        description="ask clients for a certificate: required refuses the handshake without one",
    )
    tls_reload_interval_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="how often the TLS files are checked for a change"
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        # The same normal form the Host header is brought to: case, port and a trailing dot ignored.
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            if not all(isinstance(part, str) for part in value):
                raise ValueError("must be a list of host names")  # the message never repeats the value
            return tuple(host_name(part) for part in value if part.strip())
        return value

    console_session_idle_seconds: int = Field(
        default=15 * 60, ge=30, le=7 * 24 * 3600, description="A console session ends after this long unused"
    )
    console_session_max_seconds: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="A console session ends this long after sign-in",
    )
    console_cookie_secure: bool = Field(
        default=False,
        description="Mark the console cookie Secure even on plain HTTP (behind a TLS-terminating proxy); "
        "it is always Secure when the service itself serves TLS",
    )
    webhook_allowed_destinations: tuple[str, ...] = Field(
        default=(),
        description="Host names and IP networks webhooks may be sent to; empty allows any public address. "
        "Loopback, private and link-local addresses are refused unless a listed network holds them",
    )
    secret_sweep_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="How often each worker ends secret version overlaps and rotates secrets that are due",
    )
    webhook_secret_overlap_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        le=30 * 24 * 3600,
        description="After a webhook secret rotation, how long the previous secret's signature is still sent",
    )
    kek_destroy_grace_seconds: int = Field(
        default=600,
        ge=0,
        le=30 * 24 * 3600,
        description="After a KEK rotation ends, how long before its retired KEK may be destroyed "
        "(a seal that asked for the old KEK just before the switch lands within a request deadline)",
    )

    eth_upstream_url: str = Field(
        default="",
        description="Ethereum node for /v1/rpc: eth_sendTransaction fills, signs and submits through it, "
        "and other methods are proxied to it; empty: none",
    )

    @field_validator("eth_upstream_url")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/@]+(/\S*)?$", value):
            raise ValueError("must be an http:// or https:// URL without user information")
        return value

    @field_validator("webhook_allowed_destinations")
    @classmethod
    def _destinations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            bare = entry.strip().strip("[]")
            try:
                ipaddress.ip_network(bare, strict=False)
            except ValueError:
                if not _DESTINATION_NAME.match(bare.lower()):
                    raise ValueError(
                        "each entry must be a host name, an IP address or a CIDR network"
                    ) from None
        return tuple(entry.strip().lower() for entry in value)

    @model_validator(mode="after")
    def _tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file are given together")
        if self.tls_client_auth != "none" and (self.tls_cert_file is None or self.tls_client_ca_file is None):
            raise ValueError("tls_client_auth needs tls_cert_file, tls_key_file and tls_client_ca_file")
        return self

    @field_validator("hsm_pin", mode="before")
    @classmethod
    def _wrap_pin(cls, value: object) -> object:
        if isinstance(value, str):
            return Secret(value)
        if value is not None and not isinstance(value, Secret):
            raise ValueError("must be a string")  # the message never repeats the value
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'signer.db').resolve()}"

    @property
    def resolved_pin_file(self) -> Path:
        return self.hsm_pin_file or self.data_dir / "hsm-user-pin"

    @property
    def resolved_token_key_file(self) -> Path:
        return self.token_key_file or self.data_dir / "token-hmac.key"

    @property
    def resolved_softhsm_conf(self) -> Path:
        return self.softhsm_conf or self.data_dir / "softhsm2.conf"

    def pin(self) -> Secret:
        """The HSM user PIN, from the setting or its file; refuses to guess."""
        if self.hsm_pin is not None:
            return self.hsm_pin
        path = self.resolved_pin_file
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"HSM PIN file cannot be read: {path.name} ({exc.strerror})") from None
        if not value:
            raise ConfigurationError(f"HSM PIN file is empty: {path.name}")
        return Secret(value)

    def metrics_token(self) -> Secret | None:
        """The dedicated /metrics bearer token, if one is configured."""
        if self.metrics_token_file is None:
            return None
        try:
            value = self.metrics_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            name = self.metrics_token_file.name
            raise ConfigurationError(f"metrics token file cannot be read: {name} ({exc.strerror})") from None
        if len(value) < 16:
            raise ConfigurationError("metrics token file holds fewer than 16 characters")
        return Secret(value)

    def token_key(self) -> bytes:
        """The HMAC key that turns bearer tokens into stored digests (kept outside the database)."""
        path = self.resolved_token_key_file
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"token key file cannot be read: {path.name} ({exc.strerror})") from None
        if len(raw) < 32:
            raise ConfigurationError("token key file holds fewer than 32 bytes")
        return raw


_ENV_PREFIX = "SIGNER_"


def _from_env(key: str, raw: str) -> Any:
    # Mappings arrive as JSON in one variable, e.g. SIGNER_ACCESS_TOKEN_TTL_SECONDS='{"service": 300}'.
    if key == "allowed_hosts":
        return tuple(part for part in raw.split(",") if part.strip())
    if key == "webhook_allowed_destinations":
        return tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    if key in ("access_token_ttl_seconds", "secret_backends", "audit_sinks"):
        try:
            return json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"{_ENV_PREFIX}{key.upper()} must be a JSON object") from None
    return raw


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus where each value came from: ``sources[name]`` is ``("default" | "file" | "env" |
    "flag", origin)`` with the file path or variable name as origin (``None`` for defaults and flags)."""

    settings: Settings
    sources: Mapping[str, tuple[str, str | None]]
    config_file: Path | None


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read the TOML file (if any), then ``SIGNER_*`` variables, then explicit overrides."""
    return load_settings_with_sources(config_file, environ, **overrides).settings


def load_settings_with_sources(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> LoadedSettings:
    """Like ``load_settings``, and also says where each value came from (for ``signer config show``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, tuple[str, str | None]] = {}
    path = config_file or (Path(env["SIGNER_CONFIG"]) if env.get("SIGNER_CONFIG") else None)
    if path is not None:
        try:
            with open(path, "rb") as handle:
                from_file = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"config file cannot be read: {path} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file is not valid TOML: {path}: {exc}") from None
        values.update(from_file)
        sources.update({key: ("file", str(path)) for key in from_file})
    fields = Settings.model_fields
    for name, raw in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "SIGNER_CONFIG":
            continue
        key = name[len(_ENV_PREFIX) :].lower()
        if key in fields:
            values[key] = _from_env(key, raw)
            sources[key] = ("env", name)
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            sources[key] = ("flag", None)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, sources)) from None
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    for name in fields:
        sources.setdefault(name, ("default", None))
    return LoadedSettings(settings, sources, path)


def _describe(exc: ValidationError, sources: Mapping[str, tuple[str, str | None]]) -> str:
    """One line per bad field, naming where the value came from; never the value itself."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [str(part) for part in err["loc"]]
        name = loc[0] if loc else "?"
        kind, origin = sources.get(name, ("default", None))
        where = {"file": f"in file {origin}", "env": f"from {origin}", "flag": "from the command line"}.get(
            kind, "default"
        )
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{name}' {where}")
            continue
        field = ".".join(loc) or "?"
        problems.append(f"{field} ({where}): {err['msg']}")
    return "invalid settings:\n  " + "\n  ".join(problems)


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
_DERIVED = {
    "database_url": lambda s: s.resolved_database_url,
    "hsm_pin_file": lambda s: s.resolved_pin_file,
    "token_key_file": lambda s: s.resolved_token_key_file,
    "softhsm_conf": lambda s: s.resolved_softhsm_conf,
}


def mask_url(url: str) -> str:
    """A database URL with its password (if any) replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


# SIGNER_* variables that are not settings but are read elsewhere: `signer init` (SO PIN), the HSM layer
# (lock file), the CLI's client, the test suite and the benchmarks (SIGNER_BENCH_*).
NON_SETTING_VARIABLES = frozenset(
    {
        "SIGNER_CONFIG",
        "SIGNER_HSM_SO_PIN",
        "SIGNER_HSM_LOCK_FILE",
        "SIGNER_SERVER",
        "SIGNER_TOKEN",
        "SIGNER_TOKEN_FILE",
        "SIGNER_CA_FILE",
        "SIGNER_CLIENT_CONFIG",
        "SIGNER_TEST_PG_URL",
    }
)


def ignored_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of ``SIGNER_*`` variables that match no setting (typos such as ``SIGNER_PROT``)."""
    env = os.environ if environ is None else environ
    return sorted(
        name
        for name in env
        if name.startswith(_ENV_PREFIX)
        and name not in NON_SETTING_VARIABLES
        and not name.startswith("SIGNER_BENCH_")
        and name[len(_ENV_PREFIX) :].lower() not in Settings.model_fields
    )


def describe_settings(loaded: LoadedSettings) -> list[dict[str, Any]]:
    """The effective configuration as rows ``{name, value, source, origin, secret}``, safe to print.

    A ``Secret`` is shown only as ``"set"`` (or ``None``), never even partly; a password inside
    ``database_url`` is masked; settings left empty whose effective value derives from ``data_dir`` show
    that effective value with origin ``"derived from data_dir"``.
    """
    settings = loaded.settings
    rows = []
    for name in Settings.model_fields:
        source, origin = loaded.sources.get(name, ("default", None))
        value: Any = getattr(settings, name)
        secret = isinstance(value, Secret) or name == "hsm_pin"
        if secret:
            value = None if value is None else "set"
        elif name in _DERIVED and not value:
            value = _DERIVED[name](settings)
            origin = origin or "derived from data_dir"
        if name == "database_url":
            value = mask_url(str(value))
        if name == "eth_upstream_url" and value:
            value = mask_upstream_url(str(value))
        rows.append(
            {"name": name, "value": _plain(value), "source": source, "origin": origin, "secret": secret}
        )
    return rows


def mask_upstream_url(url: str) -> str:
    """A node URL shown without its path and query, where providers put API keys (``/v3/<key>``)."""
    parts = urllib.parse.urlsplit(url)
    hidden = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{hidden}"


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
