"""Bench data: loaders for GSM8K, SQuAD v1.1 and a generic JSONL format, seeded sampling, and the
exact prompts each item is sent with.

A malformed file stops the bench with the file, the place (JSON line number, or the JSON path in a
SQuAD file) and the problem, rather than skipping records and skewing the results.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from router.domain.scoring import NUMERIC, TEXT, choose_method, gsm8k_gold, parse_number

PathLike = Union[str, Path]

GSM8K = "gsm8k"
SQUAD = "squad"
SQUAD_PASSAGE = "squad_passage"  # SQuAD asked with its passage: the reading task of the arbitration issues
GENERIC = "jsonl"

# The repository sits beside ../shared; found from this file so the bench runs from any directory.
_REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS: Mapping[str, Path] = MappingProxyType({
    GSM8K: _REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl",
    SQUAD_PASSAGE: _REPO_ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1-partA.json",
    SQUAD: _REPO_ROOT.parent / "shared" / "data" / "squad" / "dev-v1.1-partA.json",
})

SYSTEM_PROMPT = "You are a helpful assistant."

# The user-turn templates, recorded verbatim in every summary. SQuAD is asked closed book: the
# non-retrieval modes get the bare question, and retrieval modes bring the passage themselves.
PROMPTS: Mapping[str, str] = MappingProxyType({
    "system": SYSTEM_PROMPT,
    GSM8K: (
        "{question}\n"
        "Solve it step by step. On the last line write the final answer as '#### <number>'."
    ),
    SQUAD: (
        "Answer the question with a short phrase. Reply with the answer only.\n"
        "Question: {question}"
    ),
    SQUAD_PASSAGE: (
        "Answer the question with the shortest span copied from the passage. "
        "Reply with the span only.\n"
        "Passage: {context}\n"
        "Question: {question}"
    ),
    "generic_with_passage": (
        "Answer the question with the shortest span copied from the passage. "
        "Reply with the span only.\n"
        "Passage: {context}\n"
        "Question: {question}"
    ),
    "generic_closed_book": (
        "Answer the question with a short phrase. Reply with the answer only.\n"
        "Question: {question}"
    ),
})

# The built-in demo sample: small enough for two CPU cores, both scoring methods represented. It is drawn
# once from the shared data with DEMO_SEED and committed (demo_sample.jsonl), so `make run` needs no ../shared.
DEMO_GSM8K_ITEMS = 8
DEMO_SQUAD_ITEMS = 24
DEMO_SEED = 0
DEMO_SAMPLE = Path(__file__).with_name("demo_sample.jsonl")


@dataclass(frozen=True)
class BenchItem:
    dataset: str
    item_id: str
    question: str
    golds: tuple[str, ...]
    context: Optional[str]
    scoring: str  # "numeric" | "text"
    # Items that must fall on the same side of a train/test split (a SQuAD article). Not part of an
    # item's identity: two loads of one item are equal whether they knew its article or not.
    group: str = field(default="", compare=False)


class DatasetError(ValueError):
    """A malformed data file; str() reads "<path>:<where>: <problem>"."""

    def __init__(self, path: PathLike, where: Union[int, str], problem: str) -> None:
        super().__init__(f"{path}:{where}: {problem}")
        self.path = str(path)
        self.where = where
        self.problem = problem


def _json_lines(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; the line number is 1-based."""
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, line_number, f"bad JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise DatasetError(path, line_number,
                                   f"expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def _required_text(record: Mapping[str, Any], key: str, path: PathLike,
                   where: Union[int, str]) -> str:
    if key not in record:
        raise DatasetError(path, where, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise DatasetError(path, where,
                           f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(path, where, f"field {key!r} is empty")
    return value


def load_gsm8k(path: PathLike) -> list[BenchItem]:
    """GSM8K JSONL (`question`, `answer` ending in '#### N'); item ids are the record's `id` when it has
    one (a subset keeps the ids of the file it was cut from), else "gsm8k-<line>"; an id used twice is refused."""
    items = []
    seen_ids: set[str] = set()
    for line_number, record in _json_lines(path):
        question = _required_text(record, "question", path, line_number)
        answer = _required_text(record, "answer", path, line_number)
        try:
            gold = gsm8k_gold(answer)
        except ValueError as exc:
            raise DatasetError(path, line_number, str(exc)) from None
        if parse_number(gold) is None:
            raise DatasetError(path, line_number, f"GSM8K gold {gold!r} is not a number")
        item_id = _required_text(record, "id", path, line_number) if "id" in record else f"gsm8k-{line_number}"
        if item_id in seen_ids:
            raise DatasetError(path, line_number, f"id {item_id!r} is used twice")
        seen_ids.add(item_id)
        items.append(BenchItem(dataset=GSM8K, item_id=item_id, question=question,
                               golds=(gold,), context=None, scoring=NUMERIC))
    return items


def _squad_list(node: Any, key: str, path: PathLike, where: str) -> list[Any]:
    if not isinstance(node, dict):
        raise DatasetError(path, where, f"expected a JSON object, got {type(node).__name__}")
    if key not in node:
        raise DatasetError(path, where, f"missing field {key!r}")
    value = node[key]
    if not isinstance(value, list):
        raise DatasetError(path, f"{where}.{key}" if where else key,
                           f"expected a list, got {type(value).__name__}")
    return value


def load_squad_with_passage(path: PathLike) -> list[BenchItem]:
    """SQuAD asked with its passage; `group` is the article, so a split keeps each article on one side."""
    return [BenchItem(dataset=SQUAD_PASSAGE, item_id=item.item_id, question=item.question, golds=item.golds,
                      context=item.context, scoring=item.scoring, group=item.group)
            for item in load_squad(path)]


def load_squad(path: PathLike) -> list[BenchItem]:
    """SQuAD v1.1 JSON; item ids are the question ids, context is the passage.

    Errors name the JSON path of the offending node, e.g. `data[3].paragraphs[0].qas[7]`.
    """
    try:
        with open(path, encoding="utf-8") as source:
            document = json.load(source)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, exc.lineno, f"bad JSON: {exc.msg}") from None
    items = []
    for a, article in enumerate(_squad_list(document, "data", path, "")):
        article_at = f"data[{a}]"
        for p, paragraph in enumerate(_squad_list(article, "paragraphs", path, article_at)):
            paragraph_at = f"{article_at}.paragraphs[{p}]"
            qas = _squad_list(paragraph, "qas", path, paragraph_at)
            context = _required_text(paragraph, "context", path, paragraph_at)
            for q, qa in enumerate(qas):
                qa_at = f"{paragraph_at}.qas[{q}]"
                answers = _squad_list(qa, "answers", path, qa_at)
                question = _required_text(qa, "question", path, qa_at)
                item_id = _required_text(qa, "id", path, qa_at)
                golds = _squad_golds(answers, path, qa_at)
                if not golds:
                    raise DatasetError(path, qa_at, "no gold answers")
                items.append(BenchItem(dataset=SQUAD, item_id=item_id, question=question,
                                       golds=golds, context=context, scoring=TEXT,
                                       group=f"{SQUAD}:{article.get('title', article_at)}"))
    return items


def _squad_golds(answers: list[Any], path: PathLike, qa_at: str) -> tuple[str, ...]:
    golds = []
    for n, answer in enumerate(answers):
        answer_at = f"{qa_at}.answers[{n}]"
        if not isinstance(answer, dict):
            raise DatasetError(path, answer_at,
                               f"expected a JSON object, got {type(answer).__name__}")
        golds.append(_required_text(answer, "text", path, answer_at))
    return tuple(dict.fromkeys(golds))  # repeated golds add nothing to a max over golds


def load_generic(path: PathLike) -> list[BenchItem]:
    """Generic JSONL: `question`, then `answer` (a string) or `answers` (a list of strings), and
    optionally `context`, `id` and `scoring` ("numeric" | "text"; by default numeric when every
    answer is a number). The dataset is named after the file's stem."""
    dataset = Path(path).stem
    items = []
    first_seen_at: dict[str, int] = {}
    for line_number, record in _json_lines(path):
        question = _required_text(record, "question", path, line_number)
        golds = _generic_golds(record, path, line_number)
        context = record.get("context")
        if context is not None and not isinstance(context, str):
            raise DatasetError(path, line_number,
                               f"field 'context' must be a string, got {type(context).__name__}")
        scoring = record.get("scoring", choose_method(golds))
        if scoring not in (NUMERIC, TEXT):
            raise DatasetError(path, line_number,
                               f"field 'scoring' must be 'numeric' or 'text', got {scoring!r}")
        if scoring == NUMERIC and any(parse_number(gold) is None for gold in golds):
            raise DatasetError(path, line_number, "numeric scoring needs numeric answers")
        item_id = record.get("id", f"{dataset}-{line_number}")
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
            raise DatasetError(path, line_number, "field 'id' must be a string or an integer")
        if str(item_id) in first_seen_at:  # results are keyed by id: a repeat would overwrite its twin
            raise DatasetError(path, line_number,
                               f"id {str(item_id)!r} was already used on line {first_seen_at[str(item_id)]}")
        first_seen_at[str(item_id)] = line_number
        items.append(BenchItem(dataset=dataset, item_id=str(item_id), question=question,
                               golds=golds, context=context or None, scoring=scoring))
    return items


def _generic_golds(record: Mapping[str, Any], path: PathLike, line_number: int) -> tuple[str, ...]:
    has_answer, has_answers = "answer" in record, "answers" in record
    if has_answer == has_answers:
        raise DatasetError(path, line_number, "needs exactly one of 'answer' or 'answers'")
    if has_answer:
        return (_required_text(record, "answer", path, line_number),)
    answers = record["answers"]
    if not isinstance(answers, list) or not answers:
        raise DatasetError(path, line_number, "field 'answers' must be a non-empty list of strings")
    if not all(isinstance(answer, str) and answer.strip() for answer in answers):
        raise DatasetError(path, line_number, "field 'answers' must hold non-empty strings only")
    return tuple(answers)


def load_dataset(spec: str) -> list[BenchItem]:
    """`gsm8k`, `squad` or `squad_passage` (the shared data), or `gsm8k:PATH`, `squad:PATH`,
    `squad_passage:PATH`, `jsonl:PATH`."""
    kind, _, path = spec.partition(":")
    loaders = {GSM8K: load_gsm8k, SQUAD: load_squad, SQUAD_PASSAGE: load_squad_with_passage,
               GENERIC: load_generic}
    if kind not in loaders:
        raise ValueError(f"unknown dataset {spec!r}; use gsm8k, squad, squad_passage, gsm8k:PATH, "
                         "squad:PATH, squad_passage:PATH or jsonl:PATH")
    if not path:
        if kind not in DEFAULT_PATHS:
            raise ValueError(f"dataset {kind!r} needs a path: {kind}:PATH")
        if not DEFAULT_PATHS[kind].exists():
            raise ValueError(f"the shared {kind} data is not at {DEFAULT_PATHS[kind]} (a checkout without "
                             f"../shared beside it); give its file as {kind}:PATH")
        path = str(DEFAULT_PATHS[kind])
    return loaders[kind](path)


def sample(items: Sequence[BenchItem], *, limit: Optional[int], seed: int) -> list[BenchItem]:
    """A seeded shuffle cut to `limit` (None: all). The same seed gives the same order, and a
    smaller limit gives a prefix of a larger one, so short runs are comparable with long ones."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    chosen = order if limit is None else order[:limit]
    return [items[index] for index in chosen]


def prompt_key(item: BenchItem) -> str:
    """Which template in PROMPTS the item's user turn uses."""
    if item.dataset == GSM8K:
        return GSM8K
    if item.dataset in (SQUAD, SQUAD_PASSAGE):
        return item.dataset
    return "generic_with_passage" if item.context else "generic_closed_book"


def user_turn(item: BenchItem) -> str:
    return PROMPTS[prompt_key(item)].format(question=item.question, context=item.context or "")


def build_messages(item: BenchItem) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_turn(item)},
    ]


