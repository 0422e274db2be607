import pytest

from router.judge import JUDGE_RUBRIC, judge_messages, parse_grade
from router.types import ChatMessage, GenerateRequest


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
