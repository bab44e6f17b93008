"""KEK rotation commands on the ``secrets`` group: ``secrets rotate-kek SCOPE [--wait]``,
``secrets kek-rotation SCOPE`` (progress) and ``secrets destroy-kek SCOPE KEK_ID`` (a retired KEK).

Thin: call one ``SignerClient`` method; ``--wait`` reads the progress until the rotation has finished
(or ``--timeout`` passes: exit 1 with the progress so far). No key material is ever printed: KEK ids
are the token's names for the keys.
"""

from __future__ import annotations

import time
from typing import Any

import click

from signer.cli_api.common import api_call
from signer.cli_api.secrets import secrets
from signer.client import SignerClient

ROTATION_COLUMNS = ("id", "scope", "state", "total", "rewrapped", "remaining", "new_kek_id", "finished_at")
_POLL_SECONDS = 0.25


@secrets.command("rotate-kek")
@click.argument("scope")
@click.option("--wait", is_flag=True, help="Wait until every version is rewrapped.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=3600.0,
    show_default=True,
    help="With --wait: give up waiting after this many seconds (the rotation goes on).",
)
@api_call()
def secrets_rotate_kek(client: SignerClient, scope: str, wait: bool, timeout: float) -> Any:
    """Rotate the KEK of SCOPE (an organisation): new versions are sealed under a new KEK at once, and
    every existing version's data key is rewrapped under it in the token."""
    answer = client.rotate_kek(scope)
    if not wait:
        return answer
    until = time.monotonic() + timeout
    while True:
        answer = client.kek_rotation(scope)
        if answer.get("state") == "finished":
            return answer
        if time.monotonic() >= until:
            raise click.ClickException(
                f"the rotation is still {answer.get('state')}: "
                f"{answer.get('rewrapped')} of {answer.get('total')} versions rewrapped"
            )
        time.sleep(_POLL_SECONDS)


@secrets.command("kek-rotation")
@click.argument("scope")
@api_call()
def secrets_kek_rotation(client: SignerClient, scope: str) -> Any:
    """The progress of SCOPE's latest KEK rotation."""
    return client.kek_rotation(scope)


@secrets.command("destroy-kek")
@click.argument("scope")
@click.argument("kek_id")
@api_call()
def secrets_destroy_kek(client: SignerClient, scope: str, kek_id: str) -> Any:
    """Destroy KEK_ID, a KEK a finished rotation of SCOPE retired (refused while anything uses it)."""
    return client.destroy_retired_kek(scope, kek_id)


COMMANDS: tuple[click.Command, ...] = ()  # verbs of the ``secrets`` group (``cli_api.secrets``)
