"""The resource and payload registries: every signing operation has one payload kind on the key kind,
and the canonical body a payload stores for approvers prepares exactly the same bytes again (what
approved execution relies on). Pure: no token, no database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import coincurve
import pytest

from signer.errors import InvalidRequest, NotFound, Unprocessable
from signer.eth import address_from_public_key
from signer.services.payloads import payload_kind
from signer.services.resources import ResourceRef, key_ref, register, resource_kind
from signer.store import KeyRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _key(curve: str = "secp256k1", state: str = "active") -> KeyRecord:
    public = coincurve.PrivateKey(hashlib.sha256(b"kinds").digest()).public_key.format(compressed=False)
    return KeyRecord(
        id="key_kinds",
        label="kinds",
        curve=curve,
        public_key=public.hex(),
        address=address_from_public_key(public) if curve == "secp256k1" else None,
        scope="acme/payments",
        tags=[],
        state=state,
        hsm_id="00" * 16,
        attributes={},
        created_by=None,
        created_at=NOW,
        updated_at=NOW,
    )


TX = {
    "type": 2,
    "chainId": 1,
    "nonce": 3,
    "gas": 21000,
    "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "value": 10**18,
    "maxFeePerGas": 3 * 10**9,
    "maxPriorityFeePerGas": 10**9,
}
TYPED = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
        "Mail": [{"name": "contents", "type": "string"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "kinds", "chainId": 1},
    "message": {"contents": "hello"},
}
REQUESTS: dict[str, dict[str, Any]] = {
    "sign_transaction": {"transaction": TX, "raw": None},
    "sign_message": {"message": "héllo".encode()},
    "sign_typed_data": {"typed_data": TYPED},
    "sign_raw": {"digest": "0x" + "ab" * 32},
}


@pytest.mark.parametrize("operation", sorted(REQUESTS))
def test_the_stored_body_prepares_the_same_bytes_again(operation: str) -> None:
    kind = payload_kind(operation)
    assert kind.resource_type == "key" and operation in resource_kind("key").operations
    key = _key()
    first = kind.parse(REQUESTS[operation])(key)
    again = kind.parse_stored(first.body or {})(key)
    assert again.data == first.data and again.body == first.body and again.chain_id == first.chain_id
    assert "key_id" not in first.describe()  # the resource kind adds what approvers see of the key


@pytest.mark.parametrize("curve", ["secp256k1", "p256", "ed25519"])
def test_a_message_view_shows_text_or_hex_and_the_scheme(curve: str) -> None:
    kind = payload_kind("sign_message")
    text = kind.parse({"message": "héllo".encode()})(_key(curve)).describe()
    binary = kind.parse({"message": b"\xff\x00"})(_key(curve)).describe()
    scheme = {"secp256k1": "eip191", "p256": "ecdsa-p256-sha256", "ed25519": "ed25519"}[curve]
    assert text["scheme"] == binary["scheme"] == scheme
    assert text["message_text"] == "héllo" and text["message_length"] == 6 and "message_hex" not in text
    assert binary["message_hex"] == "0xff00" and binary["message_length"] == 2
    assert "message_text" not in binary
    assert ("digest" in text) is (curve != "ed25519")


def test_a_payload_kind_refuses_a_key_of_another_curve() -> None:
    with pytest.raises(Unprocessable) as refused:
        payload_kind("sign_transaction").check_resource(_key("ed25519"))
    assert refused.value.code == "unsupported_operation"
    assert payload_kind("sign_message").fits(_key("ed25519")) is None


def test_an_unknown_operation_is_invalid() -> None:
    with pytest.raises(InvalidRequest) as refused:
        payload_kind("sign_everything")
    assert refused.value.code == "invalid_operation"


def test_the_key_kind() -> None:
    kind = resource_kind("key")
    key = _key(state="suspended")
    assert key_ref(key) == ResourceRef("key", "key_kinds", "acme/payments", "suspended")
    assert kind.names(key.id) == {"key_id": "key_kinds"}
    not_found = kind.not_found()
    assert isinstance(not_found, NotFound) and not_found.code == "key_not_found"
    disabled = kind.unusable(key_ref(key))
    assert disabled is not None and disabled.code == "key_disabled"
    assert disabled.extra == {"state": "suspended"}
    assert kind.unusable(key_ref(_key())) is None
    assert kind.approval_view(key) == {"key_id": "key_kinds", "from": key.address, "key_label": "kinds"}
    with pytest.raises(ValueError):
        register(kind)
