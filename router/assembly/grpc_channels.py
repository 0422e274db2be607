"""Client channels for the daemon and the Info service, shared by the SDK, the CLI and the daemon's own
Info client: TLS when a CA is given, and the bearer token sent as call metadata on every call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import ipaddress
import socket

import grpc

AUTHORIZATION_METADATA_KEY = "authorization"
LOCALHOST = "localhost"


class InsecureCredentialError(ValueError):
    """A credential would leave this machine unencrypted, or a client certificate would go unused."""


def is_local_address(target: str) -> bool:
    """A unix socket, or a host that is this machine: a loopback address, or `localhost` when every address
    it resolves to is a loopback one (a hosts file may say otherwise)."""
    if target.startswith("unix:"):
        return True
    host = target.rsplit(":", 1)[0].strip("[]") if ":" in target else target
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower() != LOCALHOST:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


@dataclass(frozen=True)
class ChannelTrust:
    """How a client proves who it is and checks whom it talks to. `ca_file`: PEM of the CA that signed
    the server's certificate (TLS); unset, a plaintext channel (loopback). `client_cert_file` and
    `client_key_file`: a client certificate for mTLS."""

    token: Optional[str] = None
    ca_file: Optional[Path] = None
    client_cert_file: Optional[Path] = None
    client_key_file: Optional[Path] = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTHORIZATION_METADATA_KEY, f"Bearer {self.token}"),) if self.token else ()

    def _credentials(self, target: str) -> Optional[grpc.ChannelCredentials]:
        if self.ca_file is None:
            if self.client_cert_file is not None:
                raise InsecureCredentialError("a client certificate needs TLS: give the CA file that signed the "
                                              "server's certificate too (ca_file, --ca-file)")
            if self.token and not is_local_address(target):
                raise InsecureCredentialError(f"refusing to send a token to {target} over a plaintext channel: give "
                                              "the CA file that signed its certificate (ca_file, --ca-file)")
            return None
        chain = key = None
        if self.client_cert_file is not None and self.client_key_file is not None:
            chain = Path(self.client_cert_file).expanduser().read_bytes()
            key = Path(self.client_key_file).expanduser().read_bytes()
        return grpc.ssl_channel_credentials(root_certificates=Path(self.ca_file).expanduser().read_bytes(),
                                            private_key=key, certificate_chain=chain)

    def channel(self, target: str, options: Sequence[tuple[str, object]]) -> grpc.Channel:
        credentials = self._credentials(target)
        if credentials is None:
            return grpc.insecure_channel(target, options=list(options))
        return grpc.secure_channel(target, credentials, options=list(options))

    def aio_channel(self, target: str, options: Sequence[tuple[str, object]]) -> grpc.aio.Channel:
        credentials = self._credentials(target)
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        return grpc.aio.secure_channel(target, credentials, options=list(options))


def read_token_file(path: Optional[Path]) -> Optional[str]:
    """The token in `path` (first line), or None when no path is given or the file does not exist."""
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
