"""The parallel race: the edge and the cloud start together; the edge's answer is scored when it ends.

If it scores at or above the threshold, it is served and the cloud call is cancelled for real (its
stream closed, the tokens it had streamed recorded and priced). If not, the cloud's answer is served:
what the cloud has sent so far was buffered and goes out at once, the rest as it comes. So an
escalated request costs about the cloud's own latency instead of the edge's plus the cloud's.

If the cloud's whole answer is in before the edge's has been judged (a long chain of thought, a
scorer that samples), the cloud's answer is served at once and the edge is stopped: the cloud is paid
for in full by then, so keeping the edge's answer would save nothing, and waiting would only add the
edge's remaining time to the request's. The decision says so; it has no edge score, so it adds
nothing to a target_share threshold's window (the share it calibrates is of the requests judged).

An edge that fails (a backend failure: the model, a prompt too long for its context) does not fail
the request either: the cloud, already running, answers, and the decision says why.

A cloud that fails before any of its answer has gone out does not fail the request: the edge's
answer is served (sent again after the DraftDiscarded, when the draft was streamed), and the decision
says so. A cloud that fails after part of its answer went out fails the request, typed.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional, Union

from router.core.arbiters.cascade import ScoringArbiter, Verdict, streams_draft
from router.core.backends import is_backend_failure
from router.core.modes.base import BackendCall, ModeContext, ModeEvent, ModeOutcome
from router.domain.types import BackendKind, TextDelta

_END = object()  # the cloud's stream ended
_CLOUD_FIRST = object()  # the cloud's whole answer came before the edge's verdict


@dataclass
class _CloudFeed:
    """The cloud's deltas, read in a task from the moment the race starts, kept until they are wanted."""

    call: BackendCall
    queue: "asyncio.Queue[Union[TextDelta, BaseException, object]]"
    task: Optional["asyncio.Task[None]"] = None
    error: Optional[BaseException] = None  # why the cloud's stream broke, once it has
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # the whole answer is in, without error

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
            self.finished.set()

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

    async def _edge_side(self, ctx: ModeContext, out: "asyncio.Queue[Any]", box: dict[str, BackendCall]) -> None:
        """The edge's answer and then its verdict, into `out`, in a task the race can stop."""
        try:
            async with ctx.call(BackendKind.EDGE, capture_states=self.captures_states) as edge:
                box["edge"] = edge
                async for delta in edge.deltas():
                    out.put_nowait(delta)
            out.put_nowait(await self.judge(ctx, edge))
        except Exception as exc:  # handed to the race, which raises it on the mode's side
            out.put_nowait(exc)

    @staticmethod
    async def _next(out: "asyncio.Queue[Any]", feed: _CloudFeed) -> Any:
        """The edge side's next item, or _CLOUD_FIRST when the cloud's whole answer is in first."""
        if not out.empty():
            return out.get_nowait()
        getting = asyncio.ensure_future(out.get())
        finished = asyncio.ensure_future(feed.finished.wait())
        try:
            await asyncio.wait({getting, finished}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
            if not getting.done():
                getting.cancel()
        if getting.done() and not getting.cancelled():
            return getting.result()  # both at once: the edge's item first, the cloud is seen next time
        return _CLOUD_FIRST

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        async with ctx.call(BackendKind.CLOUD) as cloud:
            feed = _CloudFeed(cloud, asyncio.Queue())
            feed.start()
            edge_side: "asyncio.Queue[Any]" = asyncio.Queue()
            box: dict[str, BackendCall] = {}
            racing = asyncio.get_running_loop().create_task(self._edge_side(ctx, edge_side, box), name="parallel-edge")
            try:
                verdict: Optional[Verdict] = None
                edge_failure: Optional[BaseException] = None
                while verdict is None:
                    item = await self._next(edge_side, feed)
                    if item is _CLOUD_FIRST:
                        break
                    if isinstance(item, BaseException):
                        if not is_backend_failure(item):
                            raise item  # not a backend failure: a bug, which must not pass for the edge's
                        edge_failure = item
                        break
                    if isinstance(item, TextDelta):
                        if streams_draft(ctx, self.stream_draft):
                            yield item
                        continue
                    verdict = item
                if verdict is None:
                    # The cloud's answer is whole while the edge is still going, or the edge failed: stop
                    # the edge (its call closes, its tokens recorded) and serve the cloud.
                    racing.cancel()
                    await asyncio.gather(racing, return_exceptions=True)
                    why = ("the cloud's whole answer came before the edge's was judged: the cloud answers"
                           if edge_failure is None else
                           f"the edge failed ({type(edge_failure).__name__}: {edge_failure}): the cloud answers")
                    decision = self.decision(ctx, Verdict(False, None, self.threshold.current(), why))
                    if "edge" in box:
                        for event in self.discard_edge(ctx, box["edge"], decision):
                            yield event
                    async for delta in feed.drain():
                        yield delta
                else:
                    edge = box["edge"]
                    edge_run = edge.run
                    assert edge_run is not None
                    cloud_failure = feed.error
                    if not verdict.keep and cloud_failure is not None:
                        verdict = dataclasses.replace(
                            verdict, keep=True, reason=f"{verdict.reason}, but the cloud failed "
                            f"({type(cloud_failure).__name__}: {cloud_failure}): the edge answers")
                    decision = self.decision(ctx, verdict)
                    if verdict.keep:
                        await feed.stop()  # leaving the cloud's block below closes its stream: no more tokens
                        if cloud_failure is None:
                            decision = dataclasses.replace(decision, reason=f"{decision.reason}; the cloud call was "
                                                           "cancelled (what it had generated is recorded and priced)")
                        for event in self.serve_edge(ctx, edge_run, decision):
                            yield event
                        return
                    for event in self.discard_edge(ctx, edge, decision):
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
                if not racing.done():
                    racing.cancel()
                await asyncio.gather(racing, return_exceptions=True)
                await feed.stop()
        cloud_run = cloud.run
        assert cloud_run is not None
        yield ModeOutcome(text=cloud_run.text, served_by=BackendKind.CLOUD, decision=decision,
                          finish_reason=cloud_run.finish_reason)
