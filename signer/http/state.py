"""Typed application state shared by the handlers: the settings and the services, set by ``signer.app``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from signer.config import Secret, Settings
from signer.metrics import Metrics
from signer.services.admin import AdminService
from signer.services.approval_desk import ApprovalDesk
from signer.services.approvals import ApprovalsService
from signer.services.audit_export import AuditExportService
from signer.services.audit_hmac import AuditHmac
from signer.services.audit_log import AuditLogService
from signer.services.audit_retention import AuditRetention
from signer.services.auth import AuthService
from signer.services.books import BookService
from signer.services.checklist import ChecklistService
from signer.services.checkpoints import CheckpointService
from signer.services.client_certs import ClientCertService
from signer.services.console_sessions import ConsoleSessions
from signer.services.context import RequestContext
from signer.services.health import HealthService
from signer.services.impact import ImpactService
from signer.services.jsonrpc import JsonRpcService
from signer.services.kek_rotation import KekRotations
from signer.services.keys import KeyService
from signer.services.kms import KmsService
from signer.services.operator_views import OperatorViews
from signer.services.policies import PolicyService
from signer.services.rollback import RollbackGuard
from signer.services.secret_resolve import SecretResolver
from signer.services.secret_versions import SecretVersionsService
from signer.services.secrets import SecretsService
from signer.services.signing import SigningService
from signer.services.usage import UsageService
from signer.services.webhooks import WebhookService


@dataclass(frozen=True, slots=True)
class Services:
    auth: AuthService
    admin: AdminService
    keys: KeyService
    signing: SigningService
    health: HealthService
    audit: AuditLogService
    approvals: ApprovalsService
    policies: PolicyService
    webhooks: WebhookService
    console_sessions: ConsoleSessions
    secrets: SecretsService
    secret_refs: SecretResolver
    secret_versions: SecretVersionsService
    jsonrpc: JsonRpcService | None = None  # Ethereum JSON-RPC (routes/jsonrpc.py)
    checkpoints: CheckpointService | None = None
    rollback: RollbackGuard | None = None
    audit_export: AuditExportService | None = None
    approval_desk: ApprovalDesk | None = None  # the console's view around a request (console.py)
    operator_views: OperatorViews | None = None  # the console's operator pages (console_operator.py)
    kek_rotations: KekRotations | None = None
    audit_hmac: AuditHmac | None = None
    audit_retention: AuditRetention | None = None
    kms: KmsService | None = None  # the AWS KMS Sign API (routes/kms.py)
    impact: ImpactService | None = None
    usage: UsageService | None = None
    checklist: ChecklistService | None = None
    client_certs: ClientCertService | None = None  # TLS client certificates of principals
    books: BookService | None = None  # the console's books (routes/books.py, console_present.py)


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    """Who may read /metrics: loopback callers when ``open_on_loopback``, else a bearer token (the
    dedicated ``token`` if configured, or an admin or auditor access token)."""

    open_on_loopback: bool
    token: Secret | None


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
METRICS_ACCESS = web.AppKey("metrics_access", MetricsAccess)
# The authenticated caller of this request (set by the handlers' authentication, read by the refusal audit).
CALLER = web.RequestKey("caller", RequestContext)


def is_loopback(host: str | None) -> bool:
    """A loopback address (or the name localhost); anything unparsable is not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
