"""Issue 10, items 2 and 3, through a running server on SQLite and on PostgreSQL (real SoftHSM): a vote is
either counted (the tally moves) or refused (4xx, nothing stored, the vote not used up), whatever the
spelling of its digest; and only principals with the approver role count toward a quorum, alike over
the API, the console and signed votes. A recorded vote that stops counting stays in the view with a
stable code saying why. Every signature produced here is checked with eth-account."""

from __future__ import annotations

import html
import http.client as httpclient
import itertools
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy import NOT_COUNTED
from signer.http.schemas import NotCounted
from signer.services.approvals import approval_message
from tests.dbfixtures import private_pg_database
from tests.service_harness import Server, attach_policy, http, init_installation, start_server

RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
_nonces = itertools.count()
_names = itertools.count()


# -- one running server per backend, for the whole module ------------------------------------------


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with private_pg_database("signer_votes") as url:
        installation = init_installation(tmp_path_factory.mktemp("signer-votes-pg"), url)
        running = start_server(installation)
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue("server" if request.param == "sqlite" else "pg_server")


# -- a key under "values above 1 ETH need `quorum` of a fresh group", and its people -------------


@dataclass
class Member:
    id: str
    token: str
    token_id: str
    role: str


class Bench:
    def __init__(self, server: Server, *, quorum: int, requester_in_group: bool = False) -> None:
        self.server = server
        self.admin = server.installation.admin_token
        tag = f"{next(_names)}-{secrets.token_hex(3)}"
        self.group = f"votes-{tag}"
        self.requester = self.principal("service", f"relayer-{tag}")
        ok, key = self.call("POST", "/v1/keys", {"curve": "secp256k1", "label": "votes"})
        assert ok == 201, key
        self.key = key
        status, grant = self.call(
            "POST",
            "/v1/grants",
            {"principal_id": self.requester.id, "key_id": key["id"], "operations": ["sign_transaction"]},
        )
        assert status == 201, grant
        if requester_in_group:
            self.join(self.requester)
        rule = {
            "id": "big",
            "kind": "value_cap",
            "effect": "require_approval",
            "max_value": str(10**18),
            "approval": {"quorum": quorum, "group": self.group, "expires_in_seconds": 3600},
        }
        attach_policy(server, {"id": f"p-{tag}", "rules": [rule]}, key_id=key["id"])

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        status, _, answer = self.server.call(method, path, body, token or self.admin)
        return status, answer

    def principal(self, role: str, name: str | None = None) -> Member:
        status, made = self.call(
            "POST", "/v1/principals", {"name": name or f"{role}-{secrets.token_hex(5)}", "role": role}
        )
        assert status == 201, made
        credentials = made["credentials"]
        return Member(
            made["principal"]["id"], credentials["access_token"], credentials["access_token_id"], role
        )

    def member(self, role: str) -> Member:
        person = self.principal(role)
        self.join(person)
        return person

    def join(self, person: Member) -> None:
        status, body = self.call("PUT", f"/v1/groups/{self.group}/members/{person.id}")
        assert status in (200, 201), body

    def request(self) -> tuple[str, str]:
        fields = {
            "type": 2,
            "chainId": 1,
            "nonce": next(_nonces),
            "gas": 21000,
            "to": RECIPIENT,
            "value": 2 * 10**18,
            "maxFeePerGas": 3 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        status, body = self.call(
            "POST",
            f"/v1/keys/{self.key['id']}/sign/transaction",
            {"transaction": fields},
            self.requester.token,
        )
        assert status == 202, body
        return body["approval"]["id"], body["payload_digest"]

    def vote(
        self, who: Member, approval_id: str, digest: str, decision: str = "approve", **extra: Any
    ) -> tuple[int, Any]:
        return self.call(
            "POST", f"/v1/approvals/{approval_id}/{decision}", {"digest": digest, **extra}, who.token
        )

    def show(self, approval_id: str) -> dict[str, Any]:
        status, body = self.call("GET", f"/v1/approvals/{approval_id}")
        assert status == 200, body
        return body

    def result(self, approval_id: str) -> dict[str, Any]:
        status, body = self.call(
            "GET", f"/v1/approvals/{approval_id}/result?wait=30", token=self.requester.token
        )
        assert status == 200 and body["state"] == "signed", body
        return body["result"]


def assert_signed_by_key(bench: Bench, result: dict[str, Any]) -> None:
    """Independent check: eth-account recovers the key's address from the signed transaction."""
    assert Account.recover_transaction(bytes.fromhex(result["raw_transaction"][2:])) == bench.key["address"]


def counted_votes(shown: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["approver_id"], v["decision"]) for v in shown["votes"] if v["counted"]]


