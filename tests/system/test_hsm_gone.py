"""F-01 at server level: the token directory goes away under a running server, then comes back.

Two ways to lose it: the directory is moved away, or made mode 000. (As root, mode 000 only binds a
process without CAP_DAC_OVERRIDE, so for ``chmod`` the server runs under ``setpriv`` with those
capabilities dropped.) What SoftHSM 2.6.1 does then is measured in ``tests/hsm/token_gone.py``: calls
fail until the library is finalised and initialised again, which the HSM worker does by itself. Here we
check what a relayer and an operator see: signing answers 503 ``hsm_unavailable`` (or 504
``hsm_timeout``) with no signature, ``/readyz`` says the HSM is down and the database up, the refusal
is audited as ``failed``, and once the directory is back signing works again without a restart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests import service_harness
from tests.service_harness import Installation, Server, grant, make_key, make_service
from tests.system.support import (
    assert_no_secret,
    cli_audit_verify,
    events,
    export_audit,
    installation_secrets,
    wait_until,
    without_dac_override,
)

LEAKS = ("Traceback", "pkcs11", "PKCS11", "CKR_", "softhsm", "/tokens")


def sign(server: Server, token: str, key: dict, request_id: str) -> tuple[int, dict]:
    status, _, body = server.call(
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        {"message": request_id, "encoding": "utf8"},
        token,
        headers={"X-Request-Id": request_id},
    )
    return status, body


def assert_verified(body: dict, message: str, key: dict) -> None:
    signature = bytes.fromhex(body["signature"][2:])
    assert Account.recover_message(encode_defunct(text=message), signature=signature) == key["address"]


def take_away(mode: str, tokens: Path) -> None:
    if mode == "move":
        tokens.rename(tokens.with_name("tokens.away"))
    else:
        tokens.chmod(0)


def give_back(mode: str, tokens: Path) -> None:
    if mode == "move":
        tokens.with_name("tokens.away").rename(tokens)
    else:
        tokens.chmod(0o700)


@pytest.mark.parametrize("mode", ["move", "chmod"])
def test_hsm_gone_is_503_and_audited_then_recovers_without_restart(
    own_installation: Installation, launch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    if mode == "chmod":
        prefix = without_dac_override()
        if prefix is None:
            pytest.skip("running as root without setpriv: mode 000 would not keep the server out")
        monkeypatch.setattr(service_harness, "SIGNER", [*prefix, *service_harness.SIGNER])
    server = launch(own_installation)
    pid = server.process.pid
    service = make_service(server, "hsm-gone")
    token = service["credentials"]["access_token"]
    key = make_key(server, "secp256k1", "hsm-gone")
    grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    status, body = sign(server, token, key, "before")
    assert status == 200, json.dumps(body)
    assert_verified(body, "before", key)

    tokens = own_installation.data_dir / "tokens"
    take_away(mode, tokens)
    try:
        status, body = sign(server, token, key, "while-gone")
        assert (status, body["code"]) in {(503, "hsm_unavailable"), (504, "hsm_timeout")}, json.dumps(body)
        assert "signature" not in body and "r" not in body
        text = json.dumps(body)
        for leak in (*LEAKS, str(own_installation.data_dir)):
            assert leak not in text
        assert_no_secret(text, installation_secrets(own_installation), "an error body")

        status, _, ready = server.call("GET", "/readyz")
        assert status == 503 and ready == {
            "status": "unavailable",
            "checks": {"hsm": "down", "database": "up"},
        }
        assert server.call("GET", "/healthz")[0] == 200  # alive, just not ready
    finally:
        give_back(mode, tokens)

    attempts = iter(range(10_000))

    def signs_again() -> dict | None:
        request_id = f"after-{next(attempts)}"
        status, body = sign(server, token, key, request_id)
        if status == 200:
            assert_verified(body, request_id, key)
            return body
        assert status in (503, 504), json.dumps(body)
        return None

    wait_until(signs_again, 30, "signing to work again", interval=0.2)
    assert server.process.poll() is None and server.process.pid == pid  # no restart
    status, _, ready = server.call("GET", "/readyz")
    assert status == 200, ready

    lines = export_audit(server)
    (gone,) = [e for e in events(lines) if e["request_id"] == "while-gone"]
    assert gone["outcome"] == "failed"
    assert gone["error"]["code"] in ("hsm_unavailable", "hsm_timeout")
    code, report = cli_audit_verify(lines, tmp_path, own_installation.env)
    assert code == 0 and report["ok"], report
