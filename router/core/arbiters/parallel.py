"""The parallel race: the edge and the cloud start together; the edge's answer is scored when it ends.

If it scores at or above the threshold, it is served and the cloud call is cancelled for real (its
stream closed, the tokens it had streamed recorded and priced). If not, the cloud's answer is served:
what the cloud has sent so far was buffered and goes out at once, the rest as it comes. So an
escalated request costs about the cloud's own latency instead of the edge's plus the cloud's.

A cloud that fails before any of its answer has gone out does not fail the request: the edge's
answer is served (sent again after the DraftDiscarded, when the draft was streamed), and the decision
says so. A cloud that fails after part of its answer went out fails the request, typed.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Union

from router.core.arbiters.cascade import ScoringArbiter, Verdict
from router.core.modes.base import BackendCall, ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, TextDelta

_END = object()  # the cloud's stream ended


@dataclass
class _CloudFeed:
    """The cloud's deltas, read in a task from the moment the race starts, kept until they are wanted."""

    call: BackendCall
    queue: "asyncio.Queue[Union[TextDelta, BaseException, object]]"
    task: Optional["asyncio.Task[None]"] = None
    error: Optional[BaseException] = None  # why the cloud's stream broke, once it has

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._read(), name="parallel-cloud-feed")

    async def _read(self) -> None:
        try:
            async for delta in self.call.deltas():
                self.queue.put_nowait(delta)
        except Exception as exc:  # handed to the consumer, who decides whether it matters
            self.error = exc
            self.queue.put_nowait(exc)
        else:
            self.queue.put_nowait(_END)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def drain(self) -> AsyncIterator[TextDelta]:
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]


@dataclass
class ParallelArbiter(ScoringArbiter):
    name: str = "parallel"

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(BackendKind.CLOUD) as cloud:
            feed = _CloudFeed(cloud, asyncio.Queue())
            feed.start()
            try:
                async with ctx.call(BackendKind.EDGE) as edge:
                    async for delta in edge.deltas():
                        if self.stream_draft:
                            yield delta
                edge_run = edge.run
                assert edge_run is not None
                verdict = await self.judge(ctx, edge)
                cloud_failure = feed.error
                if not verdict.keep and cloud_failure is not None:
                    verdict = Verdict(True, verdict.score, verdict.threshold,
                                      f"{verdict.reason}, but the cloud failed ({type(cloud_failure).__name__}: "
                                      f"{cloud_failure}): the edge answers")
                decision = self.decision(ctx, verdict)
                if verdict.keep:
                    await feed.stop()  # leaving the cloud's block below closes its stream: no more tokens
                    for event in self.serve_edge(edge_run, decision):
                        yield event
                    return
                for event in self.discard_edge(edge, decision):
                    yield event
                sent_cloud_text = False
                try:
                    async for delta in feed.drain():
                        sent_cloud_text = sent_cloud_text or bool(delta.text)
                        yield delta
                except Exception as exc:
                    if sent_cloud_text:
                        raise  # part of the cloud's answer is out: the client must hear it failed
                    # The cloud failed before a word of its answer went out: the edge's answer is whole.
                    reason = (f"{decision.reason}, but the cloud failed ({type(exc).__name__}: {exc}) "
                              "before answering: the edge answers")
                    if edge_run.text:
                        yield TextDelta(edge_run.text, BackendKind.EDGE, None)
                    yield ModeOutcome(text=edge_run.text, served_by=BackendKind.EDGE,
                                      decision=dataclasses.replace(decision, reason=reason, escalated=False),
                                      finish_reason=edge_run.finish_reason)
                    return
            finally:
                await feed.stop()
        cloud_run = cloud.run
        assert cloud_run is not None
        yield ModeOutcome(text=cloud_run.text, served_by=BackendKind.CLOUD, decision=decision,
                          finish_reason=cloud_run.finish_reason)
