"""F-01 scenario, run in a process of its own: ``python -m tests.hsm.token_gone MODE WORKDIR``.

The process makes a SoftHSM installation in WORKDIR, starts an ``Hsm``, signs, then takes the token
away (MODE ``move``: the token directory is renamed; ``chmod``: it is made mode 000), tries to use it,
gives it back and tries again. It prints one JSON document with what each call returned; the test in
``test_token_gone.py`` checks it (and verifies the signatures independently).

What SoftHSM 2.6.1 does when its token directory goes away under a logged-in process (measured):
signing with an already found key fails with CKR_OBJECT_HANDLE_INVALID, a new search for the key
succeeds but finds nothing, C_GetTokenInfo fails with CKR_GENERAL_ERROR, and all of that stays so even
after the directory is back, until the library is finalised and initialised again; C_Initialize itself
fails with CKR_GENERAL_ERROR while the directory is missing or unreadable. (For ``chmod`` the process
must not hold CAP_DAC_OVERRIDE, or mode 000 means nothing: the test drops it with ``setpriv`` as root.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from signer.errors import SignerError
from signer.hsm import Curve, Hsm
from signer.hsm.provision import provision_softhsm

DIGEST = bytes(range(32))


async def outcome(call: Awaitable[Any]) -> str:
    try:
        value = await call
    except SignerError as exc:
        return exc.code
    return value.hex() if isinstance(value, bytes) else "ok"


def take_away(mode: str, token_dir: Path) -> None:
    if mode == "move":
        token_dir.rename(token_dir.with_name("tokens.gone"))
    else:
        token_dir.chmod(0)


def give_back(mode: str, token_dir: Path) -> None:
    if mode == "move":
        token_dir.with_name("tokens.gone").rename(token_dir)
    else:
        token_dir.chmod(0o700)


async def scenario(mode: str, workdir: Path) -> dict[str, Any]:
    (token,) = provision_softhsm(workdir, ["gone"])
    os.environ["SOFTHSM2_CONF"] = str(token.conf_path)
    token_dir = workdir / "tokens"
    hsm = Hsm(token.module_path, token.label, token.user_pin, deadline_seconds=5.0, reconnect_interval=0.0)
    await hsm.start()
    try:
        key = await hsm.generate_key(Curve.SECP256K1, "survivor")
        result: dict[str, Any] = {"public_key": key.public_key.hex()}
        result["before"] = await outcome(hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST))
        take_away(mode, token_dir)
        try:
            result["gone"] = {
                "sign": await outcome(hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)),
                "ping": await outcome(hsm.ping()),
                "sign_again": await outcome(hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)),
                "list_keys": await outcome(hsm.list_keys()),
                "generate_key": await outcome(hsm.generate_key(Curve.P256, "while-gone")),
            }
        finally:
            give_back(mode, token_dir)
        result["back"] = {
            "ping": await outcome(hsm.ping()),
            "sign": await outcome(hsm.sign(key.hsm_id, Curve.SECP256K1, DIGEST)),
            "keys": [[hsm_id, label] for hsm_id, label, _ in await hsm.list_keys()],
        }
        result["hsm_id"] = key.hsm_id
        stats = hsm.stats
        result["stats"] = {"reconnects": stats.reconnects, "reconnect_failures": stats.reconnect_failures}
        return result
    finally:
        await hsm.close()


def main() -> None:
    mode, workdir = sys.argv[1], Path(sys.argv[2])
    if mode not in ("move", "chmod"):
        raise SystemExit("mode must be move or chmod")
    print(json.dumps(asyncio.run(scenario(mode, workdir))))


if __name__ == "__main__":
    main()
