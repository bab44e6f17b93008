"""The default backend: versions the signer sealed itself, opened with the organisation's KEK.

Owns reading a sealed version: the current version as committed now (not as a cached record knew it:
another process may have rotated it), or a named one, and opening only the fields asked for through the
``Sealer`` (the data key is unwrapped in the token for the call and dropped).

It must never keep an opened value or an unwrapped data key beyond the call, and never open a version
of another secret (the envelope's associated data binds id, version and field).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from signer.errors import InvalidRequest, NotFound, Unprocessable
from signer.services.secret_backends.base import Fetched, Selector, unsupported_version
from signer.store import SecretRecord, SecretVersionRecord, Store


class Opens(Protocol):
    """What opens a sealed version's fields (``secret_kind.Sealer``, with the token's KEK)."""

    async def open(self, version: SecretVersionRecord, names: list[str]) -> dict[str, bytes]: ...


class SealedBackend:
    name = "sealed"

    def __init__(self, store: Store, sealer: Opens) -> None:
        self._store = store
        self._sealer = sealer

    def check_reference(self, reference: str) -> str:
        raise InvalidRequest("a sealed secret has no reference", code="invalid_reference", field="reference")

    async def read(self, secret: SecretRecord, selector: Selector, names: Sequence[str] | None) -> Fetched:
        if selector.backend_version is not None:
            raise unsupported_version("a sealed secret's versions are numbers: use version")
        async with self._store.read() as reader:
            fresh = await reader.secrets.get(secret.id)
            if fresh is None:
                raise NotFound("no such secret", code="secret_not_found")
            number = fresh.current_version if selector.version is None else selector.version
            stored = await reader.secrets.version(secret.id, number)
        if stored is None:
            raise NotFound("no such version of the secret", code="secret_version_not_found")
        if names is not None and any(name not in stored.sealed_fields for name in names):
            raise NotFound("no such field in the secret", code="secret_field_not_found")
        # Only the fields asked for are opened.
        opened = await self._sealer.open(
            stored, sorted(stored.sealed_fields) if names is None else sorted(names)
        )
        try:
            values = {name: raw.decode("utf-8") for name, raw in opened.items()}
        except UnicodeDecodeError:
            raise Unprocessable("a stored value is not text", code="secret_not_text") from None
        return Fetched(values, number)

    async def close(self) -> None:
        return None
