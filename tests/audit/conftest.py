"""Audit format tests: pure, no database. ``chain`` is a valid exported chain of 20 records."""

from __future__ import annotations

from typing import Any

import pytest

from tests.audit.audit_testkit import build_chain


@pytest.fixture
def chain() -> list[dict[str, Any]]:
    return build_chain(20)
