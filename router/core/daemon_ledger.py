"""The daemon's ledger: built from settings, watched for health, and read for Feedback and Stats.

With `ledger.enabled = false` it still answers: Stats reports the ledger as disabled, and Feedback
(with the ownership lookup before it) is refused as unavailable, with the setting to change.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional

from router.domain.config import LedgerSettings
from router.core.ledger import MAX_FEEDBACK_BYTES, Ledger, LedgerUnavailableError, ModeStats
from router.domain.types import GenerateRequest, GenerateResult, LedgerStatus, Mode, ModeSummary, SignalSummary, StatsReport


def _summary(stats: ModeStats) -> ModeSummary:
    try:
        mode: "Mode | int" = Mode[stats.mode]
    except KeyError:
        mode = Mode.UNSPECIFIED
    return ModeSummary(
        mode=mode, requests=stats.requests,
        accuracy=tuple(SignalSummary(kind=a.kind, count=a.count, mean_score=a.mean_score,
                                     share_correct=a.share_correct) for a in stats.accuracy.values()),
        cloud_share=stats.cloud_share, usd_per_1k=stats.cost_per_1k_usd,
        cloud_usd_per_1k=stats.cloud_cost_per_1k_usd, edge_usd_per_1k=stats.edge_cost_per_1k_usd,
        judge_usd_per_1k=stats.judge_cost_per_1k_usd,
        latency_p50_s=stats.latency_p50_s, latency_p95_s=stats.latency_p95_s,
        ttft_p50_s=stats.ttft_p50_s, ttft_p95_s=stats.ttft_p95_s, version=stats.version)


class DaemonLedger:
    def __init__(self, settings: LedgerSettings, logger: logging.Logger, *,
                 max_feedback_bytes: int = MAX_FEEDBACK_BYTES) -> None:
        """`max_feedback_bytes`: the largest corrected answer Feedback takes (server.max_request_bytes)."""
        self.settings = settings
        self.max_feedback_bytes = max_feedback_bytes
        self.ledger: Optional[Ledger] = None
        if settings.enabled:
            self.ledger = Ledger(settings.path, log_content=settings.log_content, queue_size=settings.queue_size,
                                 batch_size=settings.batch_size, flush_interval_s=settings.flush_interval_s,
                                 logger=logger, retention_days=settings.retention_days,
                                 retention_max_bytes=settings.retention_max_bytes)

    def open(self) -> None:
        if self.ledger is not None:
            self.ledger.open()

    def set_edge_parameters(self, edge_parameters: float) -> None:
        if self.ledger is not None:
            self.ledger.set_edge_parameters(edge_parameters)

    def flush(self, timeout_s: float) -> bool:
        """Waits until every write queued so far is committed, at most timeout_s. False if it was not."""
        return self.ledger.flush(timeout_s) if self.ledger is not None else True

    def close(self, timeout_s: float = 10.0) -> None:
        """Commits what is still queued and stops the writer, within timeout_s; later writes are dropped."""
        if self.ledger is not None:
            self.ledger.close(timeout_s)

    # ResultSink and SignalSink
    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        if self.ledger is not None:
            self.ledger.record(request, result)

    def add_signal(self, request_id: str, signal: object) -> None:
        if self.ledger is not None:
            self.ledger.add_signal(request_id, signal)

    # RecordedIds: with the ledger disabled nothing is recorded, so no id is.
    def contains(self, request_id: str) -> bool:
        return self.ledger is not None and self.ledger.contains(request_id)

    def status(self) -> LedgerStatus:
        if self.ledger is None:
            return LedgerStatus(enabled=False, ok=False, reason="disabled (ledger.enabled = false)")
        health, metrics = self.ledger.health, self.ledger.metrics
        return LedgerStatus(enabled=True, ok=health.ok, reason=health.reason, queue_depth=metrics.queue_depth,
                            written=metrics.written, dropped_writes=metrics.dropped_writes,
                            failed_writes=metrics.failed_writes)

    def _require(self) -> Ledger:
        if self.ledger is None:
            raise LedgerUnavailableError("the ledger is disabled (ledger.enabled = false); enable it to "
                                         "record feedback and statistics")
        return self.ledger

    def owner(self, request_id: str) -> Optional[str]:
        """The principal who made the request, '' when it was recorded without one, None when the ledger
        holds no such request (queued or written). Blocks: call it through asyncio.to_thread. Raises
        LedgerUnavailableError when the ledger is disabled or cannot be read."""
        return self._require().owner(request_id)

    def feedback(self, request_id: str, *, score: Optional[float], thumbs_up: Optional[bool],
                 corrected_answer: Optional[str]) -> None:
        self._require().feedback(request_id, score=score, thumbs_up=thumbs_up, corrected_answer=corrected_answer,
                                 max_bytes=self.max_feedback_bytes)

    def stats(self, since_unix_s: Optional[float]) -> StatsReport:
        since = datetime.fromtimestamp(since_unix_s, tz=timezone.utc) if since_unix_s is not None else None
        modes: tuple[ModeSummary, ...] = ()
        if self.ledger is not None:
            self.ledger.flush(timeout_s=2.0)  # include requests answered a moment ago
            try:
                modes = tuple(_summary(s) for s in self.ledger.stats(since=since))
            except LedgerUnavailableError:
                pass  # a degraded ledger still reports why, through status()
        return StatsReport(modes=modes, ledger=self.status())
