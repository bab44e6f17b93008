"""The service's error tree: every failure a caller can see, each with a stable code.

Every module raises these (never a bare ``Exception`` that reaches a caller); ``signer.http.errors`` is
the one place that turns them into RFC 9457 problem documents. A message is written for the caller and
must never carry a PIN, a token, a secret value, key material, SQL, a key handle or a file path: build
messages from constants and identifiers the caller already knows.

    SignerError                         500 internal_error
    ├── InvalidRequest                  400 invalid_request, malformed_json, unknown_field, invalid_hex, ...
    ├── Unauthenticated                 401 unauthenticated
    ├── Forbidden                       403 operation_not_granted, policy_denied, ...
    ├── NotFound                        404 key_not_found, not_found, ...
    ├── MethodNotAllowed                405 method_not_allowed
    ├── Conflict                        409 key_disabled (a key not active), invalid_key_transition, ...
    ├── PayloadTooLarge                 413 body_too_large
    ├── Unprocessable                   422 unsupported_operation, ...
    ├── RateLimited                     429 rate_limited
    ├── IntegrityError                  500 signature_mismatch, integrity_error
    ├── Unavailable                     503 hsm_unavailable, db_unavailable, audit_unavailable
    │   ├── HsmUnavailable              503 hsm_unavailable
    │   ├── DatabaseUnavailable         503 db_unavailable
    │   │   └── TransactionConflict     503 db_unavailable (PostgreSQL 40001/40P01: retried first)
    │   └── AuditUnavailable            503 audit_unavailable
    ├── BadGateway                      502 backend_unavailable, backend_denied, backend_value_invalid
    └── DeadlineExceeded                504 hsm_timeout, backend_timeout, ...
"""

from __future__ import annotations

from typing import Any, ClassVar


class SignerError(Exception):
    """Base of every error the service reports; ``code`` is stable and machine-readable."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        self.code = code or self.default_code
        self.message = message or self.title
        # Extra members land in the problem document (e.g. reasons, field); they must be safe to show.
        self.extra = extra
        super().__init__(f"{self.code}: {self.message}")


class InvalidRequest(SignerError):
    status = 400
    default_code = "invalid_request"
    title = "Invalid request"


class Unauthenticated(SignerError):
    status = 401
    default_code = "unauthenticated"
    title = "Authentication required"


class Forbidden(SignerError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(SignerError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class MethodNotAllowed(SignerError):
    status = 405
    default_code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(SignerError):
    status = 409
    default_code = "conflict"
    title = "Conflict"


class PayloadTooLarge(SignerError):
    status = 413
    default_code = "body_too_large"
    title = "Request body too large"


class Unprocessable(SignerError):
    status = 422
    default_code = "unprocessable"
    title = "Request cannot be processed"


class RateLimited(SignerError):
    status = 429
    default_code = "rate_limited"
    title = "Too many requests"


class IntegrityError(SignerError):
    """A check on our own output failed (a signature that does not recover, a tag that does not open)."""

    status = 500
    default_code = "integrity_error"
    title = "Integrity check failed"


class Unavailable(SignerError):
    status = 503
    default_code = "unavailable"
    title = "Service unavailable"


class HsmUnavailable(Unavailable):
    default_code = "hsm_unavailable"
    title = "HSM unavailable"


class DatabaseUnavailable(Unavailable):
    default_code = "db_unavailable"
    title = "Database unavailable"


class TransactionConflict(DatabaseUnavailable):
    """PostgreSQL aborted a transaction (serialization failure, deadlock): safe to run again whole."""


class AuditUnavailable(Unavailable):
    default_code = "audit_unavailable"
    title = "Audit log unavailable"


class BadGateway(SignerError):
    """An external secret backend (AWS Secrets Manager, OpenBao) failed or answered what we cannot use."""

    status = 502
    default_code = "backend_unavailable"
    title = "Secret backend unavailable"


class DeadlineExceeded(SignerError):
    status = 504
    default_code = "deadline_exceeded"
    title = "Deadline exceeded"


class ConfigurationError(Exception):
    """Bad configuration found at start-up: the process must refuse to run. Never reaches HTTP."""
