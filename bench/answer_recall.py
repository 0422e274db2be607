"""Retrieval recall as the issue words it: does a retrieved passage contain a gold answer?

    .venv/bin/python -m bench.answer_recall bench/results/rag --index bench/out/info-index

The bench's own retrieval table asks whether the item's own paragraph came back (`gold_rank`); this asks
whether any passage among the first k retrieved holds one of the item's gold answers, as whole words after
SQuAD normalisation (bench/results/retrieval matches lower-cased text, a little more loosely). The passages' texts come from the Info index the run used (its files,
read with cloud.info's store), since a result carries only the passage ids. Writes answer_recall.md
beside the results.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from cloud.info.store import IndexDirectory
from router.domain.jsonl import split_lines
from router.domain.scoring import normalize_answer

KS = (1, 3)


def passage_texts(index_dir: Path) -> dict[str, str]:
    """Normalised text by passage id (f"{document_id}#{chunk_index}")."""
    snapshot = IndexDirectory(index_dir).load()
    if snapshot is None:
        raise SystemExit(f"no index in {index_dir}")
    return {f"{c.document_id}#{c.chunk_index}": normalize_answer(c.text) for c in snapshot.chunks}


def answer_found_at(record: Mapping, texts: Mapping[str, str]) -> list[bool]:
    """Per k in KS: whether one of the first k retrieved passages holds a gold answer."""
    # Whole words only: "us" (from "U.S.") must not be found inside "campus", nor "5" inside "50".
    golds = [f" {normalize_answer(g)} " for g in record.get("gold") or [] if normalize_answer(g)]
    ids = list(record.get("retrieved_ids") or [])
    first = next((rank for rank, pid in enumerate(ids)
                  if any(g in f" {texts.get(pid, '')} " for g in golds)), None)
    return [first is not None and first < k for k in KS]


def recall_by_mode(records: Iterable[Mapping], texts: Mapping[str, str]) -> dict[str, dict]:
    by_mode: dict[str, list[list[bool]]] = {}
    searched: dict[str, int] = {}
    for record in records:
        hits = by_mode.setdefault(record["mode"], [])
        hits.append(answer_found_at(record, texts))
        searched[record["mode"]] = searched.get(record["mode"], 0) + bool(record.get("retrieved_ids"))
    return {mode: {"n": len(hits), "retrieved": searched[mode],
                   **{f"R@{k}": sum(h[i] for h in hits) / len(hits) for i, k in enumerate(KS)}}
            for mode, hits in by_mode.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a bench --out directory (its results.jsonl)")
    parser.add_argument("--index", type=Path, required=True, help="the Info index directory the run used")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in split_lines((args.run / "results.jsonl").read_text(encoding="utf-8")) if line.strip()]
    retrieval_modes = {r["mode"] for r in records if r.get("retrieved_ids")}
    table = recall_by_mode((r for r in records if r["mode"] in retrieval_modes), passage_texts(args.index))
    lines = ["# Retrieval recall: does a retrieved passage contain a gold answer?", "",
             f"`python -m bench.answer_recall {args.run} --index {args.index}`. A request that retrieved nothing "
             "counts as a miss.", "",
             "| mode | n | requests that retrieved | " + " | ".join(f"R@{k}" for k in KS) + " |",
             "|---|---|---|" + "---|" * len(KS)]
    for mode, row in sorted(table.items()):
        lines.append(f"| {mode} | {row['n']} | {row['retrieved']} | "
                     + " | ".join(f"{row[f'R@{k}']:.3f}" for k in KS) + " |")
    (args.run / "answer_recall.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
