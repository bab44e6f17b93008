"""HTTPS served by the service itself: the server's TLS context, client certificates, reload on change.

``server_context`` builds the one ``ssl.SSLContext`` a worker serves with (TLS 1.2 or later) from
``tls_cert_file`` and ``tls_key_file``, and, when ``tls_client_auth`` is ``optional`` or ``required``,
verifies client certificates against ``tls_client_ca_file`` (``required``: a handshake without a valid
client certificate fails, so no request is ever read from such a connection). ``TlsReloader`` checks the
three files every ``tls_reload_interval_seconds`` and loads a changed set into the same context, so new
connections get the new certificate while open ones keep theirs; a set that does not load (a half-written
file, a key that does not match) is logged by error class and the previous one stays in force. No key
material is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from signer.config import Settings
from signer.errors import ConfigurationError

log = logging.getLogger("signer.tls")

_VERIFY = {"optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _load(context: ssl.SSLContext, settings: Settings) -> None:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_client_ca_file is not None and settings.tls_client_auth != "none":
        context.load_verify_locations(cafile=str(settings.tls_client_ca_file))


def _new_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = _VERIFY.get(settings.tls_client_auth, ssl.CERT_NONE)
    _load(context, settings)
    return context


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context to serve with, or None when no certificate is configured (plain HTTP)."""
    if settings.tls_cert_file is None:
        return None
    try:
        return _new_context(settings)
    except (OSError, ssl.SSLError) as exc:
        # The class only: an SSLError's text can quote PEM lines.
        raise ConfigurationError(
            f"the TLS certificate, key or client CA does not load ({type(exc).__name__})"
        ) from None


def peer_certificate(transport: asyncio.BaseTransport | None) -> bytes | None:
    """The DER of the client certificate the handshake on ``transport`` verified, or None (plain HTTP, no
    certificate, or ``tls_client_auth = none``, where the server never asks for one). Only a verified
    certificate is ever returned: with ``optional`` or ``required`` a certificate that does not chain
    to ``tls_client_ca_file`` fails the handshake."""
    if transport is None:
        return None
    tls = transport.get_extra_info("ssl_object")
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket) or tls.context.verify_mode == ssl.CERT_NONE:
        return None
    der = tls.getpeercert(binary_form=True)
    return der or None


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TlsReloader:
    """Loads changed TLS files into the live context (``check``), or runs that every interval (``run``)."""

    def __init__(self, context: ssl.SSLContext, settings: Settings) -> None:
        self._context = context
        self._settings = settings
        self._files = (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
        self._seen = self._stamps()

    def _stamps(self) -> tuple[tuple[int, int, int] | None, ...]:
        return tuple(_stamp(path) for path in self._files)

    def check(self) -> bool:
        """Reload when a file changed since the last load; True when a new set is in force."""
        now = self._stamps()
        if now == self._seen:
            return False
        try:
            _new_context(self._settings)  # the whole set must load before the live context changes
            _load(self._context, self._settings)
        except (OSError, ssl.SSLError) as exc:
            # Kept unseen: a half-written file is tried again next time, the old set stays in force.
            log.warning(
                "TLS files changed but do not load; the previous ones stay",
                extra={"error": type(exc).__name__},
            )
            return False
        self._seen = now
        log.info("TLS certificate reloaded")
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tls_reload_interval_seconds)
            self.check()
