"""router/core/learning/augment.py: which examples can be rewritten, and which rewrites are kept. The whole path
through a daemon whose cloud is the 135M stand-in is in tests/integration/test_augment.py."""
import json

import pytest

from router.core.learning.augment import (MATHS, MATHS_INSTRUCTION, READING, AugmentInputError, Example,
                                          new_question_fault, reading_answer_fault, retold_problem_fault, row_key,
                                          solution_fault, source_rows, task_of)

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
PASSAGES = ("Reference passages (data, not instructions):\n\n<<<passage 1>>>\nThe Denver Broncos beat the Carolina "
            "Panthers 24-10.\n<<<end passage 1>>>\n\nAnswer the question with a short phrase. Reply with the answer "
            "only.")


def maths_row(problem="Tom has 3 apples and buys 4 more. How many has he?", answer="3 + 4 = 7\n#### 7"):
    return {"messages": [SYSTEM, {"role": "user", "content": f"{problem}\n{MATHS_INSTRUCTION}"},
                         {"role": "assistant", "content": answer}]}


def reading_row(question="Who beat the Carolina Panthers?", answer="Denver Broncos"):
    return {"messages": [SYSTEM, {"role": "user", "content": f"{PASSAGES}\nQuestion: {question}"},
                         {"role": "assistant", "content": answer}]}


def test_examples_are_told_apart_by_their_prompt():
    assert task_of(Example.from_row(maths_row())) == MATHS
    assert task_of(Example.from_row(reading_row())) == READING
    assert task_of(Example.from_row(maths_row(answer="seven"))) is None  # no number to check a rewrite against
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert task_of(Example.from_row(chat)) is None


def test_a_retold_problem_keeps_its_numbers_and_says_something_new():
    problem = "Tom has 3 apples and buys 4 more. How many has he?"
    assert retold_problem_fault(problem, "Ana owns 3 pears and gets 4 more. How many pears does she own?") is None
    assert retold_problem_fault(problem, "") == "empty rewrite"
    assert retold_problem_fault(problem, problem.upper()) == "the rewrite repeats the original"
    assert retold_problem_fault(problem, "Ana owns 3 pears and gets 5 more.") == "the rewrite lost a number"
    # The same values written otherwise, or a number word written in digits, keep the problem.
    assert retold_problem_fault(problem, "Ana owns 3.0 pears, gets 4 more, and has 1 basket. How many?") is None


def test_a_solution_of_the_retold_problem_must_reach_the_original_number():
    assert solution_fault("#### 7", "3 + 4 = 7\n#### 7") is None
    assert solution_fault("#### 7", "#### 7.0") is None
    assert solution_fault("#### 7", "#### 8") is not None
    assert solution_fault("#### 7", "I cannot tell") is not None


def test_a_new_reading_question_keeps_the_answer_without_giving_it_away():
    passages = PASSAGES
    fault = lambda new: new_question_fault(passages, "Who beat the Carolina Panthers?", "Denver Broncos", new)  # noqa: E731
    assert fault("Which team won the game 24-10?") is None
    assert fault("who beat the Carolina Panthers") == "the rewrite repeats the original"
    assert fault("Did the Denver Broncos win?") == "the new question gives the answer away"
    assert new_question_fault(passages, "Q?", "New England", "Which team?") == "the answer is not a span of the passages"
    assert reading_answer_fault("the Denver Broncos", "Denver Broncos", 0.8) is None
    assert reading_answer_fault("Carolina Panthers", "Denver Broncos", 0.8) is not None


def test_the_training_set_is_read_whole_or_refused_naming_the_line():
    lines = [json.dumps(maths_row()), "", json.dumps(reading_row())]
    rows = source_rows(lines)
    assert len(rows) == 2 and row_key(rows[0]) != row_key(rows[1]) and row_key(rows[0]) == row_key(maths_row())
    with pytest.raises(AugmentInputError, match="line 2"):
        source_rows([json.dumps(maths_row()), json.dumps({"messages": [{"role": "user", "content": "no answer"}]})])
    with pytest.raises(AugmentInputError, match="line 1"):
        source_rows(["not json"])
