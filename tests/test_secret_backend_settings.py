"""Secret backend settings and the backends' pure rules, without servers (those are in
tests/system/test_secret_backends.py): credentials come from files or environment variables and never
show in errors or ``config show``; references are checked for form; field names follow the sealed rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signer.config import (
    ConfigurationError,
    describe_settings,
    load_settings,
    load_settings_with_sources,
)
from signer.errors import Conflict, InvalidRequest
from signer.services.secret_backends import SecretBackends, build_backends
from signer.services.secret_backends import base as backend_base
from signer.services.secret_backends.aws import AwsSecretsManagerBackend
from signer.services.secret_backends.openbao import OpenBaoKv2Backend
from signer.services.secret_kind import FIELD_NAME

CANARY = "canary-credential-5e1f0a"


def _settings(tmp_path: Path, backends: dict[str, object], **env: str):
    return load_settings_with_sources(
        environ={"SIGNER_DATA_DIR": str(tmp_path), "SIGNER_SECRET_BACKENDS": json.dumps(backends), **env}
    )


def test_credentials_from_files_and_env_never_shown(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(CANARY + "\n")
    loaded = _settings(
        tmp_path,
        {
            "aws_secrets_manager": {
                "region": "eu-west-1",
                "access_key_id_env": "MY_KEY_ID",
                "secret_access_key_file": str(tmp_path / "secret"),
            },
            "openbao_kv2": {"address": "https://bao.internal:8200", "token_env": "MY_BAO_TOKEN"},
        },
    )
    backends = loaded.settings.secret_backends
    assert backends.aws_secrets_manager is not None and backends.openbao_kv2 is not None
    env = {"MY_KEY_ID": "AKID", "MY_BAO_TOKEN": CANARY}
    creds = backends.aws_secrets_manager.credentials(env)
    assert creds is not None and creds[1].reveal() == CANARY and creds[2] is None
    assert backends.openbao_kv2.token(env).reveal() == CANARY
    assert CANARY not in repr(creds) and CANARY not in json.dumps(describe_settings(loaded))


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        (
            {"openbao_kv2": {"address": "http://b:8200", "token_env": "NOT_SET_ANYWHERE_X"}},
            "NOT_SET_ANYWHERE_X",
        ),
        ({"openbao_kv2": {"address": "http://b:8200"}}, "token_file or token_env"),
        ({"openbao_kv2": {"address": "http://b:8200", "token_file": "/nonexistent/tok"}}, "tok"),
        (
            {"aws_secrets_manager": {"region": "us-east-1", "access_key_id_env": "NOT_SET_ANYWHERE_X"}},
            "NOT_SET_ANYWHERE_X",
        ),
    ],
)
def test_a_missing_credential_stops_the_start_naming_only_the_setting(
    tmp_path: Path, backend: dict[str, object], problem: str
) -> None:
    settings = _settings(tmp_path, backend).settings
    sealed = object()
    with pytest.raises(ConfigurationError) as raised:
        build_backends(settings.secret_backends, sealed)  # type: ignore[arg-type]
    assert problem in str(raised.value)


def test_bad_backend_settings_are_refused_without_echo(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(
            environ={
                "SIGNER_DATA_DIR": str(tmp_path),
                "SIGNER_SECRET_BACKENDS": json.dumps({"openbao_kv2": {"address": "x", "token": CANARY}}),
            }
        )
    assert CANARY not in str(raised.value) and "secret_backends" in str(raised.value)
    with pytest.raises(ConfigurationError):
        load_settings(environ={"SIGNER_DATA_DIR": str(tmp_path), "SIGNER_SECRET_BACKENDS": "{not json"})


def test_field_name_rule_is_the_sealed_one() -> None:
    assert backend_base.FIELD_NAME.pattern == FIELD_NAME.pattern
    assert backend_base.fields_from_object({"a": "x", "n": 5, "l": [1, "b"]}) == {
        "a": "x",
        "n": "5",
        "l": '[1,"b"]',
    }
    for bad in ({}, {"has space": "x"}, {str(i): "x" for i in range(65)}):
        with pytest.raises(Exception) as raised:
            backend_base.fields_from_object(bad)
        assert getattr(raised.value, "code", None) == "backend_value_invalid"
        assert "has space" not in str(raised.value)


@pytest.mark.parametrize(
    "reference",
    [
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:stripe-AbCdEf",
        "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:a/b",
        "prod/stripe",
    ],
)
def test_aws_references_accepted(reference: str) -> None:
    backend = AwsSecretsManagerBackend.__new__(AwsSecretsManagerBackend)
    assert backend.check_reference(reference) == reference


@pytest.mark.parametrize(
    "reference",
    ["arn:aws:s3:::bucket", "arn:aws:secretsmanager:eu-west-1:12:secret:x", "has space", "a" * 513],
)
def test_aws_references_refused(reference: str) -> None:
    backend = AwsSecretsManagerBackend.__new__(AwsSecretsManagerBackend)
    with pytest.raises(InvalidRequest) as raised:
        backend.check_reference(reference)
    assert raised.value.code == "invalid_reference" and reference not in str(raised.value)


@pytest.mark.parametrize(
    ("reference", "ok"),
    [
        ("kv/data/payments/stripe", True),
        ("team/kv/data/app", True),
        ("kv/data/", False),
        ("kv/payments", False),
        ("/data/x", False),
        ("kv/data/../sys/raw", False),
        ("kv/data/a//b", False),
        ("kv/data/a?version=1", False),
    ],
)
def test_openbao_references(reference: str, ok: bool) -> None:
    backend = OpenBaoKv2Backend.__new__(OpenBaoKv2Backend)
    if ok:
        assert backend.check_reference(reference) == reference
    else:
        with pytest.raises(InvalidRequest):
            backend.check_reference(reference)


async def test_a_record_naming_an_unconfigured_backend_is_unavailable() -> None:
    from signer.store import SecretRecord

    registry = SecretBackends(sealed=None)  # type: ignore[arg-type]
    record = SecretRecord.__new__(SecretRecord)
    object.__setattr__(record, "backend", "openbao_kv2")
    with pytest.raises(Exception) as raised:
        registry.for_secret(record)
    assert getattr(raised.value, "code", None) == "backend_not_configured"
    with pytest.raises(Conflict) as refused:
        registry.for_new("aws_secrets_manager")
    assert refused.value.code == "backend_not_configured"
