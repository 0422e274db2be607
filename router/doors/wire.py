"""Protobuf <-> core types. Used by the gRPC service and by the SDK, so both read the wire the same way."""
from __future__ import annotations

from typing import Optional

from router.domain.types import (AgentStep, BackendKind, BackendRun, Caller, ChatMessage, CloudBreakerStatus, DaemonInfo, Decision,
                                 DraftDiscarded, GenerateRequest, GenerateResult, InfoCall, Latency, LedgerStatus,
                                 Mode, ModelInfo, ModeSummary, RunPurpose, SignalSummary, StatsReport, StreamEvent,
                                 TextDelta)
from router.v1 import info_pb2
from router.v1 import router_pb2 as pb


def _mode(value: int) -> "Mode | int":
    try:
        return Mode(value)
    except ValueError:
        return value


def _purpose(value: str) -> str:
    """A RunPurpose; "" (an older daemon's) is an answer, and a purpose this build does not know stays text."""
    if not value:
        return RunPurpose.ANSWER
    try:
        return RunPurpose(value)
    except ValueError:
        return value


def request_to_proto(request: GenerateRequest) -> pb.GenerateRequest:
    message = pb.GenerateRequest(
        messages=[pb.ChatMessage(role=m.role, content=m.content) for m in request.messages],
        stop=list(request.stop), mode=int(request.mode), request_id=request.request_id,
        metadata=dict(request.metadata))
    if request.caller != Caller():
        message.caller.CopyFrom(info_pb2.Caller(user=request.caller.user, groups=list(request.caller.groups)))
    if request.max_tokens is not None:
        message.max_tokens = request.max_tokens
    if request.temperature is not None:
        message.temperature = request.temperature
    if request.reference_answer is not None:
        message.reference_answer = request.reference_answer
    if request.seed is not None:
        message.seed = request.seed
    if request.stream_draft is not None:
        message.stream_draft = request.stream_draft
    return message


def request_from_proto(message: pb.GenerateRequest) -> GenerateRequest:
    def optional(field: str) -> Optional[object]:
        return getattr(message, field) if message.HasField(field) else None

    return GenerateRequest(
        messages=tuple(ChatMessage(m.role, m.content) for m in message.messages),
        max_tokens=optional("max_tokens"), temperature=optional("temperature"),
        stop=tuple(message.stop), mode=_mode(message.mode), request_id=message.request_id,
        metadata=dict(message.metadata), reference_answer=optional("reference_answer"),
        seed=optional("seed"), caller=Caller(user=message.caller.user, groups=tuple(message.caller.groups)),
        stream_draft=optional("stream_draft"))


def _run_to_proto(run: BackendRun) -> pb.BackendRun:
    message = pb.BackendRun(
        backend=int(run.backend), model=run.model, text=run.text, prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens, queue_s=run.queue_s, ttft_s=run.ttft_s,
        total_s=run.total_s, cost_usd=run.cost_usd, finish_reason=run.finish_reason,
        usage_estimated=run.usage_estimated, purpose=str(run.purpose))
    if run.mean_logprob is not None:
        message.mean_logprob = run.mean_logprob
    return message


def _run_from_proto(message: pb.BackendRun) -> BackendRun:
    return BackendRun(
        backend=BackendKind(message.backend), model=message.model, text=message.text,
        prompt_tokens=message.prompt_tokens, completion_tokens=message.completion_tokens,
        queue_s=message.queue_s, ttft_s=message.ttft_s, total_s=message.total_s,
        cost_usd=message.cost_usd, finish_reason=message.finish_reason,
        mean_logprob=message.mean_logprob if message.HasField("mean_logprob") else None,
        usage_estimated=message.usage_estimated, purpose=_purpose(message.purpose))


def result_to_proto(result: GenerateResult) -> pb.GenerateResult:
    decision = _decision_to_proto(result.decision)
    return pb.GenerateResult(
        request_id=result.request_id, text=result.text, served_by=int(result.served_by),
        edge_model=result.edge_model, cloud_model=result.cloud_model,
        runs=[_run_to_proto(run) for run in result.runs], cost_usd=result.cost_usd,
        edge_cost_usd=result.edge_cost_usd, cloud_cost_usd=result.cloud_cost_usd,
        latency=pb.Latency(ttft_s=result.latency.ttft_s, total_s=result.latency.total_s,
                           edge_s=result.latency.edge_s, cloud_s=result.latency.cloud_s,
                           info_s=result.latency.info_s),
        decision=decision, finish_reason=result.finish_reason, info_cost_usd=result.info_cost_usd,
        info_calls=[pb.InfoCall(operation=c.operation, query=c.query, passage_ids=list(c.passage_ids),
                                scores=list(c.scores), latency_s=c.latency_s, cost_usd=c.cost_usd, error=c.error)
                    for c in result.info_calls],
        citations=list(result.citations))


