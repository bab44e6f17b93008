"""Reading a client certificate an admin registers for a principal: PEM in, the facts the service keeps out.

``read_certificate`` parses one PEM certificate and answers its SHA-256 fingerprint (of the DER, the
same bytes a TLS peer presents), its validity window and subject; a document that is not exactly one
certificate is ``InvalidRequest(invalid_certificate)`` and its text is never echoed. ``fingerprint`` is
the same digest of DER bytes a handshake gave. Verification of a presented certificate (chain, dates) is
the TLS layer's job (``signer.http.tls``), not this module's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signer.errors import InvalidRequest

__all__ = ["ClientCertificate", "fingerprint", "read_certificate"]

_MAX_PEM = 64 * 1024


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    fingerprint: str  # lowercase hex SHA-256 of the DER
    subject: str
    not_before: datetime
    not_after: datetime


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def read_certificate(pem: str) -> ClientCertificate:
    invalid = InvalidRequest(
        "certificate must be one PEM-encoded X.509 certificate",
        code="invalid_certificate",
        field="certificate",
    )
    if not isinstance(pem, str) or len(pem) > _MAX_PEM or pem.count("-----BEGIN CERTIFICATE-----") != 1:
        raise invalid
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        der = cert.public_bytes(serialization.Encoding.DER)
        subject = cert.subject.rfc4514_string()
    except (ValueError, UnicodeEncodeError, TypeError):
        raise invalid from None
    return ClientCertificate(
        fingerprint=fingerprint(der),
        subject=subject[:256],
        not_before=cert.not_valid_before_utc.astimezone(UTC),
        not_after=cert.not_valid_after_utc.astimezone(UTC),
    )
