"""Builds valid exported audit chains in memory for the audit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from signer.audit import GENESIS_HASH, canonical_json, chain_hash, format_at


def build_chain(count: int, *, start: datetime | None = None) -> list[dict[str, Any]]:
    """``count`` exported records {seq, at, request_id, kind, event, prev_hash, hash} from genesis."""
    start = start or datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    records = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        at = format_at(start + timedelta(milliseconds=seq))
        body = {
            "kind": "sign.transaction" if seq % 3 else "auth.refresh",
            "at": at,
            "request_id": f"req-{seq}" if seq % 4 else None,
            "actor": {"principal_id": "prn_1", "name": "relayer"},
            "outcome": "allowed",
            "n": seq,
        }
        event = canonical_json(body).decode("ascii")
        digest = chain_hash(prev, event.encode("ascii"))
        records.append(
            {
                "seq": seq,
                "at": at,
                "request_id": body["request_id"],
                "kind": body["kind"],
                "event": event,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    return records
