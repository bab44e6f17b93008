"""``signer-client``: the API commands alone, for a machine that talks to a signer and runs none.

The same commands as ``signer`` minus the local ones (init, serve, migrate, config, audit verify), which
need the server's dependencies (python-pkcs11, SQLAlchemy, aiohttp). This module and everything it
imports need only the standard library, click, cryptography (approver signatures) and python-dotenv
(``secrets import``): the client distribution (clients/python/pyproject.toml) installs exactly those.
"""

from __future__ import annotations

import click

from signer import cli_api


@click.group(epilog=cli_api.EXIT_CODES_HELP)
def main() -> None:
    """Talk to a running signer (--server, --token-file; see `signer-client keys list --help`)."""


for _command in cli_api.GROUPS:
    main.add_command(_command)


@main.group()
def audit() -> None:
    """Audit log tools: read events from a server and export them."""


for _command in cli_api.AUDIT_COMMANDS:
    audit.add_command(_command)


if __name__ == "__main__":
    main()
