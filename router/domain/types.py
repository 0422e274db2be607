"""The core's vocabulary: plain dataclasses, free of protobuf and of any transport.

gRPC (router/doors/wire.py) and, later, the HTTP door translate to and from these types; routing
logic, the ledger and the bench only ever see them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union


class Mode(enum.IntEnum):
    """Values match `router.v1.Mode` on the wire."""

    UNSPECIFIED = 0
    EDGE_ONLY = 1
    CLOUD_ONLY = 2
    POST_ARBITRATION = 3
    PRE_ARBITRATION = 4
    EDGE_RAG_CLOUD_INFO = 5
    EDGE_AGENT_CLOUD_INFO = 6
    AUTO = 7  # edge alone, cascade or cloud alone, chosen per request after the edge's prefill

    @classmethod
    def parse(cls, name: str) -> "Mode":
        """Accepts `edge`, `edge_only`, `EDGE_ONLY`, `cloud`, `post_arbitration`, ..."""
        key = name.strip().upper().replace("-", "_")
        aliases = {"EDGE": "EDGE_ONLY", "CLOUD": "CLOUD_ONLY", "POST": "POST_ARBITRATION",
                   "PRE": "PRE_ARBITRATION", "RAG": "EDGE_RAG_CLOUD_INFO",
                   "AGENT": "EDGE_AGENT_CLOUD_INFO"}
        key = aliases.get(key, key)
        try:
            return cls[key]
        except KeyError:
            known = ", ".join(m.name.lower() for m in cls if m is not cls.UNSPECIFIED)
            raise ValueError(f"unknown mode {name!r}; known modes: {known}") from None


class BackendKind(enum.IntEnum):
    """Values match `router.v1.Backend` on the wire."""

    UNSPECIFIED = 0
    EDGE = 1
    CLOUD = 2


ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Caller:
    """Who asks: the Info service returns only passages of documents open to one of `groups` (a document
    with no groups is open to every caller)."""

    user: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerateRequest:
    """A request as the core sees it. None means "use the daemon's default"."""

    messages: Sequence[ChatMessage]
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    stop: Sequence[str] = ()
    mode: Union[Mode, int] = Mode.UNSPECIFIED  # an int that is no Mode is refused by validation
    request_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    reference_answer: Optional[str] = None
    seed: Optional[int] = None
    caller: Caller = Caller()  # whose documents retrieval may read (EDGE_RAG_CLOUD_INFO, the agent's search)
    # Whether a cascade streams the edge's draft before it is judged (a DraftDiscarded event takes it back
    # when the cloud answers instead); None: the daemon's arbitration.stream_draft. A door whose clients
    # cannot take text back (the HTTP door's plain OpenAI clients) holds it unless the client opts in.
    stream_draft: Optional[bool] = None


@dataclass(frozen=True)
class GenerationParams:
    """A validated request's sampling parameters, defaults filled in."""

    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    seed: Optional[int]


class RunPurpose(enum.StrEnum):
    """Why a mode called a backend; one per BackendRun, carried on the wire and into the ledger.

    Values are plain strings on the wire and in the ledger, so a newer purpose reaches an older
    client as its text rather than as an error.
    """

    ANSWER = "answer"    # an answer to the request (the served one, or one still in the running)
    DRAFT = "draft"      # an answer that was produced, then discarded for another backend's
    SAMPLE = "sample"    # an extra sample of the same question (self-consistency)
    VERIFY = "verify"    # a self-verification prompt about an answer, not an answer itself
    AGENT_STEP = "agent_step"  # one step of the agent's tool loop on the edge (a thought and a tool call)
    TOOL = "tool"        # a backend called as the agent's tool (ask_cloud)
    PREFILL = "prefill"  # the edge read the prompt so that a probe could decide; no text (a kept request reuses it)


# The purposes whose text is an answer to the request, so scoring and judging may read it.
ANSWERING_PURPOSES = frozenset({RunPurpose.ANSWER, RunPurpose.DRAFT})


@dataclass(frozen=True)
class BackendRun:
    """One backend call made while serving a request, however it ended.

    `finish_reason` is the backend's ("stop", "length"), or "cancelled" when the call was closed
    before its end (its tokens so far are counted and priced), or "error" when the backend failed
    after the call started. `purpose` says what the call was for (RunPurpose).
    """

    backend: BackendKind
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    cost_usd: float
    finish_reason: str
    mean_logprob: Optional[float] = None
    usage_estimated: bool = False  # the backend sent no usage: tokens (and cost) are the router's count
    purpose: str = RunPurpose.ANSWER  # a RunPurpose; a str so that an unknown one from the wire survives


@dataclass(frozen=True)
class Latency:
    ttft_s: float
    total_s: float
    edge_s: float
    cloud_s: float
    info_s: float = 0.0  # waiting for the Info service, summed over its calls


@dataclass(frozen=True)
class Decision:
    """Why the answer came from where it did; each mode and arbiter fills it in."""

    mode: Mode
    arbiter: str = ""
    # The scorer's (or the pre-router's) confidence in the edge, in [0, 1]; higher keeps (or picks) it.
    score: Optional[float] = None
    reason: str = ""
    scorer: str = ""  # what produced `score`: a scorer (router/core/arbiters/scorers.py), "router v0003", a rule
    threshold: Optional[float] = None  # the edge was kept (or picked) when score >= threshold
    threshold_kind: str = ""  # fixed | target_share | target_accuracy | early, or "fixed (no calibration: ...)"
    escalated: bool = False  # the cloud answers: after scoring the edge, or picked before generating (pre)
    features: Mapping[str, float] = field(default_factory=dict)  # what the scorer or router computed
    # Answered without what the mode needed (the Info service down or slow: the edge alone answered).
    degraded: bool = False
    steps: tuple[AgentStep, ...] = ()  # EDGE_AGENT_CLOUD_INFO's trace


