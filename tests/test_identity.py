"""Token minting and checking: format, stored digest, constant-time comparison, no leaks in repr."""

from __future__ import annotations

import pytest

from signer.errors import Unauthenticated
from signer.identity import TokenKind, bearer_from_header, mint_token, parse_token, token_matches

KEY = b"k" * 32


def test_minted_token_round_trips_and_digest_is_keyed():
    minted = mint_token(KEY, TokenKind.ACCESS)
    presented = parse_token(minted.value)
    assert presented.token_id == minted.token_id and presented.kind is TokenKind.ACCESS
    assert token_matches(KEY, presented, minted.digest)
    assert not token_matches(b"x" * 32, presented, minted.digest)
    assert not token_matches(KEY, presented, None)
    secret = minted.value.split(".", 1)[1]
    assert secret not in repr(minted) and secret not in repr(presented)
    assert secret.encode() not in minted.digest


def test_tokens_are_unique_and_kinds_distinct():
    values = {mint_token(KEY, TokenKind.REFRESH).value for _ in range(200)}
    assert len(values) == 200
    assert all(v.startswith("srt_") for v in values)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer sat_zz.yy",
        "Bearer sat_" + "0" * 24 + "." + "A" * 42,
    ],
)
def test_bad_headers_are_unauthenticated_with_one_message(header):
    with pytest.raises(Unauthenticated) as caught:
        bearer_from_header(header)
    assert caught.value.code == "unauthenticated"
    assert caught.value.message == "missing or invalid credentials"


def test_tampered_secret_fails():
    minted = mint_token(KEY, TokenKind.ACCESS)
    tampered = minted.value[:-1] + ("A" if minted.value[-1] != "A" else "B")
    assert not token_matches(KEY, parse_token(tampered), minted.digest)
