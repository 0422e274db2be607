"""Cloud budgets (router/core/budget.py): counted from every result, seeded from the ledger's own rows,
rolled over by UTC day and month, and acting as a cloud gate once spent (degrade or refuse)."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import pytest

from router.assembly.limits import build_budget
from router.core.budget import Budget, LedgerSpendError, read_ledger_spend
from router.core.ledger.schema import MIGRATIONS, migrate
from router.core.ledger.store import format_time
from router.domain.config import BudgetSettings
from router.domain.errors import BudgetExhaustedError
from router.domain.types import (BackendKind, Caller, ChatMessage, Decision, GenerateRequest, GenerateResult, Latency,
                                 Mode)
from tests.conftest import make_settings

UTC = timezone.utc


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def request(user: str, mode: Mode = Mode.CLOUD_ONLY) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", "hi"),), mode=mode, caller=Caller(user=user))


def result(cloud_usd: float, finish_reason: str = "stop") -> GenerateResult:
    served_by = BackendKind.UNSPECIFIED if finish_reason in ("cancelled", "error") else BackendKind.CLOUD
    return GenerateResult(request_id="r", text="", served_by=served_by, edge_model="", cloud_model="", runs=(),
                          cost_usd=cloud_usd, edge_cost_usd=0.0, cloud_cost_usd=cloud_usd,
                          latency=Latency(0.0, 0.0, 0.0, 0.0), decision=Decision(mode=Mode.CLOUD_ONLY),
                          finish_reason=finish_reason)


def budget(clock: ManualClock, **limits: object) -> Budget:
    return Budget(BudgetSettings(**limits), clock=clock)


def spend(gate: Budget, user: str, usd: float, finish_reason: str = "stop") -> None:
    gate.record(request(user), result(usd, finish_reason))


def test_a_principal_daily_budget_degrades_that_principal_only() -> None:
    clock = ManualClock(datetime(2025, 1, 10, 15, 30, tzinfo=UTC))
    gate = budget(clock, principal_daily_usd=0.5)
    spend(gate, "alice", 0.3)
    assert gate.keep_off_cloud(request("alice")) is None
    spend(gate, "alice", 0.2012, finish_reason="cancelled")  # an unanswered request's spend counts too
    assert gate.keep_off_cloud(request("alice")) == (
        "budget: principal alice's daily cloud budget $0.50 is spent ($0.5012 used); resets at 00:00 UTC")
    assert gate.keep_off_cloud(request("bob")) is None


def test_refuse_names_the_budget_and_when_it_resets() -> None:
    clock = ManualClock(datetime(2025, 1, 10, 23, 0, tzinfo=UTC))
    gate = budget(clock, principal_daily_usd=0.5, when_spent="refuse")
    spend(gate, "alice", 0.5)
    with pytest.raises(BudgetExhaustedError, match=r"principal alice's daily .*budget\.principal_daily_usd") as refused:
        gate.keep_off_cloud(request("alice"))
    assert refused.value.retry_after_s == pytest.approx(3600)
    assert refused.value.kind.name == "RATE_LIMITED"


def test_a_new_utc_day_starts_the_daily_budget_again_and_the_month_keeps_counting() -> None:
    clock = ManualClock(datetime(2025, 1, 10, 12, 0, tzinfo=UTC))
    gate = budget(clock, principal_daily_usd=0.5, principal_monthly_usd=0.8, when_spent="refuse")
    spend(gate, "alice", 0.6)
    with pytest.raises(BudgetExhaustedError, match="daily"):
        gate.keep_off_cloud(request("alice"))
    clock.now = datetime(2025, 1, 11, 0, 0, tzinfo=UTC)
    assert gate.keep_off_cloud(request("alice")) is None
    spend(gate, "alice", 0.2)
    with pytest.raises(BudgetExhaustedError, match=r"monthly cloud budget \$0\.80 is spent \(\$0\.8000 used\); "
                                                  r"resets at 00:00 UTC on 2025-02-01") as refused:
        gate.keep_off_cloud(request("alice"))
    assert refused.value.retry_after_s == pytest.approx(21 * 86400)
    clock.now = datetime(2025, 2, 1, 0, 0, tzinfo=UTC)
    assert gate.keep_off_cloud(request("alice")) is None
    assert gate.spend().month_total == 0.0


def test_when_day_and_month_are_both_spent_the_month_is_named() -> None:
    clock = ManualClock(datetime(2025, 12, 31, 12, 0, tzinfo=UTC))
    gate = budget(clock, total_daily_usd=0.1, total_monthly_usd=0.1, when_spent="refuse")
    spend(gate, "alice", 0.1)
    with pytest.raises(BudgetExhaustedError, match=r"the total monthly .* on 2026-01-01") as refused:
        gate.keep_off_cloud(request("bob"))
    assert refused.value.retry_after_s == pytest.approx(12 * 3600)


def test_the_total_budget_sums_every_principal() -> None:
    clock = ManualClock(datetime(2025, 1, 10, tzinfo=UTC))
    gate = budget(clock, total_daily_usd=1.0)
    spend(gate, "alice", 0.6)
    assert gate.keep_off_cloud(request("carol")) is None
    spend(gate, "bob", 0.4)
    assert gate.keep_off_cloud(request("carol")) == (
        "budget: the total daily cloud budget $1.00 is spent ($1.0000 used); resets at 00:00 UTC")


def test_a_zero_budget_keeps_everyone_off_and_tiny_amounts_read_plainly() -> None:
    clock = ManualClock(datetime(2025, 1, 10, tzinfo=UTC))
    assert "budget $0.00 is spent ($0.0000 used)" in budget(clock, principal_daily_usd=0.0).keep_off_cloud(request(""))
    tiny = budget(clock, principal_daily_usd=0.000001)
    spend(tiny, "", 0.0000042)
    assert tiny.keep_off_cloud(request("")) == (
        "budget: the anonymous principal's daily cloud budget $0.000001 is spent ($0.0000042 used); "
        "resets at 00:00 UTC")


def test_only_spenders_are_kept_and_only_when_a_principal_budget_needs_them() -> None:
    clock = ManualClock(datetime(2025, 1, 10, tzinfo=UTC))
    per_principal = budget(clock, principal_monthly_usd=1.0)
    for number in range(100):
        spend(per_principal, f"user-{number}", 0.0)
    spend(per_principal, "alice", 0.01)
    assert per_principal.spend().month_by_principal == {"alice": 0.01}
    total_only = budget(clock, total_monthly_usd=1.0)
    spend(total_only, "alice", 0.01)
    assert total_only.spend().month_by_principal == {} and total_only.spend().month_total == 0.01


def test_no_budget_set_builds_none() -> None:
    assert build_budget(make_settings()) is None
    assert build_budget(make_settings({"HYBRID_ROUTER_BUDGET__TOTAL_DAILY_USD": "2"})) is not None


# -- the seed, from the ledger's own rows -----------------------------------------------------------

def ledger_file(path: Path, rows: list[tuple[str, datetime, float]], *, versions: int = len(MIGRATIONS)) -> Path:
    """A ledger database at the given schema version, with (principal, created_at, cloud_cost_usd) rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:versions])
    has_principal = versions >= 7
    for number, (who, created_at, usd) in enumerate(rows):
        columns = "id, created_at, mode, served_by, messages_json, content_hash, content_policy, cloud_cost_usd"
        values: list[object] = [f"r{number}", format_time(created_at), "CLOUD_ONLY", "CLOUD", "[]", "h", "none", usd]
        if has_principal:
            columns += ", principal"
            values.append(who)
        conn.execute(f"INSERT INTO requests ({columns}) VALUES ({', '.join('?' * len(values))})", values)
    conn.close()
    return path


NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
ROWS = [
    ("alice", datetime(2025, 3, 15, 0, 0, tzinfo=UTC), 0.25),         # today, at its first microsecond
    ("alice", datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC), 0.5),    # yesterday: this month only
    ("bob", datetime(2025, 3, 15, 11, 0, tzinfo=UTC), 0.125),
    ("bob", datetime(2025, 3, 1, 0, 0, tzinfo=UTC), 1.0),             # the month's first moment
    ("alice", datetime(2025, 2, 28, 23, 59, 59, tzinfo=UTC), 100.0),  # last month: not counted
    ("carol", datetime(2025, 3, 15, 9, 0, tzinfo=UTC), 0.0),          # no cloud spend: not kept
]


def test_the_seed_sums_the_ledger_by_principal_for_the_utc_day_and_month(tmp_path: Path) -> None:
    seeded = read_ledger_spend(ledger_file(tmp_path / "ledger.db", ROWS), NOW)
    assert seeded.day == NOW.date()
    assert seeded.day_by_principal == {"alice": 0.25, "bob": 0.125}
    assert seeded.month_by_principal == {"alice": 0.75, "bob": 1.125}
    assert (seeded.day_total, seeded.month_total) == (0.375, 1.875)


def test_a_ledger_before_principals_counts_everything_under_the_empty_name(tmp_path: Path) -> None:
    seeded = read_ledger_spend(ledger_file(tmp_path / "v6.db", ROWS, versions=6), NOW)
    assert seeded.day_by_principal == {"": 0.375} and seeded.month_by_principal == {"": 1.875}


