"""The one small interface every secret backend implements, and what all of them share.

A backend answers one question: the fields of a secret's value, for one version selector and one field
or all. ``sealed`` (the default) opens versions the signer sealed itself; the others hold a secret *by
reference*: the signer keeps the record (name, folder, grants, policy, audit) and the reference (an AWS
ARN or name, a KV v2 path) and fetches the value at read time. Creating or setting a value of a secret
held by reference is refused (``secret_held_by_reference``): the value lives, and is rotated, there.

Every backend must never: put a value, a credential or a backend's own error text in an exception
message, a log line or an audit event; answer for a secret the decision pipeline has not allowed (it is
called only from the fetch's ``act``, after grants and policy); retry without bound (each call has the
connection's timeout: 504 ``backend_timeout``).

Stable failures: 502 ``backend_unavailable`` (refused connection, a 5xx, an answer we cannot parse),
502 ``backend_denied`` (the signer's own credentials are refused there), 504 ``backend_timeout``,
404 ``backend_secret_missing`` (the reference or version names nothing there; only a caller already
allowed ``read_value`` can get this far, so it says nothing to anyone else), 422 ``secret_not_text``
(binary values), 502 ``backend_value_invalid`` (field names the signer cannot carry), 400
``backend_version_unsupported`` (a version selector the backend does not have), 503
``backend_not_configured`` (the record names a backend this server has no connection for; 409 when
creating such a record).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from signer.errors import BadGateway, DeadlineExceeded, InvalidRequest, NotFound, Unavailable
from signer.store import SecretRecord

__all__ = [
    "Fetched",
    "SecretBackend",
    "Selector",
    "denied",
    "fields_from_object",
    "missing",
    "pick",
    "timed_out",
    "unavailable",
    "unsupported_version",
]

# The same rule as ``signer.services.secret_kind.FIELD_NAME`` (a test holds them equal).
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
MAX_FIELDS = 64


@dataclass(frozen=True, slots=True)
class Selector:
    """Which version: ``version`` (the signer's integer option; a KV v2 version number) or
    ``backend_version`` (AWS: a VersionId or a VersionStage label); neither: the current one."""

    version: int | None = None
    backend_version: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A value as read: its fields (all, or the one asked for), and which version it was."""

    values: dict[str, str]
    version: int | None
    backend_version: str | None = None


class SecretBackend(Protocol):
    name: str

    def check_reference(self, reference: str) -> str:
        """The reference as stored, or ``InvalidRequest(invalid_reference)`` (never echoing it)."""
        ...

    async def read(
        self, secret: SecretRecord, selector: Selector, names: Sequence[str] | None
    ) -> Fetched: ...

    async def close(self) -> None: ...


def missing() -> NotFound:
    return NotFound("the backend holds no such secret or version", code="backend_secret_missing")


def unavailable() -> BadGateway:
    return BadGateway(
        "the secret backend could not be reached or answered an error", code="backend_unavailable"
    )


def denied() -> BadGateway:
    return BadGateway("the secret backend refused the signer's credentials", code="backend_denied")


def timed_out() -> DeadlineExceeded:
    return DeadlineExceeded("the secret backend did not answer in time", code="backend_timeout")


def not_configured() -> Unavailable:
    return Unavailable("this server has no connection to that secret backend", code="backend_not_configured")


def unsupported_version(what: str) -> InvalidRequest:
    return InvalidRequest(what, code="backend_version_unsupported", field="version")


def invalid_reference(what: str) -> InvalidRequest:
    return InvalidRequest(what, code="invalid_reference", field="reference")


def _text(value: Any) -> str:
    # Strings as they are; any other JSON value (a number, a list) as its compact JSON text.
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def fields_from_object(data: Mapping[str, Any]) -> dict[str, str]:
    """A backend's key/value map as the signer's fields; refused (naming no key) if a key is not a
    field name the signer carries, or there are none or too many."""
    if not data or len(data) > MAX_FIELDS:
        raise BadGateway("the backend's value has no fields or too many", code="backend_value_invalid")
    fields: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not FIELD_NAME.match(key):
            raise BadGateway(
                "a field name in the backend's value is not one the signer carries "
                "(1 to 64 letters, digits, '_', '.' or '-', starting with a letter or '_')",
                code="backend_value_invalid",
            )
        fields[key] = _text(value)
    return fields


def pick(fields: dict[str, str], names: Sequence[str] | None) -> dict[str, str]:
    """The fields asked for (all when ``names`` is None), refused if one is missing."""
    if names is None:
        return dict(sorted(fields.items()))
    if any(name not in fields for name in names):
        raise NotFound("no such field in the secret", code="secret_field_not_found")
    return {name: fields[name] for name in sorted(names)}
