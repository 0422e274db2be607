"""Training and evaluation sets for teaching the edge (issue 30), from the labelled corpus.

    python -m bench.finetune_data --task reading --out bench/out/finetune/reading.jsonl
    python -m bench.finetune_data --task maths --out bench/out/finetune/maths.jsonl
    python -m bench.finetune_data --task passage --out bench/out/finetune/passage.jsonl
    python -m bench.finetune_data --task reading --split test --eval-out bench/out/finetune/reading-test.jsonl
    python -m bench.finetune_data --task maths --split test --unlabelled 11 --eval-out bench/out/finetune/maths-test.jsonl

Training examples (OpenAI chat JSONL, what `hybrid-router finetune --data` reads) are the cloud's answers
that scored well against the gold answers (`--min-f1`; for maths, a right final number). Each is asked
with the prompt the edge sees in the mode it will serve:
- reading: EDGE_RAG_CLOUD_INFO's reader prompt (router/core/modes/rag_prompt.py), built by the mode's own
  functions around the item's passage, focused to `info.focus_sentences` sentences as the mode does;
- passage: SQuAD with its passage in the bench's span prompt, as the arbitration corpus's mixed workload asks
  it of POST_ARBITRATION (what `improve` would find in a ledger of that traffic);
- maths: the bench's step-by-step prompt, as EDGE_ONLY and the cascades send it.

Only the corpus's train split is used for training (bench/datasets.py `split_of`: by article for SQuAD, so
no article is on both sides). `--eval-out` writes the other split's items: reading questions as the bench's
generic JSONL, asked closed book, so that `python -m bench --dataset jsonl:FILE --ingest squad` evaluates on
questions whose articles no training example came from; maths problems as GSM8K JSONL with their ids, for
`python -m bench --dataset gsm8k:FILE`. `--unlabelled N` adds split items the corpus never labelled.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from bench.datasets import (DEFAULT_PATHS, GSM8K, SQUAD_PASSAGE, BenchItem, build_messages, load_gsm8k,
                            load_squad_with_passage, split_of)
from router.core.modes.rag_focus import focus_passages
from router.core.modes.rag_prompt import passage_block, rag_messages
from router.domain.config import InfoSettings
from router.domain.types import Passage

CORPUS = Path(__file__).resolve().parent / "results" / "corpus" / "results.jsonl"
# reading: SQuAD in EDGE_RAG_CLOUD_INFO's prompt; passage: SQuAD asked with its passage, as POST_ARBITRATION's
# mixed workload asks it (bench/corpus/README.md); maths: GSM8K.
TASK_DATASET = {"reading": SQUAD_PASSAGE, "passage": SQUAD_PASSAGE, "maths": GSM8K}
PLAIN_PROMPT_TASKS = ("maths", "passage")  # asked as the bench asks them (bench/datasets.py build_messages)


def corpus_rows(path: Path = CORPUS) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The latest labelled record of each item (a rerun's record wins)."""
    rows: dict[tuple[str, str], Mapping[str, Any]] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row.get("error") is None and row.get("cloud_text") is not None:
                rows[(row["dataset"], row["item_id"])] = row
    return rows


def reading_prompt(item: BenchItem, focus_sentences: int, span: bool) -> list[dict[str, str]]:
    """The messages EDGE_RAG_CLOUD_INFO gives the edge for this question, the item's passage retrieved."""
    closed_book = BenchItem(dataset="squad", item_id=item.item_id, question=item.question, golds=item.golds,
                            context=None, scoring=item.scoring)
    messages = build_messages(closed_book)
    passage = Passage(passage_id=f"{item.item_id}#0", document_id=item.group or item.item_id,
                      text=item.context or "", score=1.0)
    reading = focus_passages(item.question, [passage], focus_sentences)
    return rag_messages(messages, [passage_block(i + 1, p) for i, p in enumerate(reading)], span=span)


def examples(task: str, items: Sequence[BenchItem], rows: Mapping[tuple[str, str], Mapping[str, Any]], *,
             split: str, min_f1: float, info: InfoSettings) -> Iterator[dict[str, Any]]:
    dataset = TASK_DATASET[task]
    for item in items:
        row = rows.get((dataset, item.item_id))
        if row is None or split_of(item) != split:
            continue
        good = row.get("cloud_correct") if task == "maths" else (row.get("cloud_f1") or 0.0) >= min_f1
        if not good or not str(row["cloud_text"]).strip():
            continue
        prompt = (build_messages(item) if task in PLAIN_PROMPT_TASKS
                  else reading_prompt(item, info.focus_sentences, info.answer_style == "span"))
        yield {"messages": [*prompt, {"role": "assistant", "content": str(row["cloud_text"]).strip()}]}


def eval_items(task: str, items: Sequence[BenchItem], rows: Mapping[tuple[str, str], Mapping[str, Any]],
               split: str, unlabelled: int = 0) -> Iterator[dict[str, Any]]:
    """The split's labelled items, then up to `unlabelled` of the split's items the corpus never labelled
    (in file order; no training set can hold them either).

    Reading items are the bench's generic JSONL, asked closed book (retrieval brings the passage). Maths
    items are GSM8K JSONL with their ids, so that `--dataset gsm8k:FILE` asks them with GSM8K's
    step-by-step prompt, the prompt the maths examples train on."""
    dataset = TASK_DATASET[task]
    in_split = [item for item in items if split_of(item) == split]
    labelled = [item for item in in_split if (dataset, item.item_id) in rows]
    extra = [item for item in in_split if (dataset, item.item_id) not in rows][:unlabelled]
    for item in (*labelled, *extra):
        if task == "maths":
            yield {"id": item.item_id, "question": item.question, "answer": f"#### {item.golds[0]}"}
        else:
            yield {"id": item.item_id, "question": item.question, "answers": list(item.golds),
                   "scoring": item.scoring}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.finetune_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASK_DATASET), required=True)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--out", type=Path, help="training examples (OpenAI chat JSONL)")
    parser.add_argument("--eval-out", type=Path, help="the split's items, for the bench's --dataset")
    parser.add_argument("--min-f1", type=float, default=0.8, help="reading: the cloud answer's F1 that counts as good")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--unlabelled", type=int, default=0,
                        help="--eval-out: add up to N of the split's items the corpus never labelled")
    args = parser.parse_args(argv)
    if not args.out and not args.eval_out:
        parser.error("give --out, --eval-out or both")
    if args.unlabelled < 0 or (args.unlabelled and not args.eval_out):
        parser.error("--unlabelled takes a count >= 0, with --eval-out")
    rows = corpus_rows(args.corpus)
    dataset = TASK_DATASET[args.task]
    items = (load_gsm8k(DEFAULT_PATHS[GSM8K]) if dataset == GSM8K
             else load_squad_with_passage(DEFAULT_PATHS[SQUAD_PASSAGE]))
    for path, lines in ((args.out, examples(args.task, items, rows, split=args.split, min_f1=args.min_f1,
                                            info=InfoSettings())),
                        (args.eval_out, eval_items(args.task, items, rows, args.split, args.unlabelled))):
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        written = [json.dumps(line) for line in lines]
        path.write_text("".join(f"{line}\n" for line in written))
        print(f"{path}: {len(written)} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
