"""An ASGI app served by uvicorn inside the daemon's own event loop, beside the gRPC server.

uvicorn's `serve()` takes over SIGINT and SIGTERM; the daemon's host handles those itself (one drain for
every door), so this runs uvicorn's own steps instead: `startup` on a socket bound here (port 0 gives a free
port, and an address already taken fails at once), its tick loop, and `shutdown` when told.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Optional

import uvicorn

from router.domain.config import ConfigError, ServerSettings, split_host_port

# After the drain, how long connections still open (idle keep-alives, a stream being cut) get to close.
CLOSE_CONNECTIONS_S = 2.0


def split_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`; ConfigError naming the address otherwise."""
    try:
        return split_host_port(address)
    except ValueError:
        raise ConfigError(f"{address!r} is not host:port (for example 127.0.0.1:8080)") from None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections
    # whose socket says it is TCP, and an SSE event held back for a delayed ACK would add tens of milliseconds.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR only: a port another process holds must fail here, not be shared.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class AsgiServer:
    """One listening address for one ASGI app. `address` is the bound `host:port` after start()."""

    def __init__(self, app: object, address: str, *, tls: Optional[ServerSettings] = None,
                 logger: Optional[logging.Logger] = None, name: str = "http") -> None:
        self._app = app
        self._requested = address
        self._tls = tls
        self._logger = logger or logging.getLogger("hybrid_router.http")
        self._name = name
        self._server: Optional[uvicorn.Server] = None
        self._ticks: Optional[asyncio.Task] = None
        self.address = ""

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None and self._tls.tls_cert_file is not None else "http"

    async def start(self) -> str:
        host, port = split_address(self._requested)
        sock = _bind(host, port)
        options: dict[str, object] = {}
        if self._tls is not None and self._tls.tls_cert_file is not None:
            options.update(ssl_certfile=str(self._tls.tls_cert_file.expanduser()),
                           ssl_keyfile=str(self._tls.tls_key_file.expanduser()) if self._tls.tls_key_file else None)
            if self._tls.tls_client_ca_file is not None:  # mTLS: the certificate is checked; the token names the caller
                options.update(ssl_ca_certs=str(self._tls.tls_client_ca_file.expanduser()), ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=CLOSE_CONNECTIONS_S, server_header=False,
                                date_header=False, **options)
        self._server = uvicorn.Server(config)
        config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[sock])
        self._ticks = asyncio.create_task(self._server.main_loop(), name=f"{self._name}-ticks")
        bound_port = sock.getsockname()[1]
        self.address = f"[{host}]:{bound_port}" if ":" in host else f"{host}:{bound_port}"
        self._logger.info("listening", extra={"fields": {"door": self._name, "address": self.address,
                                                         "scheme": self.scheme}})
        return self.address

    def stop_accepting(self) -> None:
        """New connections are refused from now on; those open are served until stop()."""
        if self._server is not None:
            for server in self._server.servers:
                server.close()

    async def stop(self, timeout_s: float = CLOSE_CONNECTIONS_S) -> None:
        """Closes every connection (after at most `timeout_s`, capped at CLOSE_CONNECTIONS_S, for those still
        busy) and stops."""
        server, ticks = self._server, self._ticks
        if server is None:
            return
        server.config.timeout_graceful_shutdown = max(0.0, min(timeout_s, CLOSE_CONNECTIONS_S))
        server.should_exit = True
        if ticks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await ticks
        await server.shutdown()
        self._server = self._ticks = None
