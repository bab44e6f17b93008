"""Settings (tables/meta.py): the contract both backends pass."""

from __future__ import annotations

import pytest

from signer.errors import Conflict
from signer.store import Store


async def test_meta(store: Store) -> None:
    async with store.read() as r:
        install_id = await r.meta.get("install_id")
        assert install_id is not None and len(install_id) == 32
        assert await r.meta.get("audit_salt") is None
    async with store.write() as w:
        await w.meta.set("audit_salt", "aa")
        with pytest.raises(Conflict) as dup:
            await w.meta.set("audit_salt", "bb")
        assert dup.value.code == "meta_exists"
        await w.meta.set("audit_salt", "cc", replace=True)
        await w.meta.set("fresh", "dd", replace=True)
    async with store.read() as r:
        assert (await r.meta.get("audit_salt"), await r.meta.get("fresh")) == ("cc", "dd")