def test_no_ledger_yet_is_nothing_spent(tmp_path: Path) -> None:
    assert read_ledger_spend(tmp_path / "absent.db", NOW).month_total == 0.0
    sqlite3.connect(tmp_path / "empty.db").close()  # created, never migrated
    assert read_ledger_spend(tmp_path / "empty.db", NOW).month_total == 0.0


def test_the_seed_opens_the_ledger_read_only(tmp_path: Path) -> None:
    path = ledger_file(tmp_path / "ledger.db", ROWS)
    before = path.read_bytes()
    read_ledger_spend(path, NOW)
    assert path.read_bytes() == before


def test_a_seeded_budget_acts_on_spend_from_before_the_restart(tmp_path: Path) -> None:
    path = ledger_file(tmp_path / "ledger.db", ROWS)
    gate = budget(ManualClock(NOW), principal_daily_usd=0.3, principal_monthly_usd=1.1)
    gate.seed_from_ledger(path)
    assert gate.keep_off_cloud(request("alice")) is None  # 0.25 today, 0.75 this month
    spend(gate, "alice", 0.05)
    assert "principal alice's daily cloud budget $0.30 is spent ($0.3000 used)" in gate.keep_off_cloud(request("alice"))
    assert "principal bob's monthly cloud budget $1.10 is spent ($1.1250 used)" in gate.keep_off_cloud(request("bob"))


def test_a_seed_from_an_earlier_day_counts_for_the_month_only() -> None:
    gate = budget(ManualClock(NOW), principal_daily_usd=0.3, principal_monthly_usd=1.0)
    earlier = read_ledger_spend(Path("/nonexistent/ledger.db"), NOW - timedelta(days=1))
    earlier.day_total = earlier.month_total = 0.4
    earlier.day_by_principal = {"alice": 0.4}
    earlier.month_by_principal = {"alice": 0.4}
    gate.seed(earlier)
    current = gate.spend()
    assert current.day_by_principal == {} and current.month_by_principal == {"alice": 0.4}
    assert current.day_total == 0.0 and current.month_total == 0.4


def test_an_unreadable_ledger_keeps_the_cloud_off_rather_than_overspend(tmp_path: Path) -> None:
    junk = tmp_path / "ledger.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(LedgerSpendError, match="cannot read the cloud spend"):
        read_ledger_spend(junk, NOW)
    gate = budget(ManualClock(NOW), total_monthly_usd=100.0)
    gate.seed_from_ledger(junk)
    reason: Optional[str] = gate.keep_off_cloud(request("alice"))
    assert reason is not None and "could not be read" in reason
    refusing = budget(ManualClock(NOW), total_monthly_usd=100.0, when_spent="refuse")
    refusing.seed_from_ledger(junk)
    with pytest.raises(BudgetExhaustedError, match="could not be read"):
        refusing.keep_off_cloud(request("alice"))
