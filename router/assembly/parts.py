"""Builds the daemon's parts from settings: backends (and the stand-in), the cost model, the info."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlsplit

from cloud.openai_backend import OpenAIBackend
from cloud.standin import StandinServer
from edge.catalogue import CATALOGUE, ModelCache
from router.domain.config import Settings
from router.core.fault_injection import MODEL_NAME as FAULT_INJECTION_MODEL
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.domain.pricing import CostModel
from router.domain.types import ModelInfo

if TYPE_CHECKING:  # llama_cpp loads only when an edge model does: `models`, `doctor` work without it
    from edge.llama_backend import LlamaBackend

STANDIN_API_KEY = "local-standin"  # the stand-in checks no key, but the OpenAI client wants one
BACKENDS_CLOSE_S = 30.0  # LoadedBackends.close when no budget is given
# llama_cpp.server behind a wrapper that loads this machine's llama.cpp CPU code first (edge/ggml_runtime.py).
STANDIN_SERVER_MODULE = "edge.openai_server"
PACKAGES = ("hybrid-router", "llama-cpp-python", "openai", "grpcio", "protobuf", "numpy", "uvicorn", "starlette",
            "prometheus-client")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def hardware_summary() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def public_endpoint(endpoint: str) -> str:
    """What `Info` (and the logs) may show of a backend's endpoint: for a URL, scheme://host[:port]/path,
    without the user and password a base_url can embed, the query (`?key=...`) or the fragment; for a
    file, its name alone, since the full path says how the host's file system is laid out."""
    parts = urlsplit(endpoint)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}"
    if "/" in endpoint or "\\" in endpoint:
        return Path(endpoint.replace("\\", "/")).name
    return endpoint


@dataclass
class ResolvedModel:
    name: str
    path: Path
    sha256: str


def resolve_model(cache: ModelCache, name: str, explicit_path: Optional[Path]) -> ResolvedModel:
    """The file to load: an explicit path as given, or a catalogue model checked in the cache."""
    if explicit_path is not None:
        path = explicit_path.expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist (set by configuration)")
        return ResolvedModel(name=path.stem, path=path, sha256="")
    path = cache.require(name)
    return ResolvedModel(name=name, path=path, sha256=CATALOGUE[name].sha256)


@dataclass
class LoadedBackends:
    edge: "LlamaBackend | FixedLatencyFaultInjectionBackend"
    cloud: OpenAIBackend
    edge_info: ModelInfo
    cloud_info: ModelInfo
    standin: Optional[StandinServer] = None
    closed: bool = field(default=False)

    async def close(self, timeout_s: float = BACKENDS_CLOSE_S) -> bool:
        """Closes the cloud client, stops the stand-in and frees the edge model, within timeout_s in all.

        Returns False when the edge was still busy at the end (llama.cpp cannot be interrupted in the
        middle of evaluating a prompt): it is left running, and its memory to the process's exit.
        """
        if self.closed:
            return True
        self.closed = True
        ends_at = time.monotonic() + timeout_s
        try:
            await _within(self.cloud.close(), ends_at)
        finally:
            try:
                if self.standin is not None:
                    await self.standin.stop(timeout_s=_left(ends_at))  # none left: SIGKILL at once
            finally:
                edge_closed = await _close_in_daemon_thread(self.edge.close, _left(ends_at))
        return edge_closed


def _left(ends_at: float) -> float:
    return max(0.0, ends_at - time.monotonic())


async def _within(closing: Any, ends_at: float) -> None:
    try:
        await asyncio.wait_for(closing, _left(ends_at))
    except TimeoutError:
        pass  # an HTTP client not closed in time goes with the process


