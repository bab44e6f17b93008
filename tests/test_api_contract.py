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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import hypothesis.stateful
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis import checks as st_checks

from policy.names import NameKind, NameRefused, canonical_name
from signer.app import create_app
from signer.config import Settings
from signer.http.contract import SEMANTIC_REFUSALS, openapi
from signer.http.patterns import NAME_FORMATS
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
            if "requestBody" in op and path not in ("/v1/rpc", "/v1/kms"):
                # Request schemas come from the validating models: unknown fields refused there too.
                # (JSON-RPC's envelope is checked call by call and answered with JSON-RPC errors; a KMS
                # body is AWS's, its operation named by X-Amz-Target.)
                name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                assert document["components"]["schemas"][name]["additionalProperties"] is False
            # /v1/kms authenticates with AWS SigV4 (signer.crypto.sigv4), not a bearer token.
            if path.startswith("/v1/") and path not in ("/v1/auth/refresh", "/v1/kms"):
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

# A name's schema is a pattern exact for ASCII plus a format naming the rest of ``canonical_name``'s rule
# (NFKC, one script: see signer.http.models). Positive data for each format comes from that validator:
# names drawn from its grammar (sometimes in full-width spelling, which NFKC folds) that it accepts.
_IDENTIFIER = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,15}", fullmatch=True)
_NAME_DRAWS = {
    NameKind.IDENTIFIER: _IDENTIFIER,
    NameKind.SCOPE: st.lists(_IDENTIFIER, min_size=1, max_size=3).map("/".join),
    NameKind.LABEL: st.one_of(
        st.from_regex(r"[A-Za-z0-9]{1,8}(?:[ ._-][A-Za-z0-9\u00e9\u00fc]{1,8}){0,3}", fullmatch=True),
        st.from_regex(r"[\u4e00-\u4e40\u3041-\u3090]{1,6}(?: [0-9]{1,3})?", fullmatch=True),
        st.from_regex(r"[\u03b1-\u03c9]{1,8}(?:-[\u03b1-\u03c9]{1,8})?", fullmatch=True),
    ),
    NameKind.TAG: st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,15}", fullmatch=True),
}


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def _accepted(kind: NameKind) -> Any:
    def accepted(text: str) -> bool:
        try:
            canonical_name(text, kind)
        except NameRefused:
            return False
        return True

    return accepted


for _format, _kind in NAME_FORMATS.items():
    schemathesis.openapi.format(
        _format,
        st.one_of(_NAME_DRAWS[_kind], _NAME_DRAWS[_kind].map(_full_width)).filter(_accepted(_kind)),
    )
# A grant's expires_at must be in the future (a schema cannot say so): positive times are future ones,
# in the RFC 3339 spellings the request parser takes (years to 9999, an offset, up to 9 fraction digits).
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime(2100, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
    ).map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
)

