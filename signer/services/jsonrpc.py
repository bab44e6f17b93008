"""Ethereum JSON-RPC as Web3Signer serves it: the methods a relayer's client library calls to sign.

``eth_accounts`` lists the addresses of the secp256k1 keys the caller holds a grant on;
``eth_signTransaction`` (the raw signed transaction, hex), ``eth_sign``, ``personal_sign`` and
``eth_signTypedData`` / ``_v4`` pick the key by address among those and go through the signing service,
so grants, policy, approvals, limits and the audit log are exactly the REST API's. ``health_status``
answers the readiness probe. Batches run in order (a relayer's nonces stay in order). Errors follow
JSON-RPC 2.0: -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid params
(with the signer's ``code`` and ``field`` in ``data``); a refusal by grants or policy is -32003 with the
reasons and decision in ``data``; a request that waits for approvers is -32010 whose ``data`` names the
approval and where to wait for its result. Never repeats a parameter's value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from signer.audit import ErrorRef, EventTarget
from signer.errors import SignerError
from signer.eth.primitives import parse_address, parse_quantity
from signer.eth.rpc import rpc_transaction, sign_data, typed_data_document, wants_fees
from signer.services.audit_log import AuditLogService
from signer.services.context import RequestContext
from signer.services.health import HealthService
from signer.services.keys import KeyService
from signer.services.signing import SigningService
from signer.store.gate import WriteGate

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # the signer's own refusals without a more specific code
RESOURCE_UNAVAILABLE = -32002  # HSM or database unavailable, a deadline passed
DENIED = -32003  # grants or policy refused (EIP-1474's "transaction rejected")
LIMIT_EXCEEDED = -32005  # rate limited
APPROVAL_PENDING = -32010  # nothing signed: approvers decide first

MAX_BATCH = 100
NONCE_ATTEMPTS = 8  # a send whose nonce another process took tries the next ones, this many in all


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class KeyNotGranted(RpcError):
    """The address names no key the caller holds a grant on (or none at all: the two look alike)."""


# What a body that is not JSON-RPC at all answers, beside the HTTP route's 400 problem document.
PARSE_ERROR_ANSWER: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": PARSE_ERROR, "message": "parse error: the body is not JSON"},
}
INVALID_BODY_ANSWER: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": None,
    "error": {"code": INVALID_REQUEST, "message": "invalid request: not an object or an array"},
}


def _error(call_id: Any, exc: RpcError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    return {"jsonrpc": "2.0", "id": call_id, "error": error}


def _from_signer_error(exc: SignerError) -> RpcError:
    data: dict[str, Any] = {"code": exc.code}
    for name in ("field", "reasons", "decision", "retry_after", "state"):
        if name in exc.extra:
            data[name] = exc.extra[name]
    if exc.status == 400 or exc.status == 422:
        return RpcError(INVALID_PARAMS, f"invalid params: {exc.message}", data)
    if exc.status in (401, 403):
        return RpcError(DENIED, f"denied: {exc.message}", data)
    if exc.status == 404:
        return RpcError(SERVER_ERROR, "no key you hold a grant on has that address", data)
    if exc.status == 429:
        return RpcError(LIMIT_EXCEEDED, f"limit exceeded: {exc.message}", data)
    if exc.status in (503, 504):
        return RpcError(RESOURCE_UNAVAILABLE, f"unavailable: {exc.message}", data)
    return RpcError(SERVER_ERROR, exc.message, data)


def _params(params: Any, count: int, method: str) -> list[Any]:
    if not isinstance(params, list) or len(params) < count:
        raise RpcError(INVALID_PARAMS, f"invalid params: {method} takes {count} positional parameter(s)")
    return params


class Upstream(Protocol):
    """An Ethereum node (``signer.http.eth_upstream``): a call's result, or ``RpcError`` as it answered."""

    async def call(self, method: str, params: list[Any] | dict[str, Any]) -> Any: ...


# Never forwarded: node administration, node-held accounts and test-node controls.
_NOT_PROXIED = ("personal_", "admin_", "miner_", "debug_", "anvil_", "hardhat_", "evm_", "txpool_")


