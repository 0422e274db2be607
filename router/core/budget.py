"""Cloud budgets: dollars per principal and in total, per UTC day and per UTC month.

The spend is the ledger's own prices (`GenerateResult.cloud_cost_usd`, the `requests.cloud_cost_usd`
column), so a restart loses nothing: the daemon seeds the counts from the ledger at start
(`read_ledger_spend`), then counts every result it hands to its sinks, those that ended without an
answer after spending included. Every cloud run of a request is in its result, so POST_ARBITRATION's
escalations and the agent's `ask_cloud` count like CLOUD_ONLY's answers.

Budget is both the ResultSink that counts and the CloudGate that acts once a budget is spent: with
budget.when_spent = "degrade" the edge answers, the decision marked degraded with the budget's reason; with
"refuse" the request gets BudgetExhaustedError (RESOURCE_EXHAUSTED) naming the budget, with the seconds
until it resets. The check happens before a request runs, so requests already running when a budget
runs out finish on the cloud: a budget can be overrun by what those spend.

A request counts on the day its result is recorded, here as in the ledger's `created_at`.

Every method but `seed_from_ledger` runs on the event loop and never blocks; the seed is read before the
daemon serves.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from router.core.ledger.store import format_time
from router.domain.config import BudgetSettings
from router.domain.errors import BudgetExhaustedError
from router.domain.types import GenerateRequest, GenerateResult

# How long the seed's read waits for the ledger's writer to let go of the database.
SEED_BUSY_TIMEOUT_S = 5.0

Month = tuple[int, int]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _month_of(day: date) -> Month:
    return day.year, day.month


def _next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=timezone.utc)


def _next_month_start(month: Month) -> datetime:
    year, number = month
    return datetime(year + number // 12, number % 12 + 1, 1, tzinfo=timezone.utc)


@dataclass
class Spend:
    """Cloud dollars spent in one UTC day and in its month: in all, and by principal."""

    day: date
    day_total: float = 0.0
    month_total: float = 0.0
    day_by_principal: dict[str, float] = field(default_factory=dict)
    month_by_principal: dict[str, float] = field(default_factory=dict)

    @property
    def month(self) -> Month:
        return _month_of(self.day)


class LedgerSpendError(RuntimeError):
    """The ledger exists but its spend could not be read (not a database, or not a ledger)."""


def read_ledger_spend(path: Path, now: datetime) -> Spend:
    """The cloud spend the ledger at `path` recorded in `now`'s UTC day and month, by principal.
    No file, or a ledger written before requests had a principal (schema v7), is no error: nothing
    spent, or everything under the principal '' (and in the totals). Opens its own read-only connection.
    Raises LedgerSpendError for a file that cannot be read as a ledger."""
    now = _utc(now)
    spend = Spend(day=now.date())
    path = Path(path).expanduser()
    if not path.is_file():
        return spend
    day_start = datetime.combine(spend.day, time(0), tzinfo=timezone.utc)
    month_start = day_start.replace(day=1)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               timeout=SEED_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise LedgerSpendError(f"cannot open the ledger {path} read-only: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = ON")
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "requests" not in tables:
            return spend  # created but never migrated: nothing recorded
        columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        principal = "COALESCE(principal, '')" if "principal" in columns else "''"
        rows = conn.execute(
            f"SELECT {principal} AS who, "
            "SUM(CASE WHEN created_at >= :day THEN cloud_cost_usd ELSE 0 END), SUM(cloud_cost_usd) "
            "FROM requests WHERE created_at >= :month AND cloud_cost_usd > 0 GROUP BY who",
            {"day": format_time(day_start), "month": format_time(month_start)}).fetchall()
    except sqlite3.Error as exc:
        raise LedgerSpendError(f"cannot read the cloud spend from the ledger {path}: {exc}") from None
    finally:
        conn.close()
    for who, day_usd, month_usd in rows:
        spend.day_total += day_usd
        spend.month_total += month_usd
        if day_usd > 0:
            spend.day_by_principal[who] = day_usd
        spend.month_by_principal[who] = month_usd
    return spend


@dataclass(frozen=True)
class _Limit:
    key: str          # its budget.* setting
    per_principal: bool
    daily: bool
    usd: float


@dataclass(frozen=True)
class SpentBudget:
    """A budget that is spent, as the refusal and the degraded decision name it."""

    limit: _Limit
    principal: str
    used_usd: float
    resets_at: datetime

    def describe(self) -> str:
        whose = (f"{_possessive(self.principal)} " if self.limit.per_principal else "the total ")
        period = "daily" if self.limit.daily else "monthly"
        resets = "00:00 UTC" if self.limit.daily else f"00:00 UTC on {self.resets_at.date().isoformat()}"
        return (f"{whose}{period} cloud budget {_usd(self.limit.usd, 2)} is spent ({_usd(self.used_usd, 4)} "
                f"used); resets at {resets}")


class Budget:
    """The ResultSink that counts cloud spend, and the CloudGate that keeps requests off a spent budget."""

    def __init__(self, settings: BudgetSettings, *, clock: Callable[[], datetime] = utc_now,
                 logger: Optional[logging.Logger] = None) -> None:
        """`clock`: now, in UTC (a naive datetime is taken as UTC); days and months roll over by it."""
        self.settings = settings
        self._clock = clock
        self._logger = logger or logging.getLogger("hybrid_router.budget")
        # Most expensive to wait for first: a month resets no sooner than a day, so the first spent one
        # found is the one whose reset lets the request through.
        candidates = (
            ("budget.principal_monthly_usd", True, False, settings.principal_monthly_usd),
            ("budget.total_monthly_usd", False, False, settings.total_monthly_usd),
            ("budget.principal_daily_usd", True, True, settings.principal_daily_usd),
            ("budget.total_daily_usd", False, True, settings.total_daily_usd),
        )
        self._limits = tuple(_Limit(key, per_principal, daily, usd)
                             for key, per_principal, daily, usd in candidates if usd is not None)
        # Per-principal counts are kept only when a per-principal budget needs them.
        self._by_principal = any(limit.per_principal for limit in self._limits)
        self._spend = Spend(day=self._now().date())
        self._unreadable: Optional[str] = None  # why the seed failed: the cloud stays off then

    @property
    def limited(self) -> bool:
        """Whether any budget is set (with none, the daemon need not count)."""
        return bool(self._limits)

    def spend(self) -> Spend:
        """The counts as of now (a copy)."""
        self._roll(self._now())
        current = self._spend
        return Spend(day=current.day, day_total=current.day_total, month_total=current.month_total,
                     day_by_principal=dict(current.day_by_principal),
                     month_by_principal=dict(current.month_by_principal))

    # -- the seed -----------------------------------------------------------------------------

    def seed(self, spent: Spend) -> None:
        """Adds spend recorded elsewhere (the ledger) to the counts, for the periods it still covers."""
        self._roll(self._now())
        current = self._spend
        if spent.month != current.month:
            return
        current.month_total += spent.month_total
        if spent.day == current.day:
            current.day_total += spent.day_total
        if self._by_principal:
            for who, usd in spent.month_by_principal.items():
                current.month_by_principal[who] = current.month_by_principal.get(who, 0.0) + usd
            if spent.day == current.day:
                for who, usd in spent.day_by_principal.items():
                    current.day_by_principal[who] = current.day_by_principal.get(who, 0.0) + usd

    def seed_from_ledger(self, path: Path) -> None:
        """Seeds from the ledger's file (blocking: before the daemon serves). A ledger that cannot be read
        leaves the spend unknown, and the cloud is kept off (or refused) rather than overspent."""
        try:
            self.seed(read_ledger_spend(path, self._now()))
        except LedgerSpendError as exc:
            self._unreadable = str(exc)
            self._logger.error("cloud budgets: the spend so far is unknown, so the cloud stays off",
                               extra={"fields": {"reason": self._unreadable}})

    # -- ResultSink ---------------------------------------------------------------------------

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        usd = result.cloud_cost_usd
        if not usd > 0:
            return
        self._roll(self._now())
        current = self._spend
        current.day_total += usd
        current.month_total += usd
        if self._by_principal:
            who = request.caller.user
            current.day_by_principal[who] = current.day_by_principal.get(who, 0.0) + usd
            current.month_by_principal[who] = current.month_by_principal.get(who, 0.0) + usd

    # -- CloudGate ----------------------------------------------------------------------------

    def keep_off_cloud(self, request: GenerateRequest) -> Optional[str]:
        now = self._now()
        if self._unreadable is not None:
            reason = (f"budget: the cloud spend so far could not be read ({self._unreadable}); the cloud stays "
                      "off until the daemon restarts with a readable ledger")
            if self.settings.when_spent == "refuse":
                raise BudgetExhaustedError(reason)
            return reason
        spent = self.spent_budget(request.caller.user, now)
        if spent is None:
            return None
        reason = f"budget: {spent.describe()}"
        if self.settings.when_spent == "refuse":
            raise BudgetExhaustedError(f"{reason} ({spent.limit.key}; budget.when_spent = refuse)",
                                       retry_after_s=max(0.0, (spent.resets_at - now).total_seconds()))
        return reason

    def spent_budget(self, principal: str, now: Optional[datetime] = None) -> Optional[SpentBudget]:
        """The budget that keeps `principal` off the cloud now, if any."""
        now = self._now() if now is None else _utc(now)
        self._roll(now)
        current = self._spend
        for limit in self._limits:
            if limit.per_principal:
                counts = current.day_by_principal if limit.daily else current.month_by_principal
                used = counts.get(principal, 0.0)
            else:
                used = current.day_total if limit.daily else current.month_total
            if used >= limit.usd:
                resets_at = _next_midnight(current.day) if limit.daily else _next_month_start(current.month)
                return SpentBudget(limit, principal, used, resets_at)
        return None

    # -- periods ------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return _utc(self._clock())

    def _roll(self, now: datetime) -> None:
        """Starts a new day's (and month's) counts when the clock has moved past the current ones."""
        today = now.date()
        current = self._spend
        if today <= current.day:  # a clock set back does not bring a spent day back
            return
        rolled = Spend(day=today)
        if _month_of(today) == current.month:
            rolled.month_total = current.month_total
            rolled.month_by_principal = current.month_by_principal
        self._spend = rolled


def _possessive(principal: str) -> str:
    return f"principal {principal}'s" if principal else "the anonymous principal's"


def _usd(value: float, decimals: int) -> str:
    """Dollars to `decimals` places, or to the first significant digits of an amount below a cent."""
    if value == 0 or abs(value) >= 0.01:
        return f"${value:,.{decimals}f}"
    return f"${value:.8f}".rstrip("0").rstrip(".")
