"""``Secret``: a string that never prints, shared by the service's settings and the stdlib-only client.

It lives apart from ``signer.config`` (which needs pydantic) so that ``signer.client`` and the API
commands import with the standard library and click alone (the relayer's install, README "Installing
the client alone").
"""

from __future__ import annotations

from typing import Any


class Secret:
    """A value that never prints: ``repr``/``str`` show a mask; ``reveal()`` is the only way in."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Settings cross into spawned worker processes; the value travels, the repr never shows it.
        return (Secret, (self._value,))
