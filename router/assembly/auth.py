"""The trust layer as configured: the guard for both doors, the daemon's own identity towards its Info
service, the server's TLS credentials, and the rule that keeps an open port from being served naked."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from router.assembly.grpc_channels import is_local_address
from router.core.auth import Guard, PrincipalsFile
from router.core.auth.principals import ensure_local_admin, new_token
from router.domain.access import ALL_GROUPS, Principal, Role
from router.domain.config import ConfigError, ServerSettings, Settings

DAEMON_SERVICE_PRINCIPAL = "daemon"


@dataclass(frozen=True)
class Trust:
    guard: Guard
    # The token the daemon's router presents to the Info service it hosts (in memory only, new each start).
    service_token: Optional[str]


def build_trust(settings: Settings, logger: Optional[logging.Logger] = None) -> Trust:
    """Raises ConfigError when the principals file cannot be read. On first start in token mode, writes
    the local admin's token (auth.local_token_file) and the principals file, both 0600."""
    auth = settings.auth
    if auth.mode == "none":
        return Trust(guard=Guard(None), service_token=None)
    principals = PrincipalsFile(auth.principals_file)
    try:
        if ensure_local_admin(principals, auth.local_token_file) and logger is not None:
            logger.info("wrote the local admin token", extra={"fields": {
                "token_file": str(auth.local_token_file), "principals_file": str(auth.principals_file)}})
        principals.entries()  # a broken file stops the start, naming what is wrong
    except Exception as exc:
        raise ConfigError(f"auth: {exc}") from None
    service_token = new_token()
    # In-process, the Info service is the daemon's own: it may read any group for the callers it authenticated.
    guard = Guard(principals, extra={service_token: Principal(DAEMON_SERVICE_PRINCIPAL, Role.SERVICE, (ALL_GROUPS,))})
    return Trust(guard=guard, service_token=service_token)


def check_binding(settings: Settings, listen: str) -> None:
    """auth.mode = "none" only on loopback and unix sockets; any other address needs TLS and tokens."""
    if is_local_address(listen):
        return
    problems = []
    if settings.auth.mode == "none":
        problems.append('auth.mode = "none" (set it to "token")')
    if settings.server.tls_cert_file is None:
        problems.append("no TLS (set server.tls_cert_file and server.tls_key_file)")
    if problems:
        raise ConfigError(f"refusing to listen on {listen}: beyond loopback the daemon needs both TLS and "
                          f"authentication, and it has {' and '.join(problems)}; README \"Security\" says how")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None


def server_credentials(server: ServerSettings) -> Optional[grpc.ServerCredentials]:
    """TLS (and mTLS when a client CA is set) from the server's settings; None for a plaintext port."""
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    pair = (_read(server.tls_key_file, "server.tls_key_file"), _read(server.tls_cert_file, "server.tls_cert_file"))
    client_ca = (_read(server.tls_client_ca_file, "server.tls_client_ca_file")
                 if server.tls_client_ca_file is not None else None)
    return grpc.ssl_server_credentials([pair], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
