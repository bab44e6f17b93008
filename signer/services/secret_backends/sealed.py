"""The default backend: versions the signer sealed itself, opened with the organisation's KEK.

Owns reading a sealed version: the current version as committed now (not as a cached record knew it:
another process may have rotated it), or a named one, and opening only the fields asked for through the
``Sealer`` (the data key is unwrapped in the token for the call and dropped).

It must never keep an opened value or an unwrapped data key beyond the call, never open a version
of another secret (the envelope's associated data binds id, version and field), and never open a
disabled or destroyed version, nor a staged one that was not named (``refuse_unreadable``; a row held
in the cache may be older than a disable: the fetch's commit checks the state again under the write
lock, ``secret_kind``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from signer.errors import Conflict, InvalidRequest, NotFound, SignerError, Unprocessable
from signer.services.sealed_versions import SealedVersions
from signer.services.secret_backends.base import Fetched, Selector, unsupported_version
from signer.store import SecretRecord, SecretVersionRecord, Store


def refuse_unreadable(state: str | None, named: bool) -> None:
    """Refuse a version that may not be read: missing, disabled, destroyed, or staged unless named
    (a staged version is read by number to test it before it is promoted)."""
    if state is None:
        raise NotFound("no such version of the secret", code="secret_version_not_found")
    if state == "disabled":
        raise Conflict("that version of the secret is disabled", code="secret_version_disabled")
    if state == "destroyed":
        raise Conflict("that version of the secret was destroyed", code="secret_version_destroyed")
    if state == "staged" and not named:
        raise Conflict("that version is staged: name it to read it", code="secret_version_staged")


class Opens(Protocol):
    """What opens a sealed version's fields (``secret_kind.CachedOpener``: the token's KEK unwraps the
    data key, kept in a bounded cache that wipes itself)."""

    async def open(self, version: SecretVersionRecord, names: list[str]) -> dict[str, bytes]: ...

    def forget(self, secret_id: str) -> None: ...


class SealedBackend:
    name = "sealed"

    def __init__(
        self,
        store: Store,
        opens: Opens,
        versions: SealedVersions | None = None,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._opens = opens
        # A version row's key and fields never change once written: a fetch need not read its row
        # again (``SealedVersions``). Its state may: held rows go when the facts epoch moves (which a
        # disable or destroy in any worker moves), so a destroyed version's wrapped key does not stay
        # in this process's memory beyond the next fetch.
        self._versions = versions or SealedVersions()
        self._epoch = epoch
        self._rows_epoch = None if epoch is None else epoch()

    def check_reference(self, reference: str) -> str:
        raise InvalidRequest("a sealed secret has no reference", code="invalid_reference", field="reference")

    def forget(self, secret_id: str) -> None:
        """Drop what this process holds of a secret (rotated, deleted, or a version disabled or
        destroyed): its rows and data keys."""
        self._versions.forget(secret_id)
        self._opens.forget(secret_id)

    async def read(self, secret: SecretRecord, selector: Selector, names: Sequence[str] | None) -> Fetched:
        if selector.backend_version is not None:
            raise unsupported_version("a sealed secret's versions are numbers: use version")
        # The version as the (possibly cached) record names it; the fetch's commit checks under the
        # write lock that it is still current before the value leaves.
        number = secret.current_version if selector.version is None else selector.version
        if self._epoch is not None:
            now = self._epoch()
            if now != self._rows_epoch:
                self._versions.clear()
                self._rows_epoch = now
        stored = self._versions.get(secret.id, number)
        cache = False
        if stored is None:
            async with self._store.read() as reader:
                # On a miss, the current version as committed now (another process may have rotated
                # it since the record was cached).
                exists, stored = await reader.secrets.version_to_open(secret.id, selector.version)
            if not exists:
                raise NotFound("no such secret", code="secret_not_found")
            if stored is None:
                raise NotFound("no such version of the secret", code="secret_version_not_found")
            number = stored.version
            cache = stored.state in ("enabled", "staged")
        refuse_unreadable(stored.state, selector.version is not None)
        if names is not None and any(name not in stored.sealed_fields for name in names):
            raise NotFound("no such field in the secret", code="secret_field_not_found")
        # Only the fields asked for are opened.
        wanted = sorted(stored.sealed_fields) if names is None else sorted(names)
        try:
            opened = await self._opens.open(stored, wanted)
        except SignerError:
            if cache:
                raise
            # A row held here may predate a KEK rotation whose old KEK was destroyed since: read the
            # row as committed now and open that (``signer.services.kek_rotation``).
            self._versions.forget(secret.id)
            return await self.read(secret, selector, names)
        if cache and len(wanted) == len(stored.sealed_fields):
            # Only a row whose every field opened (so is authentic) is kept.
            self._versions.put(stored)
        try:
            values = {name: raw.decode("utf-8") for name, raw in opened.items()}
        except UnicodeDecodeError:
            raise Unprocessable("a stored value is not text", code="secret_not_text") from None
        return Fetched(values, number)

    async def close(self) -> None:
        return None
