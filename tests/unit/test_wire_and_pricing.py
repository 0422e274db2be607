import math

import grpc

from router.doors import wire
from router.doors.grpc_errors import KIND_FOR_STATUS, STATUS_FOR_KIND, error_from_status, status_of
from router.domain.errors import (ERROR_FOR_KIND, ErrorKind, InternalError, InvalidRequestError, RateLimitedError,
                                  RequestIdInUseError)
from router.domain.pricing import CostModel
from router.domain.types import (BackendKind, BackendRun, ChatMessage, Decision, GenerateRequest, GenerateResult,
                          Latency, Mode, RunPurpose, TextDelta)


def test_request_round_trip_keeps_unset_fields_unset() -> None:
    request = GenerateRequest(messages=(ChatMessage("system", "s"), ChatMessage("user", "u")), stop=("\n",),
                              mode=Mode.CLOUD_ONLY, request_id="r1", metadata={"k": "v"})
    back = wire.request_from_proto(wire.request_to_proto(request))
    assert back == request and back.max_tokens is None and back.temperature is None and back.seed is None
    assert back.stream_draft is None
    for stream_draft in (False, True):
        full = GenerateRequest(messages=request.messages, max_tokens=5, temperature=0.5, reference_answer="42",
                               seed=7, stream_draft=stream_draft)
        assert wire.request_from_proto(wire.request_to_proto(full)) == full


def test_unknown_mode_survives_the_wire_as_an_int() -> None:
    back = wire.request_from_proto(wire.request_to_proto(GenerateRequest(messages=(), mode=42)))
    assert back.mode == 42 and not isinstance(back.mode, Mode)


def test_result_round_trip() -> None:
    run = BackendRun(BackendKind.EDGE, "m", "t", 3, 4, 0.1, 0.2, 0.3, 1e-6, "stop", -0.25)
    result = GenerateResult("id", "t", BackendKind.EDGE, "m", "c", (run,), 1e-6, 1e-6, 0.0,
                            Latency(0.2, 0.4, 0.3, 0.0), Decision(Mode.EDGE_ONLY, "", None, "why"), "stop")
    assert wire.result_from_proto(wire.result_to_proto(result)) == result
    delta = TextDelta("x", BackendKind.CLOUD, None)
    assert wire.delta_from_proto(wire.delta_to_proto(delta).delta) == delta


def test_run_purposes_cross_the_wire_and_an_unknown_one_stays_text() -> None:
    def round_trip(purpose: str) -> str:
        run = BackendRun(BackendKind.EDGE, "m", "t", 3, 4, 0.1, 0.2, 0.3, 1e-6, "cancelled", purpose=purpose)
        return wire._run_from_proto(wire._run_to_proto(run)).purpose

    assert [round_trip(p) for p in RunPurpose] == list(RunPurpose)
    assert round_trip("critique") == "critique"  # from a newer daemon: kept, not an error
    legacy = wire._run_to_proto(BackendRun(BackendKind.EDGE, "m", "t", 3, 4, 0.1, 0.2, 0.3, 1e-6, "stop"))
    legacy.ClearField("purpose")  # what an older daemon sends
    assert wire._run_from_proto(legacy).purpose == RunPurpose.ANSWER


def test_status_codes_map_to_typed_errors() -> None:
    assert isinstance(error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad"), InvalidRequestError)
    limited = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", 2.5)
    assert isinstance(limited, RateLimitedError) and limited.retry_after_s == 2.5
    assert isinstance(error_from_status(grpc.StatusCode.ALREADY_EXISTS, "in use"), RequestIdInUseError)
    assert isinstance(error_from_status(grpc.StatusCode.DATA_LOSS, "lost"), InternalError)  # not in the table
    # The table is one-to-one over every kind, and each kind's class round-trips through the wire.
    assert set(STATUS_FOR_KIND) == set(ErrorKind) == set(ERROR_FOR_KIND)
    assert len(KIND_FOR_STATUS) == len(ErrorKind)
    for kind, cls in ERROR_FOR_KIND.items():
        assert cls.kind is kind
        assert type(error_from_status(status_of(cls("x")), "x")) is cls


def test_costs() -> None:
    costs = CostModel(cloud_input_usd_per_mtok=0.15, cloud_output_usd_per_mtok=0.6, edge_parameters=5e8,
                      edge_joules_per_flop=3e-10, usd_per_kwh=0.15)
    assert math.isclose(costs.cloud_cost(1_000_000, 1_000_000), 0.75)
    # 2 * 5e8 * 100 tokens = 1e11 FLOP -> 30 J -> 30 / 3.6e6 kWh * $0.15
    assert math.isclose(costs.edge_cost(60, 40), 30 / 3.6e6 * 0.15)