# -- item 2: every spelling of the digest is counted or refused ------------------------------------


@dataclass(frozen=True)
class Spelling:
    """How to write a digest: a prefix, which hex letters are upper case, and perhaps a change that makes
    it something other than a spelling of the same digest."""

    prefix: str
    upper: tuple[bool, ...]
    change: str | None
    at: int

    def apply(self, digest: str) -> str:
        body = "".join(c.upper() if up else c for c, up in zip(digest, self.upper, strict=True))
        i = self.at % len(body)
        if self.change == "other_digit":
            body = body[:i] + format((int(body[i], 16) + 1) % 16, "x") + body[i + 1 :]
        elif self.change == "short":
            body = body[:i] + body[i + 1 :]
        elif self.change == "long":
            body = body + "0"
        elif self.change == "not_hex":
            body = body[:i] + "g" + body[i + 1 :]
        elif self.change == "fullwidth":
            body = body[:i] + "\uff10" + body[i + 1 :]
        elif self.change == "space":
            body = " " + body
        elif self.change == "double_prefix":
            return "0x0x" + body
        return self.prefix + body

    @property
    def equivalent(self) -> bool:
        return self.change is None


spellings = st.builds(
    Spelling,
    prefix=st.sampled_from(["", "0x", "0X"]),
    upper=st.lists(st.booleans(), min_size=64, max_size=64).map(tuple),
    change=st.sampled_from(
        [None, None, None, "other_digit", "short", "long", "not_hex", "fullwidth", "space", "double_prefix"]
    ),
    at=st.integers(min_value=0, max_value=63),
)


@pytest.fixture(scope="module")
def spelling_bench(live: Server) -> Bench:
    return Bench(live, quorum=2)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spelling=spellings, decision=st.sampled_from(["approve", "reject"]))
def test_a_vote_in_any_spelling_is_counted_or_refused(
    spelling_bench: Bench, spelling: Spelling, decision: str
) -> None:
    bench = spelling_bench
    voter = bench.member("approver")
    approval_id, digest = bench.request()
    named = spelling.apply(digest)

    status, body = bench.vote(voter, approval_id, named, decision)
    shown = bench.show(approval_id)
    if 200 <= status < 300:
        # Counted: the vote is stored in the one canonical spelling and the tally moved.
        assert spelling.equivalent, (named, body)
        assert [(v["approver_id"], v["decision"], v["digest"]) for v in shown["votes"]] == [
            (voter.id, decision, digest)
        ]
        assert counted_votes(shown) == [(voter.id, decision)]
        if decision == "approve":
            assert shown["progress"] == {bench.group: 1} and shown["state"] == "pending"
        else:
            assert shown["state"] == "rejected"
        return
    # Refused: a stable code, nothing stored, nothing echoed, and the vote is not used up.
    assert 400 <= status < 500 and not spelling.equivalent, (status, body)
    assert body["code"] == ("approval_mismatch" if spelling.change == "other_digit" else "invalid_digest")
    assert named not in str(body)
    assert shown["votes"] == [] and shown["progress"] == {bench.group: 0} and shown["state"] == "pending"
    status, body = bench.vote(voter, approval_id, digest, decision)
    assert status == 200, body
    assert counted_votes(bench.show(approval_id)) == [(voter.id, decision)]


def test_a_rejection_spelled_0x_upper_case_stops_the_request(live: Server) -> None:
    """The instance the attack found: a rejection in another spelling was stored, never counted, and the
    request was signed. Now it counts, so the later approvals are refused and nothing is signed."""
    bench = Bench(live, quorum=2)
    a, b, c = (bench.member("approver") for _ in range(3))
    approval_id, digest = bench.request()
    status, body = bench.vote(a, approval_id, "0x" + digest.upper(), "reject")
    assert status == 200 and body["state"] == "rejected", body
    for person in (b, c):
        status, body = bench.vote(person, approval_id, digest)
        assert status == 409 and body["code"] == "approval_closed", body
    assert bench.show(approval_id)["state"] == "rejected"


