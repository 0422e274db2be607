"""`hybrid-router info serve`: the Info service alone on a grpc.aio server (health, reflection, graceful
SIGTERM), for info.service = remote. The daemon hosts the same InfoHost on its own port otherwise.

Life: bind and start answering at once (health NOT_SERVING, calls UNAVAILABLE), load the encoder and the
index, SERVING; on SIGTERM or SIGINT, NOT_SERVING, in-flight calls get server.grace_period_s, then the
index is closed. Like the daemon, a signal during loading stops it cleanly.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edge.encoder import TextEncoder
from router.assembly.auth import build_trust, check_binding, server_credentials
from router.assembly.local_info import LocalInfoIndex
from router.assembly.parts import model_cache
from router.domain.config import Settings
from router.doors.binding import bind
from router.doors.info_service import SERVICE_NAME, TRANSPORT_RECEIVE_BYTES, InfoHost
from router.doors.serve_loop import serve_until_stopped
from router.doors.stop_request import StopRequest

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class InfoServer:
    def __init__(self, settings: Settings, *, logger: Optional[logging.Logger] = None,
                 encoder: Optional[TextEncoder] = None) -> None:
        """`encoder`: one already loaded in this process, to share (tests run several servers)."""
        self.settings = settings
        self.logger = logger or logging.getLogger("hybrid_router.info")
        # Its own principals (auth.principals_file on its host): a daemon reaches it with a `service` token.
        self.trust = build_trust(settings, self.logger)
        local = LocalInfoIndex(settings.info, model_cache(settings), logger=self.logger, encoder=encoder)
        self.host = InfoHost(local, guard=self.trust.guard, logger=self.logger)
        self.health = health.aio.HealthServicer()
        # so_reuseport off: a second server on a taken port must fail, not silently share it.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                                ("grpc.max_receive_message_length", TRANSPORT_RECEIVE_BYTES),
                                                ("grpc.max_send_message_length", TRANSPORT_RECEIVE_BYTES)])
        self.host.add_to(self._server, self.health)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection((SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME),
                                            self._server)
        self.address = ""
        self._stopping = asyncio.Event()

    async def _set_health(self) -> None:
        await self.host.publish_health()
        serving = health_pb2.HealthCheckResponse.SERVING if self.host.is_open else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", serving)

    async def start(self, listen: Optional[str] = None) -> str:
        """Binds `listen` (default: info.address) and starts answering (NOT_SERVING until `load` ends);
        returns the bound address."""
        listen = listen or self.settings.info.address
        if not listen:
            raise RuntimeError("no address to listen on: give --listen HOST:PORT or set info.address")
        check_binding(self.settings, listen)
        await self._set_health()
        credentials = server_credentials(self.settings.server)
        port = bind(self._server, listen, credentials)
        if not listen.startswith("unix:"):
            if port == 0:
                raise RuntimeError(f"could not bind {listen}")
            listen = f"{listen.rsplit(':', 1)[0]}:{port}"
        await self._server.start()
        self.address = listen
        self.logger.info("info service listening", extra={"fields": {"address": listen}})
        return listen

    async def load(self) -> None:
        await asyncio.to_thread(self.host.open)
        await self._set_health()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self, early_stop: Optional[StopRequest] = None) -> int:
        """Loads and serves until SIGTERM/SIGINT (or request_stop), then stops; returns the exit status.
        The load runs in a thread that cannot be interrupted: a stop during it lets it end, and stop()
        closes what it opened."""
        return await serve_until_stopped(self, self._stopping, early_stop, cancel_load=False,
                                         what_was_loading="the index was open")

    async def stop(self) -> None:
        """New calls are refused at once; in-flight ones get server.grace_period_s; then the index closes
        (waiting for a load still in progress to end first)."""
        grace_s = self.settings.server.grace_period_s
        began = time.monotonic()
        self.logger.info("info service shutting down", extra={"fields": {"grace_period_s": grace_s}})
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.host.publish_health(serving=False)
        await self._server.stop(grace_s)
        await asyncio.to_thread(self.host.close)
        self.logger.info("info service stopped", extra={"fields": {"shutdown_s": round(time.monotonic() - began, 3)}})
