"""Each rule kind, table-driven: what it lets through, what fires it, and the reason it gives."""

from __future__ import annotations

import pytest

from policy import Delegation, Effect, TypedDataDomain, evaluate
from tests.policy.support import (
    ALICE,
    BOB,
    DELEGATE,
    ETHER,
    NOW,
    TOKEN,
    full_facts,
    policy_set,
    request,
    rule,
    token_tx,
    tx,
)

OTHER = "0x" + "0f" * 20
MIXED_CASE_BOB = "0x" + "B0" * 20
DOMAIN = TypedDataDomain(name="Permit2", version="1", chain_id=1, verifying_contract=ALICE)

CHAINS = rule("chains", "chain_allowlist", chain_ids=[1, 10])
ALLOW_BOB = rule("to", "recipient_allowlist", addresses=[MIXED_CASE_BOB])
DENY_BOB = rule("blocked", "recipient_denylist", addresses=[MIXED_CASE_BOB])
CAP = rule("cap", "value_cap", max_value=str(ETHER))
TOKEN_CAP = rule("token-cap", "value_cap", max_value="500", asset=TOKEN)
GAS = rule("gas", "gas_cost_cap", max_value=str(21_000 * 10**9))
SELECTORS = rule("calls", "selector_allowlist", selectors=["0xa9059cbb"])
SELECTORS_STRICT = rule("calls", "selector_allowlist", selectors=["0xa9059cbb"], allow_empty_calldata=False)
DOMAINS = rule("domains", "typed_data_domain_allowlist", domains=[{"name": "Permit2", "chain_id": 1}])
HOURS = rule("hours", "time_window", windows=[{"days": ["wed"], "start": "10:00", "end": "11:00"}])
NIGHT = rule("night", "time_window", windows=[{"days": ["wed"], "start": "22:00", "end": "24:00"}])
RAW = rule("raw", "raw_digest", "allow")
RAW_APPROVAL = rule("raw", "raw_digest", "require_approval")
DELEGATES = rule("delegates", "delegate_allowlist", "allow", delegates=[DELEGATE])


def _tx_request(**fields):
    return request(transaction=tx(**fields))


