"""Audit commands, under ``signer audit`` (``signer.cli`` adds the offline ``verify``): ``events`` pages the
log, ``export`` streams it to a file and may verify the chain.

Thin: parse options, call one ``SignerClient`` method, return the answer for ``api_call`` to render.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import click

from signer.cli_api.common import EXIT_FAILED, Outcome, api_call, progress_wanted
from signer.client import ApiError, ClientConnectionError, SignerClient

AUDIT_COLUMNS = ("seq", "at", "kind", "request_id")


@click.command("events")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this seq."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Page size.")
@api_call(columns=AUDIT_COLUMNS)
def audit_events(client: SignerClient, after: int, limit: int) -> Any:
    """One page of the audit log (auditor, admin); --json gives {head, items, next}."""
    lines, head = client.audit_page(after, limit)
    items = [json.loads(line) for line in lines]
    last = items[-1]["seq"] if items else after
    return {"head": head, "items": items, "next": last if items and last < head else None}


@click.command("export")
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--after", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this seq."
)
@click.option("--page-size", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@click.option("--verify", "verify_after", is_flag=True, help="Verify the written file's chain.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option(
    "--checkpoint",
    "held_checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint note you hold: a range export (--after) then carries the proof that it extends it.",
)
@api_call()
def audit_export(
    client: SignerClient,
    output: Path,
    after: int,
    page_size: int,
    verify_after: bool,
    force: bool,
    held_checkpoint: Path | None,
) -> Any:
    """Stream every audit event to OUTPUT as JSONL ('-' for stdout); progress on stderr when it is a tty.

    The file appears under its name only when the export is complete (it is written as OUTPUT.partial).
    """
    to_stdout = str(output) == "-"
    if not to_stdout and output.exists() and not force:
        raise click.BadParameter(f"{output} exists (use --force to replace it)", param_hint="OUTPUT")
    partial = output.with_name(output.name + ".partial")
    retained_after = client.audit_retained_after()
    if after < retained_after:
        click.echo(
            f"events 1..{retained_after} were archived and pruned: exporting from {retained_after + 1}",
            err=True,
        )
        after = retained_after
    # The signed checkpoints over this range travel in the export, each right after the event at its
    # size, and (from a later start) the tree's right edge there: `signer audit verify` needs both.
    try:
        checkpoints, edge = client.audit_checkpoints(after)
    except (ApiError, ClientConnectionError) as exc:
        if isinstance(exc, ApiError) and exc.status != 404:
            raise
        click.echo("the server publishes no checkpoints: the export carries none", err=True)
        checkpoints, edge = [], None
    notes = {int(c["size"]): str(c["note"]) for c in checkpoints}
    consistency = None
    if held_checkpoint is not None and checkpoints:
        held_size = int(held_checkpoint.read_text(encoding="utf-8").split("\n")[1])
        if held_size <= after:
            second = int(checkpoints[0]["size"])
            consistency = client.audit_proof("consistency", {"first": held_size, "second": second})
    events = client.audit_export(after, page_size)
    count, last = 0, after
    handle: TextIO = sys.stdout if to_stdout else open(partial, "w", encoding="utf-8")

    def write(line: str, seq: int) -> None:
        handle.write(line)
        note = notes.get(seq)
        if note is not None:
            handle.write(json.dumps({"checkpoint": note}, sort_keys=True) + "\n")

    try:
        if after and edge is not None:
            handle.write(json.dumps({"tree_start": {"size": after, "edge": edge}}, sort_keys=True) + "\n")
        if consistency is not None:
            proof = {k: consistency[k] for k in ("first", "second", "proof")}
            handle.write(json.dumps({"consistency": proof}, sort_keys=True) + "\n")
        first = next(events, None)
        if first is not None and progress_wanted():
            with click.progressbar(
                length=max(first[2] - after, 1), label="exporting audit events", file=sys.stderr
            ) as bar:
                for line, seq, _ in itertools.chain([first], events):
                    write(line, seq)
                    bar.update(seq - last)
                    count, last = count + 1, seq
        elif first is not None:
            for line, seq, _ in itertools.chain([first], events):
                write(line, seq)
                count, last = count + 1, seq
    finally:
        if not to_stdout:
            handle.close()
    if to_stdout:
        click.echo(f"exported {count} events", err=True)
        return None
    os.replace(partial, output)
    summary: dict[str, Any] = {
        "exported": count,
        "last_seq": last,
        "checkpoints": sum(1 for size in notes if size <= last),
        "file": str(output),
    }
    if not verify_after:
        click.echo(f"verify offline with: signer audit verify {output} --public-key KEY", err=True)
        return summary
    from signer.audit_note import VerifierKey
    from signer.audit_verify import ExportVerifier
    from signer.crypto.signatures import check_ed25519

    # From seq 1, the first key alone: the verifier follows every rotation from the log itself, as an
    # auditor does. A range export may start after a rotation: every published key is held then.
    published = client.audit_public_key() if checkpoints else {}
    listed = [k["verifier_key"] for k in published.get("keys") or [published] if k.get("verifier_key")]
    held = [VerifierKey.parse(text) for text in (listed[:1] if after == 0 else listed)]
    verifier = ExportVerifier(keys=held, check=check_ed25519)
    with open(output, encoding="utf-8") as written:
        for line in written:
            if not verifier.feed(line):
                break
    report = verifier.finish()
    summary["verified"] = report["ok"]
    summary["ranges"] = report["ranges"]
    if not report["ok"]:
        summary.update(first_bad_seq=report["first_bad_seq"], reason=report["reason"], what=report["what"])
        return Outcome(summary, EXIT_FAILED)
    return summary


@click.command("public-key")
@api_call()
def audit_public_key(client: SignerClient) -> Any:
    """The audit keys that sign checkpoints: the one in force (origin, Ed25519 key, signed-note verifier
    key) and every key with its validity (rotation seq, first and last checkpoint signed, state)."""
    return client.audit_public_key()


@click.group("key")
def audit_key() -> None:
    """The audit key that signs checkpoints."""


@audit_key.command("rotate")
@api_call()
def audit_key_rotate(client: SignerClient) -> Any:
    """Rotate the audit key (admin): a new key in the token, endorsed by a checkpoint the old key signs
    and the new key co-signs; the old key's private half is then destroyed (audited)."""
    return client.audit_key_rotate()


