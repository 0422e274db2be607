"""Does an adapter make the edge better? The edge answers held-out examples with and without it, and each
answer is scored against the example's reference (the cloud's good answer, or a user's correction).

Examples are grouped by task, read from the reference: `maths` when the reference ends in a number
(scored by that number, router/domain/scoring.py), `reading` otherwise (scored by token F1). The task
with the most training examples is the adapter's target; every other task is "elsewhere", where the
adapter may lose at most `max_loss`. An adapter is installed only if it wins on its target by more than
`min_gain` and loses no more than `max_loss` elsewhere (issue 30's rule: at most 2 points).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence

from router.domain.scoring import NUMERIC, TEXT, final_number, score_answer

MATHS, READING = "maths", "reading"
DEFAULT_MIN_GAIN = 0.0
DEFAULT_MAX_LOSS = 0.02
_ANSWER_TOKENS = MappingProxyType({MATHS: 400, READING: 48})  # the bench's budgets: a solution, a short span


def task_of(reference: str) -> str:
    return MATHS if final_number(reference) is not None else READING


def quality(answer: str, reference: str) -> float:
    """1/0 for a maths answer's final number, token F1 for a reading answer."""
    if task_of(reference) == MATHS:
        return float(score_answer(answer, [f"{final_number(reference):g}"], method=NUMERIC).correct)
    return float(score_answer(answer, [reference], method=TEXT).f1 or 0.0)


@dataclass(frozen=True)
class TaskScores:
    examples: int
    base: float
    adapter: float

    @property
    def change(self) -> float:
        return self.adapter - self.base


@dataclass(frozen=True)
class Verdict:
    install: bool
    target: str
    reason: str
    tasks: Mapping[str, TaskScores] = field(default_factory=dict)


def target_task(training_answers: Sequence[str]) -> str:
    counts = Counter(task_of(answer) for answer in training_answers)
    return counts.most_common(1)[0][0] if counts else READING


def verdict(tasks: Mapping[str, TaskScores], target: str, *, min_gain: float = DEFAULT_MIN_GAIN,
            max_loss: float = DEFAULT_MAX_LOSS) -> Verdict:
    if target not in tasks or not tasks[target].examples:
        return Verdict(False, target, f"no held-out {target} example to judge the adapter on", tasks)
    won = tasks[target].change
    if won <= min_gain:
        return Verdict(False, target, f"{target}: {tasks[target].base:.3f} -> {tasks[target].adapter:.3f} "
                                      f"({won:+.3f}), not above the required gain {min_gain:+.3f}", tasks)
    lost = [f"{task} {scores.change:+.3f}" for task, scores in tasks.items()
            if task != target and scores.examples and scores.change < -max_loss]
    if lost:
        return Verdict(False, target, f"{target} {won:+.3f}, but it loses more than {max_loss:.3f} elsewhere: "
                                      f"{', '.join(lost)}", tasks)
    elsewhere = [task for task in tasks if task != target and tasks[task].examples]
    return Verdict(True, target, f"{target} {won:+.3f}" + (
        f"; elsewhere {', '.join(f'{t} {tasks[t].change:+.3f}' for t in elsewhere)}" if elsewhere
        else "; nothing held out elsewhere to check forgetting on"), tasks)


async def answer_all(edge: Any, examples: Sequence[Any]) -> list[str]:
    """The edge's greedy answers, in order (the adapter in use is whatever the edge runs now)."""
    answers = []
    for example in examples:
        stream = edge.stream(list(example.messages), max_tokens=_ANSWER_TOKENS[task_of(example.answer)],
                             temperature=0.0)
        answers.append("".join([delta.text async for delta in stream]))
    return answers


async def compare(edge: Any, adapter: Path, examples: Sequence[Any], *, name: str,
                  scale: float = 1.0) -> dict[str, TaskScores]:
    """Each task's mean quality without and with `adapter` (at the scale the daemon will serve it). Leaves
    the edge on its base model."""
    await edge.use_adapter(None)
    base = await answer_all(edge, examples)
    await edge.use_adapter(adapter, name=name, scale=scale)
    try:
        adapted = await answer_all(edge, examples)
    finally:
        await edge.use_adapter(None)
    by_task: dict[str, list[tuple[float, float]]] = {}
    for example, before, after in zip(examples, base, adapted):
        by_task.setdefault(task_of(example.answer), []).append(
            (quality(before, example.answer), quality(after, example.answer)))
    return {task: TaskScores(examples=len(pairs), base=sum(b for b, _ in pairs) / len(pairs),
                             adapter=sum(a for _, a in pairs) / len(pairs)) for task, pairs in by_task.items()}


def as_table(tasks: Mapping[str, TaskScores], target: Optional[str] = None) -> str:
    lines = [f"{'task':10} {'held out':>8} {'before':>8} {'after':>8} {'change':>8}"]
    for task, scores in sorted(tasks.items()):
        mark = " (target)" if task == target else ""
        lines.append(f"{task:10} {scores.examples:8d} {scores.base:8.3f} {scores.adapter:8.3f} "
                     f"{scores.change:+8.3f}{mark}")
    return "\n".join(lines)
