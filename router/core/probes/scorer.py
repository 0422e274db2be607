"""POST_ARBITRATION's `probe` scorer: the draft probe reads the edge's state at the end of its draft and
the features read from the draft itself. It asks the edge nothing more, so scoring costs the probe's
own arithmetic; the state comes from the generation that made the draft (edge/_hidden_states.py)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from router.core.arbiters.features import Draft
from router.core.arbiters.learned import gain_to_score
from router.core.arbiters.scorers import EdgeCalls, Score, ScorerError, base_features_off_loop
from router.core.probes.model import ProbeModel


@dataclass(frozen=True)
class DraftProbeScorer:
    probe: ProbeModel
    needs_hidden_states: bool = True  # the arbiter asks the edge to capture them

    @property
    def name(self) -> str:
        return f"probe {self.probe.version}"

    async def score(self, draft: Draft, calls: EdgeCalls, *, max_tokens: int) -> Score:
        states = draft.hidden_states
        if states is None or states.draft is None:
            raise ScorerError("the edge returned no hidden state for its draft (the draft did not run to an end, "
                              "or the edge backend cannot capture states)")
        self.probe.check_adapter(states.adapter_sha256)
        features = await base_features_off_loop(draft)
        gain = await asyncio.to_thread(self.probe.predict_gain, features, states.draft)
        return Score(gain_to_score(gain), {**features, "probe_gain": gain})
