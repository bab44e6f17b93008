"""Two real OS processes group-committing into one database still make one gapless, verifying chain."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from signer.audit import verify_chain
from tests.dbfixtures import fresh_store

pytestmark = pytest.mark.slow

UNITS_PER_PROCESS = 300
CALLERS_PER_PROCESS = 30

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from signer.store import PrincipalRecord, open_store

    async def main(url, tag, units, callers):
        store = await open_store(url)
        try:
            print("ready", flush=True)
            sys.stdin.readline()  # the parent says go once every process is ready
            seqs = []

            def unit_for(i):
                async def unit(w):
                    if i % 10 == 0:  # some units write facts too, so savepoints are exercised
                        await w.principals.insert(
                            PrincipalRecord(f"{tag}-{i}", f"{tag}-{i}", "service", datetime.now(UTC))
                        )
                    return w.append_audit(
                        {"kind": "test.process", "at": datetime.now(UTC), "request_id": f"{tag}-{i}"}
                    ).seq
                return unit

            async def caller(c):
                for i in range(c, units, callers):
                    seqs.append(await store.submit(unit_for(i)))

            await asyncio.gather(*(caller(c) for c in range(callers)))
            print("done", len(seqs), len(set(seqs)), flush=True)
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_two_processes_one_chain(store_url: str) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, store_url, tag, str(UNITS_PER_PROCESS), str(CALLERS_PER_PROCESS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert await asyncio.to_thread(child.stdout.readline) == "ready\n"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [await asyncio.to_thread(child.communicate, timeout=240) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == f"done {UNITS_PER_PROCESS} {UNITS_PER_PROCESS}"
    async with fresh_store(store_url) as store, store.read() as r:
        records = await r.audit.events(limit=10_000)
        head = await r.audit_head()
        principals = await r.principals.all()
    total = 2 * UNITS_PER_PROCESS
    assert [rec.seq for rec in records] == list(range(1, total + 1))
    assert verify_chain(records, expected_head=head).ok
    assert {rec.request_id for rec in records} == {f"{t}-{i}" for t in "ab" for i in range(UNITS_PER_PROCESS)}
    assert len(principals) == total // 10


KILLED_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from signer.store import open_store

    async def main(url):
        store = await open_store(url)

        async def unit(w):
            return w.append_audit({"kind": "test.durable", "at": datetime.now(UTC)}).seq

        async def caller():
            while True:
                seq = await store.submit(unit)
                print(seq, flush=True)  # only after submit() returned, i.e. after COMMIT

        await asyncio.gather(*(caller() for _ in range(8)))

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_returned_submit_survives_kill_9(store_url: str) -> None:
    """U-02 at the store: whatever submit() returned is committed, even if the process dies right after."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, store_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[int] = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < 200:
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, child.stderr.read() if child.stderr else "child exited"
            acknowledged.append(int(line))
    finally:
        child.kill()  # SIGKILL: no clean shutdown, no final commit
        await asyncio.to_thread(child.wait)
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()
    async with fresh_store(store_url) as store, store.read() as r:
        records = await r.audit.events(limit=100_000)
        head = await r.audit_head()
        integrity = await store.integrity_check()
    stored = {rec.seq for rec in records}
    assert set(acknowledged) <= stored
    assert [rec.seq for rec in records] == list(range(1, len(records) + 1))
    assert verify_chain(records, expected_head=head).ok and integrity
