"""A resource kind that exists only in tests: widgets, a fixed catalogue, to prove that a new kind of
resource needs nothing from the grants code (store, policy, admin service, routes, CLI, impact).

Importing this module registers the ``widget`` kind in ``signer.services.resources``; ``SERVE`` runs
``signer serve`` with it registered first (one worker: the kind lives in that process). Widgets have
no table and no routes of their own: ``load`` reads the catalogue below. Their operations reuse two
operation names policy already knows (``read_metadata``, ``update``): policy's vocabulary of operations
is its own registry, not the grants'.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from signer.errors import NotFound
from signer.services.resources import ResourceKind, ResourceRef, known_kind, register


@dataclass(frozen=True, slots=True)
class Widget:
    id: str
    scope: str
    name: str


CATALOGUE = {
    w.id: w
    for w in (
        Widget("wdg_0000000000000001", "acme/widgets", "first"),
        Widget("wdg_0000000000000002", "acme/widgets/deep", "second"),
    )
}


async def _load(reader: object, widget_id: str) -> Widget | None:
    return CATALOGUE.get(widget_id)


def widget_ref(widget: Widget) -> ResourceRef:
    return ResourceRef("widget", widget.id, widget.scope, "active")


WIDGETS = known_kind("widget") or register(
    ResourceKind(
        type="widget",
        id_field="widget_id",
        operations=frozenset({"read_metadata", "update"}),
        load=_load,
        ref=widget_ref,
        not_found=lambda: NotFound("no such widget", code="widget_not_found"),
        unusable=lambda ref: None,
        approval_view=lambda widget: {"widget_id": widget.id, "name": widget.name},
        digest_fields=lambda widget: {"widget_id": widget.id},
        summary=lambda widget: {"name": widget.name, "scope": widget.scope},
    )
)

# ``signer serve`` with widgets registered: the CLI's own entry point, after this import.
SERVE = [
    sys.executable,
    "-c",
    "import tests.fake_kind; from signer.cli import main; main(prog_name='signer')",
]