CASES = [
    # chain ids: mismatch is rejected, never rewritten; 7702 "any chain" (0) needs 0 listed
    ("chain ok", [CHAINS], _tx_request(chain_id=10), Effect.ALLOW, ["granted"]),
    ("chain not listed", [CHAINS], _tx_request(chain_id=5), Effect.DENY, ["chain_not_allowed"]),
    (
        "typed data chain",
        [CHAINS],
        request("sign_typed_data", domain=TypedDataDomain(chain_id=137)),
        Effect.DENY,
        ["chain_not_allowed"],
    ),
    (
        "typed data without chain",
        [CHAINS],
        request("sign_typed_data", domain=TypedDataDomain(name="x")),
        Effect.DENY,
        ["chain_not_allowed"],
    ),
    ("message has no chain", [CHAINS], request("sign_message"), Effect.ALLOW, ["granted"]),
    (
        "authorisation for any chain",
        [CHAINS, DELEGATES],
        _tx_request(delegations=(Delegation(0, DELEGATE),)),
        Effect.DENY,
        ["chain_not_allowed"],
    ),
    # recipients: checksum-insensitive; token calls are judged by the token recipient
    ("recipient listed, other case", [ALLOW_BOB], _tx_request(to=BOB), Effect.ALLOW, ["granted"]),
    ("recipient not listed", [ALLOW_BOB], _tx_request(to=OTHER), Effect.DENY, ["recipient_not_allowed"]),
    ("token recipient listed", [ALLOW_BOB], request(transaction=token_tx(5, BOB)), Effect.ALLOW, ["granted"]),
    (
        "token recipient not listed",
        [ALLOW_BOB],
        request(transaction=token_tx(5, OTHER)),
        Effect.DENY,
        ["recipient_not_allowed"],
    ),
    (
        "approve spender not listed",
        [ALLOW_BOB],
        request(transaction=token_tx(5, OTHER, "approve")),
        Effect.DENY,
        ["recipient_not_allowed"],
    ),
    (
        "contract creation",
        [ALLOW_BOB],
        _tx_request(to=None, data_length=10),
        Effect.DENY,
        ["recipient_not_allowed"],
    ),
    (
        "denied recipient",
        [DENY_BOB],
        _tx_request(to=BOB.upper().replace("0X", "0x")),
        Effect.DENY,
        ["recipient_denied"],
    ),
    (
        "denied token recipient",
        [DENY_BOB],
        request(transaction=token_tx(5, BOB)),
        Effect.DENY,
        ["recipient_denied"],
    ),
    (
        "denied verifying contract",
        [rule("blocked", "recipient_denylist", addresses=[ALICE])],
        request("sign_typed_data", domain=DOMAIN),
        Effect.DENY,
        ["recipient_denied"],
    ),
    ("denylist passes others", [DENY_BOB], _tx_request(to=OTHER), Effect.ALLOW, ["granted"]),
    # value caps: the cap itself is allowed
    ("value at cap", [CAP], _tx_request(value=ETHER), Effect.ALLOW, ["granted"]),
    ("value over cap", [CAP], _tx_request(value=ETHER + 1), Effect.DENY, ["value_cap_exceeded"]),
    ("token at cap", [TOKEN_CAP], request(transaction=token_tx(500)), Effect.ALLOW, ["granted"]),
    ("token over cap", [TOKEN_CAP], request(transaction=token_tx(501)), Effect.DENY, ["value_cap_exceeded"]),
    (
        "approve counts",
        [TOKEN_CAP],
        request(transaction=token_tx(501, method="approve")),
        Effect.DENY,
        ["value_cap_exceeded"],
    ),
    (
        "transferFrom counts",
        [TOKEN_CAP],
        request(transaction=token_tx(501, method="transferFrom")),
        Effect.DENY,
        ["value_cap_exceeded"],
    ),
    ("native cap ignores tokens", [CAP], request(transaction=token_tx(10**30)), Effect.ALLOW, ["granted"]),
    # gas cost = gas x fee cap
    ("gas cost at cap", [GAS], _tx_request(gas=21_000, fee_cap=10**9), Effect.ALLOW, ["granted"]),
    (
        "gas cost over cap",
        [GAS],
        _tx_request(gas=21_001, fee_cap=10**9),
        Effect.DENY,
        ["gas_cost_cap_exceeded"],
    ),
    # selectors
    ("listed selector", [SELECTORS], request(transaction=token_tx(1)), Effect.ALLOW, ["granted"]),
    (
        "unknown calldata",
        [SELECTORS],
        _tx_request(data_length=36, selector="0x12345678"),
        Effect.DENY,
        ["selector_not_allowed"],
    ),
    ("short calldata", [SELECTORS], _tx_request(data_length=3), Effect.DENY, ["selector_not_allowed"]),
    ("plain transfer", [SELECTORS], _tx_request(), Effect.ALLOW, ["granted"]),
    ("plain transfer refused", [SELECTORS_STRICT], _tx_request(), Effect.DENY, ["selector_not_allowed"]),
    (
        "creation refused",
        [SELECTORS],
        _tx_request(to=None, data_length=36, selector="0xa9059cbb"),
        Effect.DENY,
        ["selector_not_allowed"],
    ),
    # EIP-712 domains
    ("domain matches", [DOMAINS], request("sign_typed_data", domain=DOMAIN), Effect.ALLOW, ["granted"]),
    (
        "domain name differs",
        [DOMAINS],
        request("sign_typed_data", domain=TypedDataDomain(name="Permit3", chain_id=1)),
        Effect.DENY,
        ["typed_data_domain_not_allowed"],
    ),
    (
        "domain chain differs",
        [DOMAINS],
        request("sign_typed_data", domain=TypedDataDomain(name="Permit2", chain_id=5)),
        Effect.DENY,
        ["typed_data_domain_not_allowed"],
    ),
    (
        "domain missing a pinned field",
        [DOMAINS],
        request("sign_typed_data", domain=TypedDataDomain(name="Permit2")),
        Effect.DENY,
        ["typed_data_domain_not_allowed"],
    ),
    ("domains ignore transactions", [DOMAINS], request(), Effect.ALLOW, ["granted"]),
    # time windows (NOW is Wednesday 10:30 UTC)
    ("inside hours", [HOURS], request(), Effect.ALLOW, ["granted"]),
    ("outside hours", [NIGHT], request("sign_message"), Effect.DENY, ["outside_time_window"]),
    (
        "either window",
        [
            rule(
                "hours",
                "time_window",
                windows=[
                    {"days": ["mon"], "start": "00:00", "end": "24:00"},
                    {"days": ["wed"], "start": "10:30", "end": "10:31"},
                ],
            )
        ],
        request(),
        Effect.ALLOW,
        ["granted"],
    ),
    # raw digests: denied by default, unlocked by a rule
    ("raw denied by default", [], request("sign_raw"), Effect.DENY, ["raw_digest_not_allowed"]),
    ("raw unlocked", [RAW], request("sign_raw"), Effect.ALLOW, ["granted", "raw_digest_allowed"]),
    (
        "raw unlocked with approval",
        [RAW_APPROVAL],
        request("sign_raw"),
        Effect.REQUIRE_APPROVAL,
        ["raw_digest_allowed"],
    ),
    ("raw rule leaves messages alone", [RAW], request("sign_message"), Effect.ALLOW, ["granted"]),
    # EIP-7702: denied unless the delegate is listed
    (
        "delegation denied by default",
        [],
        _tx_request(delegations=(Delegation(1, DELEGATE),)),
        Effect.DENY,
        ["delegate_not_allowed"],
    ),
    (
        "delegation allowed",
        [DELEGATES],
        _tx_request(delegations=(Delegation(1, DELEGATE),)),
        Effect.ALLOW,
        ["granted", "delegate_allowed"],
    ),
    (
        "one unlisted delegate",
        [DELEGATES],
        _tx_request(delegations=(Delegation(1, DELEGATE), Delegation(1, OTHER))),
        Effect.DENY,
        ["delegate_not_allowed"],
    ),
    (
        "delegation with approval",
        [rule("delegates", "delegate_allowlist", "require_approval", delegates=[DELEGATE])],
        _tx_request(delegations=(Delegation(1, DELEGATE),)),
        Effect.REQUIRE_APPROVAL,
        ["delegate_allowed"],
    ),
    # guards with require_approval
    (
        "approval over cap",
        [rule("cap", "value_cap", "require_approval", max_value="10")],
        _tx_request(value=11),
        Effect.REQUIRE_APPROVAL,
        ["value_cap_exceeded"],
    ),
]