def test_a_signed_vote_signs_the_canonical_digest(live: Server) -> None:
    """The signed message names the canonical digest whatever spelling the body used; a signature over
    another spelling does not verify, is refused, stores nothing and leaves the vote to cast."""
    bench = Bench(live, quorum=1)
    person = bench.member("approver")
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    status, body = bench.call(
        "PUT", "/v1/approvers/me/key", {"scheme": "ed25519", "public_key": public}, person.token
    )
    assert status == 200, body
    approval_id, digest = bench.request()
    spelled = "0X" + digest.upper()

    over_spelling = private.sign(f"signer-approval:v1:{approval_id}:approve:{spelled}".encode()).hex()
    status, body = bench.vote(person, approval_id, spelled, signature=over_spelling)
    assert status == 422 and body["code"] == "approval_signature_invalid", body
    assert bench.show(approval_id)["votes"] == []

    canonical = private.sign(approval_message(approval_id, "approve", digest)).hex()
    # The signature too has one stored spelling: hex with spaces in it is refused, not stored as sent.
    spaced = canonical[:64] + " " + canonical[64:]
    status, body = bench.vote(person, approval_id, spelled, signature=spaced)
    assert status == 422 and body["code"] == "approval_signature_invalid", body
    assert bench.show(approval_id)["votes"] == []
    status, body = bench.vote(person, approval_id, spelled, signature="0X" + canonical.upper())
    assert status == 200 and body["state"] in ("approved", "signed"), body
    vote = bench.show(approval_id)["votes"][0]
    assert vote["digest"] == digest and vote["counted"] is True and vote["signature"] == canonical
    private.public_key().verify(
        bytes.fromhex(vote["signature"]), approval_message(approval_id, "approve", digest)
    )
    assert_signed_by_key(bench, bench.result(approval_id))


# -- item 3: only approvers count -------------------------------------------------------------------


def test_two_service_principals_in_the_group_cannot_reach_quorum(live: Server) -> None:
    """The instance the attack found: services in an approver group approving each other's request."""
    bench = Bench(live, quorum=1, requester_in_group=True)
    other = bench.member("service")
    status, body = bench.call(
        "PUT",
        "/v1/approvers/me/key",
        {"scheme": "ed25519", "public_key": "11" * 32},
        other.token,
    )
    assert status == 403, body
    approval_id, digest = bench.request()
    status, body = bench.vote(other, approval_id, digest)
    assert status == 403 and body["code"] == "approver_role_required", body
    status, body = bench.vote(bench.requester, approval_id, digest)
    assert status == 403 and body["code"] == "self_approval", body
    # A signature changes nothing: the role is checked before it.
    status, body = bench.vote(other, approval_id, digest, signature="00" * 64)
    assert status == 403 and body["code"] == "approver_role_required", body
    # Nor does a rejection: a principal who could never count cannot stop a request either.
    status, body = bench.vote(other, approval_id, digest, "reject")
    assert status == 403 and body["code"] == "approver_role_required", body
    shown = bench.show(approval_id)
    assert shown["state"] == "pending" and shown["votes"] == [] and shown["progress"] == {bench.group: 0}


def test_an_approver_and_a_service_only_the_approver_counts(live: Server) -> None:
    bench = Bench(live, quorum=2)
    approver, service = bench.member("approver"), bench.member("service")
    approval_id, digest = bench.request()
    assert bench.vote(approver, approval_id, digest)[0] == 200
    status, body = bench.vote(service, approval_id, digest)
    assert status == 403 and body["code"] == "approver_role_required", body
    shown = bench.show(approval_id)
    assert shown["state"] == "pending" and shown["progress"] == {bench.group: 1}
    assert counted_votes(shown) == [(approver.id, "approve")]
    # A second approver completes the quorum: exactly the two approvers' votes signed it.
    second = bench.member("approver")
    status, body = bench.vote(second, approval_id, digest)
    assert status == 200, body
    assert_signed_by_key(bench, bench.result(approval_id))
    assert counted_votes(bench.show(approval_id)) == [(approver.id, "approve"), (second.id, "approve")]


