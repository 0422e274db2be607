"""Supervises the local cloud stand-in: llama-cpp-python's OpenAI-compatible server in a child process.

`StandinServer(model_path, model_alias=...)` spawns `python -m llama_cpp.server`, waits until
GET /v1/models answers 200 and lists the alias, and stops it with SIGTERM, then SIGKILL.
The child is tied to its parent: it gets SIGKILL from the kernel if the parent dies
(PR_SET_PDEATHSIG), so a SIGKILLed daemon leaves no orphaned model server behind.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Optional

from cloud.errors import StandinStartError

__all__ = ["StandinServer", "StandinStartError"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LOG_TAIL_LINES = 20
_HEALTH_POLL_S = 0.25
_HEALTH_REQUEST_TIMEOUT_S = 2.0
_STOP_POLL_S = 0.05
_BIND_ATTEMPTS = 3
# llama_cpp.server's __main__ lets HOST/PORT/CONFIG_FILE in the environment override its arguments,
# and its pydantic settings read any unset field from the environment (case-insensitively):
# API_KEY there would make the stand-in demand a key. The child gets an environment without them.
_ENV_OVERRIDES_TO_DROP = frozenset({"host", "port", "config_file", "api_key"})


class StandinServer:
    def __init__(self, model_path: Path, *, model_alias: str, n_ctx: int = 4096, n_threads: int = 2,
                 n_batch: int = 512, host: str = "127.0.0.1", port: int = 0,
                 startup_timeout_s: float = 180.0, python: str = sys.executable,
                 log_path: Optional[Path] = None, server_module: str = "llama_cpp.server") -> None:
        """`server_module`: the module run as `python -m`; it takes llama_cpp.server's arguments (a
        wrapper that prepares llama.cpp first, such as edge.openai_server, fits)."""
        self.model_path = Path(model_path)
        self.model_alias = model_alias
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self.python = python
        self.server_module = server_module
        self.log_path: Optional[Path] = log_path
        self.base_url = ""
        self._owns_log = log_path is None
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._log_file: Optional[IO[bytes]] = None

    def __repr__(self) -> str:
        return f"StandinServer(model_alias={self.model_alias!r}, base_url={self.base_url!r})"

    async def __aenter__(self) -> "StandinServer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Spawns the server and returns once it answers; raises StandinStartError otherwise."""
        if self.running:
            raise RuntimeError("stand-in server already running")
        self._open_log()
        attempts = 1 if self.port else _BIND_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.port or _free_loopback_port(self.host)
            self._spawn(port)
            try:
                await self._wait_until_healthy(port)
                self.base_url = f"http://{self.host}:{port}/v1"
                return
            except StandinStartError:
                await self._kill()
                # A free port can be taken by someone else while the model loads: pick another.
                lost_port_race = not self.port and not _port_is_free(self.host, port)
                if not (lost_port_race and attempt < attempts):
                    self._close_log()
                    raise

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s; reaps the child. Safe to call twice."""
        process = self._process
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            if not await _wait_for_exit(process, timeout_s):
                await self._kill()
        self._process = None
        self.base_url = ""
        self._close_log()
        if self._owns_log and self.log_path is not None:
            # A log we made up is deleted once the server stopped cleanly (kept when start failed).
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def _open_log(self) -> None:
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="hybrid-router-standin-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "ab")

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _command(self, port: int) -> list[str]:
        return [self.python, "-m", self.server_module,
                "--model", str(self.model_path), "--model_alias", self.model_alias,
                "--host", self.host, "--port", str(port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--n_batch", str(self.n_batch),
                # The server defaults logits_all to true, which makes prompt processing ~3x slower.
                "--logits_all", "false",
                # Its default cuts an in-flight stream short (a clean [DONE] with no finish_reason)
                # whenever another request arrives; a cloud queues requests instead.
                "--interrupt_requests", "false"]

    def _spawn(self, port: int) -> None:
        environment = {name: value for name, value in os.environ.items()
                       if name.lower() not in _ENV_OVERRIDES_TO_DROP}
        environment["PYTHONUNBUFFERED"] = "1"  # its log (and our error tail) stays current
        self._process = subprocess.Popen(
            self._command(port), stdin=subprocess.DEVNULL, stdout=self._log_file,
            stderr=subprocess.STDOUT, env=environment, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()))

    async def _wait_until_healthy(self, port: int) -> None:
        process = self._process
        assert process is not None
        url = f"http://{self.host}:{port}/v1/models"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if process.poll() is not None:
                raise StandinStartError(
                    f"stand-in server exited with code {process.returncode} before it was healthy; "
                    f"last output ({self.log_path}):\n{self._log_tail()}")
            if await asyncio.to_thread(_lists_model, url, self.model_alias):
                return
            if time.monotonic() > deadline:
                raise StandinStartError(
                    f"stand-in server not healthy after {self.startup_timeout_s:g} s; "
                    f"last output ({self.log_path}):\n{self._log_tail()}")
            await asyncio.sleep(_HEALTH_POLL_S)

    async def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGKILL)
            await _wait_for_exit(process, timeout_s=10.0)

    def _log_tail(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        if self.log_path is None:
            return ""
        try:
            lines = self.log_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])


def die_with_parent(parent_pid: int, signum: int = signal.SIGKILL):  # type: ignore[no-untyped-def]
    """A preexec_fn: the kernel sends `signum` to the child when the thread that spawned it dies."""

    def set_parent_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return set_parent_death_signal if sys.platform.startswith("linux") else None


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # start_new_session made the child its group's leader
    except ProcessLookupError:
        pass


async def _wait_for_exit(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_STOP_POLL_S)
    return True


def _lists_model(url: str, model_alias: str) -> bool:
    """True when `url` answers 200 with an OpenAI model list that names model_alias."""
    try:
        with urllib.request.urlopen(url, timeout=_HEALTH_REQUEST_TIMEOUT_S) as response:
            if response.status != 200:
                return False
            listing = json.loads(response.read())
    except (OSError, ValueError):  # URLError, refused, reset, timeout, bad JSON
        return False
    models = listing.get("data") if isinstance(listing, dict) else None
    return isinstance(models, list) and any(
        isinstance(model, dict) and model.get("id") == model_alias for model in models)


def _free_loopback_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True
