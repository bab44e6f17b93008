"""The API contract (matrix row I-01): the OpenAPI document covers every route, and a live server keeps it.

The document is generated from the route registry (``signer.http.contract``), so these tests check the
registry against aiohttp's router, then let schemathesis fuzz every operation of a real server (real
SoftHSM token, real SQLite file, real subprocess) with positive and negative data: no 5xx, every status
and body documented, every negative input refused with a 4xx.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.stateful
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from signer.app import create_app
from signer.config import Settings
from signer.http.contract import openapi
from signer.http.routes import api
from tests.service_harness import (
    Server,
    attach_policy,
    grant,
    init_installation,
    make_key,
    make_service,
    start_server,
    unlock_policy,
)


def test_every_aiohttp_route_is_in_the_document(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp adds HEAD beside each GET
        # The approvers' web console (signer.http.console) is HTML forms for browsers, not API.
        and not route.resource.canonical.startswith("/console")
    }
    document = openapi(api)
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert served == documented, {"undocumented": served - documented, "unrouted": documented - served}


def test_document_shape() -> None:
    document = openapi(api)
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "code", "detail", "request_id"} <= set(problem["required"])
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            assert op["responses"], (method, path)
            for status, response in op["responses"].items():
                if int(status) >= 400 and not (path == "/readyz" and status == "503"):
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, (method, path, status)
            if "requestBody" in op:
                # Request schemas come from the validating models: unknown fields refused there too.
                name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert document["components"]["schemas"][name]["additionalProperties"] is False
            if path.startswith("/v1/") and path != "/v1/auth/refresh":
                assert op["security"] == [{"bearerAuth": []}], (method, path)


def test_openapi_and_docs_are_served(server: Server) -> None:
    status, headers, document = server.call("GET", "/openapi.json")
    assert status == 200 and document["openapi"] == "3.1.0"
    assert "/v1/keys/{key_id}/sign/transaction" in document["paths"]
    status, headers, page = server.call("GET", "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
    # Self-contained: nothing fetched from anywhere, no script.
    assert "<script" not in page and "src=" not in page and "http://" not in page and "https://" not in page


# -- schemathesis against a live server -----------------------------------------------------------

# Per operation and mode; deterministic (derandomize), so a failure reproduces.
MAX_EXAMPLES = 50
FUZZ_DELEGATE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server of its own: the fuzzer creates, disables and revokes things freely."""
    installation = init_installation(tmp_path_factory.mktemp("fuzz"))
    server = start_server(installation)
    try:
        service = make_service(server, "fuzz-relayer")
        keys = [make_key(server, curve, f"fuzz-{curve}") for curve in ("secp256k1", "p256", "ed25519")]
        for key in keys:
            grant(
                server,
                service["principal"]["id"],
                key["id"],
                ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"],
            )
        # Blind signing and 7702 delegations are denied unless a policy unlocks them.
        attach_policy(server, unlock_policy("fuzz-unlock", [FUZZ_DELEGATE]), scope="default")
        yield {
            "server": server,
            "admin": installation.admin_token,
            "service": service["credentials"]["access_token"],
            "key_ids": [key["id"] for key in keys],
        }
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: dict[str, Any]) -> Any:
    server: Server = fuzz_server["server"]
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.update(base_url=server.url)
    schema.config.generation.update(allow_x00=False)
    # A body too large to be valid (e.g. a message past its maxLength) is refused by the size limit
    # before it is parsed: 413 is a correct refusal of negative data, not an acceptance.
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = type(rejection)(
        expected_statuses=[*rejection.expected_statuses, "413"]
    )
    return schema


CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.negative_data_rejection,
    st_checks.response_headers_conformance,
]


def _real_key(case: Any, key_ids: list[str]) -> None:
    """Swap about half the generated key ids for real ones (chosen deterministically from the generated
    value), so key and sign operations get past "no such key" too. Never for disable: the keys must stay
    usable for signing."""
    value = (case.path_parameters or {}).get("key_id")
    if isinstance(value, str) and not case.path.endswith("/disable"):
        pick = zlib.crc32(value.encode()) % (2 * len(key_ids))
        if pick < len(key_ids):
            case.path_parameters = {**case.path_parameters, "key_id": key_ids[pick]}


