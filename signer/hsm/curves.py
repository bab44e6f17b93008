"""Pure encodings at the HSM boundary: curve parameters, public-key points, raw signature checks.

Nothing here touches ``pkcs11``: these functions turn the bytes a token hands back into the exact shapes
``signer.hsm.types`` promises (and refuse anything else with ``IntegrityError``), and validate what a
caller asks the token to sign before a job is queued.
"""

from __future__ import annotations

import re

from signer.errors import IntegrityError, InvalidRequest
from signer.hsm.types import Curve

__all__ = [
    "EC_PARAMS",
    "MAX_EDDSA_MESSAGE",
    "curve_from_params",
    "decode_ec_point",
    "hsm_id_bytes",
    "validate_label",
    "validate_sign_input",
    "validate_signature",
]

# DER of the named-curve parameters each curve is generated with (CKA_EC_PARAMS).
EC_PARAMS: dict[Curve, bytes] = {
    Curve.SECP256K1: bytes.fromhex("06052b8104000a"),  # OID 1.3.132.0.10
    Curve.P256: bytes.fromhex("06082a8648ce3d030107"),  # OID 1.2.840.10045.3.1.7
    Curve.ED25519: bytes.fromhex("06032b6570"),  # OID 1.3.101.112 (RFC 8410 id-Ed25519)
}

# SoftHSM 2.6 stores Ed25519 parameters as PrintableString "edwards25519" whatever was asked for.
_ED25519_ALIASES = (EC_PARAMS[Curve.ED25519], b"\x13\x0cedwards25519")

_ORDER: dict[Curve, int] = {
    Curve.SECP256K1: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
    Curve.P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
}

_POINT_LEN: dict[Curve, int] = {Curve.SECP256K1: 65, Curve.P256: 65, Curve.ED25519: 32}

# Ed25519 signs the message itself (no pre-hash); bound it so one job cannot hog the worker.
MAX_EDDSA_MESSAGE = 64 * 1024
_MAX_ID_BYTES = 64
_MAX_LABEL_BYTES = 64
_HEX = re.compile(r"\A(?:[0-9a-f]{2})+\Z")


def curve_from_params(ec_params: bytes | None) -> Curve | None:
    """The curve named by a key's CKA_EC_PARAMS, or None for anything we do not sign with."""
    if ec_params is None:
        return None
    if ec_params in _ED25519_ALIASES:
        return Curve.ED25519
    for curve, der in EC_PARAMS.items():
        if ec_params == der:
            return curve
    return None


def decode_ec_point(curve: Curve, ec_point: bytes) -> bytes:
    """CKA_EC_POINT (a DER OCTET STRING) to the public key bytes ``GeneratedKey`` documents.

    Some modules return the raw point instead of wrapping it; that is accepted only when its length
    is exactly the expected one, which a DER wrapping (two bytes longer) can never match.
    """
    expected = _POINT_LEN[curve]
    if len(ec_point) == expected + 2 and ec_point[0] == 0x04 and ec_point[1] == expected:
        point = ec_point[2:]
    elif len(ec_point) == expected:
        point = ec_point
    else:
        raise IntegrityError("token returned a public key in an unexpected encoding")
    if curve is not Curve.ED25519 and point[0] != 0x04:
        raise IntegrityError("token returned a compressed or malformed EC point")
    return bytes(point)


def validate_signature(curve: Curve, signature: bytes) -> bytes:
    """Refuse anything but 64 bytes; for ECDSA also r and s in [1, n-1]."""
    if len(signature) != 64:
        raise IntegrityError("token returned a signature of unexpected length", code="signature_mismatch")
    order = _ORDER.get(curve)
    if order is not None:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < order and 0 < s < order):
            raise IntegrityError("token returned an out-of-range signature", code="signature_mismatch")
    return bytes(signature)


def hsm_id_bytes(hsm_id: str) -> bytes:
    """Lower-case hex of a CKA_ID to its bytes; malformed ids are refused, never searched for."""
    if not isinstance(hsm_id, str) or len(hsm_id) > 2 * _MAX_ID_BYTES or not _HEX.match(hsm_id):
        raise InvalidRequest("hsm_id must be lower-case hex of 1 to 64 bytes", code="invalid_hsm_id")
    return bytes.fromhex(hsm_id)


def validate_label(label: str) -> str:
    if not isinstance(label, str):
        raise InvalidRequest("key label must be a string", code="invalid_label")
    raw = label.encode("utf-8")
    if not 0 < len(raw) <= _MAX_LABEL_BYTES or not label.isprintable():
        raise InvalidRequest(
            f"key label must be 1 to {_MAX_LABEL_BYTES} bytes of printable text", code="invalid_label"
        )
    return label


def validate_sign_input(curve: Curve, data: bytes) -> bytes:
    if not isinstance(curve, Curve):
        raise InvalidRequest("unknown curve", code="unsupported_curve")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidRequest("data to sign must be bytes", code="invalid_request")
    data = bytes(data)
    if curve is Curve.ED25519:
        if len(data) > MAX_EDDSA_MESSAGE:
            raise InvalidRequest("message too long for Ed25519 signing", code="invalid_request")
    elif len(data) != 32:
        raise InvalidRequest("ECDSA signing takes a 32-byte digest", code="invalid_digest")
    return data