async def _close_in_daemon_thread(close: Callable[[], None], timeout_s: float) -> bool:
    """Runs a blocking close on a daemon thread and waits at most timeout_s; False if it overran.

    Not asyncio.to_thread: its pool is joined when the event loop shuts down, so a close that overran
    would hold the process anyway.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if finished.done():
            return
        if error is None:
            finished.set_result(None)
        else:
            finished.set_exception(error)

    def run() -> None:
        error: Optional[BaseException] = None
        try:
            close()
        except BaseException as exc:  # handed to the waiting coroutine, raised there
            error = exc
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:
            pass  # the loop is gone: nobody waits any more

    threading.Thread(target=run, name="close-edge", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout_s)
    except TimeoutError:
        return False
    return True


def model_cache(settings: Settings) -> ModelCache:
    return ModelCache(settings.models.cache_dir.expanduser())


def cost_model(settings: Settings, edge_parameters: float) -> CostModel:
    return CostModel(cloud_input_usd_per_mtok=settings.cloud.input_usd_per_mtok,
                     cloud_output_usd_per_mtok=settings.cloud.output_usd_per_mtok,
                     edge_parameters=edge_parameters, edge_joules_per_flop=settings.edge.joules_per_flop,
                     usd_per_kwh=settings.edge.usd_per_kwh)


def edge_factory(settings: Settings, cache: ModelCache) -> tuple[ResolvedModel, Callable[[], Any]]:
    """The edge model's identity, and how to load it (a blocking call, for a worker thread)."""
    if settings.edge.kind == "fault-injection":
        return (ResolvedModel(name=FAULT_INJECTION_MODEL, path=Path("/dev/null"), sha256=""),
                functools.partial(FixedLatencyFaultInjectionBackend, latency_s=settings.edge.fault_injection_latency_s))
    from edge.llama_backend import LlamaBackend

    model = resolve_model(cache, settings.edge.model, settings.edge.model_path)
    return model, functools.partial(LlamaBackend, model.path, model_name=model.name, n_ctx=settings.edge.n_ctx,
                                    n_threads=settings.edge.n_threads, n_batch=settings.edge.n_batch,
                                    stream_flush_interval_s=settings.edge.stream_flush_interval_s)


async def load_backends(settings: Settings, logger: logging.Logger) -> LoadedBackends:
    """Load the edge model and connect the cloud, starting the local stand-in when no cloud is configured.

    The stand-in boots in its own process while the edge model loads in a thread.
    """
    cache = model_cache(settings)
    edge_model, make_edge = edge_factory(settings, cache)
    standin: Optional[StandinServer] = None
    if settings.cloud.uses_standin:
        standin_model = resolve_model(cache, settings.standin.model, settings.standin.model_path)
        standin = StandinServer(standin_model.path, model_alias=standin_model.name,
                                server_module=STANDIN_SERVER_MODULE,
                                n_ctx=settings.standin.n_ctx, n_threads=settings.standin.n_threads,
                                n_batch=settings.standin.n_batch,
                                startup_timeout_s=settings.standin.startup_timeout_s)
    edge_task = asyncio.create_task(asyncio.to_thread(make_edge))
    try:
        if standin is not None:
            logger.info("starting the local cloud stand-in", extra={"fields": {"model": str(standin_model.path)}})
            await standin.start()
        edge = await edge_task
    except BaseException:
        if standin is not None:
            await standin.stop()
        # The model may still be loading in its thread: wait for it, then free it.
        loaded = await asyncio.gather(edge_task, return_exceptions=True)
        if not isinstance(loaded[0], BaseException):
            await asyncio.to_thread(loaded[0].close)
        raise
    if standin is not None:
        cloud = OpenAIBackend(base_url=standin.base_url, api_key=STANDIN_API_KEY, model=standin_model.name,
                              timeout_s=settings.cloud.timeout_s, max_retries=settings.cloud.max_retries,
                              max_concurrency=settings.cloud.max_concurrency, context_tokens=settings.standin.n_ctx)
        cloud_info = ModelInfo(name=standin_model.name, sha256=standin_model.sha256,
                               endpoint=public_endpoint(standin.base_url),
                               local_standin=True, priced_as=settings.cloud.model, n_ctx=settings.standin.n_ctx)
    else:
        api_key = settings.cloud.api_key.get_secret_value() if settings.cloud.api_key else None
        cloud = OpenAIBackend(base_url=settings.cloud.base_url, api_key=api_key, model=settings.cloud.model,
                              timeout_s=settings.cloud.timeout_s, max_retries=settings.cloud.max_retries,
                              max_concurrency=settings.cloud.max_concurrency)
        cloud_info = ModelInfo(name=settings.cloud.model,
                               endpoint=public_endpoint(settings.cloud.base_url or "default"),
                               priced_as=settings.cloud.model)
    edge_info = ModelInfo(name=edge.name, sha256=edge_model.sha256, endpoint=public_endpoint(str(edge_model.path)),
                          n_ctx=settings.edge.n_ctx)
    return LoadedBackends(edge=edge, cloud=cloud, edge_info=edge_info, cloud_info=cloud_info, standin=standin)
