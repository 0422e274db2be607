"""`hybrid-router doctor`: is this machine ready to serve? One line per check, ok or what to do.

Checks, in the order a new user meets them: the CPU's instruction sets, the llama.cpp build
(policy, CPU variants shipped), the self-test (one decode in a child process), the model files
(size and SHA-256), the cloud (the stand-in starts and answers, or the configured provider accepts
the key), the ledger (its file can be written), and the listen address (free to bind).
"""
from __future__ import annotations

import asyncio
import os
import platform
import socket
import sqlite3
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Optional

from router.domain.config import Settings

# /proc/cpuinfo flag -> the name llama.cpp's system info uses.
CPU_FLAGS = MappingProxyType({"sse4_2": "SSE4.2", "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "bmi2": "BMI2",
             "avx512f": "AVX512", "avx512vbmi": "AVX512_VBMI", "avx512_vnni": "AVX512_VNNI",
             "avx512_bf16": "AVX512_BF16", "avx_vnni": "AVX_VNNI", "amx_tile": "AMX_TILE",
             "amx_int8": "AMX_INT8", "amx_bf16": "AMX_BF16", "asimd": "NEON", "asimddp": "DOTPROD",
             "sve": "SVE", "i8mm": "MATMUL_INT8"})
TEST_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found
    fix: str = ""  # what to do, when not ok

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'}  {self.name:9} {self.detail}"
        return text if self.ok or not self.fix else f"{text}; fix: {self.fix}"


def cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    return model, [CPU_FLAGS[f] for f in CPU_FLAGS if f in flags]


def check_cpu() -> Check:
    model, features = cpu_model_and_flags()
    detail = f"{model}, {os.cpu_count()} cores: {' '.join(features) or 'no SIMD flags found'}"
    if platform.machine().lower() in ("x86_64", "amd64") and "AVX2" not in features:
        return Check("cpu", False, detail + " (no AVX2)",
                     "this CPU lacks AVX2; the dispatch build still runs, at lower speed")
    return Check("cpu", True, detail)


def check_build() -> Check:
    from edge.llama_build import EXCLUDED_VARIANTS, installed_build

    try:
        from edge.ggml_runtime import shipped_variants
    except ImportError as exc:
        return Check("build", False, f"llama-cpp-python is not importable ({exc})", "make install")
    marker = installed_build(sys.prefix)
    variants = shipped_variants()
    policy = str(marker["policy"]) if marker else "unknown (not installed by make install)"
    excluded = sorted(set(variants) & set(EXCLUDED_VARIANTS))
    if excluded:
        return Check("build", False, f"policy {policy}; ships the excluded CPU variant(s) {', '.join(excluded)}",
                     "make llama-rebuild LLAMA_POLICY=dispatch")
    _, cpu_features = cpu_model_and_flags()
    shipped = f"{len(variants)} CPU variants ({', '.join(variants)})" if variants else "CPU code linked in"
    if policy == "native" and any(f.startswith("AMX") for f in cpu_features):
        return Check("build", False, f"policy native on a CPU with AMX: {shipped}",
                     "make llama-rebuild LLAMA_POLICY=dispatch (the native build crashes on AMX)")
    return Check("build", True, f"policy {policy}, {shipped}")


def check_selftest(settings: Settings) -> Check:
    from edge.catalogue import ModelCache
    from edge.errors import ModelFileError
    from edge.selftest import run_selftest

    try:
        model = ModelCache(settings.models.cache_dir.expanduser()).require(TEST_MODEL)
    except ModelFileError as exc:
        return Check("selftest", False, f"needs the test model: {exc}", f"hybrid-router models pull {TEST_MODEL}")
    result = run_selftest(model)
    if result.ok:
        return Check("selftest", True, result.summary.removeprefix("llama.cpp self-test ok: "))
    return Check("selftest", False, result.summary)


def check_models(settings: Settings) -> list[Check]:
    from edge.catalogue import ModelCache
    from edge.errors import ModelFileError

    cache = ModelCache(settings.models.cache_dir.expanduser())
    wanted = [("edge", settings.edge.model, settings.edge.model_path)]
    if settings.cloud.uses_standin:
        wanted.append(("stand-in", settings.standin.model, settings.standin.model_path))
    checks = []
    for role, name, explicit in wanted:
        if explicit is not None:
            path = explicit.expanduser()
            checks.append(Check("model", path.is_file(), f"{role}: {path} (configured path, not verified)",
                                f"the file {path} does not exist; fix {role.replace('-', '')}.model_path"))
            continue
        try:
            path = cache.verify(name)
        except ModelFileError as exc:
            checks.append(Check("model", False, f"{role}: {name}: {exc}".splitlines()[0],
                                f"hybrid-router models pull {name}"))
        else:
            checks.append(Check("model", True, f"{role}: {name} verified (size and SHA-256) at {path}"))
    return checks