def test_a_recorded_vote_that_stops_counting_says_why(live: Server) -> None:
    """Disabled, removed from the group, token revoked: each stops counting at once, is shown with its
    stable code, and counts again when the cause is undone (only disabling and group membership can be)."""
    bench = Bench(live, quorum=3)
    disabled, removed, revoked = (bench.member("approver") for _ in range(3))
    approval_id, digest = bench.request()
    for person in (disabled, removed, revoked):
        assert bench.vote(person, approval_id, digest)[0] == 200
    assert bench.show(approval_id)["state"] in ("approved", "signed")

    # A fresh request, the same three votes, then each voter loses eligibility before the last one.
    bench2 = Bench(live, quorum=4)
    people = [bench2.member("approver") for _ in range(3)]
    disabled, removed, revoked = people
    approval_id, digest = bench2.request()
    for person in people:
        assert bench2.vote(person, approval_id, digest)[0] == 200
    assert bench2.call("POST", f"/v1/principals/{disabled.id}/state", {"disabled": True})[0] == 200
    assert bench2.call("DELETE", f"/v1/groups/{bench2.group}/members/{removed.id}")[0] == 200
    assert bench2.call("DELETE", f"/v1/tokens/{revoked.token_id}")[0] == 200
    shown = bench2.show(approval_id)
    why = {v["approver_id"]: v["not_counted"] for v in shown["votes"]}
    assert why == {
        disabled.id: {"code": "principal_disabled", "reason": NOT_COUNTED["principal_disabled"]},
        removed.id: {"code": "not_in_group", "reason": NOT_COUNTED["not_in_group"]},
        revoked.id: {"code": "token_revoked", "reason": NOT_COUNTED["token_revoked"]},
    }
    assert not any(v["counted"] for v in shown["votes"]) and shown["progress"] == {bench2.group: 0}

    # Undone: enabled again and back in the group, those two count again; the revoked token's does not.
    assert bench2.call("POST", f"/v1/principals/{disabled.id}/state", {"disabled": False})[0] == 200
    bench2.join(removed)
    shown = bench2.show(approval_id)
    assert sorted(counted_votes(shown)) == sorted([(disabled.id, "approve"), (removed.id, "approve")])
    assert [v["not_counted"]["code"] for v in shown["votes"] if not v["counted"]] == ["token_revoked"]


def test_not_counted_codes_are_the_documented_ones() -> None:
    assert set(NOT_COUNTED) == set(NotCounted.model_fields["code"].annotation.__args__)


# -- the console agrees with the API ----------------------------------------------------------------


class Console:
    """An approver's console session driven over HTTP, as a browser posts its forms."""

    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        status, headers, page = http("GET", server.url + "/console/login")
        assert status == 200
        nonce = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        login_cookie = headers["Set-Cookie"].split(";")[0]
        connection = httpclient.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.request(
                "POST",
                "/console/login",
                urllib.parse.urlencode({"csrf": nonce, "token": token}),
                {"Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie},
            )
            response = connection.getresponse()
            response.read()
            self.login_status = response.status
            pairs = [v.split(";")[0] for k, v in response.getheaders() if k.lower() == "set-cookie"]
        finally:
            connection.close()
        # Whatever the session cookie is called and holds; deleted cookies (empty values) are dropped.
        self.cookie = "; ".join(p for p in pairs if not p.endswith("=") and '=""' not in p)

    def page(self, approval_id: str) -> str:
        status, _, page = http(
            "GET", self.server.url + f"/console/approvals/{approval_id}", headers={"Cookie": self.cookie}
        )
        assert status == 200, page
        return page

    def vote(self, approval_id: str, decision: str, digest: str) -> tuple[int, str]:
        csrf = re.search(r'name="csrf" value="([^"]+)"', self.page(approval_id)).group(1)
        status, _, page = http(
            "POST",
            self.server.url + f"/console/approvals/{approval_id}/{decision}",
            raw=urllib.parse.urlencode({"csrf": csrf, "digest": digest}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie},
        )
        return status, page


def test_the_console_counts_or_refuses_like_the_api(live: Server) -> None:
    bench = Bench(live, quorum=2)
    first, second = bench.member("approver"), bench.member("approver")
    service = bench.member("service")
    assert Console(live, service.token).login_status == 401  # a service never gets a console session

    console = Console(live, first.token)
    assert console.login_status == 303
    approval_id, digest = bench.request()
    # Another spelling of the right digest counts; a malformed one is refused with its code, not stored.
    status, page = console.vote(approval_id, "approve", "garbage" + digest[7:])
    assert status == 400 and "invalid_digest" in page
    assert bench.show(approval_id)["votes"] == []
    status, _ = console.vote(approval_id, "approve", "0x" + digest.upper())
    assert status in (200, 303)
    assert counted_votes(bench.show(approval_id)) == [(first.id, "approve")]

    # The console page says which recorded votes do not count and why, like the API view.
    assert bench.call("DELETE", f"/v1/groups/{bench.group}/members/{first.id}")[0] == 200
    page = Console(live, second.token).page(approval_id)
    assert 'data-code="not_in_group"' in page and NOT_COUNTED["not_in_group"] in html.unescape(page)
    assert bench.show(approval_id)["votes"][0]["not_counted"]["code"] == "not_in_group"
