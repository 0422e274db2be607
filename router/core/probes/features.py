"""What each probe reads besides the hidden state."""
from __future__ import annotations

from router.core.arbiters.features import FEATURE_NAMES
from router.core.routing.features import ROUTER_FEATURE_NAMES

# Features that need further edge calls (self-consistency samples, the verification prompt): a probe
# leaves them out, so scoring with it costs no model call.
CALLED_FEATURES = frozenset({"has_consistency", "consistency_agree", "consistency_distinct",
                             "has_verification", "verify_p_yes"})
DRAFT_PROBE_FEATURE_NAMES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in CALLED_FEATURES)
# The prefill probe decides before the edge answers: the request's own features, as the pre-router's.
PREFILL_PROBE_FEATURE_NAMES: tuple[str, ...] = ROUTER_FEATURE_NAMES
