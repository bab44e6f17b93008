"""CPU microseconds per call of the Ethereum encoding hot path (``signer.eth``), outside any server.

A measurement, not a test: one process, one thread, nothing asserted. Each row is the best of 5 rounds
of ``time.process_time`` over enough calls to fill ``--round`` seconds of CPU.

    .venv/bin/python bench/eth_costs.py                            # this tree, one table
    .venv/bin/python bench/eth_costs.py --tree /tmp/eth-before     # another checkout's signer/
    .venv/bin/python bench/eth_costs.py --compare /tmp/eth-before --runs 5
        # alternate runs of the other tree and this one (B, A, B, A, ...) in fresh processes and print
        # the median of each row for both: background load that drifts hits both columns alike

Rows marked "repeat" reuse the same addresses and public key on every call (one key paying one token
contract, the common case, where per-address memoisation pays); rows marked "fresh" cycle through
more distinct addresses than any cache here holds, so they show the cold cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
FRESH = 20_000  # distinct addresses in the "fresh" rows: more than any LRU in signer.eth holds


def cpu_per_call(fn: Callable[[], Any], round_seconds: float, rounds: int = 5) -> float:
    """Best of ``rounds`` rounds of process CPU microseconds per call."""
    fn()
    calls, start = 1, time.process_time()
    while time.process_time() - start < round_seconds / 4:
        fn()
        calls += 1
    per_round = max(1, int(calls * 4 * (round_seconds / max(time.process_time() - start, 1e-9)) / 4))
    best = float("inf")
    for _ in range(rounds):
        begin = time.process_time()
        for _ in range(per_round):
            fn()
        best = min(best, (time.process_time() - begin) / per_round * 1e6)
    return best


def _transfer_data(recipient: bytes, amount: int) -> str:
    return "0x" + (bytes.fromhex("a9059cbb") + recipient.rjust(32, b"\0") + amount.to_bytes(32, "big")).hex()


def _tx_json(nonce: int, to: str, recipient: bytes) -> dict[str, Any]:
    # What a relayer posts: JSON integers and hex strings mixed, a checksummed token address.
    return {
        "type": 2,
        "chainId": 11155111,
        "nonce": nonce,
        "gas": "0x186a0",
        "to": to,
        "value": 0,
        "data": _transfer_data(recipient, 10**18 + nonce),
        "maxFeePerGas": "30000000000",
        "maxPriorityFeePerGas": 1_000_000_000,
    }


def measure(round_seconds: float) -> dict[str, float]:
    import coincurve

    import signer.eth as eth

    try:
        from datetime import UTC, datetime

        # The payload kinds (the audit summary, finishing a signature) live in services.payloads.
        from signer.services import payloads as signing
        from signer.store.records import KeyRecord
    except ImportError:  # pragma: no cover - a tree without the service layer
        signing = None  # type: ignore[assignment]

    private = coincurve.PrivateKey(hashlib.sha256(b"bench eth key").digest())
    public = private.public_key.format(compressed=False)
    address = eth.address_from_public_key(public)
    recipient = bytes.fromhex(RECIPIENT[2:])

    def rs_for(digest: bytes, *, high_s: bool) -> tuple[bytes, int]:
        compact = private.sign_recoverable(digest, hasher=None)
        r, s, recid = compact[:32], int.from_bytes(compact[32:64], "big"), compact[64]
        s = SECP256K1_N - s if high_s else s
        return r + s.to_bytes(32, "big"), recid

    # One transaction per (HSM s half, final recovery id): recovery id 1 costs a second recovery.
    cases: dict[tuple[bool, int], tuple[Any, bytes]] = {}
    nonce = 0
    while len(cases) < 4:
        tx = eth.parse_transaction(_tx_json(nonce, TOKEN, recipient))
        for high_s in (False, True):
            raw_rs, recid = rs_for(tx.digest, high_s=high_s)
            cases.setdefault((high_s, recid), (tx, raw_rs))
        nonce += 1

    # A stream of distinct requests from the same key to the same token (new nonce each time), with
    # their HSM signatures made up front: half high s, recovery ids as they fall.
    stream = []
    for n in range(256):
        obj = _tx_json(1000 + n, TOKEN, recipient)
        tx = eth.parse_transaction(obj)
        stream.append((obj, rs_for(tx.digest, high_s=bool(n % 2))[0]))
    fresh_addresses = [hashlib.sha256(b"a%d" % i).digest()[:20] for i in range(FRESH)]
    fresh_objs = [
        _tx_json(n, eth.to_checksum_address(fresh_addresses[n]), fresh_addresses[-1 - n])
        for n in range(FRESH)
    ]

    tx, raw_rs = cases[(False, 0)]
    signature = eth.recoverable_signature(tx.digest, raw_rs, public)
    obj = _tx_json(7, TOKEN, recipient)
    d32, d200 = os.urandom(32), os.urandom(200)
    counters = {"stream": 0, "fresh": 0, "addr": 0}

    def nxt(name: str, size: int) -> int:
        counters[name] = (counters[name] + 1) % size
        return counters[name]

    def whole(item: tuple[dict[str, Any], bytes]) -> Any:
        request, rs = item
        parsed = eth.parse_transaction(request)
        return parsed.assemble(eth.recoverable_signature(parsed.digest, rs, public))

    rows: list[tuple[str, Callable[[], Any]]] = [
        ("parse_transaction (ERC-20 transfer, repeat)", lambda: eth.parse_transaction(obj)),
        (
            "parse_transaction (ERC-20 transfer, fresh)",
            lambda: eth.parse_transaction(fresh_objs[nxt("fresh", FRESH)]),
        ),
        ("tx.as_json()", lambda: tx.as_json()),
    ]
    if signing is not None:
        now = datetime.now(UTC)
        key = KeyRecord(
            id="key_bench", label="bench", curve="secp256k1", public_key=public.hex(), address=address,
            scope="default", tags=[], state="active", hsm_id="00" * 16, attributes={}, created_by=None,
            created_at=now, updated_at=now,
        )  # fmt: skip
        rows.append(("payloads._tx_summary(tx)", lambda: signing._tx_summary(tx, tx.as_json())))
    for (high_s, recid), (case_tx, case_rs) in sorted(cases.items()):
        label = f"recoverable_signature ({'high' if high_s else 'low'} s, recid {recid})"
        rows.append((label, lambda d=case_tx.digest, rs=case_rs: eth.recoverable_signature(d, rs, public)))
    rows += [
        ("assemble (proven signature)", lambda: tx.assemble(signature)),
        ("keccak256 (32 bytes)", lambda: eth.keccak256(d32)),
        ("keccak256 (200 bytes)", lambda: eth.keccak256(d200)),
        ("to_checksum_address (repeat)", lambda: eth.to_checksum_address(recipient)),
        ("to_checksum_address (fresh)", lambda: eth.to_checksum_address(fresh_addresses[nxt("addr", FRESH)])),
        ("parse + recover + assemble (stream)", lambda: whole(stream[nxt("stream", len(stream))])),
    ]
    if signing is not None:
        rows.append(
            (
                "parse + payloads._finish_transaction (stream)",
                lambda: signing._finish_transaction(
                    *(lambda item: (eth.parse_transaction(item[0]), key, item[1]))(
                        stream[nxt("stream", len(stream))]
                    )
                ),
            )
        )
    return {name: cpu_per_call(fn, round_seconds) for name, fn in rows}


def _cell(head: str, value: float) -> str:
    return f"{value:12.2f}" if head == "after/before" else f"{value:12.1f}"


def _print(columns: dict[str, dict[str, float]]) -> None:
    names = list(next(iter(columns.values())))
    width = max(len(n) for n in names)
    heads = list(columns)
    print(f"{'CPU us per call':{width}}  " + "  ".join(f"{h:>12}" for h in heads))
    for name in names:
        print(f"{name:{width}}  " + "  ".join(_cell(h, columns[h].get(name, float("nan"))) for h in heads))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, help="import signer from this checkout instead of this one")
    parser.add_argument("--compare", type=Path, help="alternate runs of this other checkout and this one")
    parser.add_argument("--runs", type=int, default=5, help="runs per tree with --compare (median)")
    parser.add_argument("--round", type=float, default=0.1, help="CPU seconds per round (5 rounds per row)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    if args.compare is not None:
        results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for _ in range(args.runs):
            for label, tree in (("before", args.compare), ("after", REPO)):
                command = [
                    sys.executable,
                    __file__,
                    "--tree",
                    str(tree),
                    "--json",
                    "--round",
                    str(args.round),
                ]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results[label].append(json.loads(out))
        medians = {
            label: {name: statistics.median(run[name] for run in runs) for name in runs[0]}
            for label, runs in results.items()
        }
        medians["after/before"] = {n: medians["after"][n] / medians["before"][n] for n in medians["before"]}
        print(f"medians of {args.runs} alternating runs; before = {args.compare}, after = {REPO}")
        _print(medians)
        return 0

    sys.path.insert(0, str((args.tree or REPO).resolve()))
    figures = measure(args.round)
    import signer

    if args.json:
        print(json.dumps(figures))
    else:
        print(f"signer from {Path(signer.__file__).parent}")
        _print({"us": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
