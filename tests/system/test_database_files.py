"""Issue 10 section 5 (F-06): the database files are private like the rest of the data directory.

A real ``signer init`` and ``signer serve`` on SQLite: after a write, ``signer.db`` and every side file
SQLite made (``-wal``, ``-shm``, ``-journal``) are 0600; files an older release or a restore left wider
are narrowed at the next start.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tests.service_harness import Installation, make_service

SIDE_FILES = ("signer.db", "signer.db-wal", "signer.db-shm", "signer.db-journal")


def modes(data_dir: Path) -> dict[str, int]:
    return {
        name: stat.S_IMODE((data_dir / name).stat().st_mode)
        for name in SIDE_FILES
        if (data_dir / name).exists()
    }


def test_database_files_are_0600_and_narrowed_at_start(own_installation: Installation, launch) -> None:
    data = own_installation.data_dir
    assert modes(data)["signer.db"] == 0o600  # as `signer init` made it
    server = launch(own_installation)
    make_service(server, "files-writer")  # a write: the WAL and shared-memory files exist now
    found = modes(data)
    assert {"signer.db", "signer.db-wal", "signer.db-shm"} <= set(found), found
    assert all(mode == 0o600 for mode in found.values()), found
    server.stop()

    for name in modes(data):
        (data / name).chmod(0o644)
    (data / "signer.db-journal").write_bytes(b"")  # a leftover rollback journal, world-readable
    (data / "signer.db-journal").chmod(0o644)
    server = launch(own_installation)
    make_service(server, "files-writer-2")
    found = modes(data)
    assert all(mode == 0o600 for mode in found.values()), found
