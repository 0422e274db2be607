"""PRE_ARBITRATION's decision after the prefill: the prefill probe reads the edge's state at the end of
the prompt and the request's own features, and predicts what asking the cloud would gain. A RequestRouter
(router/core/routing/model.py) that needs the prompt's state: the mode reads it from the edge first."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from router.core.arbiters.learned import gain_to_score
from router.core.probes.model import ProbeModel
from router.core.routing.features import request_text, router_features
from router.core.routing.model import RouteDecision


@dataclass(frozen=True)
class PrefillProbeRouter:
    probe: ProbeModel
    needs_prompt_state: bool = True  # the mode reads the edge's state before it decides

    @property
    def version(self) -> str:
        return self.probe.version

    @property
    def name(self) -> str:
        return f"prefill probe {self.version}"

    def decide(self, messages: Sequence[Mapping[str, str]], prompt: Any) -> RouteDecision:
        """`prompt`: what the edge's prefill read (edge.llama_backend.PromptState: `state`, `adapter_sha256`)."""
        began = time.perf_counter()
        self.probe.check_adapter(prompt.adapter_sha256)
        features = router_features(request_text(messages))
        gain = self.probe.predict_gain(features, prompt.state)
        return RouteDecision(score=gain_to_score(gain), gain=gain, features=features,
                             decide_s=time.perf_counter() - began)
