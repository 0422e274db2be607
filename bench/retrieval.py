"""Retrieval as a user gets it: the Info service run as `hybrid-router info serve`, fed and asked through
the Info client, on SQuAD dev part A.

    python -m bench.retrieval --out bench/results/retrieval
    python -m bench.retrieval --paraphrased bench/results/retrieval/paraphrased.jsonl --out ...

1. Starts the service on a unix socket with a fresh index (bench/out/retrieval-index), and ingests the
   913 paragraphs (`--ingest squad` does the same for the generation bench).
2. Asks every held-out question (the article split of bench/retrieval_tuning.py, seed 0: no question
   shares an article with the tuning half the settings were chosen on) for the top 5 passages.
3. A question is found at k when one of the first k passages holds a gold answer (lower-cased).
4. With --paraphrased (bench/paraphrase.py): the same for questions reworded so that they do not copy
   the passage's words, beside the original wording of the same questions.

Writes summary.md and summary.json, with the machine and versions, into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bench.datasets import DEFAULT_PATHS, SQUAD
from bench.ingest import documents_for
from bench.retrieval_tuning import KS, Question, found_at, load_questions, machine, recall, split_articles
from router.assembly.info_client import InfoClient
from router.assembly.grpc_channels import ChannelTrust
from router.doors.launcher import die_with_parent

RETRIEVE_K = max(KS)
READY_TIMEOUT_S = 120.0


class InfoServiceProcess:
    """`hybrid-router info serve` on a unix socket in a temporary directory, with its own index."""

    def __init__(self, index_dir: Path, engine: str, dsn: str = "") -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="hybrid-router-info-")
        self.target = f"unix:{self._tmp.name}/info.sock"
        self.log_path = Path(self._tmp.name) / "info.log"
        env = {**os.environ, "HYBRID_ROUTER_INFO__INDEX_DIR": str(index_dir), "HYBRID_ROUTER_INFO__ENGINE": engine,
               "HYBRID_ROUTER_INFO__DSN": dsn, "HYBRID_ROUTER_LOGGING__LEVEL": "WARNING",
               # The service writes its local admin token here on start; the bench calls with it.
               "HYBRID_ROUTER_AUTH__LOCAL_TOKEN_FILE": str(Path(self._tmp.name) / "token"),
               "HYBRID_ROUTER_AUTH__PRINCIPALS_FILE": str(Path(self._tmp.name) / "principals.json")}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "router", "info", "serve", "--listen", self.target],
                                            stdout=log, stderr=subprocess.STDOUT, env=env,
                                            preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM))

    def token(self) -> str:
        """The service's local admin token, once it has written it."""
        path = Path(self._tmp.name) / "token"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not path.exists() or not path.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Info service wrote no token; its log:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        return path.read_text().strip()

    def wait_ready(self, client: InfoClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                client.stats(timeout_s=5)
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Info service did not start; its log:\n{self.log_path.read_text()[-2000:]}")
                time.sleep(0.2)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._tmp.cleanup()


def measure(client: InfoClient, questions: Sequence[Question]) -> dict:
    hits, latencies = [], []
    for question in questions:
        retrieval = client.retrieve(question.text, k=RETRIEVE_K)
        latencies.append(retrieval.latency_s)
        hits.append(found_at([p.text for p in retrieval.passages], question))
    return {"n": len(questions), "recall": dict(zip((f"R@{k}" for k in KS), recall(hits))),
            "latency_ms_p50": 1000 * float(np.percentile(latencies, 50)),
            "latency_ms_p99": 1000 * float(np.percentile(latencies, 99))}


def read_paraphrased(path: Path) -> tuple[list[Question], list[Question]]:
    """(originals, paraphrases) of the same questions, from bench/paraphrase.py's file."""
    originals, paraphrases = [], []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            answers = tuple(a.lower() for a in row["answers"])
            originals.append(Question(row["article"], row["question"], answers))
            paraphrases.append(Question(row["article"], row["paraphrase"], answers))
    return originals, paraphrases


def render(result: dict) -> str:
    lines = ["# Retrieval through the Info service", "",
             f"`{result['command']}` on {result['finished_utc']}.", "",
             f"Machine: {result['machine']['cpu']} ({result['machine']['os']}); Python {result['machine']['python']}, "
             f"numpy {result['machine']['numpy']}, onnxruntime {result['machine']['onnxruntime']}.", "",
             f"Engine: {result.get('engine', 'files')}. "
             f"Ingested through the Info client: {result['ingested']['documents']} documents, "
             f"{result['ingested']['chunks']} chunks, in {result['ingest_s']:.1f} s. Settings: the service's "
             "defaults (`[info]`: BM25 and the encoder fused by weighted RRF, then re-ranked).", "",
             "| question set | n | R@1 | R@3 | R@5 | latency p50 | latency p99 |", "|---|---|---|---|---|---|---|"]
    for name, row in result["sets"].items():
        r = row["recall"]
        lines.append(f"| {name} | {row['n']} | {r['R@1']:.3f} | {r['R@3']:.3f} | {r['R@5']:.3f} | "
                     f"{row['latency_ms_p50']:.1f} ms | {row['latency_ms_p99']:.1f} ms |")
    lines += ["", "Latency is the client's: one Retrieve call over gRPC on a unix socket, the query's encoding "
              "included, on a machine shared with other jobs.", "",
              "Targets (issue: cloud information for the edge): R@1 >= 0.85 and R@3 >= 0.95.", ""]
    for name, row in result["sets"].items():
        r = row["recall"]
        met = r["R@1"] >= 0.85 and r["R@3"] >= 0.95
        lines.append(f"- {name}: {'met' if met else 'not met'} (R@1 {r['R@1']:.3f}, R@3 {r['R@3']:.3f}).")
    if "paraphrase_overlap" in result:
        lines += ["", f"Paraphrases share {result['paraphrase_overlap']:.0%} of their content words with the "
                  "original question on average (bench/paraphrase.py says how they were made)."]
    return "\n".join(lines) + "\n"


def _shown(arg: str) -> str:
    """A command-line argument as the results show it: a DSN without its password."""
    if "://" in arg or "password" in arg:
        from cloud.info.pg_index import redacted_dsn

        return redacted_dsn(arg)
    return arg


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/retrieval"))
    parser.add_argument("--paraphrased", type=Path, help="bench/paraphrase.py's JSONL")
    parser.add_argument("--engine", choices=("postgres", "files"), default="postgres",
                        help="info.engine of the service (default postgres, the daemon's default)")
    parser.add_argument("--dsn", default="", help="engine postgres: a server's URI instead of the embedded one")
    parser.add_argument("--index-dir", type=Path, help="default: bench/out/retrieval-index-ENGINE")
    args = parser.parse_args(argv)
    index_dir = args.index_dir or Path(f"bench/out/retrieval-index-{args.engine}")
    command = " ".join(["python -m bench.retrieval",
                        *(_shown(arg) for arg in (sys.argv[1:] if argv is None else argv))])
    _, held_out = split_articles(load_questions(DEFAULT_PATHS[SQUAD]), seed=0)
    sets: dict[str, list[Question]] = {"SQuAD part A, held-out articles": held_out}
    overlap = None
    if args.paraphrased:
        from bench.paraphrase import content_overlap

        originals, paraphrases = read_paraphrased(args.paraphrased)
        sets["the paraphrased questions, as first worded"] = originals
        sets["the same questions, paraphrased"] = paraphrases
        overlap = float(np.mean([content_overlap(o.text, p.text) for o, p in zip(originals, paraphrases)]))
    service = InfoServiceProcess(index_dir, args.engine, args.dsn)
    try:
        trust = ChannelTrust(token=service.token())
        with InfoClient(service.target, timeout_s=600, price_per_retrieval_usd=0.0, trust=trust) as client:
            service.wait_ready(client)
            began = time.monotonic()
            counts = client.ingest(documents_for(SQUAD))
            ingest_s = time.monotonic() - began
            measured = {name: measure(client, questions) for name, questions in sets.items()}
    finally:
        service.close()
    result = {"command": command, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), "ingested": {"documents": counts.documents, "chunks": counts.chunks},
              "ingest_s": ingest_s, "sets": measured,
              "engine": args.engine if args.engine == "files" else f"postgres ({'server' if args.dsn else 'embedded'})"}
    if overlap is not None:
        result["paraphrase_overlap"] = overlap
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "summary.md").write_text(render(result))
    print(render(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
