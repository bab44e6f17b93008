"""Coverage-guided fuzzing (atheris / libFuzzer) of the decoder and the canonicalisers (I-04, I-11).

Run directly: ``python tests/eth/fuzz_eth_atheris.py CORPUS_DIR -runs=N``; ``test_eth_fuzz.py`` runs it
for a bounded time with seeds. The first input byte picks the target:

    0: decode_unsigned_transaction(raw bytes)
    1: parse_transaction(JSON text)
    2: typed_data_digest(JSON text)

Every target must answer ``InvalidRequest`` or a result that is stable under its canonical form.
Anything else (another exception, a non-canonical acceptance) is a crash that libFuzzer records.
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports(include=["signer"]):
    from signer.errors import InvalidRequest
    from signer.eth import decode_unsigned_transaction, keccak256, parse_transaction, typed_data_digest


def _json(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        # Malformed or absurdly nested JSON is the HTTP layer's to refuse, before we are called.
        return None


def test_one_input(data: bytes) -> None:
    if not data:
        return
    target, body = data[0] % 3, data[1:]
    try:
        if target == 0:
            tx = decode_unsigned_transaction(body)
            assert tx.signing_payload == body, "accepted a non-canonical encoding"
            assert tx.digest == keccak256(body)
            assert parse_transaction(tx.as_json()) == tx
        elif target == 1:
            value = _json(body)
            if value is None:
                return
            tx = parse_transaction(value)  # type: ignore[arg-type]
            assert parse_transaction(tx.as_json()) == tx
            assert decode_unsigned_transaction(tx.signing_payload) == tx
        else:
            value = _json(body)
            if value is None:
                return
            result = typed_data_digest(value)  # type: ignore[arg-type]
            assert typed_data_digest(result.as_json()).digest == result.digest
    except InvalidRequest:
        return


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
