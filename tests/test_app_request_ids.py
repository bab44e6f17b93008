"""Request ids the service makes (signer.app): fresh CSPRNG hex, never repeated, not shared across fork."""

from __future__ import annotations

import os
import re

from signer.app import _RequestIds


def test_request_ids_are_sixteen_hex_digits_and_never_repeat_across_refills() -> None:
    ids = _RequestIds()
    made = [ids() for _ in range(3 * _RequestIds._BATCH + 7)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", one) for one in made)
    assert len(set(made)) == len(made)


def test_a_forked_child_does_not_reuse_the_ids_its_parent_holds() -> None:
    ids = _RequestIds()
    ids()  # the parent now holds the rest of a batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and exits at once
        try:
            os.write(write, "".join(ids() for _ in range(8)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode()
    os.waitpid(pid, 0)
    parent = "".join(ids() for _ in range(8))
    assert len(child) == len(parent) == 8 * 16
    assert child != parent
