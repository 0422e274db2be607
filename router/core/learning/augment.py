"""ICL-augmented training data: the cloud rewrites each training example into new ones the edge can learn from.

Fine-tuning on a teacher's augmentations of the training examples (rephrasings and the like) is reported to
generalise better than fine-tuning on the examples alone (seed 004). Here the cloud writes them, and the cloud
checks them, so nothing the teacher cannot itself answer is kept:

| task | the cloud is asked | kept when | the new example |
|---|---|---|---|
| maths (a step-by-step problem; its answer reaches N) | to retell the problem in other words, numbers kept | the retold problem keeps every number, and the cloud's own solution of it reaches N | the retold problem, that solution |
| reading (a question about reference passages) | for another question about the same passages with the same answer | its answer to the new question matches the old answer (token F1 >= min_f1), a span of the passages | the new question, the old answer |

"Reaches N": the answer's final number, as the bench scores GSM8K (router/domain/scoring.py: '#### N', else a boxed
or last number). The cloud seldom writes '#### N' itself, and the plain training set is chosen by the same rule,
so the two sets teach the same format. Other examples are passed over (counted). Each question to the cloud
is one `ask`: the door sends it to the daemon as a CLOUD_ONLY request, so it is priced, budgeted and recorded
like any other request.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from router.domain.errors import ErrorKind, RouterError
from router.domain.scoring import final_number, normalize_answer, numbers_equal, token_f1

MATHS = "maths"
READING = "reading"
MATHS_INSTRUCTION = "Solve it step by step. On the last line write the final answer as '#### <number>'."
PASSAGES_MARK = "<<<passage"
QUESTION_LINE = re.compile(r"^Question:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
DEFAULT_MIN_F1 = 0.8  # the cloud's answer to the new question must be the old answer, give or take a word
REPHRASE_MAX_TOKENS = 300
ANSWER_MAX_TOKENS = {MATHS: 400, READING: 32}

RETELL_MATHS = ("Retell the following maths word problem in different words: other names, objects and sentence "
                "order where it reads naturally. Keep every number, every quantity and the question asked exactly "
                "as they are. Reply with the retold problem only.\n\nProblem:\n{problem}")
REASK_READING = ("Here are reference passages and a question about them, with its answer. Write one different "
                 "question about the passages that has exactly the same answer. Do not put the answer in the "
                 "question. Reply with the new question only.\n\n{passages}\n\nQuestion: {question}\n"
                 "Answer: {answer}")

Ask = Callable[[list[dict[str, str]], int, Optional[int]], str]  # (messages, max_tokens, seed) -> the cloud's text
Messages = list[dict[str, str]]


class AugmentInputError(RouterError):
    """A training row that is not a chat example (messages ending in the assistant's answer)."""

    kind = ErrorKind.INVALID_REQUEST


@dataclass(frozen=True)
class Example:
    messages: Messages  # the prompt, system turn included
    answer: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Example":
        messages = row.get("messages")
        if (not isinstance(messages, list) or len(messages) < 2 or not all(isinstance(m, dict) for m in messages)
                or messages[-1].get("role") != "assistant" or messages[-2].get("role") != "user"
                or not all(isinstance(m.get("content"), str) for m in messages)):
            raise AugmentInputError("a training row needs messages ending in a user turn and the assistant's answer")
        return cls([dict(m) for m in messages[:-1]], messages[-1]["content"])

    @property
    def user(self) -> str:
        return self.messages[-1]["content"]

    def with_user(self, user: str) -> Messages:
        return [*self.messages[:-1], {"role": "user", "content": user}]

    def row(self) -> dict[str, Any]:
        return {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}


def _contains_words(text: str, words: str) -> bool:
    """Whether `words` occur in `text` as whole words, after SQuAD's normalisation ("art" is not in "party")."""
    return f" {normalize_answer(words)} " in f" {normalize_answer(text)} "


def task_of(example: Example) -> Optional[str]:
    """maths, reading, or None (not an example this module knows how to rewrite). A reading example whose
    answer is not in its passages is None too: no new question about them can be checked against it."""
    if PASSAGES_MARK in example.user:
        questions = list(QUESTION_LINE.finditer(example.user))
        if not questions or not normalize_answer(example.answer):
            return None
        return READING if _contains_words(example.user[:questions[-1].start()], example.answer) else None
    if example.user.rstrip().endswith(MATHS_INSTRUCTION) and final_number(example.answer) is not None:
        return MATHS
    return None


@dataclass(frozen=True)
class Outcome:
    kept: Optional[dict[str, Any]]  # the new training row, or None
    reason: str  # "kept", or why not
    rewrite: str = ""  # what the cloud wrote, kept or not: the record shows why a check refused it


def _clean(text: str) -> str:
    text = text.strip().strip('"').strip()
    for prefix in ("Retold problem:", "Problem:", "New question:", "Question:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix):].strip()
    return text


def _numbers(text: str) -> set[float]:
    return {float(number) for number in re.findall(r"\d+(?:\.\d+)?", text.replace(",", ""))}


def retold_problem_fault(problem: str, retold: str) -> Optional[str]:
    """Why `retold` cannot stand for `problem`, or None."""
    if not retold:
        return "empty rewrite"
    if normalize_answer(retold) == normalize_answer(problem):
        return "the rewrite repeats the original"
    if not _numbers(problem) <= _numbers(retold):  # "2 workers" for "two workers" is fine; a lost number is not
        return "the rewrite lost a number"
    return None


def solution_fault(answer: str, solution: str) -> Optional[str]:
    """Why the cloud's `solution` of a retold problem does not teach the original's `answer`, or None."""
    gold, reached = final_number(answer), final_number(solution)
    if gold is None or reached is None or not numbers_equal(gold, reached):
        return "the cloud's solution of the rewrite reached another number"
    return None


def new_question_fault(passages: str, question: str, answer: str, new_question: str) -> Optional[str]:
    """Why `new_question` cannot be asked in place of `question` with the same `answer`, or None."""
    if not new_question:
        return "empty rewrite"
    if normalize_answer(new_question) == normalize_answer(question):
        return "the rewrite repeats the original"
    if _contains_words(new_question, answer):
        return "the new question gives the answer away"
    if not _contains_words(passages, answer):
        return "the answer is not a span of the passages"
    return None


def reading_answer_fault(reply: str, answer: str, min_f1: float) -> Optional[str]:
    if token_f1(reply, answer) < min_f1:
        return "the cloud's answer to the new question is another answer"
    return None


def augment_maths(example: Example, ask: Ask, *, seed: Optional[int]) -> Outcome:
    problem = example.user.rstrip()[:-len(MATHS_INSTRUCTION)].rstrip()
    retold = _clean(ask([{"role": "user", "content": RETELL_MATHS.format(problem=problem)}],
                        REPHRASE_MAX_TOKENS, seed))
    fault = retold_problem_fault(problem, retold)
    if fault:
        return Outcome(None, fault, retold)
    messages = example.with_user(f"{retold}\n{MATHS_INSTRUCTION}")
    solution = ask(messages, ANSWER_MAX_TOKENS[MATHS], None).strip()
    fault = solution_fault(example.answer, solution)
    return Outcome(None, fault, retold) if fault else Outcome(Example(messages, solution).row(), "kept", retold)


def augment_reading(example: Example, ask: Ask, *, seed: Optional[int], min_f1: float = DEFAULT_MIN_F1) -> Outcome:
    user = example.user
    match = list(QUESTION_LINE.finditer(user))[-1]
    question, answer = match.group(1), example.answer.strip()
    passages = user[:match.start()].rstrip()
    asked = REASK_READING.format(passages=passages, question=question, answer=answer)
    new_question = _clean(ask([{"role": "user", "content": asked}], REPHRASE_MAX_TOKENS, seed))
    new_question = new_question.splitlines()[0].strip() if new_question else ""
    fault = new_question_fault(passages, question, answer, new_question)
    if fault:
        return Outcome(None, fault, new_question)
    messages = example.with_user(user[:match.start()] + f"Question: {new_question}" + user[match.end():])
    fault = reading_answer_fault(ask(messages, ANSWER_MAX_TOKENS[READING], None), answer, min_f1)
    return Outcome(None, fault, new_question) if fault else Outcome(Example(messages, answer).row(), "kept",
                                                                     new_question)


def augment(example: Example, ask: Ask, *, variant: int, min_f1: float = DEFAULT_MIN_F1) -> Outcome:
    """One augmentation of `example` (variant k asks with seed k, so variants differ and reruns agree)."""
    task = task_of(example)
    if task == MATHS:
        return augment_maths(example, ask, seed=variant)
    if task == READING:
        return augment_reading(example, ask, seed=variant, min_f1=min_f1)
    return Outcome(None, "neither a maths nor a reading example")


def row_key(row: Mapping[str, Any]) -> str:
    """A training row's identity for resuming: the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def source_rows(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The training set's rows; AugmentInputError names the first line that is no chat example."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            Example.from_row(row)
        except (json.JSONDecodeError, AugmentInputError, AttributeError) as exc:
            raise AugmentInputError(f"line {number}: {exc}") from None
        rows.append(row)
    return rows
