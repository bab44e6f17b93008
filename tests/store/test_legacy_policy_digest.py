"""A policy version stored by the old (raw UTF-8) policy encoder is judged under the digest it was stored
with, on both backends: the decision names what the auditor finds in the policy_versions table."""

from __future__ import annotations

from datetime import UTC, datetime

from signer.services.authorization import load_policies
from signer.store import Store, Writer
from signer.store.records import AttachmentRecord, PolicyVersionRecord
from tests.audit.test_encoder_compat import LEGACY_POLICY_DIGEST, LEGACY_POLICY_TEXT

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_a_legacy_version_keeps_its_digest_when_loaded(store: Store) -> None:
    async def unit(writer: Writer) -> None:
        await writer.policies.insert_version(
            PolicyVersionRecord("payments", 1, LEGACY_POLICY_TEXT, LEGACY_POLICY_DIGEST, None, NOW)
        )
        await writer.policies.attach(
            AttachmentRecord("att_legacy", "payments", 1, "treasury", None, None, "live", None, NOW)
        )

    await store.submit(unit)
    async with store.read() as reader:
        (version,) = await reader.policies.versions("payments")
        policies = await load_policies(reader)
    assert version.document == LEGACY_POLICY_TEXT and version.digest == LEGACY_POLICY_DIGEST
    (attached,) = policies.live
    assert attached.document.digest == LEGACY_POLICY_DIGEST
    assert attached.document.description == "Trésorerie — paiements"
