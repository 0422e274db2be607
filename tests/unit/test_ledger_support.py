"""Builders shared by the ledger tests: real GenerateRequest / GenerateResult objects.

No tests here; the module is named test_ledger_* only to stay inside the ledger's test files.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Optional, Sequence

from router.core.ledger import Ledger
from router.domain.types import (BackendKind, BackendRun, ChatMessage, Decision, GenerateRequest, GenerateResult,
                          Latency, Mode)

SYSTEM = ChatMessage("system", "You are a helpful assistant.")


def make_run(backend: BackendKind, text: str, *, cost: float = 0.0, total_s: float = 1.0,
             finish_reason: str = "stop", usage_estimated: bool = False, purpose: str = "answer") -> BackendRun:
    return BackendRun(backend=backend, model="edge-model" if backend == BackendKind.EDGE else "cloud-model",
                      text=text, prompt_tokens=12, completion_tokens=len(text.split()), queue_s=0.01,
                      ttft_s=total_s / 4, total_s=total_s, cost_usd=cost, finish_reason=finish_reason,
                      usage_estimated=usage_estimated, purpose=purpose)


def make_unanswered(request_id: str, runs: Sequence[BackendRun], *, finish_reason: str = "cancelled",
                    mode: Mode = Mode.CLOUD_ONLY, reference: Optional[str] = None,
                    total_s: float = 1.0) -> tuple[GenerateRequest, GenerateResult]:
    """A request that ended without an answer after its runs: what the router records for its spend."""
    request = GenerateRequest(messages=[SYSTEM, ChatMessage("user", "What is 3 + 4?")], mode=mode,
                              request_id=request_id, reference_answer=reference)
    edge_cost = sum(run.cost_usd for run in runs if run.backend == BackendKind.EDGE)
    cloud_cost = sum(run.cost_usd for run in runs if run.backend == BackendKind.CLOUD)
    answers = [run.text for run in runs if run.purpose == "answer"]
    result = GenerateResult(
        request_id=request_id, text=answers[-1] if answers else "", served_by=BackendKind.UNSPECIFIED,
        edge_model="edge-model", cloud_model="cloud-model", runs=tuple(runs), cost_usd=edge_cost + cloud_cost,
        edge_cost_usd=edge_cost, cloud_cost_usd=cloud_cost,
        latency=Latency(ttft_s=total_s / 4, total_s=total_s, edge_s=0.0, cloud_s=total_s),
        decision=Decision(mode=mode, reason="cancelled before it was answered"), finish_reason=finish_reason)
    return request, result


def make_exchange(request_id: str, *, question: str = "What is 3 + 4?", edge: Optional[str] = None,
                  cloud: Optional[str] = None, served_by: BackendKind = BackendKind.EDGE,
                  mode: Mode = Mode.EDGE_ONLY, reference: Optional[str] = None,
                  metadata: Optional[Mapping[str, str]] = None, edge_cost: float = 0.0,
                  cloud_cost: float = 0.0, total_s: float = 1.0, ttft_s: float = 0.1,
                  extra_messages: Sequence[ChatMessage] = (),
                  cloud_finish: str = "stop",
                  usage_estimated: bool = False) -> tuple[GenerateRequest, GenerateResult]:
    """A request and the result a mode would return: one run per backend text given."""
    runs = []
    if edge is not None:
        runs.append(make_run(BackendKind.EDGE, edge, cost=edge_cost, total_s=total_s))
    if cloud is not None:
        runs.append(make_run(BackendKind.CLOUD, cloud, cost=cloud_cost, total_s=total_s,
                             finish_reason=cloud_finish, usage_estimated=usage_estimated))
    served_text = edge if served_by == BackendKind.EDGE else cloud
    assert served_text is not None, "the serving backend needs a text"
    request = GenerateRequest(messages=[SYSTEM, *extra_messages, ChatMessage("user", question)],
                              mode=mode, request_id=request_id, metadata=dict(metadata or {}),
                              reference_answer=reference)
    result = GenerateResult(
        request_id=request_id, text=served_text, served_by=served_by, edge_model="edge-model",
        cloud_model="cloud-model", runs=tuple(runs), cost_usd=edge_cost + cloud_cost,
        edge_cost_usd=edge_cost, cloud_cost_usd=cloud_cost,
        latency=Latency(ttft_s=ttft_s, total_s=total_s, edge_s=total_s if edge is not None else 0.0,
                        cloud_s=total_s if cloud is not None else 0.0),
        decision=Decision(mode=mode, arbiter="test-arbiter", score=0.5, reason="because"),
        finish_reason="stop")
    return request, result


def open_ledger(path: Path, **options: object) -> Ledger:
    ledger = Ledger(path, **options)  # type: ignore[arg-type]
    ledger.open()
    assert ledger.health.ok, ledger.health.reason
    return ledger


def a_moment_between() -> datetime:
    """A moment strictly after every record stamped before the call and strictly before every record
    stamped after it (the ledger stamps a record with time.time() when it is queued, to the microsecond):
    it reads the clock until it has moved on, on both sides, rather than sleeping for a guess."""
    before = time.time()
    while time.time() < before + 1e-3:
        pass
    moment = datetime.now(timezone.utc)
    while time.time() < moment.timestamp() + 1e-3:
        pass
    return moment

