"""Look-alike names through the running server: every field where a person names something.

Each name field a request carries (principal names, group names in paths and grants, key labels, tags
and scopes, grant and attachment scopes, policy ids, webhook groups) is driven with look-alike spellings
of a name that exists (``tests.policy.test_names.spellings``: full-width, Cyrillic/Greek letters,
odd whitespace, invisible characters). Each answer must be ``400 invalid_name`` naming the field and
never repeating the name, or treat the spelling as the existing name itself (a conflict, or the
canonical name in the answer): never a second, distinct name. Afterwards every stored name is its own
canonical form.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy.names import NameKind, canonical_name
from tests.policy.test_names import spellings
from tests.service_harness import Server, grant, make_key, make_service

Answer = tuple[int, Any]


@dataclass
class Field:
    """How to send a name in one field, and what the answer must say when it is taken as the base."""

    name: str  # the problem document's ``field``
    kind: NameKind
    send: Callable[[Server, str, dict[str, Any]], Answer]
    same: Callable[[Answer, str], bool]  # the answer treats the spelling as the base name
    costly: bool = False  # makes an HSM key per example
    judged: bool = True  # whether the base name's own answer is judged (not for webhooks: URL rules)


def _call(server: Server, method: str, path: str, body: Any = None) -> Answer:
    status, _, answer = server.call(method, path, body, server.installation.admin_token)
    return status, answer


def _path(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _key(server: Server, **fields: Any) -> Answer:
    return _call(server, "POST", "/v1/keys", {"curve": "ed25519", "label": "names", **fields})


FIELDS = [
    Field(
        "name",
        NameKind.IDENTIFIER,
        lambda s, n, ctx: _call(s, "POST", "/v1/principals", {"name": n, "role": "service"}),
        lambda a, base: a[0] == 409 and a[1]["code"] == "principal_exists",
    ),
    Field(
        "group",
        NameKind.IDENTIFIER,
        lambda s, n, ctx: _call(s, "PUT", f"/v1/groups/{_path(n)}/members/{ctx['principal_id']}"),
        lambda a, base: a[0] == 200 and a[1]["group"] == base,
    ),
    Field(
        "group",
        NameKind.IDENTIFIER,
        lambda s, n, ctx: _call(
            s, "POST", "/v1/grants", {"group": n, "key_id": ctx["key_id"], "operations": ["sign_message"]}
        ),
        lambda a, base: a[0] == 201 and a[1]["group"] == base,
    ),
    Field(
        "scope",
        NameKind.SCOPE,
        lambda s, n, ctx: _call(
            s,
            "POST",
            "/v1/grants",
            {"principal_id": ctx["principal_id"], "scope": n, "operations": ["sign_message"]},
        ),
        lambda a, base: a[0] == 201 and a[1]["resource_id"] == base,
    ),
    Field(
        "scope",
        NameKind.SCOPE,
        lambda s, n, ctx: _call(
            s, "POST", f"/v1/policies/{ctx['policy_id']}/attachments", {"version": 1, "scope": n}
        ),
        lambda a, base: a[0] == 201 and a[1]["scope"] == base,
    ),
    Field(
        "id",
        NameKind.IDENTIFIER,
        lambda s, n, ctx: _call(s, "POST", "/v1/policies", {"id": n, "version": 1, "rules": []}),
        lambda a, base: a[0] == 409,
    ),
    Field(
        "group",
        NameKind.IDENTIFIER,
        lambda s, n, ctx: _call(
            s, "PUT", f"/v1/groups/{_path(n)}/webhook", {"url": "https://hooks.invalid/x"}
        ),
        # Taken as the base group; or refused for the URL (checked after the group: the destination
        # rules are not this test's business, and may refuse an unresolvable host).
        lambda a, base: a[1]["group"] == base if a[0] == 200 else a[1].get("code") != "invalid_name",
        judged=False,
    ),
    Field(
        "label",
        NameKind.LABEL,
        lambda s, n, ctx: _key(s, label=n),
        lambda a, base: a[0] == 201 and a[1]["label"] == base,
        costly=True,
    ),
    Field(
        "tags",
        NameKind.TAG,
        lambda s, n, ctx: _key(s, tags=[n]),
        lambda a, base: a[0] == 201 and a[1]["tags"] == [base],
        costly=True,
    ),
    Field(
        "scope",
        NameKind.SCOPE,
        lambda s, n, ctx: _key(s, scope=n),
        lambda a, base: a[0] == 201 and a[1]["scope"] == base,
        costly=True,
    ),
]
IDS = [f"{i}-{f.name}" for i, f in enumerate(FIELDS)]


@pytest.fixture(scope="module")
def context(server: Server) -> dict[str, Any]:
    service = make_service(server, f"names-{secrets.token_hex(4)}")
    key = make_key(server, "ed25519", "names")
    grant(server, service["principal"]["id"], key["id"], ["sign_message"])
    policy_id = f"names-{secrets.token_hex(4)}"
    status, body = _call(server, "POST", "/v1/policies", {"id": policy_id, "version": 1, "rules": []})
    assert status == 201, body
    return {"principal_id": service["principal"]["id"], "key_id": key["id"], "policy_id": policy_id}


def base_name(kind: NameKind) -> str:
    """A fresh name of the kind; its letters give the spellings something to imitate."""
    # Digits only, always eight: the spellings drawn for a name depend on its letters and length,
    # which must not change between the runs hypothesis replays.
    token = f"{secrets.randbelow(10**8):08d}"
    if kind is NameKind.LABEL:
        return f"Ops wallet {token}"
    if kind is NameKind.TAG:
        return f"env:{token}"
    return f"ops-{token}" if kind is NameKind.IDENTIFIER else f"acme/ops-{token}"


def refused_cleanly(answer: Answer, field: Field, spelt: str) -> bool:
    status, body = answer
    if status != 400:
        return False
    assert body["code"] == "invalid_name" and body["field"] == field.name, body
    text = json.dumps(body, ensure_ascii=False)
    assert spelt not in text and spelt.strip() not in text, body
    return True


def send_base(server: Server, context: dict[str, Any], field: Field) -> str:
    base = base_name(field.kind)
    status, body = field.send(server, base, context)
    assert not field.judged or status in (200, 201), body
    return base


@pytest.mark.parametrize("field", FIELDS, ids=IDS)
def test_plain_names_are_accepted_and_look_alikes_refused(
    server: Server, context: dict[str, Any], field: Field
) -> None:
    base = send_base(server, context, field)
    look_alikes = ["\u0430" + base[1:], base + " ", " " + base, base + "\n", "\u200b" + base, base + "\u00ad"]
    for spelt in look_alikes:
        assert refused_cleanly(field.send(server, spelt, context), field, spelt), spelt


@pytest.mark.parametrize("field", FIELDS, ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_spelling_of_an_existing_name_is_a_new_name(
    server: Server, context: dict[str, Any], field: Field, data: st.DataObject
) -> None:
    if field.costly and data.draw(st.integers(0, 4)) != 0:
        return  # a key per example is slow: judge a fifth of the examples for key fields
    base = send_base(server, context, field)
    spelt = data.draw(spellings(base))
    answer = field.send(server, spelt, context)
    assert refused_cleanly(answer, field, spelt) or field.same(answer, base), (spelt, answer)


def test_every_stored_name_is_canonical(server: Server, context: dict[str, Any]) -> None:
    principals = _call(server, "GET", "/v1/principals")[1]["items"]
    assert all(canonical_name(p["name"], NameKind.IDENTIFIER) == p["name"] for p in principals)
    groups = _call(server, "GET", "/v1/groups")[1]["items"]
    assert all(canonical_name(g["group"], NameKind.IDENTIFIER) == g["group"] for g in groups)
    keys = _call(server, "GET", "/v1/keys?limit=1000")[1]["items"]
    for key in keys:
        assert canonical_name(key["label"], NameKind.LABEL) == key["label"]
        assert canonical_name(key["scope"], NameKind.SCOPE) == key["scope"]
        assert all(canonical_name(tag, NameKind.TAG) == tag for tag in key["tags"])
