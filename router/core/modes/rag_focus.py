"""Focused reading: the few sentences of the retrieved passages that best match the question.

Why: the 0.5B edge reads a short context far better than three whole passages. It tends to answer from
whichever passage it read last, or with a whole sentence, when three 200-token passages compete; given
only the sentences that share the most words with the question it picks the right span much more often
(bench/results/rag-reader/summary.md has the A/B). The retrieval's order still counts: sentences of the
best-ranked passage get a small bonus, so a tie goes to the passage the Info service trusted most.

Pure functions; no model, no I/O. Sentences are cut and words compared as the Info service's keyword
index does (cloud/info/chunking.py, cloud/info/analysis.py), so that "ports" matches "port".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from cloud.info.analysis import analyze
from cloud.info.chunking import sentence_spans
from router.domain.types import Passage

# What a sentence of the best-ranked passage gains over an equal one elsewhere: half a shared word, so it
# only breaks ties and never outweighs a word the question and the sentence really share.
TOP_PASSAGE_BONUS = 0.5
# Between two chosen sentences that are not neighbours in their passage.
GAP = " … "


@dataclass(frozen=True)
class _Sentence:
    score: float
    rank: int  # the passage's rank, best first
    position: int  # the sentence's place in its passage
    text: str


def focus_passages(question: str, passages: Sequence[Passage], sentences: int) -> tuple[Passage, ...]:
    """The best `sentences` sentences of `passages` (ranked best first) for `question`, kept as passages:
    each passage that gave a sentence comes back with only its chosen sentences, in their order, in the
    retrieval's order (its `start`/`end` still span the whole passage). Passages that gave none are left
    out. `sentences` <= 0 leaves the passages whole."""
    if sentences <= 0 or not passages:
        return tuple(passages)
    wanted = set(analyze(question, stem=True))
    candidates, seen = [], set()
    for rank, passage in enumerate(passages):
        for position, text in enumerate(_sentences(passage.text)):
            # Neighbouring chunks of a document share whole sentences (the chunker's overlap): a sentence
            # counts once, in the best-ranked passage that has it, so that N places hold N sentences.
            if text in seen:
                continue
            seen.add(text)
            score = len(wanted & set(analyze(text, stem=True))) + (TOP_PASSAGE_BONUS if rank == 0 else 0.0)
            candidates.append(_Sentence(score=score, rank=rank, position=position, text=text))
    # Python's sort is stable: among equal scores the better-ranked passage, then the earlier sentence, wins.
    chosen = sorted(candidates, key=lambda s: -s.score)[:sentences]
    focused = []
    for rank, passage in enumerate(passages):
        mine = sorted((s for s in chosen if s.rank == rank), key=lambda s: s.position)
        if mine:
            focused.append(dataclasses.replace(passage, text=_joined(mine)))
    return tuple(focused)


def _sentences(text: str) -> list[str]:
    return [text[start:end].strip() for start, end in sentence_spans(text) if text[start:end].strip()]


def _joined(sentences: Sequence[_Sentence]) -> str:
    parts = [sentences[0].text]
    for previous, current in zip(sentences, sentences[1:]):
        parts.append(" " if current.position == previous.position + 1 else GAP)
        parts.append(current.text)
    return "".join(parts)
