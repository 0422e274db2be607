"""The design study's claims about each routing mode, kept as data so the summary can print our
measurements beside them.

The study grouped EDGE_ONLY and CLOUD_ONLY into one row; the row is kept as written and shared by
both modes, each of which gets its own measured values.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

# The wire order of the modes (router.v1.Mode), used to order rows in tables and plots.
MODE_ORDER = (
    "EDGE_ONLY",
    "CLOUD_ONLY",
    "POST_ARBITRATION",
    "PRE_ARBITRATION",
    "EDGE_RAG_CLOUD_INFO",
    "EDGE_AGENT_CLOUD_INFO",
)

# (key, heading) of the study's columns, in its order.
STUDY_COLUMNS = (
    ("quality", "quality"),
    ("cost", "cost"),
    ("latency", "latency"),
    ("improvement", "gets better over time"),
)

NOT_IMPLEMENTED = "not measured in this run"


@dataclass(frozen=True)
class StudyClaim:
    """One row of the design study's table."""

    modes: tuple[str, ...]  # the modes the row speaks for, as the study grouped them
    quality: str
    cost: str
    latency: str
    improvement: str

    @property
    def label(self) -> str:
        return ", ".join(self.modes)


STUDY_CLAIMS = (
    StudyClaim(
        modes=("EDGE_ONLY", "CLOUD_ONLY"),
        quality="pretrained knowledge only",
        cost="edge low, cloud high",
        latency="edge fast, cloud slow",
        improvement="ceiling is the cloud",
    ),
    StudyClaim(
        modes=("POST_ARBITRATION",),
        quality="as the models",
        cost="high",
        latency="fast",
        improvement="yes: cloud answers train the edge",
    ),
    StudyClaim(
        modes=("PRE_ARBITRATION",),
        quality="worst: router error plus model error",
        cost="medium",
        latency="fast",
        improvement="maybe",
    ),
    StudyClaim(
        modes=("EDGE_RAG_CLOUD_INFO",),
        quality="high",
        cost="low",
        latency="slow?",
        improvement="yes",
    ),
    StudyClaim(
        modes=("EDGE_AGENT_CLOUD_INFO",),
        quality="medium-high",
        cost="medium",
        latency="slow",
        improvement="maybe",
    ),
)

CLAIMS_BY_MODE: Mapping[str, StudyClaim] = MappingProxyType(
    {mode: claim for claim in STUDY_CLAIMS for mode in claim.modes}
)


def claim_for(mode: str) -> Optional[StudyClaim]:
    return CLAIMS_BY_MODE.get(mode)


def mode_rank(mode: str) -> tuple[int, str]:
    """Sort key: the wire order first, unknown modes after, by name."""
    if mode in MODE_ORDER:
        return (MODE_ORDER.index(mode), mode)
    return (len(MODE_ORDER), mode)
