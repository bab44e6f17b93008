"""Policy through the running server: every rule allows what it should and refuses what it should, with
its reason in the 403; groups and scope grants; limits exact under concurrency (L-03); idempotency
(L-05); dry run and shadow mode; admin-only endpoints (A-11); no existence oracle (A-03); canonical
values and token amounts (I-11, A-10). Every signature that comes back is checked with eth-account.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from eth_account import Account

from tests.service_harness import Server, attach_policy, grant, http, make_service, put_policy

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
B = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
TOKEN = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
ALL_OPS = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw"]


def transfer_data(recipient: str, amount: int) -> str:
    return "0xa9059cbb" + recipient[2:].lower().rjust(64, "0") + format(amount, "064x")


def tx(nonce: int = 0, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": 2,
        "chainId": 1,
        "nonce": nonce,
        "gas": 21000,
        "to": A,
        "value": 10**15,
        "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    fields.update(overrides)
    return fields


class Setup:
    def __init__(self, server: Server, name: str, scope: str = "default") -> None:
        self.server = server
        service = make_service(server, name)
        self.principal_id = service["principal"]["id"]
        self.token = service["credentials"]["access_token"]
        status, _, self.key = server.call(
            "POST", "/v1/keys", {"curve": "secp256k1", "label": name[:60], "scope": scope}, self.admin
        )
        assert status == 201, self.key
        self.name = name

    @property
    def admin(self) -> str:
        return self.server.installation.admin_token

    def policy(self, rules: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
        where = where or {"key_id": self.key["id"]}
        return attach_policy(self.server, {"id": f"p-{self.name[:50]}", "rules": rules}, **where)

    def sign(self, fields: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
        return self.server.call(
            "POST",
            f"/v1/keys/{self.key['id']}/sign/transaction",
            {"transaction": fields},
            self.token,
            headers=headers,
        )

    def check(self, body: dict[str, Any], fields: dict[str, Any]) -> None:
        raw = bytes.fromhex(body["raw_transaction"][2:])
        assert Account.recover_transaction(raw) == self.key["address"]
        decoded = Account.recover_transaction(raw)
        assert decoded == body["signer"]
        assert int(fields["nonce"]) >= 0


@pytest.fixture
def setup(server: Server, unique_name: str) -> Setup:
    s = Setup(server, unique_name)
    grant(server, s.principal_id, s.key["id"], ALL_OPS)
    return s


def _other_minute() -> tuple[str, str]:
    hour = datetime.now(UTC).hour
    return ("23:00", "23:01") if hour < 12 else ("01:00", "01:01")


# (rule, a transaction it allows, a transaction it refuses, the refusal's code)
RULES = [
    (
        {"kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]},
        {},
        {"chainId": 5},
        "chain_not_allowed",
    ),
    (
        {"kind": "recipient_allowlist", "effect": "deny", "addresses": [A]},
        {},
        {"to": B},
        "recipient_not_allowed",
    ),
    ({"kind": "recipient_denylist", "effect": "deny", "addresses": [B]}, {}, {"to": B}, "recipient_denied"),
    (
        {"kind": "value_cap", "effect": "deny", "max_value": str(10**15)},
        {},
        {"value": 10**15 + 1},
        "value_cap_exceeded",
    ),
    (
        {"kind": "gas_cost_cap", "effect": "deny", "max_value": str(21000 * 3 * 10**9)},
        {},
        {"maxFeePerGas": 4 * 10**9},
        None,
    ),
    (
        {"kind": "selector_allowlist", "effect": "deny", "selectors": ["0xa9059cbb"]},
        {"to": TOKEN, "value": 0, "gas": 60000, "data": transfer_data(B, 5)},
        {"to": TOKEN, "value": 0, "gas": 60000, "data": "0x095ea7b3" + "00" * 64},
        "selector_not_allowed",
    ),
    (
        {
            "kind": "time_window",
            "effect": "deny",
            "windows": [
                {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"}
            ],
        },
        {},
        None,
        None,
    ),
]


@pytest.mark.parametrize("rule,allowed,refused,code", RULES, ids=[r[0]["kind"] for r in RULES])
def test_each_rule_allows_and_refuses_with_its_reason(setup: Setup, rule, allowed, refused, code) -> None:
    setup.policy([{"id": "the-rule", **rule}])
    fields = tx(0, **allowed)
    status, _, body = setup.sign(fields)
    assert status == 200, body
    setup.check(body, fields)
    if refused is None:
        return
    status, _, body = setup.sign(tx(1, **refused))
    assert status == 403, body
    assert body["code"] == "policy_denied"
    assert [r["rule_id"] for r in body["reasons"]] == ["the-rule"]
    if code is not None:
        assert body["reasons"][0]["code"] == code
    assert body["decision"]["policies"][0]["digest"]


def test_time_window_refuses_outside_its_hours(setup: Setup) -> None:
    start, end = _other_minute()
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    setup.policy(
        [
            {
                "id": "office",
                "kind": "time_window",
                "effect": "deny",
                "windows": [{"days": days, "start": start, "end": end}],
            }
        ]
    )
    status, _, body = setup.sign(tx())
    assert status == 403 and body["reasons"][0]["code"] == "outside_time_window", body


def test_spend_limit_counts_native_value_and_the_next_request_over_it_is_refused(setup: Setup) -> None:
    setup.policy(
        [
            {
                "id": "daily",
                "kind": "spend_limit",
                "effect": "deny",
                "max_value": str(2 * 10**15),
                "window_seconds": 86400,
                "per": "key",
            }
        ]
    )
    assert setup.sign(tx(0))[0] == 200
    assert setup.sign(tx(1))[0] == 200
    status, _, body = setup.sign(tx(2))
    assert status == 403 and body["reasons"][0]["code"] == "spend_limit_exceeded", body
    # Zero value is still fine: the limit is on value, not on requests.
    assert setup.sign(tx(3, value=0))[0] == 200


def test_token_transfers_count_against_a_token_spend_limit(setup: Setup) -> None:
    setup.policy(
        [
            {
                "id": "usdc",
                "kind": "spend_limit",
                "effect": "deny",
                "max_value": "100",
                "asset": TOKEN,
                "window_seconds": 3600,
                "per": "principal",
            }
        ]
    )
    base = {"to": TOKEN, "value": 0, "gas": 60000}
    assert setup.sign(tx(0, data=transfer_data(B, 60), **base))[0] == 200
    status, _, body = setup.sign(tx(1, data=transfer_data(A, 41), **base))
    assert status == 403 and body["reasons"][0]["code"] == "spend_limit_exceeded", body
    assert setup.sign(tx(2, data=transfer_data(A, 40), **base))[0] == 200


def test_rate_limit_answers_429_with_retry_after(setup: Setup) -> None:
    setup.policy(
        [
            {
                "id": "slow",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 2,
                "window_seconds": 3600,
                "per": "principal",
            }
        ]
    )
    assert setup.sign(tx(0))[0] == 200
    assert setup.sign(tx(1))[0] == 200
    status, headers, body = setup.sign(tx(2))
    assert status == 429 and body["code"] == "rate_limited", body
    assert headers.get("Retry-After") == "1"
    # Denied requests are not counted: still refused, not worse.
    assert setup.sign(tx(3))[0] == 429


def test_require_approval_waits_for_approvers(setup: Setup) -> None:
    setup.policy(
        [
            {
                "id": "big",
                "kind": "value_cap",
                "effect": "require_approval",
                "max_value": "10",
                "approval": {"quorum": 2, "group": "treasury", "expires_in_seconds": 3600},
            }
        ]
    )
    # Nothing is signed: the request waits for its approvers (tests/approvals/ follows it through).
    status, _, body = setup.sign(tx())
    assert status == 202 and body["state"] == "pending_approval", body
    assert body["requirements"][0]["quorum"] == 2 and "raw_transaction" not in body


def test_spend_limit_race_lets_exactly_the_cap_through(setup: Setup) -> None:
    """L-03: 50 parallel requests of 1 unit against a cap of 17: exactly 17 succeed."""
    setup.policy(
        [
            {
                "id": "cap",
                "kind": "spend_limit",
                "effect": "deny",
                "max_value": "17",
                "window_seconds": 86400,
                "per": "key",
            }
        ]
    )
    url = f"{setup.server.url}/v1/keys/{setup.key['id']}/sign/transaction"

    def one(nonce: int) -> tuple[int, Any]:
        status, _, body = http("POST", url, {"transaction": tx(nonce, value=1)}, setup.token)
        return status, body

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(50)))
    assert Counter(s for s, _ in results) == {200: 17, 403: 33}
    for status, body in results:
        if status == 200:
            assert (
                Account.recover_transaction(bytes.fromhex(body["raw_transaction"][2:]))
                == setup.key["address"]
            )
        else:
            assert body["reasons"][0]["code"] == "spend_limit_exceeded"


def test_idempotency_key_executes_once(setup: Setup) -> None:
    """L-05: 20 parallel identical requests with one key give one execution and identical answers; the
    same key with another body is refused; a new key is judged (and counted) again."""
    setup.policy(
        [
            {
                "id": "two",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 2,
                "window_seconds": 3600,
                "per": "key",
            }
        ]
    )
    url = f"{setup.server.url}/v1/keys/{setup.key['id']}/sign/transaction"
    headers = {"Idempotency-Key": "order-42"}

    def one(_: int) -> tuple[int, Any]:
        status, _, body = http("POST", url, {"transaction": tx(7)}, setup.token, headers=headers)
        return status, body

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(20)))
    assert {s for s, _ in results} == {200}
    assert len({r["raw_transaction"] for _, r in results}) == 1
    setup.check(results[0][1], tx(7))
    status, _, body = setup.sign(tx(8), headers=headers)
    assert status == 422 and body["code"] == "idempotency_key_reused", body
    # One execution counted: one more request fits under the rate limit of 2, then no more.
    assert setup.sign(tx(8), headers={"Idempotency-Key": "order-43"})[0] == 200
    assert setup.sign(tx(9), headers={"Idempotency-Key": "order-44"})[0] == 429
    status, _, body = setup.sign(tx(7), headers={"Idempotency-Key": "bad key with spaces"})
    assert status == 400 and body["code"] == "invalid_idempotency_key"


def test_dry_run_judges_without_signing_or_counting(setup: Setup) -> None:
    setup.policy(
        [
            {
                "id": "one",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 1,
                "window_seconds": 3600,
                "per": "key",
            }
        ]
    )
    for _ in range(3):
        status, _, body = setup.server.call(
            "POST",
            "/v1/policy/dry-run",
            {"key_id": setup.key["id"], "operation": "sign_transaction", "transaction": tx()},
            setup.token,
        )
        assert status == 200, body
        assert body["effect"] == "allow" and body["reservations"], body
    assert setup.sign(tx())[0] == 200
    status, _, body = setup.server.call(
        "POST",
        "/v1/policy/dry-run",
        {"key_id": setup.key["id"], "operation": "sign_transaction", "transaction": tx(1)},
        setup.token,
    )
    assert status == 200 and body["effect"] == "deny" and body["reasons"][0]["code"] == "rate_limit_exceeded"


def test_dry_run_with_a_candidate_version(setup: Setup) -> None:
    setup.policy([{"id": "chains", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]}])
    candidate = put_policy(
        setup.server,
        {
            "id": f"cand-{setup.name[:40]}",
            "rules": [{"id": "no-a", "kind": "recipient_denylist", "effect": "deny", "addresses": [A]}],
        },
    )
    status, _, body = setup.server.call(
        "POST",
        "/v1/policy/dry-run",
        {
            "key_id": setup.key["id"],
            "operation": "sign_transaction",
            "principal_id": setup.principal_id,
            "transaction": tx(),
            "candidate": {"policy_id": candidate["policy_id"], "version": 1, "key_id": setup.key["id"]},
        },
        setup.admin,
    )
    assert status == 200, body
    assert body["effect"] == "deny" and body["reasons"][0]["code"] == "recipient_denied"
    assert setup.sign(tx())[0] == 200  # the candidate is not live


def test_shadow_policy_is_recorded_and_never_decides(setup: Setup) -> None:
    shadow = setup.policy(
        [{"id": "strict", "kind": "value_cap", "effect": "deny", "max_value": "1"}],
        key_id=setup.key["id"],
        mode="shadow",
    )
    for nonce in range(3):
        assert setup.sign(tx(nonce))[0] == 200
    status, _, report = setup.server.call(
        "GET", f"/v1/policy-attachments/{shadow['id']}/shadow-report", token=setup.admin
    )
    assert status == 200, report
    assert report["evaluated"] == 3 and report["differing"] == 3
    assert report["by_effect"] == [{"live": "allow", "candidate": "deny", "count": 3}]
    assert report["recent_differences"][0]["candidate_decision"]["reasons"][0]["code"] == "value_cap_exceeded"


def test_group_and_scope_grants_and_revocation_on_the_next_request(server: Server, unique_name: str) -> None:
    scope = f"acme/{unique_name[:30]}/prod"
    s = Setup(server, unique_name, scope=scope)
    group = f"relayers-{unique_name[:40]}"
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {"group": group, "scope": scope.rsplit("/", 1)[0], "operations": ["sign_transaction"]},
        s.admin,
    )
    assert status == 201, body
    status, _, body = s.sign(tx())
    assert status == 404 and body["code"] == "key_not_found"  # not a member yet: no existence oracle
    assert server.call("PUT", f"/v1/groups/{group}/members/{s.principal_id}", token=s.admin)[0] == 200
    status, _, body = s.sign(tx())
    assert status == 200, body
    s.check(body, tx())
    assert server.call("DELETE", f"/v1/groups/{group}/members/{s.principal_id}", token=s.admin)[0] == 200
    assert s.sign(tx(1))[0] == 404


def test_grant_use_count_and_value_budget(server: Server, unique_name: str) -> None:
    s = Setup(server, unique_name)
    status, _, body = server.call(
        "POST",
        "/v1/grants",
        {
            "principal_id": s.principal_id,
            "key_id": s.key["id"],
            "operations": ["sign_transaction"],
            "max_uses": 3,
            "value_budgets": {"native": str(2 * 10**15)},
        },
        s.admin,
    )
    assert status == 201, body
    assert s.sign(tx(0))[0] == 200
    assert s.sign(tx(1))[0] == 200
    status, _, body = s.sign(tx(2))
    assert status == 403 and body["reasons"][0]["code"] == "grant_budget_exceeded", body
    assert s.sign(tx(3, value=0))[0] == 200
    status, _, body = s.sign(tx(4, value=0))
    assert status == 403 and body["reasons"][0]["code"] == "grant_uses_exhausted", body


def test_values_are_canonical_before_policy(setup: Setup) -> None:
    """I-11: the same value as an integer, a decimal string or hex is one amount to the cap."""
    setup.policy([{"id": "cap", "kind": "value_cap", "effect": "deny", "max_value": "255"}])
    for nonce, value in enumerate([255, "255", "0xff"]):
        status, _, body = setup.sign(tx(nonce, value=value))
        assert status == 200, (value, body)
    for nonce, value in enumerate([256, "256", "0x100"], start=3):
        status, _, body = setup.sign(tx(nonce, value=value))
        assert status == 403 and body["reasons"][0]["code"] == "value_cap_exceeded", (value, body)


def test_service_principals_cannot_administer(setup: Setup) -> None:
    """A-11: a sign-only principal gets 403 from every admin endpoint."""
    calls = [
        ("POST", "/v1/policies", {"id": "x", "version": 1, "rules": []}),
        ("POST", "/v1/policies/x/attachments", {"version": 1, "key_id": setup.key["id"]}),
        ("GET", "/v1/policies", None),
        ("GET", "/v1/policy-attachments", None),
        ("PUT", f"/v1/groups/g/members/{setup.principal_id}", None),
        ("GET", "/v1/groups", None),
        (
            "POST",
            "/v1/grants",
            {"principal_id": setup.principal_id, "key_id": setup.key["id"], "operations": ["sign_raw"]},
        ),
        ("POST", "/v1/keys", {"curve": "secp256k1", "label": "x"}),
    ]
    for method, path, body in calls:
        status, _, answer = setup.server.call(method, path, body, setup.token)
        assert status == 403 and answer["code"] == "role_required", (method, path, answer)


def test_no_existence_oracle_across_principals(server: Server, unique_name: str) -> None:
    """A-03: B naming A's key gets exactly what naming a missing key gives."""
    a = Setup(server, unique_name + "-a")
    grant(server, a.principal_id, a.key["id"], ALL_OPS)
    b = Setup(server, unique_name + "-b")
    other = server.call("POST", f"/v1/keys/{a.key['id']}/sign/transaction", {"transaction": tx()}, b.token)
    missing = server.call(
        "POST", "/v1/keys/key_doesnotexist/sign/transaction", {"transaction": tx()}, b.token
    )
    assert other[0] == missing[0] == 404
    assert other[2]["code"] == missing[2]["code"] == "key_not_found"