@click.command("checkpoint")
@click.option("--size", type=click.IntRange(min=1), default=None, help="An earlier checkpoint's size.")
@click.option("--note", "note_only", is_flag=True, help="Print the signed note alone (to keep as an anchor).")
@api_call()
def audit_checkpoint(client: SignerClient, size: int | None, note_only: bool) -> Any:
    """The newest signed checkpoint of the audit log (auditor, admin)."""
    answer = client.audit_checkpoint(size)
    if note_only:
        click.echo(answer["note"], nl=False)
        return None
    return answer


@click.command("checkpoints")
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True, help="Sizes above this.")
@api_call(columns=("size", "root", "created_at"))
def audit_checkpoints(client: SignerClient, after: int) -> Any:
    """Every signed checkpoint with a size above --after, and the tree's right edge at --after."""
    items, edge = client.audit_checkpoints(after)
    return {"items": items, "edge": edge}


@click.group("proof")
def audit_proof() -> None:
    """Merkle proofs over the audit log (RFC 6962): check them with `signer audit verify` or by hand."""


@audit_proof.command("inclusion")
@click.option("--seq", type=click.IntRange(min=1), required=True, help="The event's seq.")
@click.option("--size", type=click.IntRange(min=1), required=True, help="A checkpoint's size.")
@api_call()
def audit_proof_inclusion(client: SignerClient, seq: int, size: int) -> Any:
    """The proof that event SEQ is in the tree of a checkpoint of SIZE events."""
    return client.audit_proof("inclusion", {"seq": seq, "size": size})


@audit_proof.command("consistency")
@click.option("--first", type=click.IntRange(min=1), required=True, help="The older checkpoint's size.")
@click.option("--second", type=click.IntRange(min=1), required=True, help="The newer checkpoint's size.")
@api_call()
def audit_proof_consistency(client: SignerClient, first: int, second: int) -> Any:
    """The proof that the log of SECOND events extends the log of FIRST events (it only grew)."""
    return client.audit_proof("consistency", {"first": first, "second": second})


@click.group("rollback")
def audit_rollback() -> None:
    """Whether the database was found older than the last signed checkpoint, and the acknowledgement."""


@audit_rollback.command("status")
@api_call()
def audit_rollback_status(client: SignerClient) -> Any:
    """Whether high-risk operations are refused because a rollback was detected at start."""
    return client.audit_rollback()


@audit_rollback.command("acknowledge")
@api_call()
def audit_rollback_acknowledge(client: SignerClient) -> Any:
    """An admin accepts the database as it is (audited): high-risk operations resume on every worker."""
    return client.acknowledge_rollback()


