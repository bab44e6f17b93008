"""Two processes on one SoftHSM token: one generating keys while the other searches and lists them.

Without the inter-process token lock, SoftHSM 2.6's file store let the searcher see (and leave on
disk) half-written keys, with an empty CKA_ID and CKA_SENSITIVE reading false, so a worker starting
at that moment refused to run. With the lock every key comes out whole and confined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from signer.hsm.provision import provision_softhsm

GENERATOR = """
import asyncio, json, os, sys
from signer.config import Secret
from signer.hsm import Curve, Hsm
async def main():
    hsm = Hsm(os.environ["MODULE"], os.environ["LABEL"], Secret(os.environ["PIN"]))
    await hsm.start()
    ids = []
    try:
        for n in range(int(os.environ["COUNT"])):
            ids.append((await hsm.generate_key(Curve.SECP256K1, f"lock-{n}")).hsm_id)
    finally:
        await hsm.close()
    print(json.dumps(ids))
asyncio.run(main())
"""

SEARCHER = """
import asyncio, os, pathlib
from signer.config import Secret
from signer.hsm import Hsm
async def main():
    hsm = Hsm(os.environ["MODULE"], os.environ["LABEL"], Secret(os.environ["PIN"]))
    await hsm.start()
    done = pathlib.Path(os.environ["DONE"])
    rounds = 0
    try:
        while not done.exists() and rounds < 5000:
            await hsm.list_keys()
            await hsm.unconfined_keys()
            rounds += 1
    finally:
        await hsm.close()
    print(rounds)
asyncio.run(main())
"""

INSPECTOR = """
import asyncio, json, os
from signer.config import Secret
from signer.hsm import Hsm
async def main():
    hsm = Hsm(os.environ["MODULE"], os.environ["LABEL"], Secret(os.environ["PIN"]))
    await hsm.start()
    try:
        keys = await hsm.list_keys()
        print(json.dumps({"ids": [k[0] for k in keys], "unconfined": await hsm.unconfined_keys()}))
    finally:
        await hsm.close()
asyncio.run(main())
"""


@pytest.mark.slow
def test_keys_written_while_another_process_searches_come_out_whole(tmp_path: Path) -> None:
    (token,) = provision_softhsm(tmp_path, ["lock-test"])
    env = token.env(os.environ)
    env.update(
        MODULE=token.module_path,
        LABEL=token.label,
        PIN=token.user_pin.reveal(),
        COUNT="20",
        DONE=str(tmp_path / "done"),
    )
    searcher = subprocess.Popen(
        [sys.executable, "-c", SEARCHER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        generated = subprocess.run(
            [sys.executable, "-c", GENERATOR],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        (tmp_path / "done").touch()
        searcher_out, searcher_err = searcher.communicate(timeout=120)
    assert generated.returncode == 0, generated.stderr
    assert searcher.returncode == 0, searcher_err
    assert int(searcher_out.strip()) > 0
    made = json.loads(generated.stdout)
    inspected = subprocess.run(
        [sys.executable, "-c", INSPECTOR], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["unconfined"] == []
    assert sorted(report["ids"]) == sorted(made)
    assert all(len(hsm_id) == 32 for hsm_id in report["ids"])
