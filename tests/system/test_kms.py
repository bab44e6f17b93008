"""The AWS KMS Sign API with a real client: boto3's KMS client, pointed at a running signer through its
endpoint override, signs with a token-held key using a SigV4 credential the signer issued.

The signature is checked independently of the signer: the DER from ``Sign`` is decoded with
``cryptography``, verified against the ``GetPublicKey`` SubjectPublicKeyInfo, and recovered with
``eth-keys`` to the key's Ethereum address. Also: a wrong secret, a revoked credential, a key the caller
holds no grant on and a missing raw-digest rule are refused with the KMS error names boto3 raises; the
secret access key is stored only sealed (not in the database file); the signature is audited as a blind
``sign.raw``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_public_key
from eth_keys import keys as eth_keys
from eth_utils import keccak

from tests.service_harness import (
    TREE,
    Installation,
    Server,
    attach_policy,
    grant,
    make_key,
    make_service,
    unlock_policy,
)
from tests.system.support import events, export_audit


def kms_client(server: Server, credential: dict[str, Any], secret: str | None = None) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=server.url + "/v1/kms",
        region_name="eu-west-1",
        aws_access_key_id=credential["access_key_id"],
        aws_secret_access_key=secret or credential["secret_access_key"],
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def issue(server: Server, principal_id: str) -> dict[str, Any]:
    status, _, body = server.call(
        "POST", f"/v1/principals/{principal_id}/kms-credentials", {}, server.installation.admin_token
    )
    assert status == 201, body
    return body


def readme_python(name: str) -> str:
    text = (TREE / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- readme-example: {re.escape(name)} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no python example {name!r}"
    return match.group(1)


def error_type(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_boto3_kms_signs_a_digest_that_recovers_to_the_key(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(own_installation)
    relayer = make_service(server, "kms-relayer")
    key = make_key(server, label="hot-wallet")
    grant(server, relayer["principal"]["id"], key["id"], ["sign_raw"])
    credential = issue(server, relayer["principal"]["id"])
    assert credential["access_key_id"].startswith("AKSG")
    kms = kms_client(server, credential)

    # GetPublicKey: a SubjectPublicKeyInfo of the key's secp256k1 point, addressed by id or alias.
    public = kms.get_public_key(KeyId=key["id"])
    assert public["KeySpec"] == "ECC_SECG_P256K1" and public["KeyUsage"] == "SIGN_VERIFY"
    assert kms.get_public_key(KeyId="alias/hot-wallet")["PublicKey"] == public["PublicKey"]
    spki = load_der_public_key(public["PublicKey"])
    assert isinstance(spki, ec.EllipticCurvePublicKey) and isinstance(spki.curve, ec.SECP256K1)
    point = spki.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert eth_keys.PublicKey(point[1:]).to_checksum_address() == key["address"]

    # Blind signing is denied until a raw_digest rule is in force (and audited as a refusal).
    digest = keccak(b"a relayer's transaction digest")
    with pytest.raises(ClientError) as denied:
        kms.sign(KeyId=key["id"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error_type(denied) == "AccessDeniedException"
    attach_policy(server, unlock_policy("kms-blind", []), key_id=key["id"])

    signed = kms.sign(KeyId=key["id"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert signed["SigningAlgorithm"] == "ECDSA_SHA_256" and signed["KeyId"].endswith("key/" + key["id"])
    der = signed["Signature"]
    spki.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    r, s = decode_dss_signature(der)
    recovered = {
        eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest).to_checksum_address()
        for v in (0, 1)
    }
    assert key["address"] in recovered

    # MessageType RAW: KMS hashes with SHA-256 first.
    message = b"hello from boto3"
    raw = kms.sign(KeyId=key["id"], Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    spki.verify(raw["Signature"], message, ec.ECDSA(hashes.SHA256()))

    # The README's example, as written (only the address substituted).
    example = readme_python("kms").replace("http://127.0.0.1:8080", server.url)
    scope: dict[str, Any] = {"creds": credential, "key_id": key["id"], "digest": digest}
    exec(compile(example, "README.md", "exec"), scope)
    assert scope["public_key"] == public["PublicKey"]
    spki.verify(scope["signature"], digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    # DescribeKey and ListKeys show the caller's keys only.
    other = make_key(server, label="not-granted")
    described = kms.describe_key(KeyId=key["id"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled" and described["KeySpec"] == "ECC_SECG_P256K1"
    listed = [k["KeyId"] for k in kms.list_keys()["Keys"]]
    assert listed == [key["id"]]
    with pytest.raises(ClientError) as missing:
        kms.sign(KeyId=other["id"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert error_type(missing) == "NotFoundException"

    # The audit log holds the blind signatures as such, made with the credential.
    signs = [e for e in events(export_audit(server)) if e["kind"] == "sign.raw" and e["outcome"] == "allowed"]
    assert len(signs) == 3
    assert all(e["actor"]["principal_id"] == relayer["principal"]["id"] for e in signs)
    assert [e["request"]["digest"] for e in signs] == [
        "0x" + digest.hex(),
        "0x" + hashlib.sha256(message).hexdigest(),
        "0x" + digest.hex(),
    ]
    assert all(e["request"]["blind"] is True and e["request"]["scheme"] == "raw_digest" for e in signs)

    # The secret access key is in the database only sealed.
    secret = credential["secret_access_key"].encode()
    for path in own_installation.data_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path.name
    issued = [e for e in events(export_audit(server)) if e["kind"] == "kms_credential.issue"]
    assert issued and credential["secret_access_key"] not in str(issued)


def test_kms_credentials_are_checked_and_revocable(
    own_installation: Installation, launch: Callable[..., Server]
) -> None:
    server = launch(own_installation)
    relayer = make_service(server, "kms-relayer")
    key = make_key(server)
    grant(server, relayer["principal"]["id"], key["id"], ["sign_raw"])
    credential = issue(server, relayer["principal"]["id"])

    forged = kms_client(server, credential, secret=base64.b64encode(hashlib.sha256(b"x").digest()).decode())
    with pytest.raises(ClientError) as wrong:
        forged.get_public_key(KeyId=key["id"])
    assert error_type(wrong) == "InvalidSignatureException"

    unknown = kms_client(server, {**credential, "access_key_id": "AKSG" + "A" * 16})
    with pytest.raises(ClientError) as nobody:
        unknown.get_public_key(KeyId=key["id"])
    assert error_type(nobody) == "UnrecognizedClientException"

    kms = kms_client(server, credential)
    assert kms.get_public_key(KeyId=key["id"])["KeyId"].endswith(key["id"])
    status, _, _ = server.call(
        "DELETE", f"/v1/tokens/{credential['access_key_id']}", token=server.installation.admin_token
    )
    assert status == 200
    with pytest.raises(ClientError) as revoked:
        kms.get_public_key(KeyId=key["id"])
    assert error_type(revoked) == "UnrecognizedClientException"

    # Only admins issue credentials, and only to service principals.
    status, _, body = server.call(
        "POST",
        f"/v1/principals/{server.installation.admin['principal']['id']}/kms-credentials",
        {},
        server.installation.admin_token,
    )
    assert status == 409 and body["code"] == "role_mismatch"