_OUTCOMES = ("allowed", "denied", "refused", "failed", "pending_approval", "duplicate")


@click.command("search")
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--format", "form", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--since", default=None, help="Events at or after this RFC 3339 time.")
@click.option("--until", default=None, help="Events before this RFC 3339 time.")
@click.option("--actor", default=None, help="The acting principal's id.")
@click.option("--resource-type", default=None, help="key, grant, secret, ...")
@click.option("--resource-id", default=None, help="The target resource's id.")
@click.option("--action", default=None, help="The event kind, e.g. sign.transaction or secret.fetch.")
@click.option("--outcome", type=click.Choice(_OUTCOMES), default=None)
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@api_call()
def audit_search(
    client: SignerClient,
    output: Path,
    form: str,
    since: str | None,
    until: str | None,
    actor: str | None,
    resource_type: str | None,
    resource_id: str | None,
    action: str | None,
    outcome: str | None,
    force: bool,
) -> Any:
    """Stream the events matching the filters to OUTPUT ('-' for stdout) as JSONL or CSV (audited).

    Filtered records are for reading and searching; `export` writes the whole chain for `verify`."""
    filters = {
        "since": since,
        "until": until,
        "actor": actor,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "action": action,
        "outcome": outcome,
    }
    if str(output) == "-":
        client.audit_filtered(form, filters, sys.stdout.buffer)
        sys.stdout.flush()
        return None
    if output.exists() and not force:
        raise click.BadParameter(f"{output} exists (use --force to replace it)", param_hint="OUTPUT")
    partial = output.with_name(output.name + ".partial")
    try:
        with open(partial, "wb") as sink:
            head = client.audit_filtered(form, filters, sink)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return {"file": str(output), "format": form, "head": head}


@click.command("archive")
@click.option(
    "--before", "before", required=True, help="A seq (archive events before it) or an RFC 3339 time."
)
@click.option("--out", "output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@api_call()
def audit_archive(client: SignerClient, before: str, output: Path, force: bool) -> Any:
    """Archive the oldest events through the last signed checkpoint before SEQ or DATE into OUT (admin).

    OUT verifies on its own with `signer audit verify OUT --public-key KEY`; its SHA-256 is what
    `signer audit prune --archive-digest` names. Written as OUT.partial until complete.
    """
    if output.exists() and not force:
        raise click.BadParameter(f"{output} exists (use --force to replace it)", param_hint="--out")
    before_seq = int(before) if before.isdigit() else None
    partial = output.with_name(output.name + ".partial")
    with open(partial, "wb") as handle:
        first, through, digest = client.audit_archive(handle, before_seq, None if before_seq else before)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, output)
    click.echo(f"prune with: signer audit prune --before {through + 1} --archive-digest {digest}", err=True)
    return {"file": str(output), "first_seq": first, "through_seq": through, "archive_digest": digest}


@click.command("prune")
@click.option(
    "--before", "before_seq", required=True, type=click.IntRange(min=2), help="Prune events before this seq."
)
@click.option("--archive-digest", required=True, help="The SHA-256 `signer audit archive` printed.")
@api_call()
def audit_prune(client: SignerClient, before_seq: int, archive_digest: str) -> Any:
    """Delete the events an archive holds (admin); refused unless that archive was made here."""
    return client.audit_prune(before_seq, archive_digest)


@click.command("hmac")
@click.argument("field", type=click.Choice(["idempotency_key"]))
@api_call()
def audit_hmac(client: SignerClient, field: str) -> Any:
    """The HMAC an audit event holds for a value read from stdin (auditor, admin): search the log by it.

    The value is read from stdin (one line, its newline dropped), never taken on the command line."""
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise click.BadParameter("give the value on stdin", param_hint="stdin")
    return client.audit_hmac(field, value)


@click.command("prune-ledger")
@api_call()
def audit_prune_ledger(client: SignerClient) -> Any:
    """Delete usage ledger rows older than every limit window (admin); grant budgets are kept."""
    return client.ledger_prune()


# Top-level commands this module adds to ``signer`` (assembled in ``signer.cli_api``).
COMMANDS: tuple[click.Command, ...] = ()
AUDIT_COMMANDS: tuple[click.Command, ...] = (
    audit_events,
    audit_export,
    audit_search,
    audit_public_key,
    audit_key,
    audit_checkpoint,
    audit_checkpoints,
    audit_proof,
    audit_rollback,
    audit_archive,
    audit_prune,
    audit_prune_ledger,
    audit_hmac,
)
