"""The gRPC door over the Daemon (router/assembly/daemon.py): health, reflection, graceful shutdown on SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.assembly.auth import check_binding, server_credentials
from router.assembly.daemon import WAIT_SHARE_OF_BUDGET, Daemon
from router.assembly.in_flight import Deadline, drain
from router.assembly.parts import LoadedBackends
from router.core.engine import Router
from router.domain.config import Settings
from router.doors.binding import bind
from router.doors.http.app import HttpDoorState, build_app
from router.doors.http.metrics_app import build_metrics_app
from router.doors.http.serve import AsgiServer
from router.doors.info_service import SERVICE_NAME as INFO_SERVICE_NAME
from router.doors.info_service import InfoHost
from router.doors.service import RouterService
from router.doors.serve_loop import serve_until_stopped
from router.doors.stop_request import StopRequest
from router.v1 import router_pb2, router_pb2_grpc

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
# Health-service name whose status follows the ledger: SERVING when it writes, NOT_SERVING when degraded.
LEDGER_HEALTH_NAME = "router.v1.Ledger"
# Health-service name whose status follows the cloud's circuit breaker: NOT_SERVING while it is open.
BREAKER_HEALTH_NAME = "router.v1.CloudBreaker"
LEDGER_WATCH_INTERVAL_S = 1.0
# The transport refuses a message over server.max_request_bytes before parsing it (RESOURCE_EXHAUSTED,
# which the SDK reports as InvalidRequestError naming the limit), so no large message is ever decoded.
# The floor keeps Info Ingest messages (the client sends at most DEFAULT_MESSAGE_BYTES) within reach.
MIN_TRANSPORT_BYTES = 2**20


class RouterServer:
    """Owns the grpc.aio server and the daemon's life: bind, load models, serve, drain, stop."""

    def __init__(self, settings: Settings, *, logger: Optional[logging.Logger] = None) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("hybrid_router.server")
        self.daemon = Daemon(settings, logger=self.logger)
        # False when a part overran the shutdown budget and is still running (the edge model in a
        # prompt evaluation, which cannot be interrupted): `hybrid-router serve` then exits without it.
        self.stopped_in_time = True
        self.health = health.aio.HealthServicer()
        limit = max(settings.server.max_request_bytes, MIN_TRANSPORT_BYTES)
        # so_reuseport off: a second daemon on a taken port must fail, not silently share it.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                                ("grpc.max_receive_message_length", limit),
                                                ("grpc.max_send_message_length", 64 * 2**20)])
        guard = self.daemon.trust.guard
        router_pb2_grpc.add_RouterServicer_to_server(
            RouterService(self.daemon.router, self.daemon.info, self.daemon.ledger, guard=guard,
                          max_request_bytes=settings.server.max_request_bytes, logger=self.logger,
                          calls=self.daemon.calls, reload=self.daemon.reload_router,
                          use_adapter=self.daemon.use_adapter,
                          refused=self.daemon.metrics.refused), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        # info.service = in_process: this server hosts the Info service too, and the router reaches it
        # through the same gRPC client as a remote one (router/assembly/info_client.py).
        self.info_host: Optional[InfoHost] = None
        services = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        # The router reaches the Info service it hosts on a unix socket in a directory only this user can
        # enter, as its own principal: the public port may be TLS, whose certificate names no loopback host.
        self._private_dir: Optional[str] = None
        if self.daemon.info_index is not None:
            self.info_host = InfoHost(self.daemon.info_index, guard=guard, logger=logging.getLogger("hybrid_router.info"))
            self.info_host.add_to(self._server, self.health)
            services.append(INFO_SERVICE_NAME)
        reflection.enable_server_reflection(services, self._server)
        self.address = ""
        # The OpenAI-compatible HTTP door (http.address) and the metrics endpoint (metrics.address): more
        # transports over the same daemon, its principals and its one drain.
        self.http_state: Optional[HttpDoorState] = None
        self.http: Optional[AsgiServer] = None
        self.metrics_http: Optional[AsgiServer] = None
        if settings.http.address:
            self.http_state = HttpDoorState(router=self.daemon.router, guard=guard, calls=self.daemon.calls,
                                            max_request_bytes=settings.server.max_request_bytes,
                                            logger=logging.getLogger("hybrid_router.http"), metrics=self.daemon.metrics,
                                            models=self.daemon.model_names)
            self.http = AsgiServer(build_app(self.http_state), settings.http.address, tls=settings.server,
                                   logger=self.http_state.logger, name="http")
        if settings.metrics.address:
            metrics_logger = logging.getLogger("hybrid_router.metrics")
            self.metrics_http = AsgiServer(build_metrics_app(self.daemon.metrics, guard, metrics_logger),
                                           settings.metrics.address, tls=settings.server, logger=metrics_logger,
                                           name="metrics")
        self._stopping = asyncio.Event()
        self._ledger_watch: Optional[asyncio.Task] = None

    async def _set_health(self, status: "health_pb2.HealthCheckResponse.ServingStatus") -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def start(self, listen: Optional[str] = None) -> str:
        """Bind and start answering (health NOT_SERVING until `load` finishes). Returns the bound address."""
        listen = listen or self.settings.server.listen
        check_binding(self.settings, listen)
        for extra in (self.settings.http.address, self.settings.metrics.address):
            if extra:
                check_binding(self.settings, extra)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # Bind first: an address that cannot be had must fail before the ledger opens or a task starts.
        credentials = server_credentials(self.settings.server)
        port = bind(self._server, listen, credentials)
        if self.info_host is not None:
            self._private_dir = tempfile.mkdtemp(prefix="hybrid-router-")  # 0700
            bind(self._server, f"unix:{self._private_dir}/info.sock", None)
        if not listen.startswith("unix:"):
            if port == 0:
                raise RuntimeError(f"could not bind {listen}")
            host = listen.rsplit(":", 1)[0]
            listen = f"{host}:{port}"
        for door in (self.http, self.metrics_http):
            if door is not None:
                await door.start()
        await asyncio.to_thread(self.daemon.open)
        self._ledger_watch = asyncio.create_task(self._watch_ledger())
        await self._server.start()
        self.address = listen
        self.logger.info("listening", extra={"fields": {"address": listen}})
        return listen

    async def load(self) -> None:
        info_target = None
        if self.info_host is not None:
            await asyncio.to_thread(self.info_host.open)
            await self.info_host.publish_health()
            info_target = f"unix:{self._private_dir}/info.sock"
        await self.daemon.load(info_target=info_target)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    @property
    def router(self) -> Router:
        return self.daemon.router

    @property
    def backends(self) -> Optional[LoadedBackends]:
        return self.daemon.backends

    async def _watch_ledger(self) -> None:
        """Mirrors the ledger's health on the health service under LEDGER_HEALTH_NAME (the reason is in
        Stats), and the cloud breaker's under BREAKER_HEALTH_NAME (its state is in Info)."""
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            status = self.daemon.ledger.status()
            await self.health.set(LEDGER_HEALTH_NAME, serving if status.ok else not_serving)
            breaker = self.daemon.breaker_status()
            if breaker is not None:
                await self.health.set(BREAKER_HEALTH_NAME, not_serving if breaker.state == "open" else serving)
            await asyncio.sleep(LEDGER_WATCH_INTERVAL_S)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self, early_stop: Optional[StopRequest] = None) -> int:
        """Load the models and serve until SIGTERM/SIGINT (or request_stop), then drain and shut down
        (serve_loop.py: a signal during a slow load stops it cleanly, the stand-in and a half-loaded
        model included). Returns the process exit status."""
        server = self.settings.server
        return await serve_until_stopped(self, self._stopping, early_stop, cancel_load=True,
                                         what_was_loading="the models were loaded",
                                         drain_fields={"grace_period_s": server.grace_period_s,
                                                       "shutdown_flush_s": server.shutdown_flush_s})

    async def stop(self) -> None:
        """New requests are refused at once; in-flight ones get the grace period, and those still running
        at its end are stopped with UNAVAILABLE; then the ledger, the judge, the stand-in and the edge
        share one flush budget. So it returns within grace_period_s + shutdown_flush_s of being called.
        """
        server = self.settings.server
        began = time.monotonic()
        deadline = Deadline(began + server.grace_period_s + server.shutdown_flush_s)
        self.logger.info("shutting down", extra={"fields": {"grace_period_s": server.grace_period_s,
                                                            "shutdown_flush_s": server.shutdown_flush_s}})
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.info_host is not None:
            await self.info_host.publish_health(serving=False)
        if self.http_state is not None and self.http is not None:
            self.http_state.accepting = False
            self.http.stop_accepting()
        await self._stop_serving(server.grace_period_s, deadline)
        doors = [door.stop(deadline.remaining() * WAIT_SHARE_OF_BUDGET) for door in (self.http, self.metrics_http)
                 if door is not None]
        await asyncio.gather(*doors)
        if self._ledger_watch is not None:
            self._ledger_watch.cancel()
        self.stopped_in_time = await self.daemon.close(deadline.remaining())
        if self.info_host is not None:
            await asyncio.to_thread(self.info_host.close)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        if not self.stopped_in_time:
            self.logger.warning("the edge model was still busy when the shutdown budget ran out; the process "
                                "exits without waiting for it", extra={"fields": {
                                    "shutdown_flush_s": self.settings.server.shutdown_flush_s}})
        self.logger.info("stopped", extra={"fields": {"shutdown_s": round(time.monotonic() - began, 3),
                                                      "in_time": self.stopped_in_time}})

    async def _stop_serving(self, grace_s: float, deadline: Deadline) -> None:
        # gRPC refuses new calls from now on. Its own cut comes only at the deadline, as a backstop:
        # it ends a stream with "Cancelling all calls", where ours says why and what to do.
        transport = asyncio.create_task(self._server.stop(deadline.remaining()))
        await drain(self.daemon.calls, grace_s, self.logger)
        # Stopped requests end within a token; what is left then (one stuck in a prompt evaluation, a
        # Health.Watch, a slow Stats) is cut by gRPC now rather than at the backstop.
        settled = Deadline(time.monotonic() + deadline.remaining() * WAIT_SHARE_OF_BUDGET)
        await self.daemon.calls.wait(settled.remaining())
        cut_the_rest = asyncio.create_task(self._server.stop(None))
        await asyncio.wait({transport, cut_the_rest}, timeout=settled.remaining())
