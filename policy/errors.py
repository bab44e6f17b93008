"""The policy package's own errors: bad documents and bad inputs, each with a stable ``code``.

``policy/`` may not import ``signer.errors`` (it is pure and sits below the service), so it raises these
and the service maps them once: ``PolicyDocumentError`` to ``InvalidRequest`` (400, ``field`` = ``path``),
``PolicyInputError`` to an internal error (the service built a request or ``now`` wrongly). Messages are
built from document paths and constants only; documents and requests hold no secrets, but nothing here
ever echoes an unbounded caller string.

    PolicyError (ValueError)          code
    ├── PolicyDocumentError           unknown_field, missing_field, invalid_type, invalid_value, ...
    └── PolicyInputError              invalid_request, invalid_scope, naive_datetime, ...
"""

from __future__ import annotations


class PolicyError(ValueError):
    """Base of every error ``policy/`` raises; ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class PolicyDocumentError(PolicyError):
    """A policy document that does not parse. ``path`` names the place, e.g. ``rules[2].max_value``."""

    def __init__(self, path: str, code: str, message: str) -> None:
        self.path = path
        super().__init__(code, f"{path}: {message}" if path else message)
        self.detail = message


class PolicyInputError(PolicyError):
    """A request, grant, scope or instant the caller built wrongly (a bug in the caller, not a denial)."""