# Per operation and mode; deterministic (derandomize), so a failure reproduces.
MAX_EXAMPLES = 50
FUZZ_DELEGATE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def _start_fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A server of its own, with a relayer granted one key per curve: the fuzzer creates, disables and
    revokes things freely. The caller stops ``["server"]``."""
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
                ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"],
            )
        # Blind signing and 7702 delegations are denied unless a policy unlocks them.
        attach_policy(server, unlock_policy("fuzz-unlock", [FUZZ_DELEGATE]), scope="default")
    except BaseException:
        server.stop()
        raise
    return {
        "server": server,
        "admin": installation.admin_token,
        "service": service["credentials"]["access_token"],
        "key_ids": [key["id"] for key in keys],
    }


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    target = _start_fuzz_server(tmp_path_factory)
    try:
        yield target
    finally:
        target["server"].stop()


def _schema_of(server: Server) -> Any:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    schema.config.update(base_url=server.url)
    # The bearer token is the test's to send (service or admin, per operation), never generated: a
    # "negative" case that drops it would be sent with it all the same. The ignored_auth check still
    # sends each operation without it and expects 401.
    schema.config.generation.update(allow_x00=False, with_security_parameters=False)
    # A body too large to be valid (e.g. a message past its maxLength) is refused by the size limit
    # before it is parsed: 413 is a correct refusal of negative data, not an acceptance.
    rejection = schema.config.checks.negative_data_rejection
    schema.config.checks.negative_data_rejection = type(rejection)(
        expected_statuses=[*rejection.expected_statuses, "413"]
    )
    return schema


@pytest.fixture(scope="module")
def api_schema(fuzz_server: dict[str, Any]) -> Any:
    return _schema_of(fuzz_server["server"])


# Every check schemathesis has, so a new one joins by upgrading, not by editing this list: besides
# conformance, "schema-valid request rejected" (positive_data_acceptance) and "schema-violating request
# accepted" (negative_data_rejection) hold the document and the validators to each other.
st_checks.load_all_checks()


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _declared_refusal(case: Any, response: Any) -> bool:
    """A refusal the document declares for a schema-valid request (``contract.SEMANTIC_REFUSALS``), or a
    whole number written as 1.0 (``contract.INTEGER_NOTE``; JSON Schema counts it as an integer), or
    422 ``unsupported_operation`` from an operation that declares it: a key the stateful run created
    (any curve) named in a body for an operation its curve cannot do, which no request schema can
    foresee (the stateless run picks usable keys, ``_real_key``)."""
    if response.status_code == 422 and "422" in case.operation.definition.raw.get("responses", {}):
        try:
            return bool(response.json().get("code") == "unsupported_operation")
        except ValueError:
            return False
    if response.status_code != 400:
        return False
    try:
        problem = response.json()
    except ValueError:
        return False
    code, field = problem.get("code"), problem.get("field") or ""
    if _has_float(case.body) and code in ("invalid_field", "invalid_policy"):
        return True
    return any(
        case.operation.definition.raw.get("operationId") in refusal.operations
        and code in refusal.codes
        and (refusal.field is None or re.fullmatch(refusal.field, field) is not None)
        for refusal in SEMANTIC_REFUSALS
    )


def positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's "schema-valid request rejected", less the refusals the document declares."""
    if _declared_refusal(case, response):
        return None
    return st_checks.positive_data_acceptance(ctx, response, case)


CHECKS = [
    positive_data_acceptance if check is st_checks.positive_data_acceptance else check
    for check in st_checks.CHECKS.get_all()
]


# The fuzz server's keys are secp256k1, p256 and ed25519, in that order; which can do what.
_CURVES_FOR = {
    "sign_transaction": ("secp256k1",),
    "sign_typed_data": ("secp256k1",),
    "sign_digest": ("secp256k1", "p256"),
    "sign_authorization": ("secp256k1",),
}
_KEY_CURVES = ("secp256k1", "p256", "ed25519")
_LEAVES_ACTIVE = ("/disable", "/suspend", "/deactivate", "/compromise", "/destroy")


def _real_key(case: Any, operation_id: str, key_ids: list[str]) -> None:
    """Swap about half the generated key ids for real ones (chosen deterministically from the generated
    value), so key and sign operations get past "no such key" too: only keys whose curve can do the
    operation (another answers 422 unsupported_operation, which no request schema can foresee). Never for
    a transition that takes a key out of active: the keys must stay usable for signing."""
    value = (case.path_parameters or {}).get("key_id")
    if isinstance(value, str) and not case.path.endswith(_LEAVES_ACTIVE):
        curves = _CURVES_FOR.get(operation_id, _KEY_CURVES)
        usable = [key for key, curve in zip(key_ids, _KEY_CURVES, strict=True) if curve in curves]
        pick = zlib.crc32(value.encode()) % (2 * len(usable))
        if pick < len(usable):
            case.path_parameters = {**case.path_parameters, "key_id": usable[pick]}


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
            _real_key(case, operation_id, fuzz_server["key_ids"])
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30)

    run()


# Operations whose success depends on a name no earlier request took (see Stateful.before_call).
_UNIQUE_NAME_FIELDS = {
    ("POST", "/v1/principals"): "name",
    ("POST", "/v1/keys"): "label",
    ("POST", "/v1/policies"): "id",
}
_unique_counter = [0]


