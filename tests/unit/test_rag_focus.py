"""Focused reading: the edge reads the retrieved passages' best-matching sentences, in order."""
from __future__ import annotations

from router.core.modes.rag_focus import GAP, focus_passages
from router.domain.types import Passage

BRONCOS = Passage(passage_id="sb#0", document_id="sb", score=0.9, start=10, end=200,
                  text="Super Bowl 50 was an American football game. The Denver Broncos won Super Bowl 50. "
                       "The game was played on February 7, 2016. Beyonce sang at the halftime show.")
STADIUM = Passage(passage_id="stadium#3", document_id="stadium", score=0.5,
                  text="Levi's Stadium is in Santa Clara. It hosted Super Bowl 50 in 2016.")


def test_the_best_matching_sentences_are_kept_in_their_passages_and_order() -> None:
    (broncos,) = focus_passages("Who won Super Bowl 50?", [BRONCOS, STADIUM], 1)
    assert broncos.text == "The Denver Broncos won Super Bowl 50."
    # The passage keeps its identity, so citations and the trace still name what was retrieved.
    assert (broncos.passage_id, broncos.document_id, broncos.score) == ("sb#0", "sb", 0.9)


def test_sentences_from_several_passages_stay_with_their_passage_in_the_retrievals_order() -> None:
    focused = focus_passages("Where was Super Bowl 50 played in 2016?", [BRONCOS, STADIUM], 3)
    assert [p.passage_id for p in focused] == ["sb#0", "stadium#3"]
    first, second = focused
    assert first.text == "Super Bowl 50 was an American football game. The Denver Broncos won Super Bowl 50."
    assert second.text == "It hosted Super Bowl 50 in 2016."  # the best sentence of all comes second


def test_sentences_that_are_not_neighbours_are_joined_by_a_gap_mark() -> None:
    (passage,) = focus_passages("When was the football game played?", [BRONCOS, STADIUM], 2)
    assert passage.text == f"Super Bowl 50 was an American football game.{GAP}The game was played on February 7, 2016."


def test_neighbouring_sentences_are_joined_by_a_space() -> None:
    (passage,) = focus_passages("Super Bowl 50 Broncos game", [BRONCOS], 2)
    assert passage.text == "Super Bowl 50 was an American football game. The Denver Broncos won Super Bowl 50."


def test_a_tie_goes_to_the_best_ranked_passage_and_words_count_after_stemming() -> None:
    twin = Passage(passage_id="other#0", document_id="other", score=0.8, text="The Denver Broncos won Super Bowl 50.")
    (winner,) = focus_passages("Who won Super Bowl 50?", [twin, BRONCOS], 1)
    assert winner.passage_id == "other#0"
    # "host" matches "hosted" only after stemming; without it the first sentence would win the tie.
    (stadium,) = focus_passages("Which game did it host?", [STADIUM], 1)
    assert stadium.text == "It hosted Super Bowl 50 in 2016."


def test_zero_sentences_or_no_passages_leave_the_retrieval_as_it_is() -> None:
    assert focus_passages("Who won Super Bowl 50?", [BRONCOS, STADIUM], 0) == (BRONCOS, STADIUM)
    assert focus_passages("Who won Super Bowl 50?", [], 3) == ()


def test_a_sentence_two_overlapping_chunks_share_counts_once_in_the_better_ranked_one() -> None:
    first = Passage(passage_id="d#0", document_id="d", score=0.9,
                    text="Vienna is a city. The Danube flows through Vienna in Austria.")
    second = Passage(passage_id="d#1", document_id="d", score=0.8,
                     text="The Danube flows through Vienna in Austria. The river then reaches Budapest.")
    focused = focus_passages("Which river flows through Vienna?", [first, second], 2)
    # Counted twice, the shared sentence would take both places (once from each chunk).
    assert [(p.passage_id, p.text) for p in focused] == [
        ("d#0", "Vienna is a city. The Danube flows through Vienna in Austria.")]
