"""docker-compose.yml and Dockerfile agree with the code (no Docker engine runs here, so we read them).

Compose: the ``signer`` and ``postgres`` services exist; every ``SIGNER_*`` variable it names is a
setting the service reads, and together they load as valid settings; the database URL is one the store
accepts and points at the compose PostgreSQL with its credentials; the token's volume is the data
directory; the API is published on the host's loopback only. Dockerfile: every COPY source exists, the
image runs ``signer init`` then ``signer serve`` as a non-root user, and its ``SIGNER_*`` variables are
settings too.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from signer.config import Settings, load_settings
from signer.store.engine import parse_url

REPO = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"\bSIGNER_[A-Z0-9_]+\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "- NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def is_setting(variable: str) -> bool:
    return variable == "SIGNER_CONFIG" or variable.removeprefix("SIGNER_").lower() in Settings.model_fields


def test_compose_services_and_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"signer", "postgres"} <= set(services)
    signer, postgres = services["signer"], services["postgres"]
    env = environment(signer)
    named = set(VARIABLE.findall((REPO / "docker-compose.yml").read_text(encoding="utf-8")))
    assert named and named >= {k for k in env if k.startswith("SIGNER_")}
    assert not [v for v in named if not is_setting(v)], "compose names settings the service does not have"
    settings = load_settings(None, environ=env)  # validates types and values; opens nothing
    assert settings.host == "0.0.0.0"  # inside the container; the host side is published below

    depends = signer.get("depends_on")
    assert "postgres" in (depends if isinstance(depends, list | dict) else [])
    if isinstance(depends, dict) and depends["postgres"].get("condition") == "service_healthy":
        assert "healthcheck" in postgres, "signer waits for a health check postgres does not define"
    ports = [str(p) for p in signer.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
    mounts = [str(v).split(":") for v in signer.get("volumes", [])]
    assert any(len(m) >= 2 and m[1] == env["SIGNER_DATA_DIR"] for m in mounts), (
        "token and keys not on a volume"
    )
    assert {str(m[0]) for m in mounts if m[0] in (compose.get("volumes") or {})}, "named volume not declared"


def test_compose_database_url_is_the_compose_postgres(compose: dict[str, Any]) -> None:
    url = environment(compose["services"]["signer"])["SIGNER_DATABASE_URL"]
    assert parse_url(url).backend == "postgresql"
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+asyncpg"
    pg = environment(compose["services"]["postgres"])
    assert parsed.host == "postgres"
    assert (parsed.username, parsed.password, parsed.database) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_copies_what_exists_and_runs_init_then_serve() -> None:
    instructions = dockerfile_instructions()
    copies = [rest for keyword, rest in instructions if keyword in ("COPY", "ADD")]
    assert copies
    for rest in copies:
        parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources = [p for p in parts[:-1] if not p.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"

    (command,) = [rest for keyword, rest in instructions if keyword == "CMD"]
    words = " ".join(json.loads(command)) if command.startswith("[") else command
    assert re.search(r"\bsigner init\b.*\bsigner serve\b", words), words

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image runs as root"

    env_text = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    named = set(VARIABLE.findall(env_text))
    assert named and not [v for v in named if not is_setting(v)]
    assert "pip install" in " ".join(rest for keyword, rest in instructions if keyword == "RUN")
