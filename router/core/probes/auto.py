"""AUTO: per request, the edge alone, a cascade, or the cloud alone, chosen after the edge's prefill.

The edge reads the prompt first (a recorded `prefill` run) and the prefill probe predicts what the cloud
would gain from the edge's hidden state. Its score (higher keeps the edge, as for every scorer) picks
the route:

    score <  cloud_below                  the cloud answers at once: the edge generates nothing
    score >= edge_above                   the edge answers alone, reusing the prefill, never discarded
    otherwise                             the cascade: the edge answers (reusing the prefill) and the draft
                                          probe, reading the state at the draft's end, keeps it or asks the
                                          cloud (POST_ARBITRATION's cascade with the probe scorer)

The decision record names the route and why: the prefill probe's score against the two bands, then, for
a cascade, the draft probe's verdict. A prefill probe that is stale (the edge's adapter changed under it)
steps aside and the cascade decides, its own stale probe standing aside for the default rule. Cascade
routing after Dekoninck et al. (ICML 2025): choosing per request between routing and cascading beats either
alone when the quality estimates are good.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator

from router.core.arbiters.cascade import CascadeArbiter
from router.core.arbiters.scorers import ScorerStaleError
from router.core.modes.base import ModeContext, ModeEvent, ModeOutcome
from router.core.probes.router import PrefillProbeRouter
from router.domain.types import BackendKind, Decision, Mode

ROUTE_CODES = {"edge": 0.0, "cascade": 1.0, "cloud": 2.0}  # the decision's `auto_route` feature


@dataclass(frozen=True)
class AutoBands:
    """The prefill probe's score bands: below `cloud_below` the cloud answers at once, at or above
    `edge_above` the edge answers alone, between them the cascade decides after the draft."""

    cloud_below: float
    edge_above: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.cloud_below <= self.edge_above <= 1.000001:
            raise ValueError(f"AUTO needs 0 <= cloud_below <= edge_above <= 1, got {self.cloud_below} and "
                             f"{self.edge_above}")

    def route(self, score: float) -> str:
        if score < self.cloud_below:
            return "cloud"
        if score >= self.edge_above:
            return "edge"
        return "cascade"


@dataclass(frozen=True)
class AutoMode:
    prefill: PrefillProbeRouter
    bands: AutoBands
    cascade: CascadeArbiter  # the probe scorer, its threshold, whether the draft streams
    mode: Mode = Mode.AUTO
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hybrid_router.auto"))

    async def run(self, ctx: ModeContext) -> AsyncIterator[ModeEvent]:
        messages = ctx.messages
        try:
            state = await ctx.read_prompt_state()
            routed = await asyncio.to_thread(self.prefill.decide, messages, state)
        except ScorerStaleError as exc:  # the edge's adapter changed under the probe: the cascade decides alone
            self.logger.info("prefill probe stale; the cascade decides", extra={"fields": {
                "probe": self.prefill.name, "why": str(exc)}})
            why = f"AUTO: {self.prefill.name} steps aside ({exc})"
            async for event in self._cascade(ctx, why, {"auto_route": ROUTE_CODES["cascade"]}):
                yield event
            return
        except Exception as exc:  # the probe or the prefill failed: as for PRE's router, the cloud answers
            self.logger.warning("prefill probe failed; the cloud answers", extra={"fields": {
                "probe": self.prefill.name, "error": str(exc), "type": type(exc).__name__}})
            reason = f"AUTO: {self.prefill.name} failed ({type(exc).__name__}: {exc}); the cloud answers"
            async for event in self._alone(ctx, BackendKind.CLOUD, None, "cloud", reason, {}):
                yield event
            return
        route = self.bands.route(routed.score)
        features = {**routed.features, "prefill_score": routed.score, "predicted_gain": routed.gain,
                    "decide_ms": routed.decide_s * 1000.0, "auto_route": ROUTE_CODES[route]}
        why = (f"AUTO: {self.prefill.name} scored {routed.score:.3f} (cloud below {self.bands.cloud_below:.3f}, "
               f"edge alone at {self.bands.edge_above:.3f} and above)")
        if route == "cascade":
            async for event in self._cascade(ctx, why, features):
                yield event
            return
        backend = BackendKind.CLOUD if route == "cloud" else BackendKind.EDGE
        reason = f"{why}: the {route} answers alone"
        async for event in self._alone(ctx, backend, routed.score, route, reason, features):
            yield event

    async def _alone(self, ctx: ModeContext, backend: BackendKind, score, route: str, reason: str,
                     features: dict) -> AsyncIterator[ModeEvent]:
        async with ctx.call(backend) as call:
            async for delta in call.deltas():
                yield delta
        assert call.run is not None
        decision = Decision(mode=self.mode, arbiter="auto", scorer=self.prefill.name, score=score,
                            threshold=self.bands.cloud_below if route == "cloud" else self.bands.edge_above,
                            threshold_kind=f"auto:{route}", escalated=backend == BackendKind.CLOUD, reason=reason,
                            features=features)
        yield ModeOutcome(text=call.run.text, served_by=backend, decision=decision,
                          finish_reason=call.run.finish_reason)

    async def _cascade(self, ctx: ModeContext, why: str, features: dict) -> AsyncIterator[ModeEvent]:
        async for event in self.cascade.run(ctx):
            if isinstance(event, ModeOutcome):
                judged = event.decision
                decision = dataclasses.replace(
                    judged, mode=self.mode, arbiter="auto", threshold_kind=f"auto:cascade:{judged.threshold_kind}",
                    reason=f"{why}: the cascade decides; {judged.reason}",
                    features={**features, **{f"draft_{k}": v for k, v in judged.features.items()},
                              "draft_score": judged.score if judged.score is not None else -1.0})
                event = dataclasses.replace(event, decision=decision)
            yield event