class NonceGates:
    """One lock per sender address shared by this machine's worker processes (an ``flock`` file in
    ``directory``, through the store's fair gate), so workers pick, sign and submit nonces one at a
    time. Replicas on other machines are left to the node's answer (a taken nonce is retried)."""

    def __init__(self, directory: Path, timeout: float) -> None:
        self._directory = directory
        self._timeout = timeout
        self._gates: dict[str, WriteGate] = {}

    @contextlib.asynccontextmanager
    async def held(self, address: str) -> AsyncIterator[None]:
        gate = self._gates.get(address)
        if gate is None:
            self._directory.mkdir(mode=0o700, exist_ok=True)
            gate = self._gates[address] = WriteGate(self._directory / address.lower(), self._timeout)
        async with gate.held():
            yield

    def close(self) -> None:
        for gate in self._gates.values():
            gate.close()
        self._gates.clear()


class JsonRpcService:
    def __init__(
        self,
        keys: KeyService,
        signing: SigningService,
        health: HealthService,
        upstream: Upstream | None = None,
        audit: AuditLogService | None = None,
        nonce_gates: NonceGates | None = None,
    ) -> None:
        self._audit = audit
        self._nonce_gates = nonce_gates
        self._keys = keys
        self._signing = signing
        self._health = health
        self._upstream = upstream
        # Per sender: one send at a time picks, signs and submits its nonce, so nonces are unique and
        # gapless (a refused or failed send consumes none).
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._next_nonce: dict[str, int] = {}
        self._key_ids: dict[str, str] = {}  # address -> key id, as keys are found (never changes)

    async def handle(self, ctx: RequestContext, document: Any) -> Any:
        """The answer to a request or a batch; None when there is nothing to answer (notifications)."""
        if isinstance(document, list):
            if not document:
                return _error(None, RpcError(INVALID_REQUEST, "invalid request: an empty batch"))
            if len(document) > MAX_BATCH:
                return _error(None, RpcError(INVALID_REQUEST, f"invalid request: at most {MAX_BATCH} calls"))
            answers = [await self._one(ctx, call) for call in document]
            found = [answer for answer in answers if answer is not None]
            return found or None
        return await self._one(ctx, document)

    async def _one(self, ctx: RequestContext, call: Any) -> dict[str, Any] | None:
        if not isinstance(call, Mapping):
            return _error(None, RpcError(INVALID_REQUEST, "invalid request: a call is an object"))
        call_id = call.get("id")
        if not isinstance(call_id, str | int) or isinstance(call_id, bool):
            call_id = None
        if (
            call.get("jsonrpc") != "2.0"
            or not isinstance(call.get("method"), str)
            or ("id" in call and call["id"] is not None and call_id is None)
            or not isinstance(call.get("params", []), list | dict)
        ):
            return _error(call_id, RpcError(INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 call"))
        notification = "id" not in call  # a valid call without an id: run, never answered
        try:
            result = await self._dispatch(ctx, call["method"], call.get("params", []))
        except KeyNotGranted as exc:
            # As a REST sign request naming a key the caller holds no grant on: a refusal on record.
            if self._audit is not None:
                await self._audit.record_refusal(
                    ctx,
                    action=call["method"],
                    resource=EventTarget("key"),
                    error=ErrorRef("key_not_found", 404),
                )
            answer = _error(call_id, exc)
        except RpcError as exc:
            answer = _error(call_id, exc)
        except SignerError as exc:
            answer = _error(call_id, _from_signer_error(exc))
        else:
            answer = {"jsonrpc": "2.0", "id": call_id, "result": result}
        return None if notification else answer

    async def _dispatch(self, ctx: RequestContext, method: str, params: Any) -> Any:
        handler = _METHODS.get(method)
        if handler is not None:
            return await handler(self, ctx, params)
        if self._upstream is not None and method.isascii() and not method.startswith(_NOT_PROXIED):
            return await self._upstream.call(method, params)
        raise RpcError(METHOD_NOT_FOUND, "method not found")

    # -- methods -------------------------------------------------------------------------------------

    async def accounts(self, ctx: RequestContext, params: Any) -> list[str]:
        return [address for address, (_, active) in (await self._addresses(ctx)).items() if active]

    async def sign_transaction(self, ctx: RequestContext, params: Any) -> str:
        (value,) = _params(params, 1, "eth_signTransaction")[:1]
        sender, transaction = rpc_transaction(value)
        key_id = await self._key_for(ctx, sender)
        result = await self._signing.sign_transaction(ctx, key_id, transaction, None)
        return str(_signed(result)["raw_transaction"])

    async def eth_sign(self, ctx: RequestContext, params: Any) -> str:
        address, data = _params(params, 2, "eth_sign")[:2]
        key_id = await self._key_for(ctx, parse_address(address, "address"))
        message = sign_data(data, "data", text_allowed=False)
        return str(_signed(await self._signing.sign_message(ctx, key_id, message))["signature"])

    async def personal_sign(self, ctx: RequestContext, params: Any) -> str:
        data, address = _params(params, 2, "personal_sign")[:2]
        key_id = await self._key_for(ctx, parse_address(address, "address"))
        message = sign_data(data, "data", text_allowed=True)
        return str(_signed(await self._signing.sign_message(ctx, key_id, message))["signature"])

    async def sign_typed_data(self, ctx: RequestContext, params: Any) -> str:
        address, document = _params(params, 2, "eth_signTypedData")[:2]
        key_id = await self._key_for(ctx, parse_address(address, "address"))
        typed = typed_data_document(document)
        return str(_signed(await self._signing.sign_typed_data(ctx, key_id, typed))["signature"])

    async def send_transaction(self, ctx: RequestContext, params: Any) -> Any:
        """With an upstream node: fill chain id, fees, gas and nonce, sign under policy, submit."""
        node = self._upstream
        if node is None:
            raise RpcError(METHOD_NOT_FOUND, "method not found: eth_sendTransaction needs eth_upstream_url")
        (value,) = _params(params, 1, "eth_sendTransaction")[:1]
        sender, tx = rpc_transaction(value, default_type=2)
        key_id = await self._key_for(ctx, sender)
        chain_id = parse_quantity(await node.call("eth_chainId", []), "chainId")
        if "chainId" in tx and parse_quantity(tx["chainId"], "chainId") != chain_id:
            raise RpcError(
                INVALID_PARAMS,
                "invalid params: chainId is not the upstream node's",
                {"code": "chain_id_mismatch", "field": "chainId"},
            )
        tx["chainId"] = chain_id
        for name in wants_fees(tx):
            if name == "gasPrice":
                tx[name] = await node.call("eth_gasPrice", [])
            elif name == "maxPriorityFeePerGas":
                tx[name] = await node.call("eth_maxPriorityFeePerGas", [])
        if "maxFeePerGas" in wants_fees(tx):
            block = await node.call("eth_getBlockByNumber", ["latest", False])
            base = parse_quantity((block or {}).get("baseFeePerGas", 0), "baseFeePerGas")
            tx["maxFeePerGas"] = 2 * base + parse_quantity(tx["maxPriorityFeePerGas"], "maxPriorityFeePerGas")
        lock = self._nonce_locks.setdefault(sender, asyncio.Lock())
        chosen = "nonce" in tx
        async with lock, self._machine_lock(sender):
            if not chosen:
                pending = parse_quantity(
                    await node.call("eth_getTransactionCount", [sender, "pending"]), "nonce"
                )
                tx["nonce"] = max(pending, self._next_nonce.get(sender, 0))
            if "gas" not in tx:
                estimate = {k: v for k, v in tx.items() if k in ("to", "value", "data", "accessList")}
                tx["gas"] = await node.call(
                    "eth_estimateGas", [{"from": sender, **_hex_quantities(estimate)}]
                )
            for attempt in range(NONCE_ATTEMPTS):
                result = await self._signing.sign_transaction(ctx, key_id, tx, None)
                raw = str(_signed(result)["raw_transaction"])
                try:
                    tx_hash = await node.call("eth_sendRawTransaction", [raw])
                    break
                except RpcError as exc:
                    # Another process (a worker, a replica, another client) took this nonce: the node's
                    # pending count now (or the next one), signed again. A nonce the caller chose is
                    # never changed.
                    if chosen or attempt + 1 == NONCE_ATTEMPTS or not _nonce_taken(exc):
                        raise
                    pending = parse_quantity(
                        await node.call("eth_getTransactionCount", [sender, "pending"]), "nonce"
                    )
                    tx["nonce"] = max(pending, parse_quantity(tx["nonce"], "nonce") + 1)
            used = parse_quantity(tx["nonce"], "nonce")
            self._next_nonce[sender] = max(self._next_nonce.get(sender, 0), used + 1)
        return tx_hash

    def _machine_lock(self, sender: str) -> contextlib.AbstractAsyncContextManager[None]:
        if self._nonce_gates is None:
            return contextlib.nullcontext()
        return self._nonce_gates.held(sender)

    async def health_status(self, ctx: RequestContext, params: Any) -> str:
        checks = await self._health.check()
        if any(state != "up" for state in checks.values()):
            raise RpcError(RESOURCE_UNAVAILABLE, "unavailable", {"checks": checks})
        return "ok"

    # -- keys ----------------------------------------------------------------------------------------

    async def _addresses(self, ctx: RequestContext) -> dict[str, tuple[str, bool]]:
        """address -> (key id, active) of the secp256k1 keys the caller holds a grant on (a key not active
        is found, so that signing with it answers why it cannot)."""
        found: dict[str, tuple[str, bool]] = {}
        after: str | None = None
        while True:
            page = await self._keys.list_keys(ctx, limit=500, after=after)
            for key in page["items"]:
                if key["curve"] == "secp256k1" and key["address"]:
                    found.setdefault(key["address"], (key["id"], key["state"] == "active"))
            after = page["next"]
            if after is None:
                return found

    async def _key_for(self, ctx: RequestContext, address: str) -> str:
        """The id of the key with this address. A key's address never changes, so an address seen once
        is answered from memory; whether the caller holds a grant on it is the pipeline's to decide (a
        caller without one gets the same not-found answer as REST, audited there)."""
        key_id = self._key_ids.get(address)
        if key_id is not None:
            return key_id
        found = await self._addresses(ctx)
        for known, (known_id, _) in found.items():
            self._key_ids[known] = known_id
        if address not in found:
            raise KeyNotGranted(
                SERVER_ERROR, "no key you hold a grant on has that address", {"code": "key_not_found"}
            )
        return found[address][0]


def _nonce_taken(exc: RpcError) -> bool:
    """The node's way of saying a transaction with this sender and nonce is already known or mined."""
    text = exc.message.lower()
    return any(
        phrase in text
        for phrase in (
            "nonce too low",
            "already known",
            "replacement transaction underpriced",
            "nonce has already",
        )
    )


def _hex_quantities(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: hex(parse_quantity(v, k)) if k == "value" else v for k, v in fields.items()}


def _signed(result: Mapping[str, Any]) -> Mapping[str, Any]:
    """The signature, or the approval-pending error that names the approval and where to wait."""
    if result.get("state") == "pending_approval":
        approval = result.get("approval") or {}
        raise RpcError(
            APPROVAL_PENDING,
            "approval required: nothing was signed; the request waits for approvers",
            {
                "code": "approval_pending",
                "approval": approval,
                "payload_digest": result.get("payload_digest"),
                "expires_at": result.get("expires_at"),
                "wait": f"GET {approval.get('result_url', '')}?wait=60" if approval else None,
            },
        )
    return result


_METHODS = {
    "eth_accounts": JsonRpcService.accounts,
    "eth_signTransaction": JsonRpcService.sign_transaction,
    "eth_sendTransaction": JsonRpcService.send_transaction,
    "eth_sign": JsonRpcService.eth_sign,
    "personal_sign": JsonRpcService.personal_sign,
    "eth_signTypedData": JsonRpcService.sign_typed_data,
    "eth_signTypedData_v4": JsonRpcService.sign_typed_data,
    "health_status": JsonRpcService.health_status,
}

__all__ = [
    "INVALID_BODY_ANSWER",
    "PARSE_ERROR_ANSWER",
    "JsonRpcService",
    "NonceGates",
    "RpcError",
    "Upstream",
]
