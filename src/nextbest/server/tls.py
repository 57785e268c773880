"""The server port's transport: TLS, mutual TLS, and the refusal to serve open beyond loopback."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import grpc

from nextbest.server.auth import AuthConfigError
from nextbest.settings import Settings

__all__ = ["check_exposure", "is_loopback", "server_credentials"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address (0.0.0.0, ::) is not."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def auth_configured(settings: Settings) -> bool:
    return settings.tokens_file is not None or settings.tokens is not None


def check_exposure(settings: Settings) -> None:
    """Refuses, in one line, to serve a non-loopback address without authentication unless the operator
    said ``--insecure-open``; and a TLS set-up missing half of its files."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise AuthConfigError("--tls-cert and --tls-key (NEXTBEST_TLS_CERT, NEXTBEST_TLS_KEY) go together")
    if settings.tls_client_ca is not None:
        if settings.tls_cert is None:
            raise AuthConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        if not auth_configured(settings):
            raise AuthConfigError(
                "--tls-client-ca needs 'subject:' entries in --tokens-file or NEXTBEST_TOKENS to give "
                "certificate subjects their roles"
            )
    if not is_loopback(settings.host) and not auth_configured(settings) and not settings.insecure_open:
        raise AuthConfigError(
            f"refusing to serve {settings.host} without authentication, since it is not a loopback "
            "address: give callers tokens (--tokens-file or NEXTBEST_TOKENS), or pass --insecure-open "
            "(NEXTBEST_INSECURE_OPEN=1) to serve it open on purpose"
        )


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the certificate and key files; with a client CA, every client must present a
    certificate it signed (mutual TLS). None: a plaintext port."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    cert = _read(settings.tls_cert, "--tls-cert")
    key = _read(settings.tls_key, "--tls-key")
    if b"-----BEGIN" not in cert or b"CERTIFICATE" not in cert:
        raise AuthConfigError(f"--tls-cert {settings.tls_cert} is not a PEM certificate")
    if b"PRIVATE KEY" not in key:
        raise AuthConfigError(f"--tls-key {settings.tls_key} is not a PEM private key")
    try:  # gRPC would only say it failed to bind the port
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert, settings.tls_key, password=b""
        )
    except ssl.SSLError as exc:
        raise AuthConfigError(
            f"--tls-key {settings.tls_key} is not the key of --tls-cert {settings.tls_cert}, or is "
            f"encrypted ({exc.reason or exc})"
        ) from None
    client_ca = None
    if settings.tls_client_ca is not None:
        client_ca = _read(settings.tls_client_ca, "--tls-client-ca")
        if b"CERTIFICATE" not in client_ca:
            raise AuthConfigError(f"--tls-client-ca {settings.tls_client_ca} is not a PEM certificate")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
