"""Schema migrations: ``migrate(url)`` brings a database to the newest Alembic revision.

Used by ``signer init`` and by the tests. Alembic's environment runs its own event loop, so the upgrade
runs on a private thread: ``migrate`` can be called from plain code and from inside a running event loop
alike (it blocks the caller until done; migrations are a start-up step, not a request path).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from signer.errors import ConfigurationError
from signer.store.engine import create_private, make_private, parse_url, translate

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an ini option: ini values go through %-interpolation, URLs may not.
    config.attributes["signer_url"] = url
    return config


def head_revision() -> str:
    """The newest revision this build knows."""
    head = ScriptDirectory.from_config(_config("")).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def migrate(url: str) -> None:
    """Create or upgrade the schema at ``url`` to the newest revision (SQLite: parent dir is created)."""
    target = parse_url(url)
    if target.path is not None:
        target.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(target.path)
        make_private(target.path)
    config = _config(target.url.render_as_string(hide_password=False))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            command.upgrade(config, "head")
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=run, name="signer-migrate")
    worker.start()
    worker.join()
    if failure:
        # Driver errors can quote the URL or the path; say only what kind of failure it was.
        error = translate(failure[0])
        if error is not None:
            raise error from None
        if isinstance(failure[0], CommandError):
            # e.g. a revision this build does not know: the database is newer than the code.
            raise ConfigurationError(
                "the database schema is not one this build knows (is it from a newer release?)"
            ) from None
        raise failure[0]
