"""Bad input is typed before anything is sent, and the CLI parses the commands the README shows."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.doors import cli
from router.doors.cli import build_parser, parse_since
from router.client import RouterClient
from router.domain.errors import InvalidRequestError
from router.domain.types import Mode
from tests.conftest import isolated_env, private_paths

NOWHERE = "127.0.0.1:1"  # nothing listens: these requests must fail before reaching the network


@pytest.mark.parametrize("fields", [
    {"prompt": "x", "max_tokens": 2**40},
    {"prompt": "x", "seed": 2**70},
    {"prompt": "x", "temperature": "hot"},
    {"prompt": "x", "metadata": {"k": 3}},
    {"messages": [{"role": "user"}]},
    {"prompt": "x", "mode": "telepathy"},
])
def test_values_the_wire_cannot_carry_are_invalid_requests(fields: dict) -> None:
    with RouterClient(NOWHERE, timeout_s=2) as client, pytest.raises(InvalidRequestError):
        client.generate(**fields)


def test_give_a_prompt_or_messages() -> None:
    with RouterClient(NOWHERE, timeout_s=2) as client, pytest.raises(InvalidRequestError, match="exactly one"):
        client.generate(prompt="a", messages=[{"role": "user", "content": "b"}])


@pytest.mark.parametrize("argv, handler, parsed", [
    (["serve", "--listen", "unix:/run/hr.sock", "--config", "router.toml"], cli.cmd_serve,
     {"listen": "unix:/run/hr.sock", "config": "router.toml"}),
    (["--config", "router.toml", "serve"], cli.cmd_serve, {"listen": None, "config": "router.toml"}),
    (["ask", "What is 17 * 23?", "--mode", "cloud", "--json"], cli.cmd_ask,
     {"question": "What is 17 * 23?", "mode": "cloud", "json": True}),
    (["stats", "--since", "2h", "--json"], cli.cmd_stats, {"json": True}),
    (["feedback", "abc", "--thumbs-down", "--correct", "391"], cli.cmd_feedback,
     {"request_id": "abc", "thumbs_down": True, "thumbs_up": False, "correct": "391", "score": None}),
    (["export", "--format", "dpo", "--out", "train.jsonl", "--since", "7d", "--mode", "cloud", "--split-seed", "0"],
     cli.cmd_export, {"format": "dpo", "out": "train.jsonl", "mode": Mode.CLOUD_ONLY, "split_seed": 0}),
    (["models", "verify", "smollm2-135m"], cli.cmd_models, {"action": "verify", "names": ["smollm2-135m"]}),
    (["demo", "--question", "What is 2 + 2?"], cli.cmd_demo, {"question": "What is 2 + 2?"}),
])
def test_the_readme_commands_parse(argv: list, handler, parsed: dict) -> None:
    args = build_parser().parse_args(argv)
    assert args.func is handler  # the command the README names runs, not another
    assert {key: getattr(args, key) for key in parsed} == parsed
    if "--since" in argv:  # a duration becomes the moment it reaches back to
        assert isinstance(args.since, float) and args.since < time.time()


def test_the_bench_is_not_a_verb_of_the_router_cli(tmp_path: Path) -> None:
    # The bench sits above the router (it talks to it through the SDK): `python -m bench` runs it.
    proc = subprocess.run([sys.executable, "-m", "router", "bench", "--dataset", "jsonl:/nonexistent.jsonl"],
                          capture_output=True, text=True, timeout=60, env=isolated_env(tmp_path / "home"))
    assert proc.returncode == 2 and "invalid choice: 'bench'" in proc.stderr


def test_since_parsing() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1970-01-02") == 86400.0
    with pytest.raises(Exception, match="duration"):
        parse_since("yesterday")


def test_serve_on_a_taken_port_fails_clearly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "router", "serve", "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60,
                              env=isolated_env(home, {**private_paths(home), "HYBRID_ROUTER_LOGGING__FORMAT": "text"}))
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


def test_export_with_an_unknown_mode_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "router", "export", "--format", "openai", "--out", "x.jsonl",
                           "--mode", "bogus"], capture_output=True, text=True, timeout=60,
                          env=isolated_env(tmp_path / "home"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown mode 'bogus'" in proc.stderr and "edge_only" in proc.stderr
    assert "Traceback" not in proc.stderr
