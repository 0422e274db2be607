"""DraftDiscarded, the stream event that replaces a draft, on the wire. Through the core, the service and
the SDKs it is sent by POST_ARBITRATION's real cascade: tests/integration/test_draft_discarded_stream.py."""
from router.doors import wire
from router.domain.types import BackendKind, BackendRun, Decision, DraftDiscarded, GenerateResult, Latency, Mode, TextDelta
from router.v1 import router_pb2 as pb


def test_draft_discarded_round_trips_on_the_stream() -> None:
    event = DraftDiscarded(discarded=BackendKind.EDGE, next=BackendKind.CLOUD, reason="score 0.2 < 0.5")
    message = wire.stream_event_to_proto(event)
    assert message.WhichOneof("event") == "draft_discarded"
    assert wire.stream_event_from_proto(message) == event


def test_every_stream_event_round_trips_through_one_pair_of_functions() -> None:
    run = BackendRun(BackendKind.CLOUD, "m", "t", 3, 4, 0.1, 0.2, 0.3, 1e-6, "stop", None)
    result = GenerateResult("id", "t", BackendKind.CLOUD, "e", "m", (run,), 1e-6, 0.0, 1e-6,
                            Latency(0.2, 0.4, 0.0, 0.3), Decision(Mode.CLOUD_ONLY), "stop")
    for event in (TextDelta("x", BackendKind.EDGE, -0.5), DraftDiscarded(BackendKind.EDGE, BackendKind.CLOUD),
                  result):
        assert wire.stream_event_from_proto(wire.stream_event_to_proto(event)) == event


def test_an_event_from_a_newer_daemon_is_skipped_not_taken_for_empty_text() -> None:
    assert wire.stream_event_from_proto(pb.GenerateStreamResponse()) is None
