"""``json_response``: orjson's bytes where they say what the standard library says, its text otherwise."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from signer.http.routes.common import json_response


@pytest.mark.parametrize(
    "data",
    [
        {"id": "sec_1", "values": {"api_key": "sk_live_x"}, "version": 3, "ok": True, "none": None},
        {"text": "caf\u00e9 \u2028 \U0001f600 </script>", "list": [1, -2, 0.5, "x"]},
        {"big": 2**70, "negative": -(2**65)},  # beyond 64 bits: the standard library's text
        [1, {"a": []}],
    ],
)
def test_the_document_is_the_standard_library_s(data: object) -> None:
    response = json_response(data, 201)
    assert response.status == 201
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == json.loads(json.dumps(data))


def test_what_the_standard_library_refuses_is_still_refused() -> None:
    @dataclass
    class Thing:
        x: int

    for data in ({"at": datetime.now(UTC)}, {"thing": Thing(1)}, {1: "non-string key is fine"}):
        try:
            expected: object = json.loads(json.dumps(data))
        except TypeError:
            with pytest.raises(TypeError):
                json_response(data)
        else:
            assert json.loads(json_response(data).body) == expected
