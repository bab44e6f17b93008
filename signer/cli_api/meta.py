"""The server as a whole: ``whoami``, ``status`` (readiness), ``metrics`` and ``openapi``.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from signer.cli_api.common import EXIT_CONFIG, EXIT_FAILED, EXIT_UNAVAILABLE, Raw, api_call, emit
from signer.client import ApiError, ClientConfigError, ClientConnectionError, SignerClient, load_client_config


@click.command()
@api_call()
def whoami(client: SignerClient) -> Any:
    """Show who the token belongs to."""
    return client.whoami()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--server", default=None, help="Server URL [env SIGNER_SERVER].")
@click.option("--ca-file", type=click.Path(dir_okay=False), default=None, help="CA bundle for TLS.")
@click.option("--client-config", type=click.Path(dir_okay=False), default=None, help="Client TOML.")
def status(as_json: bool, server: str | None, ca_file: str | None, client_config: str | None) -> None:
    """Ask a running server whether it is ready (HSM and database answer); exit 9 when it is not."""
    try:
        config = load_client_config(
            server=server, ca_file=ca_file, config_file=client_config, need_token=False
        )
    except ClientConfigError as exc:
        click.echo(f"signer: error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        ready, body = SignerClient.from_config(config).ready()
    except (ClientConnectionError, ApiError) as exc:
        click.echo(f"signer: failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    emit(body, as_json, None)
    if not ready:
        sys.exit(EXIT_UNAVAILABLE)


@click.command()
@api_call(need_token=False)
def metrics(client: SignerClient) -> Any:
    """Print the server's Prometheus metrics (a token is needed unless it serves loopback callers)."""
    return client.metrics().rstrip("\n")


@click.command()
@api_call(need_token=False)
def openapi(client: SignerClient) -> Any:
    """Print the server's OpenAPI document (JSON)."""
    return Raw(json.dumps(client.openapi(), indent=2))


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = (whoami, status, metrics, openapi)
