"""Readiness: is the HSM usable and the database reachable, each answered within a short bound."""

from __future__ import annotations

import asyncio
import logging

from signer.errors import SignerError
from signer.hsm import KeyVault
from signer.store import Store

log = logging.getLogger("signer.health")


class HealthService:
    def __init__(self, store: Store, hsm: KeyVault, timeout: float = 2.0) -> None:
        self._store = store
        self._hsm = hsm
        self._timeout = timeout

    async def _probe(self, name: str, probe: object) -> str:
        try:
            await asyncio.wait_for(probe, self._timeout)  # type: ignore[arg-type]
        except (SignerError, TimeoutError, OSError) as exc:
            log.warning("readiness probe failed", extra={"component": name, "error": type(exc).__name__})
            return "down"
        return "up"

    async def check(self) -> dict[str, str]:
        hsm, database = await asyncio.gather(
            self._probe("hsm", self._hsm.ping()), self._probe("database", self._store.ping())
        )
        return {"hsm": hsm, "database": database}
