"""The daemon with an Info index it cannot open (its engine a PostgreSQL server that is not there): it stops
with one logged error that names the server without its password and says why, and a non-zero exit status;
never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.test_daemon_shutdown import serve_env

REPO = Path(__file__).resolve().parents[2]
# Port 1 on loopback: nothing listens there, so the connection is refused at once.
UNREACHABLE = "postgresql://info:not-to-be-shown@127.0.0.1:1/info"


def test_a_daemon_whose_info_server_is_unreachable_stops_with_one_logged_error(tmp_path: Path) -> None:
    env = serve_env(tmp_path, INFO__DSN=UNREACHABLE, INFO__SERVICE="in_process")
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--listen", f"unix:{tmp_path}/router.sock"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output and "not-to-be-shown" not in output, output
    failures = [json.loads(line) for line in output.splitlines()
                if line.startswith("{") and '"start-up failed"' in line]
    assert [f["type"] for f in failures] == ["IndexUnavailableError"], output
    assert "127.0.0.1" in failures[0]["error"] and "port=1" in failures[0]["error"]