# Negative data needs something to negate: operations with no parameter and no body have none.
CASES = [
    pytest.param(op.operation_id, mode, id=f"{op.operation_id}-{mode.value}")
    for op in api.operations
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or op.request or op.query or "{" in op.path
]


@pytest.mark.parametrize(("operation_id", "mode"), CASES)
def test_schemathesis(
    api_schema: Any, fuzz_server: dict[str, Any], operation_id: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)
    sign = "/sign/" in operation.path
    token = fuzz_server["service"] if sign else fuzz_server["admin"]

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:  # a negated key id must stay negated
            _real_key(case, fuzz_server["key_ids"])
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30)

    run()


# Operations whose success depends on a name no earlier request took (see Stateful.before_call).
_UNIQUE_NAME_FIELDS = {
    ("POST", "/v1/principals"): "name",
    ("POST", "/v1/keys"): "label",
    ("POST", "/v1/policies"): "id",
}
_unique_counter = [0]


def test_schemathesis_stateful(api_schema: Any, fuzz_server: dict[str, Any]) -> None:
    """Follow the document's links (create a key, then show, disable and enable it; create a principal,
    then issue and revoke its tokens; create and revoke a grant) with the same checks on every step."""
    machine = api_schema.as_state_machine()
    admin = fuzz_server["admin"]

    class Stateful(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # Hypothesis replays a scenario's opening steps in later examples, but the server keeps the
            # earlier examples' rows: a name that was free the first time is taken the second, the
            # response (201, then 409) differs, and so do the bundles it fills, which Hypothesis reports
            # as FlakyStrategyDefinition. A fixed-length unique suffix makes a unique-name operation's
            # answer depend on what was generated only, never on what earlier examples created. A name
            # the schema refuses stays refused with the suffix (too long stays too long, a bad character
            # stays); the empty name is left alone (the suffix would make it valid).
            body = case.body
            field = _UNIQUE_NAME_FIELDS.get((case.method.upper(), case.path))
            name = body.get(field) if field is not None and isinstance(body, dict) else None
            if isinstance(name, str) and name:
                _unique_counter[0] += 1
                body[field] = f"{body[field]}-{_unique_counter[0]:06x}"
            super().before_call(case)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {admin}"}, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, headers={"Authorization": f"Bearer {admin}"})

    hypothesis.stateful.run_state_machine_as_test(
        Stateful,
        settings=hypothesis.settings(
            max_examples=30,
            stateful_step_count=8,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
    )


def test_head_answers_beside_get(server: Server) -> None:
    status, headers, _ = server.call("HEAD", "/healthz")
    assert status == 200 and "X-Request-Id" in headers


def test_success_bodies_match_the_response_models(server: Server, unique_name: str) -> None:
    """Fuzzed requests rarely make a valid transaction or typed data: every success body of a real flow
    is checked against the documented model here (extra fields refused, so the model cannot drift)."""
    from pydantic import TypeAdapter

    from signer.http import schemas as out
    from tests.test_api_signing import RECIPIENT, TYPED, tx_fields

    admin = server.installation.admin_token

    def expect(model: Any, method: str, path: str, body: Any = None, token: str | None = admin) -> Any:
        operation = next(op for op in api.operations if op.method == method and _matches(op.path, path))
        status, _, payload = server.call(method, path, body, token)
        assert status == operation.status, (path, payload)
        assert model == operation.response, path  # the model checked is the one the document names
        TypeAdapter(model).validate_python(payload)
        return payload

    created = expect(out.PrincipalCreated, "POST", "/v1/principals", {"name": unique_name, "role": "service"})
    service = created["credentials"]["access_token"]
    principal_id = created["principal"]["id"]
    keys = {
        curve: expect(out.Key, "POST", "/v1/keys", {"curve": curve, "label": f"contract-{curve}"})
        for curve in ("secp256k1", "p256", "ed25519")
    }
    grants = [
        expect(
            out.Grant,
            "POST",
            "/v1/grants",
            {"principal_id": principal_id, "key_id": key["id"], "operations": ["sign_message", "sign_raw"]},
        )
        for key in keys.values()
    ]
    eth = keys["secp256k1"]["id"]
    expect(
        out.Grant,
        "POST",
        "/v1/grants",
        {"principal_id": principal_id, "key_id": eth, "operations": ["sign_transaction", "sign_typed_data"]},
    )
    # Groups, policies, attachments: an unlock policy at the keys' scope lets 7702 and digests through.
    expect(out.MembershipChange, "PUT", f"/v1/groups/contract-group/members/{principal_id}")
    expect(out.Group, "GET", "/v1/groups/contract-group")
    expect(out.GroupList, "GET", "/v1/groups")
    expect(
        out.Grant,
        "POST",
        "/v1/grants",
        {"group": "contract-group", "scope": "default", "operations": ["sign_message"], "max_uses": 5},
    )
    version = expect(
        out.PolicyVersion, "POST", "/v1/policies", {**unlock_policy("contract", [RECIPIENT]), "version": 1}
    )
    expect(out.PolicyList, "GET", "/v1/policies")
    expect(out.PolicyVersions, "GET", "/v1/policies/contract")
    live = expect(
        out.Attachment,
        "POST",
        "/v1/policies/contract/attachments",
        {"version": version["version"], "scope": "default"},
    )
    shadow = expect(
        out.Attachment,
        "POST",
        "/v1/policies/contract/attachments",
        {"version": version["version"], "key_id": eth, "mode": "shadow"},
    )
    expect(out.AttachmentList, "GET", "/v1/policy-attachments?include_detached=true")
    expect(out.Key, "GET", f"/v1/keys/{eth}")
    expect(out.KeyList, "GET", "/v1/keys?limit=2")
    expect(out.Key, "POST", f"/v1/keys/{keys['p256']['id']}/disable")
    expect(out.Key, "POST", f"/v1/keys/{keys['p256']['id']}/enable")
    expect(out.GrantList, "GET", f"/v1/grants?principal_id={principal_id}")
    expect(out.PrincipalList, "GET", "/v1/principals")
    expect(out.Whoami, "GET", "/v1/whoami", token=service)
    sign = "/v1/keys/{}/sign/"
    message_model = out.EthSignature | out.P256Signature | out.Ed25519Signature
    for tx_type in (0, 1, 2, 4):
        expect(
            out.TransactionSignature,
            "POST",
            sign.format(eth) + "transaction",
            {"transaction": tx_fields(tx_type)},
            service,
        )
    expect(out.EthSignature, "POST", sign.format(eth) + "typed-data", {"typed_data": TYPED}, service)
    for key in keys.values():
        expect(message_model, "POST", sign.format(key["id"]) + "message", {"message": "hi"}, service)
    for curve in ("secp256k1", "p256"):
        expect(
            out.EthSignature | out.P256Signature,
            "POST",
            sign.format(keys[curve]["id"]) + "digest",
            {"digest": "0x" + "11" * 32},
            service,
        )
    expect(
        out.DryRun,
        "POST",
        "/v1/policy/dry-run",
        {"key_id": eth, "operation": "sign_transaction", "transaction": tx_fields(2)},
        service,
    )
    expect(out.ShadowReport, "GET", f"/v1/policy-attachments/{shadow['id']}/shadow-report")
    expect(out.Detached, "DELETE", f"/v1/policy-attachments/{live['id']}")
    expect(out.MembershipChange, "DELETE", f"/v1/groups/contract-group/members/{principal_id}")
    issued = expect(out.Credentials, "POST", f"/v1/principals/{principal_id}/tokens")
    renewed = expect(
        out.Credentials, "POST", "/v1/auth/refresh", {"refresh_token": issued["refresh_token"]}, None
    )
    expect(out.TokenRevoked, "DELETE", f"/v1/tokens/{renewed['access_token_id']}")
    expect(out.GrantRevoked, "DELETE", f"/v1/grants/{grants[0]['id']}")
    expect(out.Principal, "POST", f"/v1/principals/{principal_id}/state", {"disabled": True})
    expect(out.Health, "GET", "/healthz", token=None)
    expect(out.Readiness, "GET", "/readyz", token=None)


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path.split("?", 1)[0]) is not None
