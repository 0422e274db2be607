"""Cloud-as-judge: on a sampled share of requests, the cloud grades the edge's answer (0-1).

It runs after the result has gone back to the client, as a task beside the request path, and hands
its verdict to the ledger as a `judge` signal. The judge's own tokens are priced like any other
cloud call and stored with the verdict.
"""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Optional, Protocol

from router.core.backends import Backend
from router.domain.pricing import CostModel
from router.domain.types import BackendKind, BackendRun, GenerateRequest, GenerateResult

JUDGE_RUBRIC = (
    "You grade answers. Given a conversation and an assistant's answer to its last message, rate how "
    "correct and helpful the answer is with a single digit from 0 (wrong or useless) to 9 (fully "
    "correct). Reply with the digit only."
)
# One digit is one token for the tokenizers in use, so the grade costs a single output token and a
# model cannot wander into prose; a reply that is no digit is counted as ungraded.
JUDGE_MAX_TOKENS = 1
TOP_GRADE = 9
JUDGE_DRAIN_S = 30.0


class SignalSink(Protocol):
    def add_signal(self, request_id: str, signal: object) -> None: ...


def parse_grade(text: str) -> Optional[float]:
    """The judge's 0-9 grade as 0-1, or None when its reply does not start with a digit."""
    stripped = text.strip()
    return int(stripped[0]) / TOP_GRADE if stripped[:1].isdigit() else None


def judge_messages(request: GenerateRequest, answer: str) -> list[dict[str, str]]:
    conversation = "\n".join(f"{m.role.upper()}: {m.content}" for m in request.messages)
    return [{"role": "system", "content": JUDGE_RUBRIC},
            {"role": "user", "content": f"Conversation:\n{conversation}\n\nAnswer to grade:\n{answer}\n\nGrade (0-9):"}]


class CloudJudge:
    """A ResultSink: samples finished results and grades their edge answer with the cloud."""

    def __init__(self, *, cloud: Backend, costs: CostModel,
                 signals: SignalSink, sample_rate: float, rng: Optional[random.Random] = None,
                 logger: Optional[logging.Logger] = None) -> None:
        self._cloud = cloud
        self._costs = costs
        self._signals = signals
        self._sample_rate = sample_rate
        self._rng = rng or random.Random()
        self._logger = logger or logging.getLogger("hybrid_router.judge")
        self._tasks: set[asyncio.Task] = set()
        self.graded = 0
        self.ungraded = 0

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        # A request that ended without an answer (cancelled, failed) reaches the sinks for its spend
        # only: there is no finished answer to grade, and grading it would be spend for nothing.
        if not result.answered:
            return
        edge_run = result.run_for(BackendKind.EDGE)
        if (edge_run is None or not edge_run.text.strip() or edge_run.finish_reason in ("cancelled", "error")
                or self._sample_rate <= 0 or self._rng.random() >= self._sample_rate):
            return
        task = asyncio.get_running_loop().create_task(self._judge(request, result, edge_run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, request: GenerateRequest, result: GenerateResult, edge_run: BackendRun) -> None:
        from router.core.ledger import AccuracySignal, SignalTarget  # the ledger is optional for the judge

        cloud = self._cloud
        try:
            # Inside the try: the cloud's guards (a full queue, an open breaker, the privacy policy) may
            # refuse the call when it is opened, and a refused grade is as lost as a failed one.
            stream = cloud.stream(judge_messages(request, edge_run.text), max_tokens=JUDGE_MAX_TOKENS,
                                  temperature=0.0)
        except Exception as exc:
            self._logger.warning("judge call refused", extra={"fields": {"request_id": result.request_id,
                                                                         "error": str(exc)}})
            return
        try:
            async for _ in stream:
                pass
        except Exception as exc:  # a failed grade is lost, never the request; say so once per failure
            self._logger.warning("judge call failed", extra={"fields": {"request_id": result.request_id,
                                                                        "error": str(exc)}})
            return
        finally:
            await stream.aclose()
        done = stream.completion
        if done is None:
            return
        grade = parse_grade(done.text)
        if grade is None:
            self.ungraded += 1
            self._logger.debug("judge gave no grade", extra={"fields": {"request_id": result.request_id,
                                                                        "reply": done.text[:20]}})
        else:
            self.graded += 1
        target = SignalTarget.FINAL if result.served_by == BackendKind.EDGE else SignalTarget.EDGE
        # Stored with or without a grade: the call was paid for either way, and Stats sums its cost.
        self._signals.add_signal(result.request_id, AccuracySignal(
            kind="judge", score=grade, target=target, source=f"cloud-judge:{done.model}",
            detail={"judge_model": done.model, "raw": done.text.strip()[:40], "graded": grade is not None,
                    "prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                    "usage_estimated": done.usage_estimated,
                    "cost_usd": self._costs.cloud_cost(done.prompt_tokens, done.completion_tokens)}))

    async def aclose(self, timeout_s: float = JUDGE_DRAIN_S) -> None:
        """Lets pending grades finish (they are short) for at most timeout_s, before the ledger closes."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in late:  # never left running while the ledger and the cloud close under it
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