@dataclass(frozen=True)
class Passage:
    """A retrieved piece of a document; `start`/`end` are character offsets in the document's text."""

    passage_id: str
    document_id: str
    text: str
    score: float
    start: int = 0
    end: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InfoCall:
    """One call to the Info service made while serving a request, however it ended: priced and timed
    like a backend run (a call that failed after it was sent is priced too). `error` is empty when it
    answered."""

    operation: str  # "retrieve" (EDGE_RAG_CLOUD_INFO), or the agent's tool ("search")
    query: str
    passage_ids: tuple[str, ...]
    scores: tuple[float, ...]
    latency_s: float
    cost_usd: float
    error: str = ""


@dataclass(frozen=True)
class AgentStep:
    """One step of EDGE_AGENT_CLOUD_INFO's tool loop, as the decision record keeps it."""

    index: int
    thought: str
    tool: str  # search | ask_cloud | calculate | answer, or "" when the step did not parse
    arguments: str  # the tool's input, as the edge wrote it
    observation: str  # what the tool returned (trimmed), or why it failed
    cost_usd: float = 0.0  # the tool's own cost (a search, a cloud call); the edge's tokens are in runs
    latency_s: float = 0.0
    error: str = ""


# finish_reason of a request (and of a run) that ended before its answer did.
FINISH_CANCELLED = "cancelled"   # its client went away, or the daemon stopped it at shutdown
FINISH_ERROR = "error"           # a backend failed after the request's first backend call


@dataclass(frozen=True)
class GenerateResult:
    """A request's outcome. An answered request names the backend that served it; one that ended
    without an answer after backend calls ran (cancelled, or failed) is still made into a result for
    the sinks, so that its spend is recorded: served_by UNSPECIFIED, finish_reason FINISH_CANCELLED or
    FINISH_ERROR, text what its answer had so far. Clients only ever receive answered ones."""

    request_id: str
    text: str
    served_by: BackendKind
    edge_model: str
    cloud_model: str
    runs: tuple[BackendRun, ...]
    cost_usd: float
    edge_cost_usd: float
    cloud_cost_usd: float
    latency: Latency
    decision: Decision
    finish_reason: str
    info_calls: tuple[InfoCall, ...] = ()
    info_cost_usd: float = 0.0
    citations: tuple[str, ...] = ()  # the passage ids the answer cites

    @property
    def answered(self) -> bool:
        return self.served_by != BackendKind.UNSPECIFIED

    def run_for(self, backend: BackendKind) -> Optional[BackendRun]:
        """The backend's first answer (served or discarded); samples and verifications are no answer."""
        return next((run for run in self.runs
                     if run.backend == backend and run.purpose in ANSWERING_PURPOSES), None)


@dataclass(frozen=True)
class TextDelta:
    text: str
    backend: BackendKind
    logprob: Optional[float] = None


@dataclass(frozen=True)
class DraftDiscarded:
    """The text streamed so far from `discarded` is no longer the answer (a cascade streamed the edge's
    draft, then chose the cloud); the answer follows from `next`, and the result holds it whole."""

    discarded: BackendKind
    next: BackendKind
    reason: str = ""


StreamEvent = Union[TextDelta, DraftDiscarded, GenerateResult]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str = ""
    endpoint: str = ""
    local_standin: bool = False
    priced_as: str = ""
    n_ctx: int = 0
    adapter: str = ""          # the edge's LoRA adapter in use; empty: the base model alone
    adapter_sha256: str = ""


@dataclass(frozen=True)
class CloudBreakerStatus:
    """The cloud's circuit breaker as Info shows it; `state` is closed | open | half_open."""

    state: str
    consecutive_failures: int = 0
    failures_to_open: int = 0
    retry_in_s: Optional[float] = None
    times_opened: int = 0
    times_closed: int = 0


@dataclass(frozen=True)
class DaemonInfo:
    """What a daemon serves: for clients choosing modes, and for reproducible bench reports."""

    version: str
    implemented_modes: tuple[Mode, ...]
    default_mode: Mode
    edge: ModelInfo
    cloud: ModelInfo
    packages: Mapping[str, str]
    hardware: str
    max_tokens_limit: int
    cloud_breaker: Optional[CloudBreakerStatus] = None  # None before the models are loaded


@dataclass(frozen=True)
class LedgerStatus:
    enabled: bool
    ok: bool
    reason: str = ""
    queue_depth: int = 0
    written: int = 0
    dropped_writes: int = 0
    failed_writes: int = 0


@dataclass(frozen=True)
class SignalSummary:
    kind: str
    count: int
    mean_score: Optional[float]
    share_correct: Optional[float]


@dataclass(frozen=True)
class ModeSummary:
    """Aggregates of one mode over the ledger: what `Stats` returns."""

    mode: Union[Mode, int]
    requests: int
    accuracy: tuple[SignalSummary, ...]
    cloud_share: float
    usd_per_1k: float
    cloud_usd_per_1k: float
    edge_usd_per_1k: float
    latency_p50_s: Optional[float]
    latency_p95_s: Optional[float]
    ttft_p50_s: Optional[float]
    ttft_p95_s: Optional[float]
    judge_usd_per_1k: float = 0.0   # the cloud judge's grading, already inside cloud_usd_per_1k
    version: str = ""  # arbitration modes: what decided ("router v0003", "learned v0002", "rule ..."), one row each


@dataclass(frozen=True)
class StatsReport:
    modes: tuple[ModeSummary, ...]
    ledger: LedgerStatus
