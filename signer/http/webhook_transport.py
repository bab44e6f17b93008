"""The webhook dispatcher's HTTP client (aiohttp lives in ``signer.http`` and ``signer.app`` only)."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp


class AiohttpTransport:
    """``WebhookTransport`` over one aiohttp session; redirects are not followed (a receiver that moved
    must be registered again), and the answer's body is not read beyond the status."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                return response.status
        except aiohttp.ClientError as exc:
            raise OSError(type(exc).__name__) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
