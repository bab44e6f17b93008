"""Every state-changing route of the contract leaves exactly one audit event of a known kind.

Issue 14: "one event per decision and per state change". The test walks the contract registry
(``signer.http.routes.api.operations``): every operation that is not a GET is driven here through a
running server (SQLite, real SoftHSM token) to a success, after which the events carrying the call's
request id must be exactly the kinds listed for it: one event, or for a deciding approval vote one per
thing it changes (the vote, the approval's state, the signature it releases). ``NOT_STATE_CHANGES`` are
driven too and must leave none. ``DRIVEN_ELSEWHERE`` names the few whose success needs a world this walk
does not build (a SigV4-signed KMS call, an archive to prune against, a finished KEK rotation) and the
test that checks their event. A route added to the contract and not listed here fails
``test_every_state_changing_route_is_accounted_for``; one whose success leaves no event, two, or another
kind fails ``test_each_state_change_leaves_exactly_one_event``. Secret values set and fetched on the
way are looked for in the whole log and must not be there.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from eth_utils import keccak

from signer.audit import canonical_json
from signer.http.routes import api
from tests.service_harness import Server, attach_policy, grant, make_key, make_service
from tests.system.test_tls import issue

# POSTs that change nothing (each still audited where it is a decision: see the kinds below).
NOT_STATE_CHANGES = {
    "dry_run": "a policy evaluation that stores nothing",
    "impact_review": "a dry run of an action's impact (the real action records the report in its event)",
}

# Successes this walk does not build, with the test that checks their audit event.
DRIVEN_ELSEWHERE = {
    "audit_prune": "tests/system/test_audit_retention.py (audit.pruned)",
    "kms": "tests/system/test_kms.py (SigV4-signed KMS Sign; its sign event)",
    "destroy_retired_kek": "tests/system/test_kek_rotation.py (secret.kek.destroy, after a rotation)",
}


DELEGATE = "0x" + "42" * 20


def _head(server: Server) -> int:
    _, headers, _ = server.call("GET", "/v1/audit/events?limit=1", token=server.installation.admin_token)
    return int(headers["X-Audit-Head"])


def _events(server: Server, request_id: str, after: int) -> list[dict[str, Any]]:
    admin = server.installation.admin_token
    status, _, text = server.call("GET", f"/v1/audit/events?after={after}&limit=10000", token=admin)
    assert status == 200
    lines = (
        []
        if text is None
        else [canonical_json(text).decode()]
        if isinstance(text, dict)
        else text.splitlines()
    )
    found = []
    for line in lines:
        record = json.loads(line)
        if record["request_id"] == request_id:
            found.append(json.loads(record["event"]))
    return found


def _driven_ids() -> set[str]:
    return {step[0] for step in _STEP_NAMES}


# (operation id, the kind of its one event, or the kinds of the several state changes it makes).
_STEP_NAMES: list[tuple[str, str | tuple[str, ...]]] = [
    ("create_principal", "principal.create"),
    ("issue_tokens", "token.issue"),
    ("refresh", "auth.refresh"),
    ("revoke_token", "token.revoke"),
    ("set_principal_state", "principal.disable"),
    ("create_key", "key.create"),
    ("disable_key", "key.suspend"),
    ("enable_key", "key.activate"),
    ("suspend_key", "key.suspend"),
    ("activate_key", "key.activate"),
    ("deactivate_key", "key.deactivate"),
    ("compromise_key", "key.compromise"),
    ("destroy_key", "key.destroy"),
    ("create_grant", "grant.create"),
    ("revoke_grant", "grant.revoke"),
    ("add_member", "group.add"),
    ("remove_member", "group.remove"),
    ("create_policy", "policy.create"),
    ("attach_policy", "policy.attach"),
    ("detach_policy", "policy.detach"),
    ("sign_transaction", "sign.transaction"),
    ("sign_message", "sign.message"),
    ("sign_typed_data", "sign.typed_data"),
    ("sign_digest", "sign.raw"),
    ("set_group_webhook", "webhook.set"),
    ("rotate_group_webhook_secret", "webhook.secret_rotate"),
    ("delete_group_webhook", "webhook.delete"),
    ("create_secret", "secret.create"),
    ("update_secret", "secret.update"),
    ("set_secret_value", "secret.rotate"),
    ("fetch_secret", "secret.fetch"),
    ("promote_secret_version", "secret.version_promoted"),
    ("disable_secret_version", "secret.version_disabled"),
    ("enable_secret_version", "secret.version_enabled"),
    ("destroy_secret_version", "secret.version_destroyed"),
    ("disable_secret", "secret.disable"),
    ("enable_secret", "secret.enable"),
    ("delete_secret", "secret.delete"),
    ("set_secret_folder_defaults", "secret.folder_defaults"),
    ("issue_kms_credential", "kms_credential.issue"),
    ("audit_hmac", "audit.hmac_computed"),
    ("ledger_prune", "ledger.pruned"),
    ("audit_rollback_acknowledge", "audit.rollback_acknowledged"),
    ("audit_key_rotate", "audit.key_rotated"),
    ("sign_authorization", "sign.authorization"),
    ("json_rpc", "sign.message"),
    ("register_approver_key", "approval.key_registered"),
    ("cancel_approval", "approval.cancelled"),
    # A deciding vote changes three things, each with its one event: the vote, the approval's state,
    # and (approved) the signature made for the request.
    ("approve", ("approval.vote", "approval.approved", "sign.transaction")),
    ("reject", ("approval.vote", "approval.rejected")),
    ("resolve_secrets", "secret.fetch"),
    ("rotate_kek", "secret.kek_rotation.start"),
    ("put_address", "books.address.put"),
    ("remove_address", "books.address.remove"),
    ("put_token", "books.token.put"),
    ("remove_token", "books.token.remove"),
    ("register_functions", "books.function.put"),
    ("remove_function", "books.function.remove"),
    ("register_client_certificate", "client_certificate.register"),
    ("revoke_client_certificate", "client_certificate.revoke"),
    ("dry_run", ()),
    ("impact_review", ()),
]


def test_every_state_changing_route_is_accounted_for() -> None:
    changing = {op.operation_id for op in api.operations if op.method not in ("GET", "HEAD")}
    accounted = _driven_ids() | set(DRIVEN_ELSEWHERE)
    assert set(NOT_STATE_CHANGES) <= _driven_ids(), "a call said to change nothing is driven to show it"
    assert changing - accounted == set(), "new state-changing routes without an audit check"
    assert accounted - changing == set(), "routes named here that the contract no longer has"
    assert all(dict(_STEP_NAMES)[op] == () for op in NOT_STATE_CHANGES)
    assert not (_driven_ids() & set(DRIVEN_ELSEWHERE)), "a route is both driven here and elsewhere"


def test_each_state_change_leaves_exactly_one_event(server: Server) -> None:
    admin = server.installation.admin_token
    tag = secrets.token_hex(3)
    seen: dict[str, list[str]] = {}
    expected = dict(_STEP_NAMES)

    def step(op: str, method: str, path: str, body: Any = None, token: str = admin, status: int = 200) -> Any:
        after = _head(server)
        request_id = f"change-{op}-{secrets.token_hex(4)}"
        got, _, answer = server.call(method, path, body, token, headers={"X-Request-Id": request_id})
        if got != status:
            seen[op] = [f"status {got}: {answer}"]
            return answer
        seen[op] = [event["kind"] for event in _events(server, request_id, after)]
        return answer

    created = step(
        "create_principal", "POST", "/v1/principals", {"name": f"walk-{tag}", "role": "service"}, status=201
    )
    pid = created["principal"]["id"]
    issued = step("issue_tokens", "POST", f"/v1/principals/{pid}/tokens", {}, status=201)
    refreshed = step(
        "refresh", "POST", "/v1/auth/refresh", {"refresh_token": issued["refresh_token"]}, token=None
    )
    step("revoke_token", "DELETE", f"/v1/tokens/{refreshed['access_token_id']}")
    other = make_service(server, f"walk-other-{tag}")
    step(
        "set_principal_state", "POST", f"/v1/principals/{other['principal']['id']}/state", {"disabled": True}
    )

    key = step("create_key", "POST", "/v1/keys", {"curve": "secp256k1", "label": f"walk {tag}"}, status=201)
    step("disable_key", "POST", f"/v1/keys/{key['id']}/disable")
    step("enable_key", "POST", f"/v1/keys/{key['id']}/enable")
    # The lifecycle on a key of its own: it ends destroyed.
    doomed = make_key(server, "secp256k1", f"walk doomed {tag}")
    lifecycle = f"/v1/keys/{doomed['id']}"
    step("suspend_key", "POST", f"{lifecycle}/suspend", {"reason": "walk"})
    step("activate_key", "POST", f"{lifecycle}/activate", {})
    step("deactivate_key", "POST", f"{lifecycle}/deactivate", {"reason": "retired"})
    confirm = {"confirm": doomed["label"]}
    step(
        "compromise_key",
        "POST",
        f"{lifecycle}/compromise",
        {**confirm, "compromised_at": "2026-01-01T00:00:00Z"},
    )
    step("destroy_key", "POST", f"{lifecycle}/destroy", confirm)
    made = step(
        "create_grant",
        "POST",
        "/v1/grants",
        {"principal_id": pid, "key_id": key["id"], "operations": ["sign_message"]},
        status=201,
    )
    step("revoke_grant", "DELETE", f"/v1/grants/{made['id']}")
    step("add_member", "PUT", f"/v1/groups/walk{tag}/members/{pid}")
    step("remove_member", "DELETE", f"/v1/groups/walk{tag}/members/{pid}")
    policy = {
        "id": f"walk-{tag}",
        "version": 1,
        "rules": [
            {"id": "blind", "kind": "raw_digest", "effect": "allow"},
            {"id": "delegates", "kind": "delegate_allowlist", "effect": "allow", "delegates": [DELEGATE]},
        ],
    }
    step("create_policy", "POST", "/v1/policies", policy, status=201)
    attached = step(
        "attach_policy",
        "POST",
        f"/v1/policies/walk-{tag}/attachments",
        {"version": 1, "key_id": key["id"]},
        status=201,
    )

    service = make_service(server, f"walk-signer-{tag}")
    token = service["credentials"]["access_token"]
    ops = ["sign_transaction", "sign_message", "sign_typed_data", "sign_raw", "sign_authorization"]
    grant(server, service["principal"]["id"], key["id"], ops)
    tx = {
        "type": 2,
        "chainId": 1,
        "nonce": 0,
        "to": "0x" + "11" * 20,
        "value": "1",
        "gas": 21000,
        "maxFeePerGas": "1000000000",
        "maxPriorityFeePerGas": "1",
    }
    step(
        "sign_transaction", "POST", f"/v1/keys/{key['id']}/sign/transaction", {"transaction": tx}, token=token
    )
    step(
        "sign_message",
        "POST",
        f"/v1/keys/{key['id']}/sign/message",
        {"message": 'hi\r\n\x1b[31m{"kind":"x"}'},
        token=token,
    )
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            "Mail": [{"name": "body", "type": "string"}],
        },
        "primaryType": "Mail",
        "domain": {"name": "walk"},
        "message": {"body": "hello"},
    }
    step(
        "sign_typed_data", "POST", f"/v1/keys/{key['id']}/sign/typed-data", {"typed_data": typed}, token=token
    )
    step(
        "sign_digest", "POST", f"/v1/keys/{key['id']}/sign/digest", {"digest": "0x" + "ab" * 32}, token=token
    )
    step(
        "sign_authorization",
        "POST",
        f"/v1/keys/{key['id']}/sign/authorization",
        {"chain_id": 1, "delegate": DELEGATE, "nonce": 0},
        token=token,
    )
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "personal_sign", "params": ["0x6869", key["address"]]}
    step("json_rpc", "POST", "/v1/rpc", rpc, token=token)
    step("detach_policy", "DELETE", f"/v1/policy-attachments/{attached['id']}")

    # Approvals: a key whose every transaction needs one approver of the group.
    approver = step(
        "create_principal",
        "POST",
        "/v1/principals",
        {"name": f"walk-ap-{tag}", "role": "approver"},
        status=201,
    )
    approver_token = approver["credentials"]["access_token"]
    assert (
        server.call("PUT", f"/v1/groups/walk{tag}/members/{approver['principal']['id']}", None, admin)[0]
        == 200
    )
    public = "ab" * 32
    step(
        "register_approver_key",
        "PUT",
        "/v1/approvers/me/key",
        {"scheme": "ed25519", "public_key": public},
        token=approver_token,
    )
    guarded = make_key(server, "secp256k1", f"guarded {tag}")
    grant(server, service["principal"]["id"], guarded["id"], ["sign_transaction"])
    gate = {
        "id": f"walk-gate-{tag}",
        "rules": [
            {
                "id": "any",
                "kind": "value_cap",
                "effect": "require_approval",
                "max_value": "0",
                "approval": {"quorum": 1, "group": f"walk{tag}", "expires_in_seconds": 3600},
            },
        ],
    }
    attach_policy(server, gate, key_id=guarded["id"])
    pending = []
    for nonce in range(3):
        status, _, answer = server.call(
            "POST",
            f"/v1/keys/{guarded['id']}/sign/transaction",
            {"transaction": {**tx, "nonce": nonce}},
            token,
        )
        assert status == 202, answer
        pending.append(answer)
    step("cancel_approval", "POST", f"/v1/approvals/{pending[0]['approval']['id']}/cancel", None, token=token)
    for op, answer in (("approve", pending[1]), ("reject", pending[2])):
        body = {"digest": answer["payload_digest"]}
        step(op, "POST", f"/v1/approvals/{answer['approval']['id']}/{op}", body, token=approver_token)

    step("set_group_webhook", "PUT", f"/v1/groups/walk{tag}/webhook", {"url": "https://hooks.example/x"})
    step("rotate_group_webhook_secret", "POST", f"/v1/groups/walk{tag}/webhook/rotate-secret", {})
    step("delete_group_webhook", "DELETE", f"/v1/groups/walk{tag}/webhook")

    admin_id = server.installation.admin["principal"]["id"]
    secret_ops = ["create", "update", "delete", "read_metadata", "list"]
    grant_scope = {"principal_id": admin_id, "operations": secret_ops, "scope": f"walk{tag}"}
    assert server.call("POST", "/v1/grants", grant_scope, admin)[0] == 201
    fetch_scope = {
        "principal_id": service["principal"]["id"],
        "operations": ["read_value"],
        "scope": f"walk{tag}",
    }
    assert server.call("POST", "/v1/grants", fetch_scope, admin)[0] == 201
    secret = step(
        "create_secret",
        "POST",
        "/v1/secrets",
        {
            "folder": f"walk{tag}",
            "name": "db",
            "owner_group": "walkers",
            "fields": {"value": f"s3cret-walk-{tag}"},
        },
        status=201,
    )
    sid = secret.get("id", "missing")
    step("update_secret", "PATCH", f"/v1/secrets/{sid}", {"description": "walked"})
    step(
        "set_secret_value",
        "POST",
        f"/v1/secrets/{sid}/versions",
        {"fields": {"value": f"v2-walk-{tag}"}, "stage": True},
        status=201,
    )
    step("fetch_secret", "POST", f"/v1/secrets/{sid}/fetch", {"version": 1}, token=token)
    step("promote_secret_version", "POST", f"/v1/secrets/{sid}/versions/2/promote", {})
    step("disable_secret_version", "POST", f"/v1/secrets/{sid}/versions/1/disable", {})
    step("enable_secret_version", "POST", f"/v1/secrets/{sid}/versions/1/enable", {})
    step("destroy_secret_version", "POST", f"/v1/secrets/{sid}/versions/1/destroy", {})
    step("disable_secret", "POST", f"/v1/secrets/{sid}/disable", {"reason": "walked"})
    step("enable_secret", "POST", f"/v1/secrets/{sid}/enable", {})
    step("rotate_kek", "POST", f"/v1/secrets/keks/walk{tag}/rotate", None, status=202)
    resolve = {"references": [f"secret://walk{tag}/db"]}
    step("resolve_secrets", "POST", "/v1/secrets/resolve", resolve, token=token)
    step("impact_review", "POST", "/v1/impact", {"action": "delete_secret", "id": sid})
    dry = {
        "key_id": key["id"],
        "operation": "sign_message",
        "message": "hi",
        "principal_id": service["principal"]["id"],
    }
    step("dry_run", "POST", "/v1/policy/dry-run", dry)
    step("delete_secret", "DELETE", f"/v1/secrets/{sid}")
    step(
        "set_secret_folder_defaults",
        "PUT",
        "/v1/secret-folder-defaults",
        {"folder": f"walk{tag}", "overlap_seconds": 60},
    )

    step("issue_kms_credential", "POST", f"/v1/principals/{pid}/kms-credentials", {}, status=201)
    book_address = "0x" + secrets.token_hex(20)
    step("put_address", "PUT", f"/v1/books/addresses/{book_address}", {"label": f"walk {tag}"})
    step("remove_address", "DELETE", f"/v1/books/addresses/{book_address}")
    token_contract = "0x" + secrets.token_hex(20)
    step("put_token", "PUT", f"/v1/books/tokens/1/{token_contract}", {"symbol": "WLK", "decimals": 6})
    step("remove_token", "DELETE", f"/v1/books/tokens/1/{token_contract}")
    step("register_functions", "POST", "/v1/books/functions", {"signature": f"walk{tag}(address,uint256)"})
    selector = "0x" + keccak(f"walk{tag}(address,uint256)".encode())[:4].hex()
    step("remove_function", "DELETE", f"/v1/books/functions/{selector}")
    cert, _ = issue(f"walk-{tag}", None)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    registered = step(
        "register_client_certificate",
        "POST",
        f"/v1/principals/{pid}/client-certificates",
        {"certificate": pem},
        status=201,
    )
    fingerprint = registered.get("fingerprint", "") if isinstance(registered, dict) else ""
    step("revoke_client_certificate", "DELETE", f"/v1/principals/{pid}/client-certificates/{fingerprint}")
    step("audit_hmac", "POST", "/v1/audit/hmac", {"field": "idempotency_key", "value": "walk"})
    step("ledger_prune", "POST", "/v1/ledger/prune", {})
    step("audit_rollback_acknowledge", "POST", "/v1/audit/rollback/acknowledge", {})
    step("audit_key_rotate", "POST", "/v1/audit/key/rotate", {})

    assert set(seen) == set(expected), set(expected) ^ set(seen)
    wanted = {op: list(k) if isinstance(k, tuple) else [k] for op, k in expected.items()}
    wrong = {op: kinds for op, kinds in seen.items() if kinds != wanted[op]}
    assert wrong == {}, json.dumps(wrong, indent=0)
    # None of the values set or fetched is in the log.
    _, _, everything = server.call("GET", "/v1/audit/events?limit=10000", token=admin)
    assert f"s3cret-walk-{tag}" not in everything and f"v2-walk-{tag}" not in everything


def test_a_key_transition_behind_approvers_leaves_one_event_per_change(server: Server) -> None:
    """A transition a ``key_lifecycle`` rule sends to approvers: the request opens a pending approval
    (its event and the key's pending one), the deciding vote approves it (nothing runs yet), and the
    requester's completion changes the key (its one event) and closes the request."""
    admin = server.installation.admin_token
    tag = secrets.token_hex(3)
    status, _, approver = server.call(
        "POST", "/v1/principals", {"name": f"walk-keeper-{tag}", "role": "approver"}, admin
    )
    assert status == 201, approver
    assert (
        server.call("PUT", f"/v1/groups/keep{tag}/members/{approver['principal']['id']}", None, admin)[0]
        == 200
    )
    key = make_key(server, "secp256k1", f"walk kept {tag}")
    rule = {
        "id": "kept",
        "kind": "key_lifecycle",
        "effect": "require_approval",
        "actions": ["suspend"],
        "approval": {"quorum": 1, "group": f"keep{tag}", "expires_in_seconds": 3600},
    }
    attach_policy(server, {"id": f"walk-keep-{tag}", "rules": [rule]}, key_id=key["id"])

    def kinds(method: str, path: str, body: Any, token: str, status: int) -> tuple[Any, list[str]]:
        after = _head(server)
        request_id = f"keep-{secrets.token_hex(4)}"
        got, _, answer = server.call(method, path, body, token, headers={"X-Request-Id": request_id})
        assert got == status, answer
        return answer, [event["kind"] for event in _events(server, request_id, after)]

    pending, seen = kinds("POST", f"/v1/keys/{key['id']}/suspend", {"reason": "walk"}, admin, 202)
    assert seen == ["approval.requested", "key.suspend"]
    approval_id = pending["approval"]["id"]
    vote = {"digest": pending["payload_digest"]}
    token = approver["credentials"]["access_token"]
    _, seen = kinds("POST", f"/v1/approvals/{approval_id}/approve", vote, token, 200)
    assert seen == ["approval.vote", "approval.approved"]
    done, seen = kinds("POST", f"/v1/keys/{key['id']}/suspend", {"approval_id": approval_id}, admin, 200)
    assert done["state"] == "suspended"
    # The request's closing (``approval.released``) is the approval's own event, under no request id,
    # as for a released secret read; the key's change is the call's one event.
    assert seen == ["key.suspend"]

    # A grant on the key under the same kind of rule: requested, approved, made.
    rule = {**rule, "id": "kept-grants", "actions": ["grant"]}
    attach_policy(server, {"id": f"walk-keep-grants-{tag}", "rules": [rule]}, key_id=key["id"])
    grantee = make_service(server, f"walk-grantee-{tag}")["principal"]["id"]
    asked = {"principal_id": grantee, "key_id": key["id"], "operations": ["sign_message"]}
    pending, seen = kinds("POST", "/v1/grants", asked, admin, 202)
    assert seen == ["approval.requested", "grant.create"]
    vote = {"digest": pending["payload_digest"]}
    _, seen = kinds("POST", f"/v1/approvals/{pending['approval']['id']}/approve", vote, token, 200)
    assert seen == ["approval.vote", "approval.approved"]
    _, seen = kinds("POST", "/v1/grants", {**asked, "approval_id": pending["approval"]["id"]}, admin, 201)
    assert seen == ["grant.create"]


def test_injected_text_round_trips_and_forges_no_line(server: Server) -> None:
    """U-01 through the server: a reason with JSON metacharacters that look like a record is written as
    it was sent; a description holding a newline and such JSON is accepted (its event names the field,
    not the text); text with CR or ANSI escapes is refused, and its refusal does not hold it. The export
    has one line per event, seqs without a gap, and no forged kind."""
    admin = server.installation.admin_token
    tag = secrets.token_hex(3)
    admin_id = server.installation.admin["principal"]["id"]
    body = {"principal_id": admin_id, "operations": ["create", "update"], "scope": f"inj{tag}"}
    assert server.call("POST", "/v1/grants", body, admin)[0] == 201
    status, _, made = server.call(
        "POST",
        "/v1/secrets",
        {"folder": f"inj{tag}", "name": "db", "owner_group": "walkers", "fields": {"value": "x"}},
        admin,
    )
    assert status == 201, made
    after = _head(server)
    forged = f'{tag}\n{{"seq":1,"kind":"forged","prev_hash":"00"}}\n"\\'
    request_id = f"inject-{tag}"
    status, _, answer = server.call(
        "PATCH",
        f"/v1/secrets/{made['id']}",
        {"description": forged},
        admin,
        headers={"X-Request-Id": request_id},
    )
    assert status == 200, answer
    (event,) = _events(server, request_id, after)  # the event names the field changed, not its text
    assert event["kind"] == "secret.update" and event["changed"] == ["description"], event
    version = {"fields": {"value": "y"}}
    assert server.call("POST", f"/v1/secrets/{made['id']}/versions", version, admin)[0] == 201
    reason = f'{tag}"}},{{"kind":"forged"}} \\u0000'
    request_id = f"inject-reason-{tag}"
    status, _, answer = server.call(
        "POST",
        f"/v1/secrets/{made['id']}/versions/1/disable",
        {"reason": reason},
        admin,
        headers={"X-Request-Id": request_id},
    )
    assert status == 200, answer
    (event,) = _events(server, request_id, after)
    assert event["reason"] == reason, event
    for bad in (f"{tag}\r\nforged", f"{tag}\x1b[2Jred"):
        request_id = f"inject-bad-{secrets.token_hex(3)}"
        status, _, answer = server.call(
            "PATCH",
            f"/v1/secrets/{made['id']}",
            {"description": bad},
            admin,
            headers={"X-Request-Id": request_id},
        )
        assert status == 400, answer
        (refusal,) = _events(server, request_id, after)
        assert refusal["kind"] == "request.refused" and tag not in json.dumps(refusal)
    _, _, text = server.call("GET", f"/v1/audit/events?after={after}&limit=10000", token=admin)
    lines = text.splitlines() if isinstance(text, str) else [canonical_json(text).decode()]
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(after + 1, after + 1 + len(records)))
    assert all(json.loads(r["event"])["kind"] != "forged" for r in records)
