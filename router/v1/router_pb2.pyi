from router.v1 import info_pb2 as _info_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    EDGE_ONLY: _ClassVar[Mode]
    CLOUD_ONLY: _ClassVar[Mode]
    POST_ARBITRATION: _ClassVar[Mode]
    PRE_ARBITRATION: _ClassVar[Mode]
    EDGE_RAG_CLOUD_INFO: _ClassVar[Mode]
    EDGE_AGENT_CLOUD_INFO: _ClassVar[Mode]
    AUTO: _ClassVar[Mode]

class Backend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_UNSPECIFIED: _ClassVar[Backend]
    EDGE: _ClassVar[Backend]
    CLOUD: _ClassVar[Backend]
MODE_UNSPECIFIED: Mode
EDGE_ONLY: Mode
CLOUD_ONLY: Mode
POST_ARBITRATION: Mode
PRE_ARBITRATION: Mode
EDGE_RAG_CLOUD_INFO: Mode
EDGE_AGENT_CLOUD_INFO: Mode
AUTO: Mode
BACKEND_UNSPECIFIED: Backend
EDGE: Backend
CLOUD: Backend

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("messages", "max_tokens", "temperature", "stop", "mode", "request_id", "metadata", "reference_answer", "seed", "caller", "stream_draft")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ANSWER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    STREAM_DRAFT_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    max_tokens: int
    temperature: float
    stop: _containers.RepeatedScalarFieldContainer[str]
    mode: Mode
    request_id: str
    metadata: _containers.ScalarMap[str, str]
    reference_answer: str
    seed: int
    caller: _info_pb2.Caller
    stream_draft: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., stop: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[Mode, str]] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., reference_answer: _Optional[str] = ..., seed: _Optional[int] = ..., caller: _Optional[_Union[_info_pb2.Caller, _Mapping]] = ..., stream_draft: _Optional[bool] = ...) -> None: ...

class BackendRun(_message.Message):
    __slots__ = ("backend", "model", "text", "prompt_tokens", "completion_tokens", "queue_s", "ttft_s", "total_s", "cost_usd", "finish_reason", "mean_logprob", "usage_estimated", "purpose")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    USAGE_ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    queue_s: float
    ttft_s: float
    total_s: float
    cost_usd: float
    finish_reason: str
    mean_logprob: float
    usage_estimated: bool
    purpose: str
    def __init__(self, backend: _Optional[_Union[Backend, str]] = ..., model: _Optional[str] = ..., text: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., queue_s: _Optional[float] = ..., ttft_s: _Optional[float] = ..., total_s: _Optional[float] = ..., cost_usd: _Optional[float] = ..., finish_reason: _Optional[str] = ..., mean_logprob: _Optional[float] = ..., usage_estimated: _Optional[bool] = ..., purpose: _Optional[str] = ...) -> None: ...

class Latency(_message.Message):
    __slots__ = ("ttft_s", "total_s", "edge_s", "cloud_s", "info_s")
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    EDGE_S_FIELD_NUMBER: _ClassVar[int]
    CLOUD_S_FIELD_NUMBER: _ClassVar[int]
    INFO_S_FIELD_NUMBER: _ClassVar[int]
    ttft_s: float
    total_s: float
    edge_s: float
    cloud_s: float
    info_s: float
    def __init__(self, ttft_s: _Optional[float] = ..., total_s: _Optional[float] = ..., edge_s: _Optional[float] = ..., cloud_s: _Optional[float] = ..., info_s: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("mode", "arbiter", "score", "reason", "scorer", "threshold", "threshold_kind", "escalated", "features", "degraded", "steps")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODE_FIELD_NUMBER: _ClassVar[int]
    ARBITER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCORER_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_KIND_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    arbiter: str
    score: float
    reason: str
    scorer: str
    threshold: float
    threshold_kind: str
    escalated: bool
    features: _containers.ScalarMap[str, float]
    degraded: bool
    steps: _containers.RepeatedCompositeFieldContainer[AgentStep]
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., arbiter: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[str] = ..., scorer: _Optional[str] = ..., threshold: _Optional[float] = ..., threshold_kind: _Optional[str] = ..., escalated: _Optional[bool] = ..., features: _Optional[_Mapping[str, float]] = ..., degraded: _Optional[bool] = ..., steps: _Optional[_Iterable[_Union[AgentStep, _Mapping]]] = ...) -> None: ...

