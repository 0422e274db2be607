"""`hybrid-router doctor` checks that need no model: each failure says what to do."""
from __future__ import annotations

import socket
from pathlib import Path

from router.doors.doctor import Check, check_ledger, check_listen
from tests.conftest import make_settings


def test_a_taken_port_fails_with_what_to_do() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        check = check_listen(make_settings(), f"127.0.0.1:{port}")
    assert not check.ok
    assert "set server.listen" in check.line()


def test_a_free_port_is_ok() -> None:
    assert check_listen(make_settings(), "127.0.0.1:0").ok


def test_a_ledger_under_a_regular_file_fails_with_the_key_to_change(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    check = check_ledger(make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true",
                                        "HYBRID_ROUTER_LEDGER__PATH": str(blocker / "ledger.db")}))
    assert not check.ok and "ledger.path" in check.line()


def test_a_writable_ledger_is_ok(tmp_path: Path) -> None:
    check = check_ledger(make_settings({"HYBRID_ROUTER_LEDGER__ENABLED": "true",
                                        "HYBRID_ROUTER_LEDGER__PATH": str(tmp_path / "ledger.db")}))
    assert check.ok, check.line()


def test_a_line_is_one_line_with_the_fix_only_when_failing() -> None:
    assert Check("cpu", True, "fine", "ignored").line() == "ok    cpu       fine"
    assert Check("cpu", False, "bad", "do this").line().endswith("bad; fix: do this")
