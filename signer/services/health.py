"""Readiness: is the HSM usable and the database writable, each answered within a short bound.

The database is "up" only if a read answers and a write commits (``Store.probe_write``): a database
that answers SELECTs but refuses writes (a read-only or full file, a read-only replica) cannot record a
decision, so no signature could be released. Concurrent readiness checks share one probe in flight, so
a burst of checks costs one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from signer.errors import SignerError
from signer.hsm import KeyVault
from signer.store import Store

log = logging.getLogger("signer.health")


class HealthService:
    def __init__(self, store: Store, hsm: KeyVault, timeout: float = 2.0) -> None:
        self._store = store
        self._hsm = hsm
        self._timeout = timeout
        self._database_probe: asyncio.Task[None] | None = None

    async def _probe(self, name: str, probe: Awaitable[None]) -> str:
        try:
            await asyncio.wait_for(probe, self._timeout)
        except (SignerError, TimeoutError, OSError) as exc:
            log.warning("readiness probe failed", extra={"component": name, "error": type(exc).__name__})
            return "down"
        return "up"

    async def _database(self) -> None:
        await self._store.ping()
        await self._store.probe_write()

    def _shared_database_probe(self) -> Awaitable[None]:
        if self._database_probe is None or self._database_probe.done():
            self._database_probe = asyncio.get_running_loop().create_task(
                self._database(), name="signer-readiness-database"
            )
            # Every caller may have timed out: the outcome is then read here, never left unretrieved.
            self._database_probe.add_done_callback(lambda task: task.cancelled() or task.exception())
        # shield: one caller's timeout must not cancel the probe the others wait for.
        return asyncio.shield(self._database_probe)

    async def check(self) -> dict[str, str]:
        hsm, database = await asyncio.gather(
            self._probe("hsm", self._hsm.ping()), self._probe("database", self._shared_database_probe())
        )
        return {"hsm": hsm, "database": database}
