"""TLS contexts: the listener's (termination) and a pool's (to `https://` backends).

Both are built from file paths and keep them, so that renewed files can be loaded again into the
live context (`reload`): handshakes that start afterwards use the new certificate, connections
already open keep theirs. A renewed pair is checked on a scratch context first, so a half-written
renewal (new certificate, old key) never reaches the live one.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lb.exceptions import LBError

logger = logging.getLogger("lb.tls")

ALPN = ["http/1.1"]


class TLSError(LBError):
    """A certificate, key or CA file that cannot be used; the message names the file and why."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSError(f"{what} {path}: cannot read it: {exc.strerror or exc}") from None


def _load_chain(context: ssl.SSLContext, cert_file: str, key_file: str | None) -> None:
    _read(cert_file, "cert_file")
    if key_file is not None:
        _read(key_file, "key_file")
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        # OpenSSL says "KEY_VALUES_MISMATCH" or "PEM lib": say which file is at fault.
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TLSError(f"key_file {key_file} does not match cert_file {cert_file}") from None
        raise TLSError(
            f"cert_file {cert_file} / key_file {key_file or cert_file}: not a PEM certificate "
            f"chain and its private key ({reason})"
        ) from None


def _load_ca(context: ssl.SSLContext, ca_file: str, what: str) -> None:
    _read(ca_file, what)
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise TLSError(f"{what} {ca_file}: not PEM CA certificates ({exc.reason or exc})") from None


def _fingerprint(*paths: str | None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            try:
                digest.update(Path(path).read_bytes())
            except OSError:
                digest.update(b"\0missing")
    return digest.hexdigest()


class _Reloadable:
    """A live context and the files it came from."""

    context: ssl.SSLContext
    cert_file: str | None
    key_file: str | None
    what: str  # for the log
    _loaded: str  # fingerprint of the files in the live context

    def _chain_fingerprint(self) -> str:
        return _fingerprint(self.cert_file, self.key_file)

    def reload(self) -> bool:
        """Load the certificate files again into the live context; True when they had changed.
        Raises TLSError (the live context untouched) when the new files do not load."""
        if self.cert_file is None:
            return False
        seen = self._chain_fingerprint()
        if seen == self._loaded:
            return False
        _load_chain(self._scratch(), self.cert_file, self.key_file)
        _load_chain(self.context, self.cert_file, self.key_file)
        self._loaded = seen
        logger.info("%s: loaded the renewed certificate %s", self.what, self.cert_file)
        return True

    def _scratch(self) -> ssl.SSLContext:
        raise NotImplementedError


class ServerTLS(_Reloadable):
    """The listener's context: TLS 1.2 or later, the ssl module's default ciphers, ALPN
    http/1.1, and client certificates required and verified when `client_ca_file` is set."""

    def __init__(self, cert_file: str, key_file: str | None, client_ca_file: str | None) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.client_ca_file = client_ca_file
        self.what = "TLS listener"
        self._loaded = self._chain_fingerprint()
        self.context = self._scratch()
        _load_chain(self.context, cert_file, key_file)
        if client_ca_file is not None:
            _load_ca(self.context, client_ca_file, "client_ca_file")
            self.context.verify_mode = ssl.CERT_REQUIRED

    def __repr__(self) -> str:
        mtls = ", client certificates required" if self.client_ca_file else ""
        return f"<ServerTLS {self.cert_file}{mtls}>"

    def _scratch(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(ALPN)
        return context


class ClientTLS(_Reloadable):
    """A pool's context for its `https://` backends: a private CA (else the system's), a client
    certificate (mTLS), the name to send and verify (SNI), or no verification at all."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        verify: bool = True,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
    ) -> None:
        self.ca_file = ca_file
        self.verify = verify
        self.cert_file = cert_file
        self.key_file = key_file
        self.server_name = server_name
        self.settings = (ca_file, verify, cert_file, key_file, server_name)
        self.what = "backend TLS"
        self._loaded = self._chain_fingerprint()
        self.context = self._scratch()
        if ca_file is not None:
            _load_ca(self.context, ca_file, "ca_file")
        if cert_file is not None:
            _load_chain(self.context, cert_file, key_file)

    def __repr__(self) -> str:
        verify = f"ca {self.ca_file}" if self.ca_file else "system CAs"
        if not self.verify:
            verify = "unverified"
        client = f", client cert {self.cert_file}" if self.cert_file else ""
        return f"<ClientTLS [{verify}{client}]>"

    def _scratch(self) -> ssl.SSLContext:
        if self.ca_file is not None or not self.verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        else:
            context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def server_hostname(self, host: str) -> str:
        """The name sent as SNI and checked against the certificate for a backend on `host`."""
        return self.server_name or host


def uvicorn_context(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: lb's listener context from uvicorn's ssl_* settings,
    handed to the app (`lb_server_tls`) so that a reload can renew its certificate."""
    # Not uvicorn's default context: it sets no minimum version, and only lb's can be renewed.
    del default
    tls = ServerTLS(config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certs)
    app = config.app
    if isinstance(app, str):
        from uvicorn.importer import import_from_string

        app = import_from_string(app)  # the very object uvicorn is about to load
    hook = getattr(app, "lb_server_tls", None)
    if hook is not None:
        hook(tls)
    return tls.context
