"""Where a human-readable name enters the service: ``policy.names`` decides, this turns a refusal into a 400.

Every name field a request carries (principal and group names, scopes, key labels and tags, webhook
groups; policy documents' ids and groups go through ``policy`` itself) passes ``check_name`` and is used
in the canonical form it returns, so two spellings of one name can never become two names. The answer
is ``400 invalid_name`` with the offending ``field`` and the rule broken, never the name itself.
"""

from __future__ import annotations

from policy.names import NameKind, NameRefused, canonical_name
from signer.errors import InvalidRequest

__all__ = ["NameKind", "check_name"]


def check_name(value: object, *, field: str, kind: NameKind, max_length: int | None = None) -> str:
    """The canonical form of a name, or ``InvalidRequest(invalid_name)`` naming ``field``."""
    try:
        return canonical_name(value, kind, max_length=max_length)
    except NameRefused as exc:
        raise InvalidRequest(f"{field} {exc.message}", code="invalid_name", field=field) from None
