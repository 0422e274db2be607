"""cloud/info/chunking.py: offsets that map back, sentence-boundary cuts, overlap, over-long sentences."""
from __future__ import annotations

import pytest

from cloud.info.chunking import chunk_text, count_tokens, sentence_spans

SENTENCES = [f"Sentence number {n} talks about topic {n} in a few plain words." for n in range(1, 13)]
TEXT = " ".join(SENTENCES)  # 13 tokens a sentence


def test_a_text_that_fits_is_one_chunk_of_the_stripped_text() -> None:
    text = "  \n Short text. Two sentences.\n\n"
    [chunk] = chunk_text(text, max_tokens=50, overlap_tokens=10)
    assert chunk.text == text.strip()
    assert text[chunk.start:chunk.end] == chunk.text


def test_blank_text_has_no_chunk() -> None:
    assert chunk_text(" \n\t", max_tokens=10, overlap_tokens=2) == []


def test_offsets_map_back_and_chunks_cover_the_text_in_order() -> None:
    chunks = chunk_text(TEXT, max_tokens=40, overlap_tokens=13)
    assert len(chunks) > 1
    for chunk in chunks:
        assert TEXT[chunk.start:chunk.end] == chunk.text
        assert count_tokens(chunk.text) <= 40
    assert chunks[0].start == 0 and chunks[-1].end == len(TEXT)
    starts = [c.start for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start <= before.end  # no gap: every sentence is in some chunk


def test_cuts_fall_on_sentence_boundaries() -> None:
    for chunk in chunk_text(TEXT, max_tokens=40, overlap_tokens=13):
        assert chunk.text.startswith("Sentence number")
        assert chunk.text.endswith("words.")


def test_neighbours_share_whole_sentences_up_to_the_overlap() -> None:
    chunks = chunk_text(TEXT, max_tokens=40, overlap_tokens=13)
    for before, after in zip(chunks, chunks[1:]):
        shared = TEXT[after.start:before.end]
        assert shared in SENTENCES  # exactly one whole 13-token sentence is repeated
    no_overlap = chunk_text(TEXT, max_tokens=40, overlap_tokens=0)
    for before, after in zip(no_overlap, no_overlap[1:]):
        assert after.start > before.end


def test_a_sentence_longer_than_the_limit_is_cut_at_token_boundaries_with_overlap() -> None:
    long_sentence = "word " * 95 + "end."
    text = f"Short opener. {long_sentence} Short closer."
    chunks = chunk_text(text, max_tokens=30, overlap_tokens=5)
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
        assert count_tokens(chunk.text) <= 30
        assert not chunk.text.startswith(" ") and not chunk.text.endswith(" ")
    middle = [c for c in chunks if c.text.startswith("word") and not c.text.endswith(".")]
    assert len(middle) >= 2  # cut inside the sentence
    for before, after in zip(middle, middle[1:]):
        assert count_tokens(text[after.start:before.end]) == 5
    assert chunks[-1].text.endswith("Short closer.")


def test_sentences_do_not_end_at_abbreviations_initials_or_decimals() -> None:
    text = "Dr. Smith paid 3.5 dollars to J. R. Jones in the U.S. today. Then he left! Did he? Yes."
    sentences = [text[a:b] for a, b in sentence_spans(text)]
    assert sentences == ["Dr. Smith paid 3.5 dollars to J. R. Jones in the U.S. today.", "Then he left!",
                         "Did he?", "Yes."]


def test_a_blank_line_ends_a_sentence() -> None:
    text = "# A heading\n\nA paragraph without a full stop\n\nAnother one."
    assert [text[a:b] for a, b in sentence_spans(text)] == ["# A heading", "A paragraph without a full stop",
                                                            "Another one."]


@pytest.mark.parametrize("max_tokens, overlap", [(0, 0), (10, 10), (10, -1)])
def test_impossible_sizes_are_refused(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text(TEXT, max_tokens=max_tokens, overlap_tokens=overlap)
