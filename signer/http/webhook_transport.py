"""The webhook dispatcher's HTTP client (aiohttp lives in ``signer.http`` and ``signer.app`` only).

Every connection goes to an address the destination policy approved (``signer.services.destinations``):
a host name is resolved by ``_CheckedResolver``, whose answer aiohttp connects to without asking DNS
again (no second answer to rebind), and an address literal, which aiohttp does not resolve, is checked
before the request. Redirects are not followed and no proxy from the environment is used.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Mapping

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from signer.services.destinations import DestinationPolicy, DestinationRefused, parse_address


class _CheckedResolver(AbstractResolver):
    """The system resolver's answer, refused whole unless every address in it is allowed."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        parsed = [parse_address(str(entry["host"])) for entry in found]
        addresses = [a for a in parsed if a is not None]
        # Something that is not an address (never expected from the resolver) refuses the whole answer.
        self._policy.check(host, addresses if len(addresses) == len(parsed) else [])
        return found

    async def close(self) -> None:
        await self._inner.close()


class AiohttpTransport:
    """``WebhookTransport`` over one aiohttp session; redirects are not followed (a receiver that moved
    must be registered again), and the answer's body is not read beyond the status."""

    def __init__(self, destinations: DestinationPolicy | None = None) -> None:
        self._policy = destinations or DestinationPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        host = urllib.parse.urlsplit(url).hostname or ""
        literal = parse_address(host)
        if literal is not None:
            self._policy.check(host, [literal])
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self._policy), use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        try:
            async with self._session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                return response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, DestinationRefused):
                raise DestinationRefused("webhook destination not allowed") from None
            raise OSError(type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise OSError(type(exc).__name__) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