def test_schemathesis_stateful(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Follow the document's links (create a key, then show, disable and enable it; create a principal,
    then issue and revoke its tokens; create and revoke a grant) with the same checks on every step.

    On a server of its own, untouched by the stateless fuzzing. The server keeps every example's rows, so
    a scenario Hypothesis replays can meet a state the first run did not leave, and Hypothesis then stops
    with FlakyStrategyDefinition (its generation, not the service, behaved differently). That one error
    gets one more run on a new server; a second one fails, and so does every check failure, at once."""
    for attempt in (1, 2):
        target = _start_fuzz_server(tmp_path_factory)
        try:
            _run_state_machine(_schema_of(target["server"]), target["admin"])
            return
        except hypothesis.errors.FlakyStrategyDefinition:
            if attempt == 2:
                raise
        finally:
            target["server"].stop()


def _run_state_machine(api_schema: Any, admin: str) -> None:
    machine = api_schema.as_state_machine()

    class Stateful(machine):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            # Hypothesis replays a scenario's opening steps in later examples, but the server keeps the
            # earlier examples' rows: a name that was free the first time is taken the second, the
            # response (201, then 409) differs, and so do the bundles it fills, which Hypothesis reports
            # as FlakyStrategyDefinition. A fixed-length unique suffix makes a unique-name operation's
            # answer depend on what was generated only, never on what earlier examples created. A name
            # the schema refuses stays refused with the suffix (too long stays too long, a bad character
            # stays); the empty name is left alone (the suffix would make it valid). The suffix is decimal
            # digits, which belong to no script: hex letters are Latin, and a Greek name with a Latin
            # suffix is refused as mixed-script only when the counter happens to hold a letter.
            body = case.body
            field = _UNIQUE_NAME_FIELDS.get((case.method.upper(), case.path))
            name = body.get(field) if field is not None and isinstance(body, dict) else None
            if isinstance(name, str) and name:
                _unique_counter[0] += 1
                body[field] = f"{body[field]}-{_unique_counter[0]:06d}"
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
    # A scope of its own: on the shared server another test may guard a key in "default" with a
    # key_lifecycle rule on grants, which a scope grant there must not go around.
    expect(
        out.Grant,
        "POST",
        "/v1/grants",
        {"group": "contract-group", "scope": "contract-only", "operations": ["sign_message"], "max_uses": 5},
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
    doomed = expect(
        out.Key, "POST", "/v1/keys", {"curve": "p256", "label": "contract-doomed", "inactive": True}
    )
    for action, body in (
        ("activate", {"reason": "ready"}),
        ("suspend", {}),
        ("deactivate", {}),
        ("compromise", {"confirm": "contract-doomed", "compromised_at": "2026-01-01T00:00:00Z"}),
        ("destroy", {"confirm": "contract-doomed"}),
    ):
        expect(out.Key, "POST", f"/v1/keys/{doomed['id']}/{action}", body)
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
    # Secrets: the admin may create under a folder it holds `create` on; the service reads one value.
    admin_id = server.installation.admin["principal"]["id"]
    folder = f"contract-{principal_id.lower().replace('_', '-')}"
    expect(
        out.Grant,
        "POST",
        "/v1/grants",
        {
            "principal_id": admin_id,
            "scope": folder,
            "operations": ["create", "update", "delete", "read_metadata", "list"],
        },
    )
    secret = expect(
        out.Secret,
        "POST",
        "/v1/secrets",
        {"folder": folder, "name": "stripe", "owner_group": "contract-group", "fields": {"KEY": "v1"}},
    )
    expect(
        out.Secret,
        "POST",
        "/v1/secrets",
        {"folder": folder, "name": "db", "owner_principal": principal_id, "generate": {"kind": "uuid"}},
    )
    expect(
        out.Grant,
        "POST",
        "/v1/grants",
        {"principal_id": principal_id, "secret_id": secret["id"], "operations": ["read_value"]},
    )
    expect(out.SecretValue, "POST", f"/v1/secrets/{secret['id']}/fetch", {"workload": "contract"}, service)
    expect(
        out.Secret, "POST", f"/v1/secrets/{secret['id']}/versions", {"generate": {"kind": "hex", "bytes": 16}}
    )
    expect(out.Secret, "PATCH", f"/v1/secrets/{secret['id']}", {"description": "d", "tags": ["t"]})
    expect(out.Secret, "GET", f"/v1/secrets/{secret['id']}")
    expect(out.SecretList, "GET", f"/v1/secrets?folder={folder}")
    expect(out.SecretDeleted, "DELETE", f"/v1/secrets/{secret['id']}")
    expect(out.GrantRevoked, "DELETE", f"/v1/grants/{grants[0]['id']}")
    expect(out.Principal, "POST", f"/v1/principals/{principal_id}/state", {"disabled": True})
    expect(out.Health, "GET", "/healthz", token=None)
    expect(out.Readiness, "GET", "/readyz", token=None)


def _matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template))
    return re.fullmatch(pattern, path.split("?", 1)[0]) is not None
