"""Typed application state shared by the handlers: the settings and the services, set by ``signer.app``."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from signer.config import Settings
from signer.services.admin import AdminService
from signer.services.approvals import ApprovalsService
from signer.services.audit_log import AuditLogService
from signer.services.auth import AuthService
from signer.services.health import HealthService
from signer.services.keys import KeyService
from signer.services.policies import PolicyService
from signer.services.signing import SigningService
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


SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
