"""The upstream Ethereum node the JSON-RPC endpoint forwards to: one aiohttp session, JSON-RPC 2.0 calls.

Owns the network: ``call(method, params)`` posts one call and returns its ``result``; an error the node
answers comes back as the service's ``RpcError`` with the node's code, message and data (a relayer sees
what the node said), and a node that cannot be reached or answers garbage is 503 ``upstream_unavailable``
(never the node's address or body). Must never decide, sign or parse transactions itself.
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp

from signer.errors import Unavailable
from signer.services.jsonrpc import RpcError


class EthUpstream:
    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None

    async def call(self, method: str, params: list[Any] | dict[str, Any]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            async with self._session.post(
                self._url,
                json=body,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise Unavailable(
                "the upstream Ethereum node did not answer", code="upstream_unavailable"
            ) from None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise Unavailable("the upstream Ethereum node answered garbage", code="upstream_unavailable")
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise Unavailable("the upstream Ethereum node answered garbage", code="upstream_unavailable")
            code = error.get("code")
            raise RpcError(
                code if isinstance(code, int) else -32000,
                str(error.get("message", "upstream error"))[:500],
                error.get("data"),
            )
        return answer["result"]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