def test_policy_documents_are_versioned_strict_and_yaml_capable(server: Server, unique_name: str) -> None:
    admin = server.installation.admin_token
    pid = f"doc-{unique_name[:40]}"
    doc = {
        "id": pid,
        "version": 1,
        "rules": [{"id": "r", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1]}],
    }
    status, _, first = server.call("POST", "/v1/policies", doc, admin)
    assert status == 201 and first["digest"], first
    status, _, body = server.call("POST", "/v1/policies", doc, admin)
    assert status == 409 and body["code"] == "policy_version_conflict"
    status, _, body = server.call("POST", "/v1/policies", {**doc, "version": 2, "extra": 1}, admin)
    assert status == 400 and body["code"] == "invalid_policy"
    status, _, body = server.call(
        "POST",
        "/v1/policies",
        {
            **doc,
            "version": 2,
            "rules": [{"id": "r", "kind": "chain_allowlist", "effect": "deny", "chain_ids": [1], "typo": 1}],
        },
        admin,
    )
    # Reported by where it is and what is allowed there, never by the name it was sent under.
    assert status == 400 and body["code"] == "invalid_policy" and body["field"] == "rules[0]", body
    assert "typo" not in body["detail"] and "chain_ids" in body["detail"], body
    yaml_doc = (
        f"id: {pid}\nversion: 2\nrules:\n"
        "  - id: r\n    kind: chain_allowlist\n    effect: deny\n    chain_ids: [1]\n"
    )
    status, _, second = server.call(
        "POST",
        "/v1/policies",
        raw=yaml_doc.encode(),
        token=admin,
        headers={"Content-Type": "application/yaml"},
    )
    assert status == 201, second
    assert second["version"] == 2 and second["digest"] != first["digest"]
    status, _, body = server.call(
        "POST",
        "/v1/policies",
        raw=b"id: a\nid: b\n",
        token=admin,
        headers={"Content-Type": "application/yaml"},
    )
    assert status == 400 and body["code"] == "malformed_yaml"
    status, _, body = server.call("GET", f"/v1/policies/{pid}", token=admin)
    assert [v["version"] for v in body["versions"]] == [1, 2]


