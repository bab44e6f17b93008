"""TLS client certificates mapped to principals, through a real server over real TLS handshakes.

An admin registers a relayer's certificate; a request over TLS with that certificate and no Authorization
header runs as the relayer and signs a message (recovered independently with eth-account). A certificate
the CA issued but nobody registered gets 401 ``client_certificate_unknown``; a bearer token still wins
over the certificate; revoking the mapping stops the very next request; disabling the principal refuses
its certificate; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.service_harness import Installation, Server, init_installation
from tests.system import test_tls
from tests.system.test_tls import client_context, issue, start_tls, write_pair

pki = test_tls.pki  # the same CA, server and client certificates as the TLS tests

MESSAGE = {"message": "signed by a certificate", "encoding": "utf8"}


@pytest.fixture(params=["sqlite", "postgresql"])
def installation(request: pytest.FixtureRequest, tmp_path: Path) -> Installation:
    if request.param == "sqlite":
        return init_installation(tmp_path / "data")
    return init_installation(tmp_path / "data", request.getfixturevalue("pg_url"))


def call(
    url: str, context: Any, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_client_certificate_principals(
    launch: Callable[..., Server], installation: Installation, pki: dict[str, Any]
) -> None:
    unregistered = write_pair(pki["dir"], "unregistered", issue("relayer-2", pki["ca"]))
    server = start_tls(
        launch,
        installation,
        pki,
        SIGNER_TLS_CLIENT_CA_FILE=str(pki["ca_file"]),
        SIGNER_TLS_CLIENT_AUTH="optional",
    )
    base = f"https://127.0.0.1:{server.port}"
    admin = installation.admin_token
    plain = client_context(pki["ca_file"])
    mine = client_context(pki["ca_file"], pki["client"])
    other = client_context(pki["ca_file"], unregistered)

    status, relayer = call(
        base + "/v1/principals", plain, "POST", {"name": "relayer", "role": "service"}, admin
    )
    assert status == 201, relayer
    relayer_id = relayer["principal"]["id"]
    status, key = call(base + "/v1/keys", plain, "POST", {"curve": "secp256k1", "label": "k"}, admin)
    assert status == 201, key
    grant = {"principal_id": relayer_id, "key_id": key["id"], "operations": ["sign_message"]}
    assert call(base + "/v1/grants", plain, "POST", grant, admin)[0] == 201

    # Before any mapping: a verified certificate alone is 401 with a stable code, nothing else said.
    status, body = call(base + "/v1/whoami", mine)
    assert (status, body["code"]) == (401, "client_certificate_unknown"), body
    # Not a certificate, and bad PEM: clear 400s that do not echo the input.
    pem = pki["client"][0].read_text()
    certs = f"{base}/v1/principals/{relayer_id}/client-certificates"
    status, body = call(certs, plain, "POST", {"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n"}, admin)
    assert (status, body["code"]) == (400, "invalid_certificate"), body
    assert "AAAA" not in json.dumps(body)
    # Only an admin registers; an admin principal is no target.
    assert call(certs, plain, "POST", {"certificate": pem}, relayer["credentials"]["access_token"])[0] == 403
    status, registered = call(certs, plain, "POST", {"certificate": pem}, admin)
    assert status == 201, registered
    expected = (
        x509.load_pem_x509_certificate(pki["client"][0].read_bytes()).fingerprint(hashes.SHA256()).hex()
    )
    assert registered["fingerprint"] == expected and registered["subject"] == "CN=relayer-1"
    assert registered["expires_at"] is not None
    status, body = call(certs, plain, "POST", {"certificate": pem}, admin)
    assert (status, body["code"]) == (409, "certificate_registered"), body

    # The certificate is the relayer: whoami and a signature, verified independently.
    status, me = call(base + "/v1/whoami", mine)
    assert (status, me["principal_id"], me["role"]) == (200, relayer_id, "service"), me
    from signer.client import SignerClient

    client = SignerClient(base, None, ca_file=pki["ca_file"], client_cert=pki["client"])
    assert client.whoami()["principal_id"] == relayer_id  # the Python client, with no token at all
    status, signed = call(f"{base}/v1/keys/{key['id']}/sign/message", mine, "POST", MESSAGE)
    assert status == 200, signed
    recovered = Account.recover_message(
        encode_defunct(text=MESSAGE["message"]), signature=bytes.fromhex(signed["signature"][2:])
    )
    assert recovered == key["address"] == signed["signer"]
    # A bearer token wins over the certificate; an unregistered certificate of the same CA does not count.
    status, me = call(base + "/v1/whoami", mine, token=admin)
    assert (status, me["role"]) == (200, "admin"), me
    status, body = call(base + "/v1/whoami", other)
    assert (status, body["code"]) == (401, "client_certificate_unknown"), body
    # A certificate another CA issued (same subject) never gets a request through, even with `optional`.
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        call(base + "/v1/whoami", client_context(pki["ca_file"], pki["stranger"]))
    # An admin's certificate would work as any principal's; the relayer may not use admin routes.
    assert call(base + "/v1/principals", mine)[0] == 403

    status, listed = call(certs, plain, token=admin)
    assert status == 200 and [c["fingerprint"] for c in listed["items"]] == [expected], listed

    # Disabling the principal refuses its certificate at once; enabling brings it back.
    state = f"{base}/v1/principals/{relayer_id}/state"
    assert call(state, plain, "POST", {"disabled": True}, admin)[0] == 200
    status, body = call(f"{base}/v1/keys/{key['id']}/sign/message", mine, "POST", MESSAGE)
    assert (status, body["code"]) == (401, "principal_disabled"), body
    assert call(state, plain, "POST", {"disabled": False}, admin)[0] == 200
    assert call(f"{base}/v1/keys/{key['id']}/sign/message", mine, "POST", MESSAGE)[0] == 200

    # Revoking the mapping stops the very next request, on the same kept-alive-or-not client.
    status, revoked = call(f"{certs}/{expected}", plain, "DELETE", token=admin)
    assert (status, revoked["revoked"]) == (200, True), revoked
    status, body = call(f"{base}/v1/keys/{key['id']}/sign/message", mine, "POST", MESSAGE)
    assert (status, body["code"]) == (401, "token_revoked"), body
    status, listed = call(certs, plain, token=admin)
    assert listed["items"][0]["revoked_at"] is not None
    assert call(f"{certs}/{'0' * 64}", plain, "DELETE", token=admin)[1]["code"] == "certificate_not_found"

    # Audited: register and revoke, with the fingerprint and never the PEM.
    request = urllib.request.Request(base + "/v1/audit/events?after=0&limit=1000")
    request.add_header("Authorization", f"Bearer {admin}")
    with urllib.request.urlopen(request, timeout=30, context=plain) as response:
        text = response.read().decode()
    assert "client_certificate.register" in text and "client_certificate.revoke" in text
    assert "BEGIN CERTIFICATE" not in text
    assert server.process.poll() is None


def test_certificates_count_only_when_the_server_verifies_them(
    launch: Callable[..., Server], own_installation: Installation, pki: dict[str, Any]
) -> None:
    """With ``tls_client_auth = none`` the server never asks for a certificate: a registered one carries
    no identity, and the request is an ordinary unauthenticated one."""
    server = start_tls(launch, own_installation, pki)
    base = f"https://127.0.0.1:{server.port}"
    admin = own_installation.admin_token
    plain = client_context(pki["ca_file"])
    status, relayer = call(
        base + "/v1/principals", plain, "POST", {"name": "relayer", "role": "service"}, admin
    )
    assert status == 201
    pem = pki["client"][0].read_text()
    certs = f"{base}/v1/principals/{relayer['principal']['id']}/client-certificates"
    assert call(certs, plain, "POST", {"certificate": pem}, admin)[0] == 201
    status, body = call(base + "/v1/whoami", client_context(pki["ca_file"], pki["client"]))
    assert status == 401 and body["code"] != "client_certificate_unknown", body
