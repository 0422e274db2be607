"""Client channels for the daemon and the Info service, shared by the SDK, the CLI and the daemon's own
Info client: TLS when a CA is given, and the bearer token sent as call metadata on every call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import grpc

AUTHORIZATION_METADATA_KEY = "authorization"


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

    def _credentials(self) -> Optional[grpc.ChannelCredentials]:
        if self.ca_file is None:
            return None
        chain = key = None
        if self.client_cert_file is not None and self.client_key_file is not None:
            chain = Path(self.client_cert_file).expanduser().read_bytes()
            key = Path(self.client_key_file).expanduser().read_bytes()
        return grpc.ssl_channel_credentials(root_certificates=Path(self.ca_file).expanduser().read_bytes(),
                                            private_key=key, certificate_chain=chain)

    def channel(self, target: str, options: Sequence[tuple[str, object]]) -> grpc.Channel:
        credentials = self._credentials()
        if credentials is None:
            return grpc.insecure_channel(target, options=list(options))
        return grpc.secure_channel(target, credentials, options=list(options))

    def aio_channel(self, target: str, options: Sequence[tuple[str, object]]) -> grpc.aio.Channel:
        credentials = self._credentials()
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