def test_per_principal_limit_holds_across_keys(server: Server, unique_name: str) -> None:
    """A-10: spreading spend across several keys of one principal does not escape a per-principal
    limit attached at their common scope."""
    scope = f"evasion/{unique_name[:40]}"
    first = Setup(server, unique_name, scope=scope)
    status, _, second_key = server.call(
        "POST", "/v1/keys", {"curve": "secp256k1", "label": "second", "scope": scope}, first.admin
    )
    assert status == 201, second_key
    grant_body = {"principal_id": first.principal_id, "scope": scope, "operations": ["sign_transaction"]}
    assert server.call("POST", "/v1/grants", grant_body, first.admin)[0] == 201
    limit = {
        "kind": "spend_limit",
        "effect": "deny",
        "max_value": "3",
        "window_seconds": 3600,
        "per": "principal",
    }
    first.policy([{"id": "per-person", **limit}], scope=scope)
    results = []
    for nonce in range(6):
        key_id = (first.key["id"], second_key["id"])[nonce % 2]
        status, _, body = server.call(
            "POST", f"/v1/keys/{key_id}/sign/transaction", {"transaction": tx(nonce, value=1)}, first.token
        )
        results.append(status)
        if status == 403:
            assert body["reasons"][0]["rule_id"] == "per-person", body
    assert results == [200, 200, 200, 403, 403, 403]


