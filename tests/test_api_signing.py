"""Signing through the running server, every signature checked by an independent implementation."""

from __future__ import annotations

import base64
import hashlib

import pytest
import rlp
from coincurve import PublicKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes

from tests.service_harness import Server, attach_policy, grant, make_key, make_service, unlock_policy

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

ALL_OPS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]


@pytest.fixture
def signer_setup(server: Server, unique_name: str):
    service = make_service(server, unique_name)
    key = make_key(server, "secp256k1", unique_name[:60])
    grant(server, service["principal"]["id"], key["id"], ALL_OPS)
    # Raw digests and 7702 delegations are denied unless a policy unlocks them.
    attach_policy(server, unlock_policy(f"unlock-{unique_name[:40]}", [RECIPIENT]), key_id=key["id"])
    return service["credentials"]["access_token"], key


def tx_fields(tx_type: int, chain_id: int = 1, nonce: int = 0) -> dict:
    base = {
        "type": tx_type,
        "chainId": chain_id,
        "nonce": nonce,
        "gas": 21000,
        "to": RECIPIENT,
        "value": 10**15,
    }
    if tx_type in (0, 1):
        base["gasPrice"] = 2 * 10**9
    else:
        base["maxFeePerGas"] = 3 * 10**9
        base["maxPriorityFeePerGas"] = 10**9
    if tx_type in (1, 2):
        base["accessList"] = [{"address": RECIPIENT, "storageKeys": ["0x" + "00" * 31 + "01"]}]
    if tx_type == 4:
        auth = Account.create().sign_authorization({"chainId": chain_id, "address": RECIPIENT, "nonce": 0})
        base["authorizationList"] = [
            {
                "chainId": chain_id,
                "address": RECIPIENT,
                "nonce": 0,
                "yParity": auth.y_parity,
                "r": hex(auth.r),
                "s": hex(auth.s),
            }
        ]
    return base


@pytest.mark.parametrize("tx_type", [0, 1, 2, 4])
def test_transactions_recover_to_key_address(server: Server, signer_setup, tx_type: int):
    token, key = signer_setup
    for nonce in range(4):
        fields = tx_fields(tx_type, chain_id=11155111, nonce=nonce)
        status, headers, body = server.call(
            "POST", f"/v1/keys/{key['id']}/sign/transaction", {"transaction": fields}, token
        )
        assert status == 200, body
        assert headers.get("X-Request-Id")
        raw = bytes.fromhex(body["raw_transaction"][2:])
        assert Account.recover_transaction(raw) == key["address"] == body["signer"]
        s = int(body["s"], 16)
        assert 0 < s <= SECP256K1_N // 2
        if tx_type == 0:
            decoded = rlp.decode(raw)
            assert int.from_bytes(decoded[6], "big") == body["v"]
            assert body["v"] in (11155111 * 2 + 35, 11155111 * 2 + 36)
            assert int.from_bytes(decoded[0], "big") == nonce
            assert decoded[3] == bytes.fromhex(RECIPIENT[2:])
        else:
            assert raw[0] == tx_type
            typed = TypedTransaction.from_bytes(HexBytes(raw))
            as_dict = typed.as_dict()
            assert as_dict["chainId"] == 11155111
            assert as_dict["nonce"] == nonce
            assert as_dict["value"] == 10**15
            assert body["y_parity"] in (0, 1)
            assert body["v"] == body["y_parity"]
        assert body["transaction_hash"] == "0x" + keccak(raw).hex()


def test_legacy_v_is_never_27_or_28(server: Server, signer_setup):
    token, key = signer_setup
    for chain_id in (1, 5, 137):
        status, _, body = server.call(
            "POST", f"/v1/keys/{key['id']}/sign/transaction", {"transaction": tx_fields(0, chain_id)}, token
        )
        assert status == 200, body
        assert body["v"] not in (27, 28)


def test_raw_unsigned_transaction_is_accepted(server: Server, signer_setup):
    token, key = signer_setup
    # Build the unsigned payload independently of the service: type byte || rlp(fields without signature).
    payload = [
        1,
        7,
        10**9,
        10**10,
        50000,
        bytes.fromhex(RECIPIENT[2:]),
        1,
        b"",
        [],
    ]
    raw_unsigned = b"\x02" + rlp.encode(payload)
    status, _, body = server.call(
        "POST", f"/v1/keys/{key['id']}/sign/transaction", {"raw": "0x" + raw_unsigned.hex()}, token
    )
    assert status == 200, body
    assert Account.recover_transaction(bytes.fromhex(body["raw_transaction"][2:])) == key["address"]


