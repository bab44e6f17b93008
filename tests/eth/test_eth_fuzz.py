"""I-04 coverage-guided: run the atheris harness for a bounded number of inputs from valid seeds.

Skipped when atheris is not installed (it is a test-only tool). The harness runs in a child process
so libFuzzer's own signal handling and exit never touch the pytest process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from signer.eth import parse_transaction

pytest.importorskip("atheris")

HARNESS = Path(__file__).with_name("fuzz_eth_atheris.py")

SEED_TRANSACTIONS = [
    {"type": 0, "chainId": 1, "nonce": 1, "gas": 21000, "gasPrice": "0x3b9aca00", "to": "0x" + "11" * 20},
    {
        "type": 1,
        "chainId": "5",
        "nonce": "0x0",
        "gas": 50000,
        "gasPrice": 7,
        "accessList": [{"address": "0x" + "22" * 20, "storageKeys": ["0x" + "00" * 32]}],
        "data": "0x6001",
    },
    {
        "type": "0x2",
        "chainId": 10,
        "nonce": 3,
        "gas": 60000,
        "maxFeePerGas": 100,
        "maxPriorityFeePerGas": 1,
        "to": "0x" + "33" * 20,
        "value": "1000000000000000000",
        "data": "0xa9059cbb" + "00" * 12 + "44" * 20 + "00" * 31 + "05",
    },
    {
        "type": 4,
        "chainId": 1,
        "nonce": 0,
        "gas": 90000,
        "maxFeePerGas": 3,
        "maxPriorityFeePerGas": 2,
        "to": "0x" + "55" * 20,
        "authorizationList": [
            {"chainId": 0, "address": "0x" + "66" * 20, "nonce": 1, "yParity": 1, "r": "0x01", "s": "0x02"}
        ],
    },
]
SEED_TYPED_DATA = {
    "types": {
        "Person": [{"name": "name", "type": "string"}, {"name": "wallets", "type": "address[]"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[2]"},
            {"name": "n", "type": "int8"},
        ],
    },
    "primaryType": "Mail",
    "domain": {"name": "x", "chainId": 1, "salt": "0x" + "00" * 32},
    "message": {
        "from": {"name": "a", "wallets": []},
        "to": [{"name": "b", "wallets": ["0x" + "77" * 20]}, {"name": "c", "wallets": []}],
        "n": -5,
    },
}


def _seeds(directory: Path) -> None:
    directory.mkdir()
    for index, tx in enumerate(SEED_TRANSACTIONS):
        (directory / f"raw-{index}").write_bytes(b"\x00" + parse_transaction(tx).signing_payload)
        (directory / f"json-{index}").write_bytes(b"\x01" + json.dumps(tx).encode())
    (directory / "typed").write_bytes(b"\x02" + json.dumps(SEED_TYPED_DATA).encode())


def test_atheris_decoder_and_canonicalisers(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    _seeds(corpus)
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            str(corpus),
            "-runs=300000",
            "-max_total_time=20",
            "-max_len=2048",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert result.returncode == 0 and not crashes, result.stderr[-4000:]
