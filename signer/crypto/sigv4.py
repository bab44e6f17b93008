"""AWS Signature Version 4, checked on the server side, and the DER forms AWS KMS clients expect.

Owns: parsing a request's ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...`` header, rebuilding the canonical request from what arrived (method, path, query, the
signed headers, the SHA-256 of the body as received), deriving the signing key from the credential's
secret and scope, and comparing the signature in constant time; and writing an ECDSA (r, s) as DER and
an EC public point as a SubjectPublicKeyInfo (what KMS ``Sign`` and ``GetPublicKey`` answer).

It must never: put the secret, the derived key, the expected signature or the presented one in an
exception message (a failure is ``Unauthenticated(code="signature_invalid")`` with a fixed text); read
the clock (the caller passes ``now``); or do I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from signer.errors import InvalidRequest, Unauthenticated

__all__ = [
    "MAX_SKEW",
    "SigV4Credential",
    "check_sigv4",
    "der_signature",
    "parse_sigv4",
    "public_key_spki",
]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_ACCESS_KEY = re.compile(r"[A-Z0-9]{16,128}\Z")
_DATE = re.compile(r"\d{8}\Z")
_SCOPE_PART = re.compile(r"[a-z0-9-]{1,32}\Z")
_HEADER_NAME = re.compile(r"[a-z0-9-]{1,64}\Z")
_SIGNATURE = re.compile(r"[0-9a-f]{64}\Z")
_FIELD = re.compile(r"\s*(Credential|SignedHeaders|Signature)=([^,\s]*)\s*")


def _refused() -> Unauthenticated:
    return Unauthenticated("the request signature does not match", code="signature_invalid")


@dataclass(frozen=True, slots=True)
class SigV4Credential:
    """What the Authorization header names: the access key id, the scope and the signed headers."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str = ""

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_sigv4(header: str | None) -> SigV4Credential:
    """The credential an Authorization header names; ``Unauthenticated`` when it is not SigV4."""
    if not header or not header.startswith(ALGORITHM + " "):
        raise Unauthenticated("missing or invalid credentials")
    fields: dict[str, str] = {}
    for part in header[len(ALGORITHM) + 1 :].split(","):
        match = _FIELD.fullmatch(part)
        if match is None or match.group(1) in fields:
            raise Unauthenticated("missing or invalid credentials")
        fields[match.group(1)] = match.group(2)
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        raise Unauthenticated("missing or invalid credentials")
    scope = fields["Credential"].split("/")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if (
        len(scope) != 5
        or not _ACCESS_KEY.match(scope[0])
        or not _DATE.match(scope[1])
        or not _SCOPE_PART.match(scope[2])
        or not _SCOPE_PART.match(scope[3])
        or scope[4] != "aws4_request"
        or not all(_HEADER_NAME.match(name) for name in signed)
        or list(signed) != sorted(set(signed))
        or not {"host", "x-amz-date"} <= set(signed)
        or not _SIGNATURE.match(fields["Signature"])
    ):
        raise Unauthenticated("missing or invalid credentials")
    return SigV4Credential(scope[0], scope[1], scope[2], scope[3], signed, fields["Signature"])


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_headers(names: Iterable[str], headers: Mapping[str, str]) -> str:
    lines = []
    for name in names:
        values = headers.get(name)
        if values is None:
            raise _refused()
        lines.append(f"{name}:{' '.join(values.split())}\n")
    return "".join(lines)


def check_sigv4(
    credential: SigV4Credential,
    secret: bytes,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> None:
    """Raise ``Unauthenticated`` unless the request was signed with ``secret`` within ``MAX_SKEW`` of
    ``now``. ``headers`` maps lower-case names to the values as received (repeated ones joined by ',')."""
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _refused() from None
    if amz_date[:8] != credential.date:
        raise _refused()
    if abs(now - signed_at) > MAX_SKEW:
        raise Unauthenticated(
            "the request was signed too long ago or in the future (clock skew)", code="signature_expired"
        )
    payload_hash = hashlib.sha256(body).hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != payload_hash:
        raise _refused()
    canonical = "\n".join(
        (
            method.upper(),
            quote(unquote(path), safe="/~"),
            _canonical_query(query),
            _canonical_headers(credential.signed_headers, headers),
            ";".join(credential.signed_headers),
            payload_hash,
        )
    )
    to_sign = "\n".join(
        (ALGORITHM, amz_date, credential.scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    )
    key = _hmac(b"AWS4" + secret, credential.date)
    for part in (credential.region, credential.service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, credential.signature):
        raise _refused()


def der_signature(r: int, s: int) -> bytes:
    """ECDSA (r, s) as the DER ``Ecdsa-Sig-Value`` KMS ``Sign`` answers."""
    return encode_dss_signature(r, s)


def public_key_spki(curve: str, public_key: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an uncompressed EC point (``secp256k1`` or ``p256``)."""
    curves: dict[str, ec.EllipticCurve] = {"secp256k1": ec.SECP256K1(), "p256": ec.SECP256R1()}
    if curve not in curves:
        raise InvalidRequest("the key is not an elliptic-curve signing key", code="unsupported_key")
    point = ec.EllipticCurvePublicKey.from_encoded_point(curves[curve], public_key)
    return point.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