def test_personal_message(server: Server, signer_setup):
    token, key = signer_setup
    for message, encoding, plain in (
        ("hello signer", "utf8", b"hello signer"),
        ("0xdeadbeef", "hex", bytes.fromhex("deadbeef")),
        (base64.b64encode(b"\x00\x01binary").decode(), "base64", b"\x00\x01binary"),
    ):
        status, _, body = server.call(
            "POST", f"/v1/keys/{key['id']}/sign/message", {"message": message, "encoding": encoding}, token
        )
        assert status == 200, body
        signature = bytes.fromhex(body["signature"][2:])
        assert Account.recover_message(encode_defunct(primitive=plain), signature=signature) == key["address"]
        assert int(body["s"], 16) <= SECP256K1_N // 2


TYPED = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}


def test_typed_data(server: Server, signer_setup):
    token, key = signer_setup
    status, _, body = server.call(
        "POST", f"/v1/keys/{key['id']}/sign/typed-data", {"typed_data": TYPED}, token
    )
    assert status == 200, body
    signable = encode_typed_data(full_message=TYPED)
    assert Account.recover_message(signable, signature=bytes.fromhex(body["signature"][2:])) == key["address"]


def test_raw_digest_needs_its_own_grant(server: Server, unique_name: str):
    service = make_service(server, unique_name)
    token = service["credentials"]["access_token"]
    key = make_key(server, "secp256k1", "digest")
    grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    digest = hashlib.sha256(b"blind").hexdigest()
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/digest", {"digest": digest}, token)
    assert status == 403 and body["code"] == "operation_not_granted"
    assert body["reasons"] and body["reasons"][0]["code"] == "operation_not_granted"
    grant(server, service["principal"]["id"], key["id"], ["sign_raw"])
    # The grant is not enough: blind signing is denied unless a policy rule unlocks it.
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/digest", {"digest": digest}, token)
    assert status == 403 and body["code"] == "policy_denied", body
    assert [r["code"] for r in body["reasons"]] == ["raw_digest_not_allowed"]
    attach_policy(server, unlock_policy(f"unlock-{unique_name[:40]}", []), key_id=key["id"])
    status, _, body = server.call("POST", f"/v1/keys/{key['id']}/sign/digest", {"digest": digest}, token)
    assert status == 200, body
    signature = bytes.fromhex(body["signature"][2:])
    recovered = PublicKey.from_signature_and_message(
        signature[:64] + bytes([signature[64] - 27]), bytes.fromhex(digest), hasher=None
    )
    assert recovered.format(compressed=False).hex() == key["public_key"][2:]


def test_p256_and_ed25519_messages(server: Server, unique_name: str):
    service = make_service(server, unique_name)
    token = service["credentials"]["access_token"]
    p256 = make_key(server, "p256", "p256")
    ed = make_key(server, "ed25519", "ed")
    for key in (p256, ed):
        assert key["address"] is None
        grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    message = b"generic signing"
    status, _, body = server.call(
        "POST", f"/v1/keys/{p256['id']}/sign/message", {"message": message.hex(), "encoding": "hex"}, token
    )
    assert status == 200, body
    point = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), bytes.fromhex(p256["public_key"][2:])
    )
    point.verify(
        bytes.fromhex(body["signature_der"][2:]),
        hashlib.sha256(message).digest(),
        ec.ECDSA(Prehashed(hashes.SHA256())),
    )
    point.verify(bytes.fromhex(body["signature_der"][2:]), message, ec.ECDSA(hashes.SHA256()))

    status, _, body = server.call(
        "POST", f"/v1/keys/{ed['id']}/sign/message", {"message": message.hex(), "encoding": "hex"}, token
    )
    assert status == 200, body
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(ed["public_key"][2:])).verify(
        bytes.fromhex(body["signature"][2:]), message
    )
    # A transaction needs secp256k1.
    grant(server, service["principal"]["id"], ed["id"], ["sign_transaction"])
    status, _, body = server.call(
        "POST", f"/v1/keys/{ed['id']}/sign/transaction", {"transaction": tx_fields(2)}, token
    )
    assert status == 422 and body["code"] == "unsupported_operation"
