"""Questions that do not copy the passage's words: held-out SQuAD questions reworded by the cloud model.

    python -m bench.paraphrase --limit 300 --out bench/results/retrieval/paraphrased.jsonl

SQuAD's questions reuse their passage's words, which favours keyword retrieval. This asks the cloud
(CLOUD_ONLY, through the SDK, greedy) to reword each question with other words and another sentence
shape, keeping names and numbers (REWRITE_PROMPT). A rewording that is empty, a copy, or no question
is asked once more at temperature 0.7 and dropped if it fails again. `content_overlap` says how much of
each question's content words survived, and bench/retrieval.py reports it.

The questions are drawn with --seed from the held-out articles of bench/retrieval_tuning.py's split, so
no paraphrase belongs to an article the retrieval settings were tuned on. Resumable: items already in
--out are skipped, and each line is written as it comes.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from bench.datasets import DEFAULT_PATHS, SQUAD
from bench.retrieval_tuning import load_questions, split_articles
from router.client import RouterClient
from router.doors.launcher import LocalDaemon

REWRITE_PROMPT = (
    "Rewrite the question below so that it asks for exactly the same information but uses different words: "
    "replace its words with synonyms or descriptions and change the sentence structure. Keep names of people, "
    "places, organisations, dates and numbers. Reply with the rewritten question only.\n"
    "Question: {question}"
)
_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset("a an the of in on at to for by with from and or is are was were be been what which who whom "
                       "whose when where why how did does do that this these those as it its into than".split())


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def content_overlap(original: str, paraphrase: str) -> float:
    """The share of the original's content words that the paraphrase keeps."""
    words = content_words(original)
    return len(words & content_words(paraphrase)) / len(words) if words else 0.0


def clean(text: str) -> str:
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    return re.sub(r"^(rewritten question|question)\s*:\s*", "", text, flags=re.IGNORECASE).strip().strip('"')


def acceptable(original: str, paraphrase: str) -> bool:
    return bool(paraphrase) and paraphrase.endswith("?") and paraphrase.lower() != original.lower()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paraphrase", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval/paraphrased.jsonl"))
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", help="a running daemon; default: start one")
    args = parser.parse_args(argv)

    _, held_out = split_articles(load_questions(DEFAULT_PATHS[SQUAD]), seed=0)
    chosen = random.Random(args.seed).sample(held_out, min(args.limit, len(held_out)))
    done = set()
    if args.out.exists():
        done = {json.loads(line)["question"] for line in args.out.read_text().splitlines() if line.strip()}
    todo = [q for q in chosen if q.text not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    daemon = None if args.target else LocalDaemon().start()
    dropped = 0
    try:
        with RouterClient(args.target or daemon.target, token=None if daemon is None else daemon.token) as client, open(args.out, "a", encoding="utf-8") as out:
            for number, question in enumerate(todo, start=1):
                prompt = REWRITE_PROMPT.format(question=question.text)
                paraphrase = clean(client.generate(prompt=prompt, mode="cloud", max_tokens=64, temperature=0.0).text)
                if not acceptable(question.text, paraphrase):
                    paraphrase = clean(client.generate(prompt=prompt, mode="cloud", max_tokens=64, temperature=0.7,
                                                       seed=number).text)
                if not acceptable(question.text, paraphrase):
                    dropped += 1
                    continue
                out.write(json.dumps({"article": question.article, "question": question.text,
                                      "paraphrase": paraphrase, "answers": list(question.answers),
                                      "overlap": round(content_overlap(question.text, paraphrase), 3)}) + "\n")
                out.flush()
                print(f"{number}/{len(todo)}", file=sys.stderr, end="\r")
    finally:
        if daemon is not None:
            daemon.close()
    print(f"\nwrote {args.out}: {len(todo) - dropped} new paraphrases, {dropped} dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
