"""The core's request path when its backend fails or is not there yet. The same path on the 135M model,
request ids included, is in tests/integration/test_core_request_path.py."""
import pytest

from router.core.engine import Backends, Router
from router.core.fault_injection import FixedLatencyFaultInjectionBackend
from router.core.modes import builtin_modes
from router.domain.config import ServerSettings
from router.domain.errors import BackendUnavailableError, NotReadyError
from router.domain.pricing import CostModel
from router.domain.types import ChatMessage, GenerateRequest, GenerateResult, Mode

COSTS = CostModel(0.15, 0.6, 1e8, 3e-10, 0.15)
REQUEST = GenerateRequest(messages=(ChatMessage("user", "hi there"),), mode=Mode.EDGE_ONLY, max_tokens=3,
                          request_id="r1")


class RecordingSink:
    def __init__(self) -> None:
        self.results: list[GenerateResult] = []

    def record(self, request: GenerateRequest, result: GenerateResult) -> None:
        self.results.append(result)


async def test_a_failing_backend_is_a_typed_error_and_nothing_is_recorded() -> None:
    sink = RecordingSink()
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(),
                    backends=Backends(edge=FixedLatencyFaultInjectionBackend(latency_s=0, fail=True)),
                    sinks=(sink,), ready=True)
    with pytest.raises(BackendUnavailableError, match="injected fault"):
        await router.generate(REQUEST)
    assert sink.results == []


async def test_not_ready_until_loaded() -> None:
    sink = RecordingSink()
    # As the daemon builds it before its models load: no backends yet.
    router = Router(settings=ServerSettings(), costs=COSTS, modes=builtin_modes(), backends=Backends(),
                    sinks=(sink,), ready=False)
    with pytest.raises(NotReadyError, match="still loading"):
        await router.generate(REQUEST)
    assert sink.results == []
