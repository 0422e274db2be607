"""Start a daemon as a child process, wait until it serves, and stop it with SIGTERM.

Used by `hybrid-router demo`, the bench (when no --target is given) and the tests that need a real
process (SIGTERM drain, SIGKILL). The daemon listens on a unix socket in a private temporary
directory, so no port is raced for.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

from cloud.standin import die_with_parent
from router.assembly.grpc_channels import read_token_file
from router.client import RouterClient
from router.domain.config import CONFIG_FILE_ENV, load_settings
from router.domain.errors import NotReadyError


class LocalDaemon:
    def __init__(self, *, config: Optional[Path] = None, env: Optional[Mapping[str, str]] = None,
                 extra_args: Sequence[str] = (), ready_timeout_s: float = 600.0,
                 log_path: Optional[Path] = None) -> None:
        self._config = config
        self._env = dict(os.environ if env is None else env)
        self._extra_args = tuple(extra_args)
        self._ready_timeout_s = ready_timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="hybrid-router-")
        self.target = f"unix:{self._tmp.name}/router.sock"
        self.log_path = log_path or Path(self._tmp.name) / "daemon.log"
        self.process: Optional[subprocess.Popen] = None

    @property
    def token(self) -> Optional[str]:
        """The daemon's local admin token (its auth.local_token_file, written on its first start); None
        under auth.mode = "none"."""
        settings = load_settings(self._config, {k: v for k, v in self._env.items()
                                                if k.startswith("HYBRID_ROUTER_") or k == CONFIG_FILE_ENV})
        if settings.auth.mode == "none":
            return None
        path = settings.auth.local_token_file
        if str(path).startswith("~") and "HOME" in self._env:  # the child's home, not this process's
            path = Path(self._env["HOME"]) / str(path)[2:]
        return read_token_file(path.expanduser())

    def client(self, timeout_s: Optional[float] = None) -> RouterClient:
        """An SDK client of this daemon, with its local admin token."""
        return RouterClient(self.target, timeout_s=timeout_s, token=self.token)

    def start(self) -> "LocalDaemon":
        command = [sys.executable, "-m", "router"]
        if self._config is not None:
            command += ["--config", str(self._config)]
        command += ["serve", "--listen", self.target, *self._extra_args]
        log = open(self.log_path, "ab")
        # SIGTERM (a graceful drain) reaches the daemon even if this process is killed outright.
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                        preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM))
        log.close()
        deadline = time.monotonic() + self._ready_timeout_s
        with RouterClient(self.target) as client:
            while not client.is_serving():
                if self.process.poll() is not None:
                    raise NotReadyError(f"the daemon exited with status {self.process.returncode} before "
                                        f"serving; its log:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise NotReadyError(f"the daemon did not serve within {self._ready_timeout_s:g} s; "
                                        f"its log:\n{self.log_tail()}")
                time.sleep(0.25)
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 60.0) -> Optional[int]:
        """SIGTERM, wait for the drain, SIGKILL as a last resort. Returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "LocalDaemon":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()
