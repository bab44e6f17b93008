"""/metrics on a live server: what is counted, under which labels, and who may read it."""

from __future__ import annotations

import re
import socket
import time

import pytest

from tests.service_harness import Server, grant, http, init_installation, make_key, make_service, start_server
from tests.system.support import wait_all_workers_ready
from tests.test_api_signing import tx_fields


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _value(samples: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in samples.items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


def test_metrics_count_requests_signatures_and_components(server: Server, unique_name: str) -> None:
    service = make_service(server, unique_name)
    key = make_key(server, "secp256k1", "metrics")
    grant(server, service["principal"]["id"], key["id"], ["sign_transaction"])
    token = service["credentials"]["access_token"]
    status, headers, body = server.call("GET", "/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    before = _samples(body)

    status, _, _ = server.call(
        "POST", f"/v1/keys/{key['id']}/sign/transaction", {"transaction": tx_fields(2)}, token
    )
    assert status == 200
    status, _, _ = server.call(
        "POST", "/v1/keys/key_doesnotexist000000/sign/transaction", {"transaction": tx_fields(2)}, token
    )
    assert status == 404
    server.call("GET", "/v1/keys/key_x/../../etc")  # a raw path never becomes a label

    status, _, body = server.call("GET", "/metrics")
    after = _samples(body)
    route = "/v1/keys/{key_id}/sign/transaction"
    grew = _value(after, "signer_http_requests_total", route=route, method="POST", status="200") - _value(
        before, "signer_http_requests_total", route=route, method="POST", status="200"
    )
    assert grew == 1
    assert _value(after, "signer_http_request_duration_seconds_count", route=route, method="POST") >= 2
    assert (
        _value(
            after,
            "signer_signatures_total",
            key_id=key["id"],
            curve="secp256k1",
            operation="sign_transaction",
            outcome="allowed",
        )
        == 1
    )
    # A made-up key id is counted, but under "unknown": callers cannot mint label values.
    assert _value(after, "signer_signatures_total", key_id="unknown", outcome="denied") >= 1
    assert "key_doesnotexist000000" not in body
    assert _value(after, "signer_policy_decisions_total", effect="allow") >= 1
    assert _value(after, "signer_hsm_up") == 1
    assert _value(after, "signer_hsm_call_duration_seconds_count", outcome="ok") >= 1
    assert _value(after, "signer_audit_commit_duration_seconds_count") >= 1
    assert _value(after, "signer_db_pool_connections", state="size") >= 1
    assert "signer_hsm_queue_depth" in body and "signer_approvals_pending" in body
    # No raw path, no token in any label.
    assert "/etc" not in body and token not in body and server.installation.admin_token not in body
    assert 'route="unmatched"' in body


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a local address
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_metrics_need_a_token_off_loopback(tmp_path_factory: pytest.TempPathFactory) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to listen on")
    installation = init_installation(tmp_path_factory.mktemp("metrics-access"))
    metrics_token = "mtk-" + "9" * 40
    token_file = installation.data_dir / "metrics-token"
    token_file.write_text(metrics_token)
    token_file.chmod(0o600)
    server = start_server(
        installation, env={"SIGNER_HOST": "0.0.0.0", "SIGNER_METRICS_TOKEN_FILE": str(token_file)}
    )
    try:
        url = f"http://{address}:{server.port}/metrics"
        status, headers, _ = http("GET", url)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        # Listening beyond loopback: even a loopback caller needs a token (a local proxy is loopback too).
        status, _, _ = server.call("GET", "/metrics")
        assert status == 401
        status, _, _ = http("GET", url, token="mtk-wrong-" + "0" * 40)
        assert status == 401
        status, _, body = http("GET", url, token=metrics_token)
        assert status == 200 and "signer_http_requests_total" in body
        status, _, _ = http("GET", url, token=installation.admin_token)
        assert status == 200
        service = make_service(server, "metrics-reader")
        status, _, body = http("GET", url, token=service["credentials"]["access_token"])
        assert status == 403 and body["code"] == "role_required"
        assert metrics_token not in server.log_text()
    finally:
        server.stop()


def test_metrics_sum_over_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With two workers on one port, any worker's answer counts every worker's requests."""
    installation = init_installation(tmp_path_factory.mktemp("metrics-workers"))
    stale = installation.data_dir / "metrics-multiproc" / "counter_999999.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left over from an earlier run")
    server = start_server(installation, workers=2)
    try:
        # start_server returns when one worker is ready; hsm_up is the minimum over live workers.
        wait_all_workers_ready(server, 2)
        assert not stale.exists()  # emptied at start
        # Ready means one worker answers; the other may still be opening its HSM session, and
        # signer_hsm_up (the minimum over live workers) says 0 until it has. Wait for both, bounded.
        deadline = time.monotonic() + 60
        while _value(_samples(server.call("GET", "/metrics")[2]), "signer_hsm_up") != 1:
            assert time.monotonic() < deadline, "a worker never reported its HSM up"
            time.sleep(0.1)
        for _ in range(40):
            # New connections each time, so the kernel spreads them over both workers.
            assert http("GET", f"{server.url}/healthz")[0] == 200
        for _ in range(4):
            status, _, body = server.call("GET", "/metrics")
            assert status == 200
            count = _value(_samples(body), "signer_http_requests_total", route="/healthz", status="200")
            assert count >= 40, body
            assert _value(_samples(body), "signer_hsm_up") == 1
    finally:
        server.stop()
