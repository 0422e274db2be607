"""Bad input is typed before anything is sent, and the CLI parses the commands the README shows."""
import socket
import subprocess
import sys

import pytest

from router.doors.cli import build_parser, parse_since
from router.client import RouterClient
from router.domain.errors import InvalidRequestError

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


@pytest.mark.parametrize("argv", [
    ["serve", "--listen", "unix:/run/hr.sock", "--config", "router.toml"],
    ["--config", "router.toml", "serve"],
    ["ask", "What is 17 * 23?", "--mode", "cloud", "--json"],
    ["stats", "--since", "2h", "--json"],
    ["feedback", "abc", "--thumbs-down", "--correct", "391"],
    ["export", "--format", "dpo", "--out", "train.jsonl", "--since", "7d", "--mode", "cloud", "--split-seed", "0"],
    ["models", "verify", "smollm2-135m"],
    ["demo", "--question", "What is 2 + 2?"],
])
def test_the_readme_commands_parse(argv: list) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)
    if "--config" in argv:
        assert args.config == "router.toml"


def test_the_bench_is_not_a_verb_of_the_router_cli() -> None:
    # The bench sits above the router (it talks to it through the SDK): `python -m bench` runs it.
    proc = subprocess.run([sys.executable, "-m", "router", "bench", "--dataset", "jsonl:/nonexistent.jsonl"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'bench'" in proc.stderr


def test_since_parsing() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1970-01-02") == 86400.0
    with pytest.raises(Exception, match="duration"):
        parse_since("yesterday")


def test_serve_on_a_taken_port_fails_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "router", "serve", "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60,
                              env={"HYBRID_ROUTER_LOGGING__FORMAT": "text", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr


def test_export_with_an_unknown_mode_is_a_usage_error_not_a_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "router", "export", "--format", "openai", "--out", "x.jsonl",
                           "--mode", "bogus"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown mode 'bogus'" in proc.stderr and "edge_only" in proc.stderr
    assert "Traceback" not in proc.stderr
