"""The secrets' AEAD envelope on its own (matrix A-04, A-05, A-06 at the crypto floor): a sealed field
opens only with its data key and exactly its binding; errors carry a fixed text and no value."""

from __future__ import annotations

import pytest

from signer.crypto.envelope import FieldBinding, new_data_key, open_field, seal_field
from signer.errors import IntegrityError

VALUE = b"canary-envelope-7f3a9c"


def binding(**changes: object) -> FieldBinding:
    base: dict[str, object] = {"secret_id": "s1", "version": 1, "field": "password", "kek_id": "aa" * 16}
    base.update(changes)
    return FieldBinding(**base)  # type: ignore[arg-type]


def refused(data_key: bytes, where: FieldBinding, sealed: bytes) -> None:
    with pytest.raises(IntegrityError) as caught:
        open_field(data_key, where, sealed)
    assert caught.value.code == "secret_integrity"
    assert VALUE.decode() not in str(caught.value) and VALUE.hex() not in str(caught.value)


def test_round_trip_and_fresh_nonces() -> None:
    key = new_data_key()
    first, second = seal_field(key, binding(), VALUE), seal_field(key, binding(), VALUE)
    assert first != second and VALUE not in first
    assert open_field(key, binding(), first) == VALUE == open_field(key, binding(), second)
    assert open_field(key, binding(), seal_field(key, binding(), b"")) == b""


@pytest.mark.parametrize(
    "elsewhere",
    [
        binding(field="username"),  # another field of the same version
        binding(version=2),  # another version of the same secret
        binding(secret_id="s2"),  # another secret
        binding(kek_id="bb" * 16),  # claimed under another KEK
    ],
)
def test_ciphertext_moved_elsewhere_does_not_open(elsewhere: FieldBinding) -> None:
    key = new_data_key()
    refused(key, elsewhere, seal_field(key, binding(), VALUE))


def test_data_key_of_another_version_opens_nothing() -> None:
    # a wrapped key moved to another version unwraps to that version's key, which opens nothing here.
    version_one, version_two = new_data_key(), new_data_key()
    sealed_two = seal_field(version_two, binding(version=2), VALUE)
    refused(version_one, binding(version=2), sealed_two)


def test_altered_or_truncated_or_unknown_format_does_not_open() -> None:
    key = new_data_key()
    sealed = seal_field(key, binding(), VALUE)
    for position in (0, 5, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[position] ^= 1
        refused(key, binding(), bytes(altered))
    refused(key, binding(), sealed[:20])
    refused(key[:16], binding(), sealed)