def check_cloud(settings: Settings) -> Check:
    if settings.cloud.uses_standin:
        return asyncio.run(_check_standin(settings))
    return asyncio.run(_check_provider(settings))


async def _check_standin(settings: Settings) -> Check:
    from cloud.standin import StandinServer
    from edge.catalogue import ModelCache
    from edge.errors import ModelFileError
    from router.assembly.parts import STANDIN_SERVER_MODULE, resolve_model

    try:
        model = resolve_model(ModelCache(settings.models.cache_dir.expanduser()), settings.standin.model,
                              settings.standin.model_path)
    except (ModelFileError, FileNotFoundError) as exc:
        return Check("cloud", False, f"local stand-in: {exc}".splitlines()[0],
                     f"hybrid-router models pull {settings.standin.model}")
    server = StandinServer(model.path, model_alias=model.name, n_ctx=512, n_threads=1,
                           startup_timeout_s=settings.standin.startup_timeout_s, server_module=STANDIN_SERVER_MODULE)
    try:
        await server.start()
        return Check("cloud", True, f"local stand-in ({model.name}) started and answered at {server.base_url}")
    except Exception as exc:  # a check reports every failure as a line, whatever its type
        return Check("cloud", False, f"local stand-in did not start: {exc}".splitlines()[0],
                     f"see the stand-in log {server.log_path}" if server.log_path else "run hybrid-router serve")
    finally:
        await server.stop()


async def _check_provider(settings: Settings) -> Check:
    import openai

    key = settings.cloud.api_key.get_secret_value() if settings.cloud.api_key else "no-key"
    endpoint = settings.cloud.base_url or "https://api.openai.com/v1"
    client = openai.AsyncOpenAI(base_url=endpoint, api_key=key, timeout=10.0, max_retries=0)
    try:
        models = [model.id async for model in client.models.list()]
    except openai.AuthenticationError:
        return Check("cloud", False, f"{endpoint} refused the API key", "set cloud.api_key to a valid key")
    except openai.APIConnectionError as exc:
        return Check("cloud", False, f"cannot reach {endpoint}: {exc}", "check cloud.base_url and the network")
    except openai.APIStatusError as exc:
        return Check("cloud", False, f"{endpoint} answered HTTP {exc.status_code} to GET /models",
                     "check cloud.base_url")
    finally:
        await client.close()
    if models and settings.cloud.model not in models:
        return Check("cloud", False, f"{endpoint} answers but does not list model {settings.cloud.model}",
                     f"set cloud.model to one of: {', '.join(models[:8])}")
    return Check("cloud", True, f"{endpoint} reachable, key accepted, model {settings.cloud.model}")


def check_ledger(settings: Settings) -> Check:
    if not settings.ledger.enabled:
        return Check("ledger", True, "disabled (ledger.enabled = false)")
    path = settings.ledger.path.expanduser()
    fix = f"make {path.parent} writable, or set ledger.path"
    try:
        if path.exists():
            with sqlite3.connect(path, timeout=2.0) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            return Check("ledger", True, f"{path} writable")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".doctor-"):
            pass
        return Check("ledger", True, f"{path} will be created ({path.parent} writable)")
    except (OSError, sqlite3.Error) as exc:
        return Check("ledger", False, f"{path}: {exc}", fix)


def check_listen(settings: Settings, listen: Optional[str] = None) -> Check:
    address = listen or settings.server.listen
    if address.startswith("unix:"):
        path = Path(address.removeprefix("unix:"))
        if path.exists():
            return Check("listen", False, f"{path} exists (a daemon running, or a stale socket)",
                         f"stop the other daemon, or remove {path}")
        return Check("listen", True, f"{address} free")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.bind(infos[0][4])
    except OSError as exc:
        return Check("listen", False, f"cannot bind {address}: {exc.strerror or exc}",
                     "stop what holds the port (a daemon already running?) or set server.listen")
    return Check("listen", True, f"{address} free")


def run_checks(settings: Settings, *, listen: Optional[str] = None, skip_cloud: bool = False,
               emit: Callable[[Check], None] = lambda check: print(check.line(), flush=True)) -> list[Check]:
    steps: list[Callable[[], object]] = [check_cpu, check_build, lambda: check_selftest(settings),
                                         lambda: check_models(settings)]
    if not skip_cloud:
        steps.append(lambda: check_cloud(settings))
    steps += [lambda: check_ledger(settings), lambda: check_listen(settings, listen)]
    checks: list[Check] = []
    for step in steps:
        found = step()
        for check in found if isinstance(found, list) else [found]:
            emit(check)
            checks.append(check)
    return checks
