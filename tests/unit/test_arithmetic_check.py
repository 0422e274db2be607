"""The arithmetic check of a chain of thought: real answer shapes from the edge's GSM8K drafts."""
from __future__ import annotations

import pytest

from router.core.arbiters.arithmetic import check_arithmetic, evaluate, normalise
from router.core.arbiters.features import arithmetic_features, base_features, Draft

# Shapes the 0.5B edge writes (bench/results/corpus/results.jsonl).
LATEX_RIGHT = ("Step 3: Subtract the sale price from the original price.\n\\[ 22 - 16 = 6 \\]\n"
               "Therefore, the amount of the discount is \\(\\boxed{6}\\).")
LATEX_UNITS_CHAIN = ("\\[ 10 \\text{ cupcakes/hour} \\times 5 \\text{ hours} = 50 \\text{ cupcakes} \\]\n"
                     "\\[ \\frac{50}{2} = 25 \\]")
PLAIN_WRONG = "She pays $1,200 + $350 = $1,450 in total, so 1,450 / 5 = 290 each.\n#### 290"


def test_right_equalities_are_checked_and_hold() -> None:
    assert check_arithmetic(LATEX_RIGHT) == (1, 0)
    assert check_arithmetic(LATEX_UNITS_CHAIN) == (2, 0)


def test_a_wrong_sum_is_caught_and_the_step_after_it_still_checked() -> None:
    assert check_arithmetic(PLAIN_WRONG) == (2, 1)  # 1200 + 350 is 1550; 1450 / 5 = 290 holds
    assert check_arithmetic("Total: 3 + 4 = 8") == (1, 1)


def test_chains_are_compared_pairwise() -> None:
    assert check_arithmetic("3 * 4 = 12 = 13") == (2, 1)
    assert check_arithmetic("(2 + 3) * 4 = 5 * 4 = 20") == (2, 0)


@pytest.mark.parametrize("text", ["2/3 = 0.667", "100 / 3 = 33.3", "10 / 3 = 3.33", "5 / 2 = 3", "1/8 = 0.13",
                                  "7 / 2 = 4"])
def test_a_result_rounded_at_the_decimals_written_holds(text: str) -> None:
    assert check_arithmetic(text) == (1, 0)


def test_a_result_off_by_more_than_its_rounding_is_wrong() -> None:
    assert check_arithmetic("7 / 2 = 5") == (1, 1)
    assert check_arithmetic("2/3 = 0.6") == (1, 1)


@pytest.mark.parametrize("text, expected", [
    ("3+4=7 So 7*2=14", (2, 0)),                 # two equalities of one sentence are not compared
    ("3 + 2 = 5, 5 * 2 = 10", (2, 0)),
    ("Step 2. 3 + 4 = 7", (1, 0)),
    ("12 / 4 = 3 hours = 180 minutes", (1, 0)),  # a change of unit is no slip
    ("10% * 40000 = 4000", (1, 0)),              # percentages are values
    ("50% = 0.5", (1, 0)),
    ("4 x 5 = 20", (1, 0)),                      # word operators
    ("3 times 4 = 12", (1, 0)),
    ("3 - 4 = -1", (1, 0)),
    ("x = 3 + 4 = 7", (1, 0)),
])
def test_common_chain_of_thought_shapes_are_read_right(text: str, expected: tuple[int, int]) -> None:
    assert check_arithmetic(text) == expected


@pytest.mark.parametrize("text", ["x + 2 = 36", "5x - 10 = 40", "24 hours - 8 = 16", "G_8 = 728", "R^2 = 40000",
                                  "day1 + 2 = 3", "f(3) + 1 = 5", "20% of 50 = 10", "2(3+4)=14",
                                  "30 \\text{ minutes} = \\frac{30}{60} \\text{ hours}"])
def test_an_unknown_a_name_or_a_bare_statement_is_not_checked(text: str) -> None:
    # Their value is not in the text: read as numbers they would be false "wrong" verdicts.
    assert check_arithmetic(text) == (0, 0)


def test_the_evaluator_runs_no_code_and_survives_bad_arithmetic() -> None:
    assert evaluate("__import__('os').system('true')") is None
    assert evaluate("2 ** 99999999") is None  # no power operator: nothing to blow up
    assert evaluate("1 / 0") is None
    assert evaluate("2 (3)") is None
    assert evaluate("-(2 + 3) * 4") == -20.0
    assert evaluate("9" * 300) is None  # too long to be a hand-written step


def test_latex_is_rewritten_as_plain_arithmetic() -> None:
    assert normalise("\\[ \\frac{3}{4} \\times 8 \\]").split() == ["((3)/(4))", "*", "8"]
    assert normalise("$1,234.50 and 15\\%").split() == ["1234.50", "and", "(15/100)"]


@pytest.mark.parametrize("text, expected", [(PLAIN_WRONG, (2.0, 1.0)), ("Paris", (0.0, 0.0))])
def test_the_counts_are_features_of_every_draft(text: str, expected: tuple[float, float]) -> None:
    draft = Draft([{"role": "user", "content": "q"}], text, (-0.1,), "stop")
    assert (arithmetic_features(draft)["arithmetic_checked"], arithmetic_features(draft)["arithmetic_wrong"]) == expected
    assert {"arithmetic_checked", "arithmetic_wrong"} <= set(base_features(draft))