def result_from_proto(message: pb.GenerateResult) -> GenerateResult:
    d = message.decision
    return GenerateResult(
        request_id=message.request_id, text=message.text, served_by=BackendKind(message.served_by),
        edge_model=message.edge_model, cloud_model=message.cloud_model,
        runs=tuple(_run_from_proto(run) for run in message.runs), cost_usd=message.cost_usd,
        edge_cost_usd=message.edge_cost_usd, cloud_cost_usd=message.cloud_cost_usd,
        latency=Latency(ttft_s=message.latency.ttft_s, total_s=message.latency.total_s,
                        edge_s=message.latency.edge_s, cloud_s=message.latency.cloud_s,
                        info_s=message.latency.info_s),
        decision=_decision_from_proto(d),
        finish_reason=message.finish_reason, info_cost_usd=message.info_cost_usd,
        info_calls=tuple(InfoCall(operation=c.operation, query=c.query, passage_ids=tuple(c.passage_ids),
                                  scores=tuple(c.scores), latency_s=c.latency_s, cost_usd=c.cost_usd, error=c.error)
                         for c in message.info_calls),
        citations=tuple(message.citations))


def delta_to_proto(delta: TextDelta) -> pb.GenerateStreamResponse:
    message = pb.TextDelta(text=delta.text, backend=int(delta.backend))
    if delta.logprob is not None:
        message.logprob = delta.logprob
    return pb.GenerateStreamResponse(delta=message)


def delta_from_proto(message: pb.TextDelta) -> TextDelta:
    return TextDelta(text=message.text, backend=BackendKind(message.backend),
                     logprob=message.logprob if message.HasField("logprob") else None)


def stream_event_to_proto(event: StreamEvent) -> pb.GenerateStreamResponse:
    """The GenerateStream message that carries one of the core's stream events."""
    if isinstance(event, GenerateResult):
        return pb.GenerateStreamResponse(result=result_to_proto(event))
    if isinstance(event, DraftDiscarded):
        return pb.GenerateStreamResponse(draft_discarded=pb.DraftDiscarded(
            discarded=int(event.discarded), next=int(event.next), reason=event.reason))
    return delta_to_proto(event)


def stream_event_from_proto(message: pb.GenerateStreamResponse) -> Optional[StreamEvent]:
    """The event a GenerateStream message carries. None for an event this version does not know (a newer
    daemon's), so that a client skips it instead of taking it for empty text."""
    kind = message.WhichOneof("event")
    if kind == "delta":
        return delta_from_proto(message.delta)
    if kind == "draft_discarded":
        discarded = message.draft_discarded
        return DraftDiscarded(discarded=BackendKind(discarded.discarded), next=BackendKind(discarded.next),
                              reason=discarded.reason)
    if kind == "result":
        return result_from_proto(message.result)
    return None


