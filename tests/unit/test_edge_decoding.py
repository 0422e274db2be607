"""Pure text helpers of the edge stream: UTF-8 reassembly, stop-string hold-back, logprobs."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from edge._decode import StopStringFilter, Utf8StreamDecoder, scan_for_stop, token_logprob

MIXED_TEXT = "héllo 😀 世界 — ok"


# -- UTF-8 ------------------------------------------------------------------------------------------


def test_characters_split_over_tokens_are_reassembled_at_every_split() -> None:
    data = MIXED_TEXT.encode("utf-8")
    for cut in range(1, len(data)):
        decoder = Utf8StreamDecoder()
        first, second = decoder.feed(data[:cut]), decoder.feed(data[cut:])
        assert "\ufffd" not in first + second
        assert first + second + decoder.flush() == MIXED_TEXT


def test_one_byte_per_token_never_emits_a_broken_character() -> None:
    decoder = Utf8StreamDecoder()
    pieces = [decoder.feed(bytes([b])) for b in "😀".encode("utf-8")]
    assert pieces == ["", "", "", "😀"]


def test_an_unfinished_character_at_the_end_becomes_a_replacement_character() -> None:
    decoder = Utf8StreamDecoder()
    assert decoder.feed(b"ok " + "世".encode("utf-8")[:2]) == "ok "
    assert decoder.flush() == "\ufffd"


def test_invalid_bytes_do_not_stall_the_stream() -> None:
    decoder = Utf8StreamDecoder()
    assert decoder.feed(b"a\xffb") == "a\ufffdb"
    assert decoder.feed("é".encode("utf-8")) == "é"


# -- stop strings -----------------------------------------------------------------------------------


def test_scan_stops_at_the_earliest_stop_string() -> None:
    scan = scan_for_stop("answer: 42\nEND and ###", ["###", "\nEND"])
    assert (scan.emit, scan.held, scan.stopped) == ("answer: 42", "", True)


def test_scan_holds_back_a_possible_stop_string_start() -> None:
    scan = scan_for_stop("The answer\n\nUs", ["\n\nUser:"])
    assert (scan.emit, scan.held, scan.stopped) == ("The answer", "\n\nUs", False)


def test_scan_holds_the_longest_pending_prefix_among_stops() -> None:
    scan = scan_for_stop("abc<|im", ["<|im_end|>", "m<"])
    assert (scan.emit, scan.held) == ("abc", "<|im")


def test_scan_emits_everything_when_nothing_could_start_a_stop() -> None:
    assert scan_for_stop("plain text", ["STOP"]) == scan_for_stop("plain text", [])
    assert scan_for_stop("plain text", ["STOP"]).emit == "plain text"


def test_filter_never_shows_a_stop_string_split_over_tokens() -> None:
    stop_filter = StopStringFilter(["\n\nUser:"])
    pieces = ["Sure", ".\n", "\nUs", "er", ":", " more"]
    emitted = [stop_filter.feed(p) for p in pieces]
    assert emitted == ["Sure", ".", "", "", "", ""]
    assert stop_filter.stopped
    assert stop_filter.flush() == ""


def test_filter_releases_held_text_when_it_turns_out_not_to_be_a_stop() -> None:
    stop_filter = StopStringFilter(["\n\nUser:"])
    assert stop_filter.feed("a\n") == "a"
    assert stop_filter.feed("\nU") == ""
    assert stop_filter.feed("nits") == "\n\nUnits"
    assert stop_filter.feed("\n") == ""
    assert not stop_filter.stopped
    assert stop_filter.flush() == "\n"


@pytest.mark.parametrize("seed", range(20))
def test_filter_output_is_the_text_before_the_stop_for_any_tokenisation(seed: int) -> None:
    rng = random.Random(seed)
    before, stop, after = "Grüße, 世界!\nline <tag", "</tag>", " tail </tag> again"
    text = before + stop + after
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 10)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]

    stop_filter = StopStringFilter(["</tag>", "<|im_end|>"])
    shown = "".join(stop_filter.feed(p) for p in pieces) + stop_filter.flush()

    assert shown == before
    assert stop_filter.stopped


def test_filter_without_stops_passes_text_through() -> None:
    stop_filter = StopStringFilter(["", ""])
    assert stop_filter.feed("a\n\n") == "a\n\n"
    assert stop_filter.flush() == ""


# -- logprobs -----------------------------------------------------------------------------------------


def test_token_logprob_matches_the_definition() -> None:
    logits = np.array([1.0, 2.0, 0.5, -3.0], dtype=np.float32)
    normaliser = math.log(sum(math.exp(x) for x in logits.tolist()))
    for token in range(4):
        assert token_logprob(logits, token) == pytest.approx(float(logits[token]) - normaliser, abs=1e-6)


def test_token_logprobs_form_a_distribution_and_are_stable_for_large_logits() -> None:
    rng = np.random.default_rng(0)
    vocabulary = 8_192  # a vocabulary's worth of logits: the sum below takes one log-softmax per token
    logits = (rng.standard_normal(vocabulary) * 30 + 1e4).astype(np.float32)
    scratch = np.empty_like(logits)
    logprobs = np.array([token_logprob(logits, t, scratch) for t in range(0, vocabulary, 7)])
    assert np.all(np.isfinite(logprobs)) and np.all(logprobs <= 0)
    every = np.array([token_logprob(logits, t, scratch) for t in range(vocabulary)])
    assert np.exp(every.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-4)


def test_token_logprob_leaves_the_logits_untouched() -> None:
    logits = np.array([3.0, 1.0, 2.0], dtype=np.float32)
    token_logprob(logits, 0, np.empty_like(logits))
    assert logits.tolist() == [3.0, 1.0, 2.0]
