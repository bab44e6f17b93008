"""Webhook URLs and destinations, by class: every spelling of a loopback, private, link-local or otherwise
non-public address is refused unless the operator's allowlist holds it; every URL with user information
is refused without echo; and through the running server, a refused URL leaves nothing stored or audited.

The property tests draw an address from the forbidden networks and render it in one of the spellings a
URL parser, ``getaddrinfo`` or the kernel would accept (dotted, decimal, hex, octal, short, IPv6,
IPv4-mapped, IPv4-compatible, NAT64, 6to4); resolution is real (numeric forms need no DNS)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import InvalidRequest
from signer.services.destinations import DestinationPolicy, DestinationRefused
from signer.services.webhooks import check_destination
from tests.service_harness import Server

FORBIDDEN_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
FORBIDDEN_V6 = ["::1/128", "::/128", "fe80::/10", "fc00::/7", "ff00::/8", "2001:db8::/32"]
REFUSED = {"webhook_destination_not_allowed", "invalid_field"}


def _in(networks: list[str]) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    def pick(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        net = ipaddress.ip_network(network)
        return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])

    return st.sampled_from(networks).flatmap(pick)


def _v4_spellings(a: ipaddress.IPv4Address) -> list[str]:
    n = int(a)
    b = a.packed
    return [
        str(a),
        str(n),
        hex(n),
        ".".join(f"0{x:o}" for x in b),
        f"{b[0]}.{n & 0xFFFFFF}",
        f"[::ffff:{a}]",
        f"[::ffff:{n >> 16:x}:{n & 0xFFFF:x}]",
        f"[::{a}]",
        f"[64:ff9b::{a}]",
        f"[2002:{n >> 16:x}:{n & 0xFFFF:x}::1]",
    ]


async def _refused(url: str, policy: DestinationPolicy) -> str:
    try:
        await check_destination(url, policy)
    except InvalidRequest as exc:
        assert url not in exc.message and url not in json.dumps(exc.extra)
        return exc.code
    return "accepted"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(address=_in(FORBIDDEN_V4), spelling=st.integers(0, 9), port=st.integers(1, 65535))
def test_every_spelling_of_a_non_public_ipv4_address_is_refused(
    address: ipaddress.IPv4Address, spelling: int, port: int
) -> None:
    host = _v4_spellings(address)[spelling]
    for url in (f"http://{host}:{port}/hook", f"https://{host}/hook?x=1"):
        assert asyncio.run(_refused(url, DestinationPolicy())) in REFUSED, url
        # An allowlist that names other things does not let it through either.
        listed = DestinationPolicy.parse(["hooks.example.com", "8.8.8.0/24"])
        assert asyncio.run(_refused(url, listed)) in REFUSED, url


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(address=_in(FORBIDDEN_V6), port=st.integers(1, 65535))
def test_non_public_ipv6_addresses_are_refused(address: ipaddress.IPv6Address, port: int) -> None:
    assert asyncio.run(_refused(f"http://[{address}]:{port}/hook", DestinationPolicy())) in REFUSED


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(address=_in(["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"]))
def test_a_listed_network_allows_its_addresses_and_only_those(address: ipaddress.IPv4Address) -> None:
    policy = DestinationPolicy.parse([f"{address}/32"])
    assert asyncio.run(_refused(f"http://{address}:8080/hook", policy)) == "accepted"
    assert asyncio.run(_refused(f"http://[::ffff:{address}]:8080/hook", policy)) == "accepted"
    other = ipaddress.IPv4Address((int(address) + 1) & 0xFFFFFFFF)
    assert asyncio.run(_refused(f"http://{other}:8080/hook", policy)) in REFUSED
    # The list limits destinations: a public address outside it is refused too.
    assert asyncio.run(_refused("http://8.8.8.8/hook", policy)) in REFUSED


def test_the_metadata_address_and_the_defaults() -> None:
    assert asyncio.run(_refused("http://169.254.169.254/latest/meta-data/", DestinationPolicy())) in REFUSED
    # A network that holds it allows it (the operator said so); a public address is allowed by default.
    assert asyncio.run(_refused("http://169.254.169.254/x", DestinationPolicy.parse(["169.254.169.254"])))
    assert asyncio.run(_refused("http://8.8.8.8/hook", DestinationPolicy())) == "accepted"
    assert asyncio.run(_refused("https://[2606:4700::1111]/hook", DestinationPolicy())) == "accepted"
    # A listed name that does not resolve here is accepted (delivery checks what it resolves to then).
    listed = DestinationPolicy.parse(["hooks.example.invalid"])
    assert asyncio.run(_refused("https://hooks.example.invalid/h", listed)) == "accepted"
    assert asyncio.run(_refused("https://other.example.invalid/h", listed)) in REFUSED
    # A name resolving to loopback is refused by default, listed or not: its addresses decide.
    assert asyncio.run(_refused("http://localhost:8080/hook", DestinationPolicy())) in REFUSED
    assert (
        asyncio.run(_refused("http://localhost:8080/hook", DestinationPolicy.parse(["localhost"]))) in REFUSED
    )


def test_the_delivery_check_refuses_what_the_set_check_refuses() -> None:
    policy = DestinationPolicy()
    for address in ("127.0.0.1", "::ffff:10.0.0.1", "169.254.169.254", "0.0.0.0", "::"):
        with pytest.raises(DestinationRefused):
            policy.check("example.com", [ipaddress.ip_address(address)])
    with pytest.raises(DestinationRefused):
        policy.check("example.com", [])  # nothing resolved: nothing to connect to
    policy.check("example.com", [ipaddress.ip_address("8.8.8.8")])


USERINFO = st.sampled_from(
    ["zq9u:pw7x", "zq9u", ":pw7x", "zq9u:", "zq9u@pw7x", "zq9u%40x:pw7x%3A", "zq9u:pw7x@pw7y", "evil.zq9\\"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    userinfo=USERINFO,
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(["8.8.8.8", "hooks.example.com", "127.0.0.1", "[2606:4700::1111]"]),
)
def test_urls_with_user_information_are_refused_without_echo(userinfo: str, scheme: str, host: str) -> None:
    url = f"{scheme}://{userinfo}@{host}/hook?token=abc"
    allow_all = DestinationPolicy.parse(["0.0.0.0/0", "::/0"])
    try:
        asyncio.run(check_destination(url, allow_all))
    except InvalidRequest as exc:
        assert exc.code in {"url_has_credentials", "invalid_field"}
        assert userinfo not in exc.message and "abc" not in exc.message
    else:
        raise AssertionError(f"accepted {url}")


# -- through the running server (no allowlist: loopback refused) ------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    host=st.sampled_from(["8.8.8.8", "[2001:4860:4860::8888]", "hooks.example.com"]),
    encoded=st.text(alphabet="0123456789abcdefABCDEF", min_size=2, max_size=2),
    rest=st.sampled_from(["", "127.0.0.1", "lo", "eth0", "localhost"]),
    listed=st.booleans(),
)
def test_a_host_with_a_percent_sign_is_refused(host: str, encoded: str, rest: str, listed: bool) -> None:
    """Percent-encoding inside the host (an IPv6 zone, an encoded '@', '.' or NUL) is refused whatever
    follows it, even when the address before it is allowed: parsers disagree about what it names."""
    spelled = f"{host[:-1]}%{encoded}{rest}]" if host.startswith("[") else f"{host}%{encoded}{rest}"
    policy = DestinationPolicy.parse(["8.8.8.0/24", "2001:4860::/32", "hooks.example.com"] if listed else [])
    assert asyncio.run(_refused(f"https://{spelled}/hook", policy)) == "invalid_field", spelled


def test_refused_urls_leave_nothing_stored_or_audited(server: Server, unique_name: str) -> None:
    admin = server.installation.admin_token
    group = f"hooks-{unique_name[-20:]}".strip("-")
    cases = {
        "http://alice:s3cr3t-pw@hooks.example.com/hook": "url_has_credentials",
        "https://t0ken-in-user@8.8.8.8/hook": "url_has_credentials",
        f"http://127.0.0.1:{server.port}/hook": "webhook_destination_not_allowed",
        "http://[::ffff:127.0.0.1]/hook": "webhook_destination_not_allowed",
        "http://169.254.169.254/latest/meta-data/": "webhook_destination_not_allowed",
        "http://2130706433/hook": "webhook_destination_not_allowed",
        "http://10.1.2.3/hook?key=s3cr3t-q": "webhook_destination_not_allowed",
        # A public literal followed by an encoded '@' or a zone: another parser's loopback.
        "http://8.8.8.8%40127.0.0.1/hook": "invalid_field",
        "http://[2001:4860:4860::8888%25lo]/hook": "invalid_field",
        "http://8.8.8.8:0/hook": "invalid_field",
    }
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=admin)
    head = int(headers["X-Audit-Head"])
    for url, code in cases.items():
        status, _, body = server.call("PUT", f"/v1/groups/{group}/webhook", {"url": url}, admin)
        assert status == 400 and body["code"] == code, (url, body)
        text = json.dumps(body)
        for part in ("s3cr3t", "t0ken", "alice", "169.254", "2130706433", "10.1.2.3"):
            assert part not in text, (part, body)
    # Nothing was stored: rotating finds no webhook. Each refusal is audited (request.refused) with its
    # code only: no URL part, and the group is named only as the target of the 404 (a 400 may be about
    # the path itself, so it names no id).
    status, _, body = server.call("POST", f"/v1/groups/{group}/webhook/rotate-secret", {}, admin)
    assert status == 404 and body["code"] == "webhook_not_found"
    status, _, events = server.call("GET", f"/v1/audit/events?after={head}&limit=10000", token=admin)
    assert status == 200
    text = json.dumps(events)
    assert "s3cr3t" not in text and "t0ken" not in text
    lines = [json.dumps(events)] if isinstance(events, dict) else events.splitlines()
    naming = [json.loads(json.loads(line)["event"]) for line in lines if group in line]
    assert [(e["kind"], e["action"], e["resource"]) for e in naming] == [
        ("request.refused", "rotate_group_webhook_secret", {"type": "webhook", "id": group})
    ]


def test_the_audit_records_the_origin_only(server: Server, unique_name: str) -> None:
    admin = server.installation.admin_token
    group = f"origin-{unique_name[-20:]}".strip("-")
    url = "https://hooks.example.invalid:8443/T0KEN-path/hook?sig=Q5ecret"
    status, _, body = server.call("PUT", f"/v1/groups/{group}/webhook", {"url": url}, admin)
    assert status == 200, body
    # The log's last 1,000 events (the server is shared: its first 1,000 may all be other tests').
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=admin)
    tail = max(0, int(headers["X-Audit-Head"]) - 1000)
    status, _, events = server.call("GET", f"/v1/audit/events?after={tail}&limit=1000", token=admin)
    assert status == 200
    text = json.dumps(events)
    assert "T0KEN" not in text and "Q5ecret" not in text and body["secret"] not in text
    assert "https://hooks.example.invalid:8443" in text
    assert server.call("DELETE", f"/v1/groups/{group}/webhook", token=admin)[0] == 200
    assert urllib.parse.urlsplit(url).hostname == "hooks.example.invalid"
