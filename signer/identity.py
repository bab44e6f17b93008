"""Bearer tokens: how they are minted, what is stored of them, and how a presented one is checked.

A token reads ``<prefix>_<id>.<secret>``: the id is public and finds the row, the secret is 32 random bytes
that only the holder ever sees. The database keeps ``HMAC-SHA256(token_key, id || secret)``, keyed with a
key that lives outside the database, so a dump of the database yields nothing usable. Checks compare
fixed-length digests with ``hmac.compare_digest`` and do the same work for an unknown id as for a known one,
so neither timing nor error code says which part was wrong. Nothing here prints a token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from signer.errors import Unauthenticated


class TokenKind(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


class Role(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    APPROVER = "approver"
    AUDITOR = "auditor"


_PREFIX = {TokenKind.ACCESS: "sat", TokenKind.REFRESH: "srt"}
_KIND_BY_PREFIX = {prefix: kind for kind, prefix in _PREFIX.items()}
_TOKEN_RE = re.compile(r"^(sat|srt)_([0-9a-f]{24})\.([A-Za-z0-9_-]{43})$")
_DUMMY_DIGEST = bytes(32)


@dataclass(frozen=True, slots=True)
class MintedToken:
    """A freshly made token: ``value`` goes to the holder once, ``digest`` to the database."""

    token_id: str
    kind: TokenKind
    value: str
    digest: bytes

    def __repr__(self) -> str:
        return f"MintedToken(token_id={self.token_id!r}, kind={self.kind.value!r})"


@dataclass(frozen=True, slots=True)
class PresentedToken:
    token_id: str
    kind: TokenKind
    secret: str

    def __repr__(self) -> str:
        return f"PresentedToken(token_id={self.token_id!r}, kind={self.kind.value!r})"


def _digest(key: bytes, token_id: str, secret: str) -> bytes:
    mac = _keyed(key).copy()
    mac.update(f"{token_id}.{secret}".encode("ascii"))
    return mac.digest()


@functools.lru_cache(maxsize=4)
def _keyed(key: bytes) -> hmac.HMAC:
    # HMAC-SHA256 with the token key absorbed, copied for each token: a fresh HMAC looks the digest up
    # by name and keys it every time (about half of a check's cost, once per request). The token key
    # is held for the process's life by its service anyway; a handful of keys (tests) at most.
    return hmac.new(key, digestmod=hashlib.sha256)


def mint_token(key: bytes, kind: TokenKind) -> MintedToken:
    token_id = secrets.token_hex(12)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return MintedToken(
        token_id=token_id,
        kind=kind,
        value=f"{_PREFIX[kind]}_{token_id}.{secret}",
        digest=_digest(key, token_id, secret),
    )


def parse_token(value: str) -> PresentedToken:
    """Split a presented token; a malformed one is simply unauthenticated (no hint which part is wrong)."""
    match = _TOKEN_RE.match(value)
    if match is None:
        raise Unauthenticated("missing or invalid credentials")
    prefix, token_id, secret = match.groups()
    return PresentedToken(token_id=token_id, kind=_KIND_BY_PREFIX[prefix], secret=secret)


def token_matches(key: bytes, presented: PresentedToken, stored_digest: bytes | None) -> bool:
    """Constant-time check; with ``stored_digest=None`` (unknown id) it does the same work and fails."""
    candidate = _digest(key, presented.token_id, presented.secret)
    expected = stored_digest if stored_digest is not None else _DUMMY_DIGEST
    same = hmac.compare_digest(candidate, expected)
    return same and stored_digest is not None


def bearer_from_header(header: str | None) -> PresentedToken:
    if not header:
        raise Unauthenticated("missing or invalid credentials")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthenticated("missing or invalid credentials")
    return parse_token(value.strip())