@pytest.mark.parametrize(
    ("rules", "req", "effect", "codes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_table(rules, req, effect, codes):
    policies = policy_set(*rules)
    decision = evaluate(req, policies, full_facts(req, policies), now=NOW)
    assert decision.effect is effect, decision.reasons
    assert [r.code for r in decision.reasons] == codes
    assert all(r.message for r in decision.reasons)
    for reason in decision.reasons:
        if reason.rule_id not in ("default",) and not reason.rule_id.startswith("grant"):
            assert reason.policy == "p@1"


def test_messages_name_the_values():
    policies = policy_set(CAP)
    req = _tx_request(value=2 * ETHER)
    (reason,) = evaluate(req, policies, full_facts(req, policies), now=NOW).reasons
    assert reason.message == f"{2 * ETHER} wei exceeds the per-transaction cap of {ETHER}"
    assert reason.rule_id == "cap"


def test_a_domain_refusal_does_not_repeat_the_domains_free_text() -> None:
    marked = TypedDataDomain(name="Permit2 Zq9x", version="v-Zq9x", chain_id=1, verifying_contract=None)
    req, policies = request("sign_typed_data", domain=marked), policy_set(DOMAINS)
    decision = evaluate(req, policies, full_facts(req, policies), now=NOW)
    assert decision.effect is Effect.DENY and decision.reasons[0].code == "typed_data_domain_not_allowed"
    assert "Zq9x" not in decision.reasons[0].message
