"""Can the fusion or the re-ranker's weights rescue questions that do not copy the passage's words?

    .venv/bin/python -m bench.retrieval_paraphrase_sweep --out bench/results/retrieval/paraphrase_sweep.md

Ingests SQuAD dev part A into a scratch index (cloud.info's own parser, chunking and index, the project's
USE encoder), then retrieves the paraphrased questions of `bench/results/retrieval/paraphrased.jsonl` and
their originals under a grid of the retrieval weights that concern the dense side: the dense weight in the
fusion, and the re-ranker's passage and sentence similarity. Recall as in bench/retrieval_tuning.py (a
top-k passage holds a gold answer). The grid is read, not tuned: every row is on the same 293 questions,
so a row that did better here would still need a held-out check before becoming a default.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType
from typing import Optional, Sequence

from bench.datasets import SQUAD
from bench.ingest import documents_for
from bench.retrieval import read_paraphrased
from bench.retrieval_tuning import KS, CachingEmbedder, Question, found_at, machine, recall
from cloud.info import Caller, IndexSettings, InfoIndex

GRID = MappingProxyType({"dense_weight": (0.3, 0.6, 1.0), "rerank_dense": (4.0, 8.0),
                         "rerank_sentence_dense": (3.0, 6.0)})
EVERYONE = Caller(user="bench", groups=())


def measure(index: InfoIndex, questions: Sequence[Question]) -> tuple[float, ...]:
    return recall([found_at([p.text for p in index.retrieve(q.text, k=max(KS), caller=EVERYONE)], q)
                   for q in questions])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paraphrased", type=Path, default=Path("bench/results/retrieval/paraphrased.jsonl"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval/paraphrase_sweep.md"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "hybrid-router-retrieval-cache")
    args = parser.parse_args(argv)
    originals, paraphrases = read_paraphrased(args.paraphrased)
    embedder = CachingEmbedder(args.cache, threads=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="paraphrase-sweep-") as scratch:
        directory = Path(scratch) / "index"
        index = InfoIndex.open(directory, embedder=embedder, settings=IndexSettings())
        index.ingest(documents_for(SQUAD))
        index.close()
        for values in itertools.product(*GRID.values()):
            settings = dataclasses.replace(IndexSettings(), **dict(zip(GRID, values)))
            index = InfoIndex.open(directory, embedder=embedder, settings=settings)
            rows.append({"settings": dict(zip(GRID, values)), "paraphrased": measure(index, paraphrases),
                         "original": measure(index, originals)})
            index.close()
            print(rows[-1], file=sys.stderr, flush=True)
    embedder.save()
    default = {name: getattr(IndexSettings(), name) for name in GRID}
    lines = ["# Paraphrased questions: the dense side's weights", "",
             f"`python -m bench.retrieval_paraphrase_sweep` on {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
             f"{len(paraphrases)} questions, {json.dumps(machine())}.", "",
             "| dense_weight | rerank_dense | rerank_sentence_dense | paraphrased R@1 / R@3 / R@5 | "
             "as first worded R@1 / R@3 / R@5 |", "|---|---|---|---|---|"]
    for row in rows:
        mark = " (default)" if row["settings"] == default else ""
        cells = [f"{row['settings'][name]:g}" for name in GRID]
        lines.append(f"| {' | '.join(cells)}{mark} | {' / '.join(f'{v:.3f}' for v in row['paraphrased'])} | "
                     f"{' / '.join(f'{v:.3f}' for v in row['original'])} |")
    best = max(rows, key=lambda r: r["paraphrased"][0] + r["paraphrased"][1])
    lines += ["", f"Best paraphrased R@1 + R@3: {best['settings']} at "
                  f"{' / '.join(f'{v:.3f}' for v in best['paraphrased'])}. Targets: R@1 >= 0.85, R@3 >= 0.95."]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"grid": dict(GRID), "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