def test_typed_data_domain_allowlist(setup: Setup) -> None:
    """I-09: EIP-712 is signed only for an allowed domain; the server computes the digest itself."""
    import copy

    from eth_account.messages import encode_typed_data

    from tests.test_api_signing import TYPED

    allowed = {
        "name": "Ether Mail",
        "chain_id": 1,
        "verifying_contract": TYPED["domain"]["verifyingContract"],
    }
    setup.policy(
        [{"id": "domains", "kind": "typed_data_domain_allowlist", "effect": "deny", "domains": [allowed]}]
    )
    path = f"/v1/keys/{setup.key['id']}/sign/typed-data"
    status, _, body = setup.server.call("POST", path, {"typed_data": TYPED}, setup.token)
    assert status == 200, body
    recovered = Account.recover_message(encode_typed_data(full_message=TYPED), signature=body["signature"])
    assert recovered == setup.key["address"]
    other = copy.deepcopy(TYPED)
    other["domain"]["chainId"] = 5
    status, _, body = setup.server.call("POST", path, {"typed_data": other}, setup.token)
    assert status == 403 and body["reasons"][0]["code"] == "typed_data_domain_not_allowed", body


def test_a_spent_rate_limit_is_refused_before_the_hsm_signs(setup: Setup) -> None:
    """L-08: a burst far over the quota gets 429s, and once the process has seen the limit spent the
    refusals come before any signature is made (the audit says which refusals discarded one)."""
    from tests.system.support import events, export_audit

    setup.policy(
        [
            {
                "id": "quota",
                "kind": "rate_limit",
                "effect": "deny",
                "max_requests": 3,
                "window_seconds": 3600,
                "per": "principal",
            }
        ]
    )
    statuses = [setup.sign(tx(n))[0] for n in range(30)]
    assert statuses[:3] == [200, 200, 200] and set(statuses[3:]) == {429}
    refused = [
        e
        for e in events(export_audit(setup.server))
        if e.get("kind") == "sign.transaction"
        and e.get("outcome") == "denied"
        and e["actor"]["principal_id"] == setup.principal_id
    ]
    assert len(refused) == 27
    discarded = sum(1 for e in refused if e.get("signature_discarded"))
    assert discarded <= 2, discarded  # at most the requests decided before the cache saw the spend
