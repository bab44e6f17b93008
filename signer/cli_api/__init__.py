"""``signer`` commands that talk to a running server through ``signer.client.SignerClient``.

Every API command takes ``--server``, ``--token-file``, ``--ca-file``, ``--client-config`` and ``--json``
(added by ``api_call``); the token never comes from argv (argv is visible in ``ps``): ``--token-file``,
``SIGNER_TOKEN_FILE``, ``SIGNER_TOKEN`` or ``token_file`` in the client config. A token file may hold the
token alone or the credentials JSON that ``signer principals create --credentials-out`` writes.

Output: aligned tables (lists) or ``name  value`` lines (one object) for people; ``--json`` prints the
server's JSON answer (errors: the problem document, on stdout), except that ``--credentials-out`` keeps the
tokens out of it and the audit commands print ``{head, items, next}`` or an export summary. Exit codes are
``EXIT_*`` below.

Adding a command for a new endpoint
-----------------------------------
1. Add one method to ``SignerClient`` (``signer/client.py``) that calls ``self.request(...)``.
2. For a new resource, add a module here (see ``keys.py``) with its click group, list the group in the
   module's ``COMMANDS`` and the module in ``COMMAND_MODULES`` below; for a new verb, add one function
   decorated with ``@<group>.command("verb")``, its own click options and arguments, then
   ``@api_call(columns=(...))`` (from ``signer.cli_api.common``). The function receives the client
   first and returns the server's answer; ``api_call`` adds the connection options, renders tables or
   JSON, and turns errors into exit codes::

       @approvals.command("list")
       @click.option("--state", default=None, help="Only approvals in this state.")
       @api_call(columns=("id", "key_id", "state", "expires_at"))
       def approvals_list(client: SignerClient, state: str | None) -> Any:
           \"\"\"List approval requests.\"\"\"
           return client.list_approvals(state=state)

3. Run it in a live-server test (``tests/test_cli_client.py``, the ``cli`` fixture). The last two tests
   there fail while an ``api_call`` command was never run, or while a route in any ``RouteTableDef`` of
   ``signer.http`` was never requested by the CLI: a new endpoint without a command fails the suite.

One module per resource group: ``meta`` (whoami, status, metrics, openapi), ``identity`` (auth,
principals, tokens), ``keys``, ``grants``, ``sign``, ``groups``, ``webhooks``, ``policies``,
``approvals``, ``audit``, ``secrets``,
``secret_exec`` (``exec``, ``secrets env``, ``secrets import``), ``secret_keks`` (``secrets rotate-kek``,
``kek-rotation``, ``destroy-kek``); what they share (exit codes, rendering,
``api_call``) is in ``common``. Must never import server internals (an import contract keeps this
package on ``signer.client``).
"""

from __future__ import annotations

from types import ModuleType

import click

from signer.cli_api import (
    approvals,
    audit,
    books,
    grants,
    groups,
    identity,
    impact,
    keys,
    meta,
    policies,
    secret_exec,
    secret_keks,
    secret_versions,
    secrets,
    sign,
    webhooks,
)
from signer.cli_api.common import (
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_CONFLICT,
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_RATE_LIMITED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_code_for_status,
    render_record,
    render_table,
    report_api_error,
)

COMMAND_MODULES: tuple[ModuleType, ...] = (
    meta,
    identity,
    keys,
    grants,
    sign,
    groups,
    webhooks,
    policies,
    approvals,
    audit,
    secrets,
    secret_exec,
    secret_keks,
    secret_versions,
    impact,
    books,
)

# The top-level commands, in help order; ``signer.cli`` adds them to ``main``.
GROUPS: tuple[click.Command, ...] = tuple(
    command for module in COMMAND_MODULES for command in module.COMMANDS
)
# Under ``signer audit``, beside the offline ``verify`` that ``signer.cli`` owns.
AUDIT_COMMANDS: tuple[click.Command, ...] = audit.AUDIT_COMMANDS

__all__ = [
    "AUDIT_COMMANDS",
    "COMMAND_MODULES",
    "EXIT_CODES_HELP",
    "EXIT_CONFIG",
    "EXIT_CONFLICT",
    "EXIT_DENIED",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_RATE_LIMITED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "GROUPS",
    "exit_code_for_status",
    "render_record",
    "render_table",
    "report_api_error",
]
