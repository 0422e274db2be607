"""Binding a gRPC server's port: TLS when the settings give credentials, and a unix socket that only its
owner can connect to from the moment it exists."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import grpc

OWNER_ONLY_UMASK = 0o177  # a socket created under it is 0600


@contextlib.contextmanager
def _owner_only_files(listen: str) -> Iterator[None]:
    # The umask is the process's, so it is narrowed only for the moment gRPC creates the socket: a chmod
    # afterwards would leave a window in which another local user could connect.
    if not listen.startswith("unix:"):
        yield
        return
    previous = os.umask(OWNER_ONLY_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def bind(server: grpc.aio.Server, listen: str, credentials: Optional[grpc.ServerCredentials]) -> int:
    """Adds the port (secure when `credentials` are given); returns what gRPC returns (the port, 0 on failure)."""
    with _owner_only_files(listen):
        if credentials is not None:
            return server.add_secure_port(listen, credentials)
        return server.add_insecure_port(listen)
