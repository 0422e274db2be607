"""The gRPC daemon: health, reflection, model loading, graceful shutdown on SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from router.app import LoadedBackends, cost_model, hardware_summary, load_backends, package_versions
from router.config import ConfigError, Settings
from router.core import Backends, Router
from router.daemon_ledger import DaemonLedger
from router.judge import CloudJudge
from router.modes import builtin_modes
from router.service import RouterService
from router.types import DaemonInfo, ModelInfo
from router.v1 import router_pb2, router_pb2_grpc

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
# Health-service name whose status follows the ledger: SERVING when it writes, NOT_SERVING when degraded.
LEDGER_HEALTH_NAME = "router.v1.Ledger"
LEDGER_WATCH_INTERVAL_S = 1.0
# gRPC's own cap sits well above server.max_request_bytes so that the service, not the transport,
# refuses oversized requests with INVALID_ARGUMENT and an actionable message.
TRANSPORT_LIMIT_FACTOR = 8


class RouterServer:
    """Owns the grpc.aio server and the daemon's life: bind, load models, serve, drain, stop."""

    def __init__(self, settings: Settings, *, logger: Optional[logging.Logger] = None) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("hybrid_router.server")
        self.ledger = DaemonLedger(settings.ledger, logging.getLogger("hybrid_router.ledger"))
        self.router = Router(settings=settings.server, costs=cost_model(settings, edge_parameters=0.0),
                             modes=builtin_modes())
        if self.router.default_mode not in self.router.modes:
            raise ConfigError(f"server.default_mode {settings.server.default_mode!r} is not implemented yet; "
                              f"use one of: {', '.join(m.name.lower() for m in self.router.implemented_modes)}")
        self.judge = CloudJudge(cloud=lambda: self.router.backends.cloud, costs=lambda: self.router.costs,
                                signals=self.ledger, sample_rate=settings.ledger.judge_sample_rate)
        # The one place where finished results leave the request path: the ledger, then the judge.
        self.router.sinks = (self.ledger, self.judge)
        self.backends: Optional[LoadedBackends] = None
        self.health = health.aio.HealthServicer()
        limit = max(settings.server.max_request_bytes * TRANSPORT_LIMIT_FACTOR, 4 * 2**20)
        # so_reuseport off: a second daemon on a taken port must fail, not silently share it.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0),
                                                ("grpc.max_receive_message_length", limit),
                                                ("grpc.max_send_message_length", 64 * 2**20)])
        router_pb2_grpc.add_RouterServicer_to_server(
            RouterService(self.router, self.info, self.ledger, max_request_bytes=settings.server.max_request_bytes,
                          logger=self.logger), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self._server)
        self.address = ""
        self._stopping = asyncio.Event()
        self._ledger_watch: Optional[asyncio.Task] = None
        self._packages = package_versions()
        self._hardware = hardware_summary()

    async def _set_health(self, status: "health_pb2.HealthCheckResponse.ServingStatus") -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    async def start(self, listen: Optional[str] = None) -> str:
        """Bind and start answering (health NOT_SERVING until `load` finishes). Returns the bound address."""
        listen = listen or self.settings.server.listen
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # Bind first: an address that cannot be had must fail before the ledger opens or a task starts.
        port = self._server.add_insecure_port(listen)
        if not listen.startswith("unix:"):
            if port == 0:
                raise RuntimeError(f"could not bind {listen}")
            host = listen.rsplit(":", 1)[0]
            listen = f"{host}:{port}"
        await asyncio.to_thread(self.ledger.open)
        self._ledger_watch = asyncio.create_task(self._watch_ledger())
        await self._server.start()
        self.address = listen
        self.logger.info("listening", extra={"fields": {"address": listen}})
        return listen

    async def load(self) -> None:
        self.backends = await load_backends(self.settings, self.logger)
        edge = self.backends.edge
        self.router.costs = cost_model(self.settings, edge_parameters=float(edge.n_params))
        self.ledger.set_edge_parameters(float(edge.n_params))
        self.router.backends = Backends(edge=edge, cloud=self.backends.cloud)
        self.router.ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.logger.info("serving", extra={"fields": {
            "edge": self.backends.edge_info.name, "cloud": self.backends.cloud_info.name,
            "cloud_endpoint": self.backends.cloud_info.endpoint}})

    async def _watch_ledger(self) -> None:
        """Mirrors the ledger's health on the health service under LEDGER_HEALTH_NAME; the reason is in Stats."""
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            status = self.ledger.status()
            await self.health.set(LEDGER_HEALTH_NAME, serving if status.ok else not_serving)
            await asyncio.sleep(LEDGER_WATCH_INTERVAL_S)

    def info(self) -> DaemonInfo:
        loaded = self.backends
        return DaemonInfo(
            version=self._packages.get("hybrid-router", ""),
            implemented_modes=self.router.implemented_modes, default_mode=self.router.default_mode,
            edge=loaded.edge_info if loaded else ModelInfo(name=""),
            cloud=loaded.cloud_info if loaded else ModelInfo(name=""),
            packages=self._packages, hardware=self._hardware,
            max_tokens_limit=self.settings.server.max_tokens_limit)

    def request_stop(self) -> None:
        self._stopping.set()

    def _already_stopping(self, signum: int) -> None:
        self.logger.warning("already shutting down; the drain goes on (SIGKILL stops at once)",
                            extra={"fields": {"signal": signal.Signals(signum).name,
                                              "grace_period_s": self.settings.server.grace_period_s}})

    async def run(self) -> int:
        """Load the models and serve until SIGTERM/SIGINT (or request_stop), then drain and shut down.

        The signal handlers are in place before loading starts, so a SIGTERM during a slow load stops
        it cleanly (the stand-in and a half-loaded model included). Returns the process exit status.
        """
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loading = asyncio.create_task(self.load())
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not loading.done():
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
                return 0
            if loading.exception() is not None:
                exc = loading.exception()
                self.logger.error("start-up failed", extra={"fields": {"error": str(exc), "type": type(exc).__name__}})
                return 1
            await stopping
            return 0
        finally:
            stopping.cancel()
            # A second SIGTERM or Ctrl-C must not cut the drain short: the ledger's flush and the
            # stand-in's stop come at its end. SIGKILL remains for an operator who cannot wait.
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._already_stopping, signum)
            try:
                await self.stop()
            finally:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    async def stop(self) -> None:
        """New requests are refused at once; in-flight ones get the grace period; then the models go."""
        self.logger.info("shutting down", extra={"fields": {"grace_period_s": self.settings.server.grace_period_s}})
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.stop(self.settings.server.grace_period_s)
        self.router.ready = False
        if self._ledger_watch is not None:
            self._ledger_watch.cancel()
        await self.judge.aclose()
        await asyncio.to_thread(self.ledger.close)  # flushes every queued write
        if self.backends is not None:
            await self.backends.close()
        self.logger.info("stopped")