def draw_demo_items() -> list[BenchItem]:
    """The demo sample as drawn from the shared data: 8 GSM8K problems, then 24 SQuAD questions."""
    return (sample(load_dataset(GSM8K), limit=DEMO_GSM8K_ITEMS, seed=DEMO_SEED)
            + sample(load_dataset(SQUAD), limit=DEMO_SQUAD_ITEMS, seed=DEMO_SEED))


def item_to_json(item: BenchItem) -> dict[str, Any]:
    return {"dataset": item.dataset, "id": item.item_id, "question": item.question, "golds": list(item.golds),
            "context": item.context, "scoring": item.scoring}


def load_items(path: PathLike) -> list[BenchItem]:
    """Items saved one JSON object a line by `item_to_json`, ids and scoring kept as drawn."""
    items = []
    for line_number, record in _json_lines(path):
        golds = record.get("golds")
        if not isinstance(golds, list) or not golds or not all(isinstance(g, str) and g for g in golds):
            raise DatasetError(path, line_number, "field 'golds' must be a non-empty list of strings")
        context = record.get("context")
        if context is not None and not isinstance(context, str):
            raise DatasetError(path, line_number, "field 'context' must be a string or null")
        scoring = record.get("scoring")
        if scoring not in (NUMERIC, TEXT):
            raise DatasetError(path, line_number, f"field 'scoring' must be 'numeric' or 'text', got {scoring!r}")
        items.append(BenchItem(dataset=_required_text(record, "dataset", path, line_number),
                               item_id=_required_text(record, "id", path, line_number),
                               question=_required_text(record, "question", path, line_number),
                               golds=tuple(golds), context=context, scoring=scoring))
    return items


def demo_items() -> list[BenchItem]:
    """The built-in demo sample (see DEMO_SAMPLE): 8 GSM8K problems, then 24 SQuAD questions."""
    return load_items(DEMO_SAMPLE)


TEST_SHARE = 0.25  # of items (of SQuAD articles) in the test split


def split_of(item: BenchItem) -> str:
    """"train" or "test", fixed by the item's group (a SQuAD article) or else its id: the same item
    lands on the same side in every run, and no article is split across the two."""
    key = item.group or f"{item.dataset}:{item.item_id}"
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:4], "big") / 2**32
    return "test" if bucket < TEST_SHARE else "train"
