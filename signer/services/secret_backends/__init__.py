"""Secret backends: where a secret's value lives, behind one small interface (``base.SecretBackend``).

``sealed`` (the default: versions sealed in the signer), ``aws_secrets_manager`` and ``openbao_kv2``
(held by reference: the signer keeps the record and the reference and fetches at read time). This module
is the registration: it builds the backends this server has a connection for (``secret_backends`` in
the settings) and answers which one serves a secret. Grants, policy and audit are the same for all of
them: a backend is only asked from the fetch's ``act``, after the decision pipeline allowed the read.
"""

from __future__ import annotations

from collections.abc import Mapping

from signer.config import SecretBackendsSettings
from signer.errors import Conflict
from signer.services.secret_backends.base import Fetched, SecretBackend, Selector, not_configured
from signer.services.secret_backends.sealed import SealedBackend
from signer.store import SecretRecord

__all__ = ["EXTERNAL", "Fetched", "SecretBackend", "SecretBackends", "Selector", "build_backends"]

# The backends that hold a value by reference (the API's ``backend`` names).
EXTERNAL = ("aws_secrets_manager", "openbao_kv2")


class SecretBackends:
    """The sealed backend and every external one configured on this server."""

    def __init__(self, sealed: SealedBackend, external: Mapping[str, SecretBackend] | None = None) -> None:
        self.sealed = sealed
        self._external = dict(external or {})

    def for_secret(self, secret: SecretRecord) -> SecretBackend:
        if secret.backend == "sealed":
            return self.sealed
        backend = self._external.get(secret.backend)
        if backend is None:
            # The record names a backend this server was not configured for (any more).
            raise not_configured()
        return backend

    def for_new(self, name: str) -> SecretBackend:
        """The backend a new secret held by reference in ``name`` would use (409 when this server has
        no connection for it: the request is well formed, the server's configuration refuses it)."""
        backend = self._external.get(name)
        if backend is None:
            raise Conflict(
                "this server has no connection to that secret backend",
                code="backend_not_configured",
                field="backend",
            )
        return backend

    async def close(self) -> None:
        for backend in self._external.values():
            await backend.close()


def build_backends(settings: SecretBackendsSettings, sealed: SealedBackend) -> SecretBackends:
    """The backends ``settings`` configures; each imports its client library only when configured."""
    external: dict[str, SecretBackend] = {}
    # Credentials are read now, so a missing file or variable stops the start (naming the setting only).
    if settings.aws_secrets_manager is not None:
        settings.aws_secrets_manager.credentials()
    if settings.openbao_kv2 is not None:
        settings.openbao_kv2.token()
    if settings.aws_secrets_manager is not None:
        from signer.services.secret_backends.aws import AwsSecretsManagerBackend

        external["aws_secrets_manager"] = AwsSecretsManagerBackend(settings.aws_secrets_manager)
    if settings.openbao_kv2 is not None:
        from signer.services.secret_backends.openbao import OpenBaoKv2Backend

        external["openbao_kv2"] = OpenBaoKv2Backend(settings.openbao_kv2)
    return SecretBackends(sealed, external)
