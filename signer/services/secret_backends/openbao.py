"""OpenBao / Vault KV v2, by reference, over plain HTTP(S) with aiohttp.

Owns: the reference rule (``MOUNT/data/PATH``, the KV v2 API path that OpenBao and Vault policies name:
``kv/data/payments/stripe``; the mount is what comes before the first ``/data/`` segment), one client
session per process (TLS verified against ``ca_file`` when given; the token from the operator's file or
environment variable, sent as ``X-Vault-Token``; the namespace as ``X-Vault-Namespace``), and mapping a
read to fields: ``data.data`` gives one field per key (strings as they are, other JSON values as compact
JSON text); the signer's integer ``version`` is the KV v2 version (``?version=N``), and the answer names
the version read (``data.metadata.version``). A deleted or destroyed version reads as missing.

It must never: follow a redirect (a token would travel with it), put the token, the backend's answer
text or a value in an exception, log or audit event, or write anything to OpenBao.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from signer.config import OpenBaoSettings
from signer.services.secret_backends.base import (
    Fetched,
    Selector,
    denied,
    fields_from_object,
    invalid_reference,
    missing,
    pick,
    timed_out,
    unavailable,
    unsupported_version,
)
from signer.store import SecretRecord

# A segment starts with a letter, digit or '_' (so '.' and '..' are not segments).
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}\Z")


def split_reference(reference: str) -> tuple[str, str]:
    """(mount, path) of ``MOUNT/data/PATH``."""
    mount, _, path = reference.partition("/data/")
    return mount, path


class OpenBaoKv2Backend:
    name = "openbao_kv2"

    def __init__(self, settings: OpenBaoSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] | None = None

    def check_reference(self, reference: str) -> str:
        mount, path = split_reference(reference)
        segments = [*mount.split("/"), *path.split("/")]
        if (
            len(reference) > 2048
            or not mount
            or not path
            or not all(_SEGMENT.match(part) for part in segments)
        ):
            raise invalid_reference(
                "a KV v2 reference is MOUNT/data/PATH, segments of A-Za-z0-9_.@+- starting with A-Za-z0-9_"
            )
        return reference

    def _open(self) -> tuple[aiohttp.ClientSession, dict[str, str]]:
        if self._session is None or self._session.closed or self._headers is None:
            s = self._settings
            headers = {"X-Vault-Token": s.token().reveal(), "X-Vault-Request": "true"}
            if s.namespace:
                headers["X-Vault-Namespace"] = s.namespace
            context = ssl.create_default_context(cafile=None if s.ca_file is None else str(s.ca_file))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=s.timeout_seconds),
            )
            self._headers = headers
        return self._session, self._headers

    async def _get(self, url: str, params: dict[str, str]) -> Any:
        session, headers = self._open()
        try:
            async with session.get(url, params=params, headers=headers, allow_redirects=False) as response:
                if response.status == 404:
                    raise missing()
                if response.status in (401, 403):
                    raise denied()
                if response.status != 200:
                    raise unavailable()
                return await response.json(content_type=None)
        except TimeoutError:
            raise timed_out() from None
        except (aiohttp.ClientError, ValueError):
            raise unavailable() from None

    async def read(self, secret: SecretRecord, selector: Selector, names: Sequence[str] | None) -> Fetched:
        if selector.backend_version is not None:
            raise unsupported_version("KV v2 versions are numbers: use version")
        assert secret.reference is not None
        mount, path = split_reference(secret.reference)
        base = self._settings.address.rstrip("/")
        url = f"{base}/v1/{quote(mount)}/data/{quote(path)}"
        params = {} if selector.version is None else {"version": str(selector.version)}
        answer = await self._get(url, params)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise unavailable()
        values = data.get("data")
        metadata = data.get("metadata")
        if values is None:  # a deleted or destroyed version
            raise missing()
        if not isinstance(values, dict):
            raise unavailable()
        number = metadata.get("version") if isinstance(metadata, dict) else None
        version = number if type(number) is int else None
        return Fetched(pick(fields_from_object(values), names), version)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