class AgentStep(_message.Message):
    __slots__ = ("index", "thought", "tool", "arguments", "observation", "cost_usd", "latency_s", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    THOUGHT_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    thought: str
    tool: str
    arguments: str
    observation: str
    cost_usd: float
    latency_s: float
    error: str
    def __init__(self, index: _Optional[int] = ..., thought: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ..., observation: _Optional[str] = ..., cost_usd: _Optional[float] = ..., latency_s: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class InfoCall(_message.Message):
    __slots__ = ("operation", "query", "passage_ids", "scores", "latency_s", "cost_usd", "error")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    operation: str
    query: str
    passage_ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    latency_s: float
    cost_usd: float
    error: str
    def __init__(self, operation: _Optional[str] = ..., query: _Optional[str] = ..., passage_ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., latency_s: _Optional[float] = ..., cost_usd: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class GenerateResult(_message.Message):
    __slots__ = ("request_id", "text", "served_by", "edge_model", "cloud_model", "runs", "cost_usd", "edge_cost_usd", "cloud_cost_usd", "latency", "decision", "finish_reason", "info_cost_usd", "info_calls", "citations")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    EDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CLOUD_MODEL_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    EDGE_COST_USD_FIELD_NUMBER: _ClassVar[int]
    CLOUD_COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    INFO_COST_USD_FIELD_NUMBER: _ClassVar[int]
    INFO_CALLS_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    served_by: Backend
    edge_model: str
    cloud_model: str
    runs: _containers.RepeatedCompositeFieldContainer[BackendRun]
    cost_usd: float
    edge_cost_usd: float
    cloud_cost_usd: float
    latency: Latency
    decision: Decision
    finish_reason: str
    info_cost_usd: float
    info_calls: _containers.RepeatedCompositeFieldContainer[InfoCall]
    citations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., served_by: _Optional[_Union[Backend, str]] = ..., edge_model: _Optional[str] = ..., cloud_model: _Optional[str] = ..., runs: _Optional[_Iterable[_Union[BackendRun, _Mapping]]] = ..., cost_usd: _Optional[float] = ..., edge_cost_usd: _Optional[float] = ..., cloud_cost_usd: _Optional[float] = ..., latency: _Optional[_Union[Latency, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., finish_reason: _Optional[str] = ..., info_cost_usd: _Optional[float] = ..., info_calls: _Optional[_Iterable[_Union[InfoCall, _Mapping]]] = ..., citations: _Optional[_Iterable[str]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text", "backend", "logprob")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    text: str
    backend: Backend
    logprob: float
    def __init__(self, text: _Optional[str] = ..., backend: _Optional[_Union[Backend, str]] = ..., logprob: _Optional[float] = ...) -> None: ...

class DraftDiscarded(_message.Message):
    __slots__ = ("discarded", "next", "reason")
    DISCARDED_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    discarded: Backend
    next: Backend
    reason: str
    def __init__(self, discarded: _Optional[_Union[Backend, str]] = ..., next: _Optional[_Union[Backend, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class GenerateStreamResponse(_message.Message):
    __slots__ = ("delta", "result", "draft_discarded")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_DISCARDED_FIELD_NUMBER: _ClassVar[int]
    delta: TextDelta
    result: GenerateResult
    draft_discarded: DraftDiscarded
    def __init__(self, delta: _Optional[_Union[TextDelta, _Mapping]] = ..., result: _Optional[_Union[GenerateResult, _Mapping]] = ..., draft_discarded: _Optional[_Union[DraftDiscarded, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "sha256", "endpoint", "local_standin", "priced_as", "n_ctx", "adapter", "adapter_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STANDIN_FIELD_NUMBER: _ClassVar[int]
    PRICED_AS_FIELD_NUMBER: _ClassVar[int]
    N_CTX_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    endpoint: str
    local_standin: bool
    priced_as: str
    n_ctx: int
    adapter: str
    adapter_sha256: str
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., endpoint: _Optional[str] = ..., local_standin: _Optional[bool] = ..., priced_as: _Optional[str] = ..., n_ctx: _Optional[int] = ..., adapter: _Optional[str] = ..., adapter_sha256: _Optional[str] = ...) -> None: ...

class CloudBreaker(_message.Message):
    __slots__ = ("state", "consecutive_failures", "failures_to_open", "retry_in_s", "times_opened", "times_closed")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_TO_OPEN_FIELD_NUMBER: _ClassVar[int]
    RETRY_IN_S_FIELD_NUMBER: _ClassVar[int]
    TIMES_OPENED_FIELD_NUMBER: _ClassVar[int]
    TIMES_CLOSED_FIELD_NUMBER: _ClassVar[int]
    state: str
    consecutive_failures: int
    failures_to_open: int
    retry_in_s: float
    times_opened: int
    times_closed: int
    def __init__(self, state: _Optional[str] = ..., consecutive_failures: _Optional[int] = ..., failures_to_open: _Optional[int] = ..., retry_in_s: _Optional[float] = ..., times_opened: _Optional[int] = ..., times_closed: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("version", "implemented_modes", "default_mode", "edge", "cloud", "packages", "hardware", "max_tokens_limit", "cloud_breaker")
    class PackagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMPLEMENTED_MODES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CLOUD_BREAKER_FIELD_NUMBER: _ClassVar[int]
    version: str
    implemented_modes: _containers.RepeatedScalarFieldContainer[Mode]
    default_mode: Mode
    edge: ModelInfo
    cloud: ModelInfo
    packages: _containers.ScalarMap[str, str]
    hardware: str
    max_tokens_limit: int
    cloud_breaker: CloudBreaker
    def __init__(self, version: _Optional[str] = ..., implemented_modes: _Optional[_Iterable[_Union[Mode, str]]] = ..., default_mode: _Optional[_Union[Mode, str]] = ..., edge: _Optional[_Union[ModelInfo, _Mapping]] = ..., cloud: _Optional[_Union[ModelInfo, _Mapping]] = ..., packages: _Optional[_Mapping[str, str]] = ..., hardware: _Optional[str] = ..., max_tokens_limit: _Optional[int] = ..., cloud_breaker: _Optional[_Union[CloudBreaker, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "score", "thumbs_up", "corrected_answer")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THUMBS_UP_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_ANSWER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    score: float
    thumbs_up: bool
    corrected_answer: str
    def __init__(self, request_id: _Optional[str] = ..., score: _Optional[float] = ..., thumbs_up: _Optional[bool] = ..., corrected_answer: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("since_unix_s",)
    SINCE_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    since_unix_s: float
    def __init__(self, since_unix_s: _Optional[float] = ...) -> None: ...

class SignalStats(_message.Message):
    __slots__ = ("kind", "count", "mean_score", "share_correct")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_SCORE_FIELD_NUMBER: _ClassVar[int]
    SHARE_CORRECT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    count: int
    mean_score: float
    share_correct: float
    def __init__(self, kind: _Optional[str] = ..., count: _Optional[int] = ..., mean_score: _Optional[float] = ..., share_correct: _Optional[float] = ...) -> None: ...

class ModeStats(_message.Message):
    __slots__ = ("mode", "requests", "accuracy", "cloud_share", "usd_per_1k", "cloud_usd_per_1k", "edge_usd_per_1k", "latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s", "judge_usd_per_1k", "version")
    MODE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    CLOUD_SHARE_FIELD_NUMBER: _ClassVar[int]
    USD_PER_1K_FIELD_NUMBER: _ClassVar[int]
    CLOUD_USD_PER_1K_FIELD_NUMBER: _ClassVar[int]
    EDGE_USD_PER_1K_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_S_FIELD_NUMBER: _ClassVar[int]
    JUDGE_USD_PER_1K_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    requests: int
    accuracy: _containers.RepeatedCompositeFieldContainer[SignalStats]
    cloud_share: float
    usd_per_1k: float
    cloud_usd_per_1k: float
    edge_usd_per_1k: float
    latency_p50_s: float
    latency_p95_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    judge_usd_per_1k: float
    version: str
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., requests: _Optional[int] = ..., accuracy: _Optional[_Iterable[_Union[SignalStats, _Mapping]]] = ..., cloud_share: _Optional[float] = ..., usd_per_1k: _Optional[float] = ..., cloud_usd_per_1k: _Optional[float] = ..., edge_usd_per_1k: _Optional[float] = ..., latency_p50_s: _Optional[float] = ..., latency_p95_s: _Optional[float] = ..., ttft_p50_s: _Optional[float] = ..., ttft_p95_s: _Optional[float] = ..., judge_usd_per_1k: _Optional[float] = ..., version: _Optional[str] = ...) -> None: ...

class LedgerStatus(_message.Message):
    __slots__ = ("enabled", "ok", "reason", "queue_depth", "written", "dropped_writes", "failed_writes")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    DROPPED_WRITES_FIELD_NUMBER: _ClassVar[int]
    FAILED_WRITES_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    ok: bool
    reason: str
    queue_depth: int
    written: int
    dropped_writes: int
    failed_writes: int
    def __init__(self, enabled: _Optional[bool] = ..., ok: _Optional[bool] = ..., reason: _Optional[str] = ..., queue_depth: _Optional[int] = ..., written: _Optional[int] = ..., dropped_writes: _Optional[int] = ..., failed_writes: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("modes", "ledger")
    MODES_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    modes: _containers.RepeatedCompositeFieldContainer[ModeStats]
    ledger: LedgerStatus
    def __init__(self, modes: _Optional[_Iterable[_Union[ModeStats, _Mapping]]] = ..., ledger: _Optional[_Union[LedgerStatus, _Mapping]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("model_dir",)
    MODEL_DIR_FIELD_NUMBER: _ClassVar[int]
    model_dir: str
    def __init__(self, model_dir: _Optional[str] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("previous", "current")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    previous: str
    current: str
    def __init__(self, previous: _Optional[str] = ..., current: _Optional[str] = ...) -> None: ...

class UseAdapterRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class UseAdapterResponse(_message.Message):
    __slots__ = ("previous", "current")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    previous: str
    current: str
    def __init__(self, previous: _Optional[str] = ..., current: _Optional[str] = ...) -> None: ...