def _model_to_proto(model: ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(name=model.name, sha256=model.sha256, endpoint=model.endpoint,
                        local_standin=model.local_standin, priced_as=model.priced_as, n_ctx=model.n_ctx,
                        adapter=model.adapter, adapter_sha256=model.adapter_sha256)


def _model_from_proto(message: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(name=message.name, sha256=message.sha256, endpoint=message.endpoint,
                     local_standin=message.local_standin, priced_as=message.priced_as, n_ctx=message.n_ctx,
                     adapter=message.adapter, adapter_sha256=message.adapter_sha256)


def info_to_proto(info: DaemonInfo) -> pb.InfoResponse:
    message = pb.InfoResponse(
        version=info.version, implemented_modes=[int(m) for m in info.implemented_modes],
        default_mode=int(info.default_mode), edge=_model_to_proto(info.edge),
        cloud=_model_to_proto(info.cloud), packages=dict(info.packages), hardware=info.hardware,
        max_tokens_limit=info.max_tokens_limit)
    breaker = info.cloud_breaker
    if breaker is not None:
        message.cloud_breaker.CopyFrom(pb.CloudBreaker(
            state=breaker.state, consecutive_failures=breaker.consecutive_failures,
            failures_to_open=breaker.failures_to_open, times_opened=breaker.times_opened,
            times_closed=breaker.times_closed))
        _set_optional(message.cloud_breaker, "retry_in_s", breaker.retry_in_s)
    return message


def info_from_proto(message: pb.InfoResponse) -> DaemonInfo:
    breaker = None
    if message.HasField("cloud_breaker"):
        b = message.cloud_breaker
        breaker = CloudBreakerStatus(state=b.state, consecutive_failures=b.consecutive_failures,
                                     failures_to_open=b.failures_to_open, retry_in_s=_get_optional(b, "retry_in_s"),
                                     times_opened=b.times_opened, times_closed=b.times_closed)
    return DaemonInfo(
        version=message.version, implemented_modes=tuple(Mode(m) for m in message.implemented_modes),
        default_mode=Mode(message.default_mode), edge=_model_from_proto(message.edge),
        cloud=_model_from_proto(message.cloud), packages=dict(message.packages),
        hardware=message.hardware, max_tokens_limit=message.max_tokens_limit, cloud_breaker=breaker)


def _set_optional(message: object, field: str, value: Optional[float]) -> None:
    if value is not None:
        setattr(message, field, value)


def _get_optional(message: object, field: str) -> Optional[float]:
    return getattr(message, field) if message.HasField(field) else None


_MODE_OPTIONALS = ("latency_p50_s", "latency_p95_s", "ttft_p50_s", "ttft_p95_s")


def stats_to_proto(report: StatsReport) -> pb.StatsResponse:
    modes = []
    for mode in report.modes:
        message = pb.ModeStats(mode=int(mode.mode), requests=mode.requests, cloud_share=mode.cloud_share,
                               usd_per_1k=mode.usd_per_1k, cloud_usd_per_1k=mode.cloud_usd_per_1k,
                               edge_usd_per_1k=mode.edge_usd_per_1k, judge_usd_per_1k=mode.judge_usd_per_1k,
                               version=mode.version)
        for field in _MODE_OPTIONALS:
            _set_optional(message, field, getattr(mode, field))
        for signal in mode.accuracy:
            entry = message.accuracy.add(kind=signal.kind, count=signal.count)
            _set_optional(entry, "mean_score", signal.mean_score)
            _set_optional(entry, "share_correct", signal.share_correct)
        modes.append(message)
    ledger = report.ledger
    return pb.StatsResponse(modes=modes, ledger=pb.LedgerStatus(
        enabled=ledger.enabled, ok=ledger.ok, reason=ledger.reason, queue_depth=ledger.queue_depth,
        written=ledger.written, dropped_writes=ledger.dropped_writes, failed_writes=ledger.failed_writes))


def stats_from_proto(message: pb.StatsResponse) -> StatsReport:
    modes = tuple(
        ModeSummary(mode=_mode(m.mode), requests=m.requests,
                    accuracy=tuple(SignalSummary(s.kind, s.count, _get_optional(s, "mean_score"),
                                                 _get_optional(s, "share_correct")) for s in m.accuracy),
                    cloud_share=m.cloud_share, usd_per_1k=m.usd_per_1k, cloud_usd_per_1k=m.cloud_usd_per_1k,
                    edge_usd_per_1k=m.edge_usd_per_1k, judge_usd_per_1k=m.judge_usd_per_1k, version=m.version,
                    **{field: _get_optional(m, field) for field in _MODE_OPTIONALS})
        for m in message.modes)
    l = message.ledger
    return StatsReport(modes=modes, ledger=LedgerStatus(
        enabled=l.enabled, ok=l.ok, reason=l.reason, queue_depth=l.queue_depth, written=l.written,
        dropped_writes=l.dropped_writes, failed_writes=l.failed_writes))


def _decision_to_proto(decision: Decision) -> pb.Decision:
    message = pb.Decision(mode=int(decision.mode), arbiter=decision.arbiter, reason=decision.reason,
                          scorer=decision.scorer, threshold_kind=decision.threshold_kind,
                          escalated=decision.escalated, features=dict(decision.features),
                          degraded=decision.degraded,
                          steps=[pb.AgentStep(index=step.index, thought=step.thought, tool=step.tool,
                                              arguments=step.arguments, observation=step.observation,
                                              cost_usd=step.cost_usd, latency_s=step.latency_s, error=step.error)
                                 for step in decision.steps])
    if decision.score is not None:
        message.score = decision.score
    if decision.threshold is not None:
        message.threshold = decision.threshold
    return message


def _decision_from_proto(message: pb.Decision) -> Decision:
    return Decision(mode=_mode(message.mode), arbiter=message.arbiter,
                    score=message.score if message.HasField("score") else None, reason=message.reason,
                    scorer=message.scorer,
                    threshold=message.threshold if message.HasField("threshold") else None,
                    threshold_kind=message.threshold_kind, escalated=message.escalated,
                    features=dict(message.features), degraded=message.degraded,
                    steps=tuple(AgentStep(index=s.index, thought=s.thought, tool=s.tool, arguments=s.arguments,
                                          observation=s.observation, cost_usd=s.cost_usd, latency_s=s.latency_s,
                                          error=s.error) for s in message.steps))
