"""A bounded per-process cache of sealed secret versions, so a fetch need not read its version's row.

A version row's key and fields (the data key as the token wrapped it, the fields as AES-GCM sealed them)
never change once written: a new value is a new version, and deleting a secret removes its rows. Its
state may change (disabled, destroyed: ``secret_versions``), so a held row's state may be stale: the
sealed backend keeps only enabled or staged rows, and the fetch's commit checks a named or pinned
version's state under the write lock before the value leaves. So a fetch may take
the row of (secret, version) from memory, and read the database only on a miss. What is kept is
ciphertext and a wrapped key, never a value or an unwrapped key: opening still needs the token.

Freshness is not this cache's job: which version is current is decided by the caller, and the fetch's
commit checks under the write lock that it still is (and that the secret still exists) before the value
leaves (``SecretWrites.record_fetch``), so a row held here for a deleted or rotated secret never serves
a response. Bounded in entries; the least recently used is dropped first.
"""

from __future__ import annotations

from collections import OrderedDict

from signer.store import SecretVersionRecord

DEFAULT_ENTRIES = 4096


class SealedVersions:
    """(secret id, version) -> the sealed version record, at most ``entries`` of them."""

    __slots__ = ("_entries", "_rows")

    def __init__(self, entries: int = DEFAULT_ENTRIES) -> None:
        if entries < 1:
            raise ValueError("entries must be positive")
        self._entries = entries
        self._rows: OrderedDict[tuple[str, int], SecretVersionRecord] = OrderedDict()

    def get(self, secret_id: str, version: int) -> SecretVersionRecord | None:
        row = self._rows.get((secret_id, version))
        if row is not None:
            self._rows.move_to_end((secret_id, version))
        return row

    def put(self, row: SecretVersionRecord) -> None:
        self._rows[(row.secret_id, row.version)] = row
        self._rows.move_to_end((row.secret_id, row.version))
        while len(self._rows) > self._entries:
            self._rows.popitem(last=False)

    def forget(self, secret_id: str) -> None:
        """Drop every version of a secret (this process deleted it)."""
        for key in [k for k in self._rows if k[0] == secret_id]:
            del self._rows[key]

    def clear(self) -> None:
        """Drop every row (the facts epoch moved: a version may have been disabled or destroyed)."""
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)
