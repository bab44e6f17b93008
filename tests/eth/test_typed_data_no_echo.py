"""Typed-data refusals never repeat what was sent: the caller's struct names, member names and field
types are named by position (``types[2][1].type``, ``message[0][1]``), for every way typed data can be
refused. Each case below is built with names only the caller could have chosen (marked), and the whole
error (message, field, every extra) is searched for them."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from signer.errors import InvalidRequest
from signer.eth.messages import typed_data_digest

MARK = "Zq9x"
WALLET = "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"


def base() -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}],
            f"Person{MARK}": [
                {"name": f"nick{MARK}", "type": "string"},
                {"name": f"wallet{MARK}", "type": "address"},
            ],
            f"Mail{MARK}": [
                {"name": f"from{MARK}", "type": f"Person{MARK}"},
                {"name": f"to{MARK}", "type": f"Person{MARK}[]"},
                {"name": f"body{MARK}", "type": "string"},
            ],
        },
        "primaryType": f"Mail{MARK}",
        "domain": {"name": "Ether Mail", "chainId": 1},
        "message": {
            f"from{MARK}": {f"nick{MARK}": "a", f"wallet{MARK}": WALLET},
            f"to{MARK}": [{f"nick{MARK}": "b", f"wallet{MARK}": WALLET}],
            f"body{MARK}": "hello",
        },
    }


def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(base())
    change(data)
    return data


T, M = "types", "message"
P, ML = f"Person{MARK}", f"Mail{MARK}"
CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "undefined-member-type": lambda d: d[T].pop(P),
    "malformed-member-type": lambda d: d[T][P][1].update(type=f"address{MARK}["),
    "bare-uint": lambda d: d[T][P][1].update(type="uint"),
    "duplicate-member": lambda d: d[T][P][1].update(name=f"nick{MARK}"),
    "bad-member-name": lambda d: d[T][P][1].update(name=f"wal let{MARK}"),
    "extra-member-key": lambda d: d[T][P][1].update(extra=MARK),
    "struct-not-list": lambda d: d[T].update({P: {MARK: "string"}}),
    "struct-named-badly": lambda d: d[T].update({f"Bad {MARK}": []}),
    "struct-named-like-atomic": lambda d: d[T].update({"uint256": []}),
    "domain-as-member": lambda d: d[T][P][1].update(type="EIP712Domain"),
    "recursive": lambda d: d[T].update({f"Loop{MARK}": [{"name": "x", "type": f"Loop{MARK}"}]}),
    "extra-message-field": lambda d: d[M].update({f"cc{MARK}": "x"}),
    "extra-nested-field": lambda d: d[M][f"from{MARK}"].update({f"age{MARK}": 3}),
    "missing-message-field": lambda d: d[M].pop(f"body{MARK}"),
    "struct-not-object": lambda d: d[M].update({f"from{MARK}": MARK}),
    "array-not-list": lambda d: d[M].update({f"to{MARK}": {MARK: 1}}),
    "bad-address": lambda d: d[M][f"from{MARK}"].update({f"wallet{MARK}": "0x12"}),
    "string-as-int": lambda d: d[M].update({f"body{MARK}": 5}),
    "nested-array-element": lambda d: d[M][f"to{MARK}"][0].pop(f"nick{MARK}"),
    "fixed-array-length": lambda d: (d[T][ML][1].update(type=f"Person{MARK}[2]")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_refusal_names_positions_never_the_callers_names(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        typed_data_digest(edit(CASES[name]))
    error = refused.value
    said = json.dumps({"message": error.message, "extra": error.extra}, default=str)
    assert MARK not in said, said
    assert error.extra.get("field"), said


def test_positions_point_at_the_place() -> None:
    with pytest.raises(InvalidRequest) as refused:
        typed_data_digest(edit(CASES["bare-uint"]))
    assert refused.value.extra["field"] == "types[1][1].type"
    with pytest.raises(InvalidRequest) as refused:
        typed_data_digest(edit(CASES["nested-array-element"]))
    assert refused.value.extra["field"] == "message[1][0][0]"


def test_the_base_case_is_valid() -> None:
    assert typed_data_digest(base()).primary_type == f"Mail{MARK}"
