"""The service serves TLS itself: real certificates made here with ``cryptography`` (a CA, the server's,
clients'), a real server process, real handshakes. The bearer token works over HTTPS; a rewritten
certificate is served to new connections without a restart, and a broken rewrite leaves the old one in
force; with ``tls_client_auth = required`` a client without a certificate, or with one from another CA,
never gets a request through, and one the CA issued does.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.service_harness import Installation, Server
from tests.system.support import HANG_GUARD, wait_until

NOW = datetime.datetime.now(datetime.UTC)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def issue(
    common: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, server: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer[0].subject if issuer else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(minutes=5))
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    signer_key = issuer[1] if issuer else key
    return builder.sign(signer_key, hashes.SHA256()), key


def write_pair(
    directory: Path, stem: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[Path, Path]:
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert.write_bytes(pair[0].public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pair[1].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    return cert, key


def client_context(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context


def get(url: str, context: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def served_certificate(port: int, ca: Path) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = issue("signer test CA", None)
    other_ca = issue("another CA", None)
    ca_file, _ = write_pair(folder, "ca", ca)
    server_cert, server_key = write_pair(folder, "server", issue("signer", ca, server=True))
    return {
        "dir": folder,
        "ca": ca,
        "ca_file": ca_file,
        "server": (server_cert, server_key),
        "client": write_pair(folder, "client", issue("relayer-1", ca)),
        "stranger": write_pair(folder, "stranger", issue("relayer-1", other_ca)),
    }


def start_tls(
    launch: Callable[..., Server], installation: Installation, pki: dict[str, Any], **env: str
) -> Server:
    server = launch(
        installation,
        env={
            "SIGNER_TLS_CERT_FILE": str(pki["server"][0]),
            "SIGNER_TLS_KEY_FILE": str(pki["server"][1]),
            **env,
        },
        expect_ready=False,
    )
    wait_until(
        lambda: '"event": "signer ready"' in server.log_text(), HANG_GUARD, "the TLS server to be ready"
    )
    return server


def test_https_with_the_bearer_token_and_reload_on_change(
    launch: Callable[..., Server], own_installation: Installation, pki: dict[str, Any]
) -> None:
    server = start_tls(launch, own_installation, pki, SIGNER_TLS_RELOAD_INTERVAL_SECONDS="0.2")
    url = f"https://127.0.0.1:{server.port}"
    context = client_context(pki["ca_file"])
    status, me = get(url + "/v1/whoami", context, own_installation.admin_token)
    assert status == 200 and me["role"] == "admin", me
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the TLS port is no request
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)

    first = served_certificate(server.port, pki["ca_file"])
    # A broken rewrite (a key that is not the certificate's) leaves the old pair in force ...
    pki["server"][1].write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    wait_until(lambda: "do not load" in server.log_text(), HANG_GUARD, "the broken files to be tried")
    assert served_certificate(server.port, pki["ca_file"]) == first
    # ... and a good one is served to new connections, without a restart.
    renewed = issue("signer renewed", pki["ca"], server=True)
    write_pair(pki["dir"], "server", renewed)
    expected = renewed[0].public_bytes(serialization.Encoding.DER)
    wait_until(
        lambda: served_certificate(server.port, pki["ca_file"]) == expected, HANG_GUARD, "the new certificate"
    )
    assert get(url + "/readyz", context)[0] == 200
    assert server.process.poll() is None


def test_client_certificates_required(
    launch: Callable[..., Server], own_installation: Installation, pki: dict[str, Any]
) -> None:
    server = start_tls(
        launch,
        own_installation,
        pki,
        SIGNER_TLS_CLIENT_CA_FILE=str(pki["ca_file"]),
        SIGNER_TLS_CLIENT_AUTH="required",
    )
    url = f"https://127.0.0.1:{server.port}/v1/whoami"
    token = own_installation.admin_token
    status, me = get(url, client_context(pki["ca_file"], pki["client"]), token)
    assert status == 200 and me["role"] == "admin", me
    from signer.client import SignerClient
    from signer.secret_value import Secret

    client = SignerClient(
        f"https://127.0.0.1:{server.port}", Secret(token), ca_file=pki["ca_file"], client_cert=pki["client"]
    )
    assert client.whoami()["role"] == "admin"
    for refused in (client_context(pki["ca_file"]), client_context(pki["ca_file"], pki["stranger"])):
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(url, refused, token)
    assert server.process.poll() is None


def test_half_configured_tls_refuses_to_start(own_installation: Installation, pki: dict[str, Any]) -> None:
    import subprocess

    from tests.service_harness import SIGNER, TREE

    env = {**own_installation.env, "SIGNER_TLS_CERT_FILE": str(pki["server"][0])}
    done = subprocess.run(
        [*SIGNER, "serve", "--port", "0"],
        env=env,
        cwd=TREE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "tls_cert_file and tls_key_file" in done.stderr
