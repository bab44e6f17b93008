"""The per-process memories of the fetch path: sealed version rows (bounded, LRU) and "last fetched"
write throttling (per secret and principal, once per interval)."""

from __future__ import annotations

from datetime import UTC, datetime

from signer.services.fetch_notes import FetchNotes
from signer.services.sealed_versions import SealedVersions
from signer.store import SecretVersionRecord


def _row(secret_id: str, version: int) -> SecretVersionRecord:
    return SecretVersionRecord(
        secret_id, version, "ab", b"w" * 40, {"f": b"sealed"}, datetime.now(UTC), "prn"
    )


def test_sealed_versions_keep_the_most_recently_used_rows() -> None:
    cache = SealedVersions(entries=2)
    cache.put(_row("a", 1))
    cache.put(_row("b", 1))
    assert cache.get("a", 1) is not None  # "a" is now the most recent
    cache.put(_row("c", 1))
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and len(cache) == 2
    cache.put(_row("a", 2))  # "c" is now the least recently used
    assert cache.get("c", 1) is None
    cache.forget("a")
    assert cache.get("a", 1) is None and cache.get("a", 2) is None and len(cache) == 0


def test_fetch_notes_write_once_per_interval_per_secret_and_principal() -> None:
    now = [100.0]
    notes = FetchNotes(interval=1.0, entries=2, clock=lambda: now[0])
    assert notes.due("s", "p")
    notes.noted("s", "p")
    assert not notes.due("s", "p")
    assert notes.due("s", "q")  # another principal: its name must be written
    now[0] += 1.0
    assert notes.due("s", "p")
    notes.noted("s", "q")
    notes.noted("t", "p")
    notes.noted("u", "p")  # bounded: the oldest ("s") is forgotten, so it is due again
    assert notes.due("s", "q")


def test_data_keys_are_bounded_in_time_and_size_and_wiped_on_change() -> None:
    from signer.services.data_keys import DataKeys

    now = [0.0]
    keys = DataKeys(entries=2, ttl=60.0, clock=lambda: now[0])
    key = bytes(range(32))
    keys.put("s", 1, "k", b"wrapped-1", key, epoch=7)
    assert keys.get("s", 1, "k", b"wrapped-1", epoch=7) == key
    assert keys.get("s", 1, "k", b"other-bytes", epoch=7) is None  # only for the bytes it came from
    keys.put("s", 1, "k", b"wrapped-1", key, epoch=7)
    held = keys._keys[("s", 1, "k")].key
    now[0] = 60.0  # the time bound
    assert keys.get("s", 1, "k", b"wrapped-1", epoch=7) is None and held == bytearray(32)
    keys.put("s", 1, "k", b"w1", key, epoch=7)
    keys.put("t", 1, "k", b"w2", key, epoch=7)
    first = keys._keys[("s", 1, "k")].key
    keys.put("u", 1, "k", b"w3", key, epoch=7)  # the size bound: "s" goes, zeroed
    assert len(keys) == 2 and first == bytearray(32)
    keys.forget("t")  # rotated or deleted here
    assert keys.get("t", 1, "k", b"w2", epoch=7) is None
    # The facts epoch moved (a grant, a rotation elsewhere...): every key goes, not only the one asked.
    keys.put("v", 1, "k", b"w4", key, epoch=7)
    assert keys.get("u", 1, "k", b"w3", epoch=8) is None and len(keys) == 0
    off = DataKeys(entries=0)
    off.put("s", 1, "k", b"w", key, epoch=1)
    assert len(off) == 0
