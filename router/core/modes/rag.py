"""EDGE_RAG_CLOUD_INFO: the Info service supplies passages, the edge answers from them.

1. The query (rag_prompt.retrieval_query) goes to the Info service for the request's caller; the call
   is priced and timed in the result (ModeContext.retrieve).
2. With `focus_sentences` > 0 the edge reads only the passages' sentences that best match the question
   (rag_focus.py): the 0.5B edge reads a short context far better than whole passages.
3. The passages that fit the edge's context, best first, go into the prompt as delimited, untrusted
   data (rag_prompt.py); the first that does not fit whole is cut, the rest dropped. Retrieval never
   makes a request fail for context length.
4. The edge answers; the passages that contain its answer are its citations.

When retrieval fails (the service down, slow past its timeout, or off), the edge answers alone and the
decision is marked degraded with the reason. The wait is bounded: past `timeout_s` (and a small grace
for the client's own deadline) the mode stops waiting.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import AsyncIterator, Mapping, Sequence

from router.core.info import InfoError
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.modes.edge_context import CONTEXT_MARGIN_TOKENS, EdgeContext
from router.core.modes.rag_focus import focus_passages
from router.core.modes.rag_prompt import PASSAGES_HEADER, Fitted, cited_passages, fit_passages, rag_messages, retrieval_query
from router.domain.types import BackendKind, Decision, Mode, Passage

# How long past the client's own deadline the mode waits before it gives up on the Info service.
DEADLINE_GRACE_S = 0.25


@dataclass(frozen=True)
class EdgeRagMode:
    k: int
    timeout_s: float
    fallback_n_ctx: int = 4096  # when the edge backend does not say its context size
    answer_style: str = "free"  # "span": ask for the shortest span copied from a passage (rag_prompt.SPAN_RULE)
    focus_sentences: int = 0  # > 0: the edge reads only this many best-matching sentences (rag_focus.py)
    mode: Mode = Mode.EDGE_RAG_CLOUD_INFO

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        query = retrieval_query(ctx.messages, ctx.request.metadata)
        passages, degraded = await self._retrieve(ctx, query)
        reading = focus_passages(query, passages, self.focus_sentences)
        edge = ctx.backend(BackendKind.EDGE)
        fitted, messages = await asyncio.to_thread(self._fit, edge, ctx.messages, reading, ctx.params.max_tokens)
        async with ctx.call(BackendKind.EDGE, messages=messages) as call:
            async for delta in call.deltas():
                yield delta
        run = call.run
        assert run is not None
        citations = cited_passages(run.text, fitted.used)
        yield ModeOutcome(text=run.text, served_by=BackendKind.EDGE, finish_reason=run.finish_reason,
                          citations=citations,
                          decision=self._decision(passages, reading, fitted, citations, degraded))

    async def _retrieve(self, ctx: ModeContext, query: str) -> tuple[tuple[Passage, ...], str]:
        """The passages, and why there are none when retrieval failed ("" when it worked)."""
        try:
            async with asyncio.timeout(self.timeout_s + DEADLINE_GRACE_S):
                return await ctx.retrieve(query, k=self.k, timeout_s=self.timeout_s), ""
        except InfoError as exc:
            return (), f"{exc.reason}: {exc}" if str(exc) and str(exc) != exc.reason else exc.reason
        except TimeoutError:
            return (), f"info service timed out (no answer in {self.timeout_s:g} s)"

    def _fit(self, edge: object, messages: Sequence[Mapping[str, str]], passages: Sequence[Passage],
             max_tokens: int) -> tuple[Fitted, list[dict[str, str]]]:
        return fit_reading(edge, messages, passages, max_tokens, fallback_n_ctx=self.fallback_n_ctx,
                           span=self.answer_style == "span")

    def _decision(self, passages: Sequence[Passage], reading: Sequence[Passage], fitted: Fitted,
                  citations: Sequence[str], degraded: str) -> Decision:
        features = {"passages_retrieved": float(len(passages)), "passages_focused": float(len(reading)),
                    "focus_sentences": float(self.focus_sentences), "passages_used": float(len(fitted.used)),
                    "passages_dropped": float(fitted.dropped), "passage_trimmed": float(fitted.trimmed),
                    "top_passage_score": max((p.score for p in passages), default=0.0),
                    "cited": float(len(citations))}
        if degraded:
            reason = f"degraded: {degraded}; the edge answered without passages"
        else:
            kept = f"{len(fitted.used)} of {len(passages)} passages"
            if self.focus_sentences > 0 and passages:
                kept = (f"the {self.focus_sentences} best-matching sentences of {len(passages)} passages "
                        f"(from {len(fitted.used)} of them)")
            if fitted.dropped or fitted.trimmed:
                kept += f" ({fitted.dropped} dropped, {'one cut short' if fitted.trimmed else 'none cut'} to fit the context)"
            cites = ", ".join(citations) if citations else "none (its answer is in no passage)"
            reason = f"EDGE_RAG_CLOUD_INFO: the edge answered from {kept}; cites {cites}"
        return Decision(mode=self.mode, reason=reason, degraded=bool(degraded), features=features)


def fit_reading(edge: object, messages: Sequence[Mapping[str, str]], passages: Sequence[Passage], max_tokens: int,
                *, fallback_n_ctx: int, span: bool = False) -> tuple[Fitted, list[dict[str, str]]]:
    """The passages that fit the edge's context beside the request and its answer, and the reader's
    prompt. Blocking (the edge's tokenizer): run it in a thread."""
    context = EdgeContext.of(edge, fallback_n_ctx)
    count_text, count_prompt, n_ctx = context.count_text, context.count_prompt, context.n_ctx
    base = count_prompt(rag_messages(messages, [], span=span)) + count_text(PASSAGES_HEADER)
    budget = n_ctx - max_tokens - base - CONTEXT_MARGIN_TOKENS
    fitted = fit_passages(passages, max(budget, 0), count_text)
    prompt = rag_messages(messages, fitted.blocks, span=span)
    # The blocks were counted alone; if the template counts them differently, drop from the end.
    while fitted.blocks and count_prompt(prompt) + max_tokens > n_ctx:
        fitted = Fitted(fitted.blocks[:-1], fitted.used[:-1], fitted.dropped + 1, fitted.trimmed)
        prompt = rag_messages(messages, fitted.blocks, span=span)
    return fitted, prompt
