"""The composition root: the daemon's parts built from settings, with one life cycle for all of them.

A door (the gRPC server now, an HTTP server later) owns a Daemon and adds only its transport:
`open()` before it accepts calls, `load()` to become ready, `close(timeout_s)` after its last call.
Nothing here knows about gRPC.

    settings ──> Daemon ──> Router (core) with its modes (the arbiter, the learned scorer's files)
                       ├──> DaemonLedger, the sink that records every result
                       ├──> LoadedBackends (the edge model, the cloud client, the stand-in), at load()
                       └──> CloudJudge, the sink that grades edge answers, at load(): it needs the cloud
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Optional

from router.assembly.adapters import AdapterRefusedError, EdgeAdapters
from router.assembly.auth import build_trust
from router.assembly.cloud_guards import GuardedCloud, guard_cloud
from router.assembly.grpc_channels import ChannelTrust, read_token_file
from router.assembly.in_flight import InFlightCalls
from router.assembly.info_client import GrpcInfoClient
from router.assembly.local_info import LocalInfoIndex
from router.assembly.limits import build_admission, build_backend_queues, build_budget
from router.assembly.metrics import RouterMetrics, budget_left_usd
from router.assembly.modes import build_modes
from router.assembly.probes import EdgeModelIdentity
from router.assembly.routing import RouterModelRefusedError, load_routing_or_refuse
from router.assembly.parts import (LoadedBackends, cost_model, hardware_summary, load_backends, model_cache,
                                   package_versions)
from router.core.daemon_ledger import DaemonLedger
from router.core.engine import Backends, Router
from router.core.judge import CloudJudge
from router.domain.config import ConfigError, Settings
from router.core.routing.mode import PreArbitrationMode
from router.domain.types import BackendKind, CloudBreakerStatus, DaemonInfo, Mode, ModelInfo

# A close step that waits on others' work (pending judge grades) gets at most this share of the
# budget left at its turn, so the ledger's close and the backends' after it always get time.
WAIT_SHARE_OF_BUDGET = 0.5


class Daemon:
    """Every part of a running router. Raises ConfigError at construction for settings that cannot
    work (an unimplemented default mode, an unusable learned model), before anything is opened."""

    def __init__(self, settings: Settings, *, logger: Optional[logging.Logger] = None) -> None:
        self.settings = settings
        self.logger = logger or logging.getLogger("hybrid_router.server")
        self.trust = build_trust(settings, self.logger)
        self.ledger = DaemonLedger(settings.ledger, logging.getLogger("hybrid_router.ledger"),
                                   max_feedback_bytes=settings.server.max_request_bytes)
        self.model_cache = model_cache(settings)  # the one cache every part loads its files from
        modes = build_modes(settings.arbitration, model_cache=self.model_cache, routing=settings.routing,
                            info=settings.info, agent=settings.agent, edge_n_ctx=settings.edge.n_ctx,
                            logger=logging.getLogger("hybrid_router.arbiter"),
                            edge=EdgeModelIdentity(settings.edge, self.model_cache), auto=settings.auto)
        # The budgets count every result, as the ledger does, and keep cloud-bound requests off a spent one.
        self.budget = build_budget(settings)
        budgets = (self.budget,) if self.budget is not None else ()
        # Prometheus series for every finished request, served by a door when metrics.address is set.
        self.metrics = RouterMetrics(edge_model=settings.edge.model, cloud_model=settings.cloud.model)
        self.router = Router(settings=settings.server, costs=cost_model(settings, edge_parameters=0.0), modes=modes,
                             sinks=(self.ledger, self.metrics, *budgets), cloud_gates=budgets,
                             # a reused client request_id is refused, not lost as a duplicate
                             recorded_ids=self.ledger, admission=build_admission(settings.limits),
                             on_refused=self.metrics.refused)
        if self.router.default_mode not in self.router.modes:
            raise ConfigError(f"server.default_mode {settings.server.default_mode!r} is not implemented yet; "
                              f"use one of: {', '.join(m.name.lower() for m in self.router.implemented_modes)}")
        # The requests every door serves, so that one shutdown drains them all.
        self.calls = InFlightCalls()
        # info.service = in_process: the index this process serves; the gRPC door hosts the service over it.
        self.info_index: Optional[LocalInfoIndex] = None
        if settings.info.service == "in_process":
            self.info_index = LocalInfoIndex(settings.info, self.model_cache, logger=logging.getLogger("hybrid_router.info"))
        self.judge: Optional[CloudJudge] = None
        self.cloud: Optional[GuardedCloud] = None  # at load(): its breaker's snapshot() is for health and Info
        self.info_client: Optional[GrpcInfoClient] = None
        self._reloading = asyncio.Lock()
        self.backends: Optional[LoadedBackends] = None
        self.adapters: Optional[EdgeAdapters] = None  # at load(): the edge's LoRA adapter
        self._packages = package_versions()
        self._hardware = hardware_summary()

    def open(self) -> None:
        """Opens the ledger (blocking: call it in a thread)."""
        self.ledger.open()
        if self.budget is not None and self.ledger.ledger is not None:
            self.budget.seed_from_ledger(self.ledger.ledger.path)  # the spend so far survives a restart

    async def load(self, *, info_target: Optional[str] = None) -> None:
        """Loads the models and connects the cloud and the Info service; the router is ready when it
        returns. `info_target`: where the door hosts the Info service (info.service = in_process);
        for info.service = remote, info.address."""
        self.backends = await load_backends(self.settings, self.logger)
        self.adapters = EdgeAdapters(self.backends.edge, self.settings.edge, self.settings.models.adapters_dir,
                                     logging.getLogger("hybrid_router.edge"), on_change=self.metrics.set_adapter)
        await self.adapters.start()
        info = self.settings.info
        target = info_target or (info.address if info.service == "remote" else None)
        if target:
            # In-process: the daemon's own principal, in memory. Remote: the token the Info host issued it.
            trust = (ChannelTrust(token=self.trust.service_token) if info_target else
                     ChannelTrust(token=read_token_file(info.token_file), ca_file=info.tls_ca_file))
            self.info_client = GrpcInfoClient(target, timeout_s=info.timeout_s, trust=trust,
                                              price_per_retrieval_usd=info.price_per_retrieval_usd)
        edge = self.backends.edge
        costs = cost_model(self.settings, edge_parameters=float(edge.n_params))
        self.ledger.set_edge_parameters(float(edge.n_params))
        # Each backend's bounded queue is innermost: every call is counted, whatever wraps it.
        edge_queue, cloud_queue = build_backend_queues(self.settings, edge=edge, cloud=self.backends.cloud)
        # Every cloud call, the judge's included, passes the privacy policy and the circuit breaker.
        self.cloud = guard_cloud(cloud_queue, self.settings, logging.getLogger("hybrid_router.cloud"))
        self.judge = CloudJudge(cloud=self.cloud.backend, costs=costs, signals=self.ledger,
                                sample_rate=self.settings.ledger.judge_sample_rate)
        budgets = (self.budget,) if self.budget is not None else ()
        # The one place where finished results leave the request path: the ledger, then the judge; and
        # privacy first among the gates: a request that may not leave the device goes to the edge, whatever else holds.
        self.router.go_live(backends=Backends(edge=edge_queue, cloud=self.cloud.backend), costs=costs,
                            sinks=(self.ledger, self.judge, self.metrics, *budgets),
                            cloud_gates=(*self.cloud.gates, *budgets), info=self.info_client)
        budget = self.budget
        self.metrics.watch(
            breaker=self.breaker_status, ledger_dropped_writes=lambda: self.ledger.status().dropped_writes,
            budget_left_usd=(lambda: budget_left_usd(budget)) if budget is not None else dict,
            queue_depths=lambda: {"edge": edge_queue.in_flight, "cloud": cloud_queue.in_flight})
        self.logger.info("serving", extra={"fields": {
            "edge": self.backends.edge_info.name, "cloud": self.backends.cloud_info.name,
            "cloud_endpoint": self.backends.cloud_info.endpoint}})

    async def reload_router(self, model_dir: Optional[Path] = None) -> tuple[str, str]:
        """PRE_ARBITRATION's router from `model_dir` (default: routing.model_dir), with its own threshold,
        in place of the one in use; requests in flight finish on the old one. Reloads run one at a time,
        so the last asked for is the one that stays. Returns (previous name, new name). A model that
        cannot be used raises RouterModelRefusedError and nothing changes. Under routing.decide_at = prefill
        the prefill probe stays: the reload replaces the router that decides while the probe is stale."""
        directory = model_dir
        if directory is None and self.settings.routing.model_dir is not None:
            # The daemon's own setting: resolved as start-up resolved it (its home, its working directory).
            directory = self.settings.routing.model_dir.expanduser().absolute()
        if directory is None:
            raise RouterModelRefusedError("no router to load: give its directory (hybrid-router reload --model-dir "
                                          "DIR), or set routing.model_dir")
        handler = self.router.modes.get(Mode.PRE_ARBITRATION)
        if not isinstance(handler, PreArbitrationMode):
            raise RouterModelRefusedError("this daemon runs no PRE_ARBITRATION router to reload")
        slot = handler.stand_in if handler.stand_in is not None else handler.slot
        async with self._reloading:
            # The load (onnxruntime, the encoder) runs in a thread; only the swap is on the event loop.
            new = await asyncio.to_thread(load_routing_or_refuse, Path(directory), self.settings.routing,
                                          self.model_cache, slot.current.router)
            previous = slot.swap(new)
        self.logger.info("router reloaded", extra={"fields": {"previous": previous.router.name,
                                                               "new": new.router.name}})
        return previous.router.name, new.router.name

    async def use_adapter(self, version: str) -> tuple[str, str]:
        """Swaps the edge's LoRA adapter (EdgeAdapters.use): returns the edge's name before and after."""
        if self.adapters is None:
            raise AdapterRefusedError("the edge model is not loaded yet")
        return await self.adapters.use(version)

    def info(self) -> DaemonInfo:
        loaded = self.backends
        edge_info = loaded.edge_info if loaded else ModelInfo(name="")
        if self.adapters is not None:
            adapter, adapter_sha256 = self.adapters.info()
            edge_info = dataclasses.replace(edge_info, adapter=adapter, adapter_sha256=adapter_sha256)
        return DaemonInfo(
            version=self._packages.get("hybrid-router", ""),
            implemented_modes=self.router.implemented_modes, default_mode=self.router.default_mode,
            edge=edge_info,
            cloud=loaded.cloud_info if loaded else ModelInfo(name=""),
            packages=self._packages, hardware=self._hardware,
            max_tokens_limit=self.settings.server.max_tokens_limit, cloud_breaker=self.breaker_status())

    def model_names(self) -> dict[BackendKind, str]:
        """The names results give the loaded edge and cloud models (empty before load())."""
        loaded = self.router.backends
        return {kind: backend.name for kind, backend in ((BackendKind.EDGE, loaded.edge), (BackendKind.CLOUD, loaded.cloud))
                if backend is not None}

    def breaker_status(self) -> Optional[CloudBreakerStatus]:
        """The cloud's circuit breaker, for Info and health; None before load()."""
        if self.cloud is None:
            return None
        snapshot = self.cloud.breaker.snapshot()
        return CloudBreakerStatus(state=snapshot.state.value, consecutive_failures=snapshot.consecutive_failures,
                                  failures_to_open=snapshot.failures_to_open, retry_in_s=snapshot.retry_in_s,
                                  times_opened=snapshot.times_opened, times_closed=snapshot.times_closed)

    async def close(self, timeout_s: float) -> bool:
        """Closes every part within timeout_s, in this order. The request rows recorded so far come
        first: they are what was served and paid for, where a judge grade lost is one sample fewer.
        The judge's pending grades next, and the ledger closes after them, since they are written to
        it. The stand-in and the edge keep nothing, so they come last (the stand-in is killed outright
        when no time is left). Returns False when the edge model was still busy at the end (llama.cpp
        cannot be interrupted in a prompt evaluation): the process may exit without waiting for it."""
        self.router.ready = False
        ends_at = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, ends_at - time.monotonic())

        await asyncio.to_thread(self.ledger.flush, left())
        if self.judge is not None:
            await self.judge.aclose(left() * WAIT_SHARE_OF_BUDGET)
        await asyncio.to_thread(self.ledger.close, left())
        if self.info_client is not None:
            self.router.info = None
            await self.info_client.aclose()
        if self.backends is None:
            return True
        return await self.backends.close(left())
