import pytest

from router.core.judge import JUDGE_RUBRIC, judge_messages, parse_grade
from router.domain.types import ChatMessage, GenerateRequest


@pytest.mark.parametrize("reply, grade", [("9", 1.0), ("0", 0.0), (" 3", 3 / 9), ("7.", 7 / 9),
                                          ("", None), ("Yes", None), ("The answer", None)])
def test_grades(reply: str, grade) -> None:
    assert parse_grade(reply) == (pytest.approx(grade) if grade is not None else None)


def test_the_judge_sees_the_conversation_and_the_answer() -> None:
    messages = judge_messages(GenerateRequest(messages=(ChatMessage("system", "be brief"),
                                                        ChatMessage("user", "2+2?"))), "4")
    assert messages[0] == {"role": "system", "content": JUDGE_RUBRIC}
    assert "SYSTEM: be brief" in messages[1]["content"] and "USER: 2+2?" in messages[1]["content"]
    assert messages[1]["content"].rstrip().endswith("Grade (0-9):") and "\n4\n" in messages[1]["content"]


async def test_a_garbage_reply_from_a_fault_injection_judge_is_ungraded_but_its_cost_counts(tmp_path) -> None:
    from router.core.fault_injection import FixedLatencyFaultInjectionBackend
    from router.core.judge import CloudJudge
    from router.domain.pricing import CostModel
    from router.domain.types import Mode
    from tests.unit.test_ledger_support import make_exchange, open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    replies_ok_ok = FixedLatencyFaultInjectionBackend(latency_s=0.0, tokens=3)  # " ok ok ok": no digit
    costs = CostModel(cloud_input_usd_per_mtok=0.15, cloud_output_usd_per_mtok=0.6, edge_parameters=5e8,
                      edge_joules_per_flop=7e-10, usd_per_kwh=0.15)
    judge = CloudJudge(cloud=replies_ok_ok, costs=costs, signals=ledger, sample_rate=1.0)
    request, result = make_exchange("e1", edge="#### 7", mode=Mode.EDGE_ONLY)
    ledger.record(request, result)
    judge.record(request, result)
    await judge.aclose()
    assert ledger.flush()
    assert (judge.graded, judge.ungraded) == (0, 1)
    [signal] = [s for s in ledger.get("e1")["signals"] if s["kind"] == "judge"]
    assert signal["score"] is None and signal["detail"]["graded"] is False and signal["detail"]["cost_usd"] > 0
    [edge_only] = ledger.stats()
    assert edge_only.judge_cost_per_1k_usd == 1000 * signal["detail"]["cost_usd"]
    assert "judge" not in edge_only.accuracy  # an ungraded call is spend, not evidence
    ledger.close()


async def test_the_judge_grades_answers_only(tmp_path) -> None:
    """A request that ended without an answer (here: the edge finished, then the cloud failed) reaches
    the sinks for its spend only; and a verification run is no edge answer to grade."""
    import dataclasses

    from router.core.fault_injection import FixedLatencyFaultInjectionBackend
    from router.core.judge import CloudJudge
    from router.domain.pricing import CostModel
    from router.domain.types import BackendKind
    from tests.unit.test_ledger_support import make_exchange, make_run, make_unanswered, open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    costs = CostModel(0.15, 0.6, 5e8, 7e-10, 0.15)
    judge = CloudJudge(cloud=FixedLatencyFaultInjectionBackend(latency_s=0.0), costs=costs,
                       signals=ledger, sample_rate=1.0)
    failed = make_unanswered("failed", [make_run(BackendKind.EDGE, "#### 7"),
                                        make_run(BackendKind.CLOUD, "", finish_reason="error")],
                             finish_reason="error")
    request, result = make_exchange("verified", cloud="#### 7", served_by=BackendKind.CLOUD)
    verified = (request, dataclasses.replace(result, runs=(make_run(BackendKind.EDGE, "yes", purpose="verify"),
                                                           *result.runs)))
    for exchange in (failed, verified):
        judge.record(*exchange)
    await judge.aclose()
    assert (judge.graded, judge.ungraded) == (0, 0)
    ledger.close()
