"""The Info index at 1x, 10x and 100x the 913 SQuAD part A passages, buried in real text (bench/distractors.py).

For each engine and scale, on a fresh index:
- ingest: the SQuAD passages and the distractors in batches; time per document, with the encoder's share
  apart (the encoder is the same for every engine);
- one document at a time, once the index is full: adding a new one, replacing one by id, deleting one
  (what incremental ingest costs when the index is large);
- queries: p50/p99 latency with 1 caller and with 16 concurrent callers (threads), the questions through the
  encoder each time as the daemon does;
- memory: this process's resident size and, for a PostgreSQL engine, its server's processes'; bytes on disk;
- recall@1/3/5 of the SQuAD questions (a passage holding a gold answer, as bench/retrieval_tuning.py counts it),
  and strictly (a passage from the question's own article holding it), on the held-out half of the article
  split that bench/retrieval_tuning.py tuned the defaults on the other half of.

    .venv/bin/python -m bench.info_scale                                # every engine, 1x 10x 100x
    .venv/bin/python -m bench.info_scale --engines files --scales 1     # the hand-written index at 1x
    .venv/bin/python -m bench.info_scale --engines postgres --dsn postgresql://user@host:5432/db   # a server

Engines: `files` (cloud/info/index.py, the directory format rewritten whole on each change), `postgres`
(cloud/info/pg_index.py, embedded: a private PostgreSQL under the work directory, or the server of --dsn).
The hand-written index is skipped at a scale where a single ingest batch would not fit --files-max-scale.
Writes OUT/info_scale.json and .md (OUT: bench/results/info_scale). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from bench.distractors import distractor_documents
from bench.portable import shown_command
from bench.retrieval_tuning import (KS, SQUAD_PART_A, CachingEmbedder, Question, found_at, load_questions,
                                    split_articles)
from cloud.info import Caller, Document, IndexSettings, read_documents

RESULTS = Path(__file__).resolve().parent / "results" / "info_scale"
WORK_DIR = Path(__file__).resolve().parent / "out" / "info_scale"
ENGINES = ("files", "postgres")
SCALES = (1, 10, 100)
EVERYONE = Caller()
BATCH = 500  # documents per ingest call
SINGLE_OPERATIONS = 20  # adds, replaces and deletes timed one document at a time
CONCURRENT_CALLERS = 16


class TimedEmbedder:
    """The encoder, timed: ingest time minus encoder time is what the engine itself costs."""

    def __init__(self, embedder: CachingEmbedder) -> None:
        self._embedder = embedder
        self.dim = embedder.dim
        self.seconds = 0.0
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        vectors = self._embedder.encode(texts) if len(texts) > 1 else self._embedder.encode_uncached(texts)
        with self._lock:
            self.seconds += time.perf_counter() - started
        return vectors


@dataclass(frozen=True)
class EngineSpec:
    name: str
    dsn: Optional[str]


def open_index(spec: EngineSpec, directory: Path, embedder: Any) -> Any:
    """A fresh index of the engine in `directory` (or on the server of spec.dsn, emptied first)."""
    if spec.name == "files":
        from cloud.info import InfoIndex

        return InfoIndex.open(directory, embedder=embedder, settings=IndexSettings())
    from cloud.info.pg_index import PgInfoIndex

    if spec.dsn:
        return PgInfoIndex.open_server(spec.dsn, embedder=embedder, settings=IndexSettings())
    return PgInfoIndex.open_embedded(directory, embedder=embedder, settings=IndexSettings())


def server_rss_mb(spec: EngineSpec, directory: Path) -> Optional[float]:
    """The resident size of the embedded PostgreSQL's processes (those whose command line names `directory`
    or that descend from its postmaster); None for other engines or a remote server."""
    if spec.name != "postgres" or spec.dsn:
        return None
    marker = str(directory.resolve())
    postmasters = set()
    processes: dict[int, tuple[int, float]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            pid, parent = int(fields["Pid"]), int(fields["PPid"])
            rss = float(fields.get("VmRSS", "0 kB").split()[0]) / 1024
            command = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, KeyError, ValueError):
            continue
        processes[pid] = (parent, rss)
        if "postgres" in command and marker in command:
            postmasters.add(pid)
    if not postmasters:
        return None
    return sum(rss for pid, (parent, rss) in processes.items() if pid in postmasters or parent in postmasters)


def own_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) / 1024
    return 0.0


def percentiles(values: Sequence[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    array = np.asarray(values) * 1000
    return {"n": len(values), "p50_ms": float(np.percentile(array, 50)), "p99_ms": float(np.percentile(array, 99))}


def timed_queries(index: Any, questions: Sequence[Question], callers: int) -> tuple[list[float], list[list[str]], float]:
    """Each question once, `callers` at a time: per-query seconds, the passages' texts and document ids in
    question order, and the wall time."""
    def one(question: Question) -> tuple[float, list[str], list[str]]:
        started = time.perf_counter()
        passages = index.retrieve(question.text, k=max(KS), caller=EVERYONE)
        return time.perf_counter() - started, [p.text for p in passages], [p.document_id for p in passages]

    started = time.perf_counter()
    if callers == 1:
        results = [one(question) for question in questions]
    else:
        with concurrent.futures.ThreadPoolExecutor(callers) as pool:
            results = list(pool.map(one, questions))
    wall = time.perf_counter() - started
    return [r[0] for r in results], [[*r[1], "\0", *r[2]] for r in results], wall


def recalls(questions: Sequence[Question], retrieved: Sequence[list[str]], article_ids: dict[str, set[str]]) -> dict:
    loose, strict = [], []
    for question, row in zip(questions, retrieved):
        cut = row.index("\0")
        texts, ids = row[:cut], row[cut + 1:]
        loose.append(found_at(texts, question))
        own = article_ids[question.article]
        strict.append(found_at([t if i in own else "" for t, i in zip(texts, ids)], question))
    return {f"recall@{k}": float(np.mean([h[i] for h in loose])) for i, k in enumerate(KS)} | {
        f"strict_recall@{k}": float(np.mean([h[i] for h in strict])) for i, k in enumerate(KS)}


def single_operations(index: Any, spare: Sequence[Document], replaced: Sequence[Document]) -> dict[str, Any]:
    adds, replaces, deletes = [], [], []
    for document in spare:
        started = time.perf_counter()
        index.ingest([document])
        adds.append(time.perf_counter() - started)
    for document in replaced:
        changed = Document(id=document.id, text=document.text + " (revised)", metadata=document.metadata)
        started = time.perf_counter()
        index.ingest([changed])
        replaces.append(time.perf_counter() - started)
    for document in spare:
        started = time.perf_counter()
        index.delete([document.id])
        deletes.append(time.perf_counter() - started)
    return {"add": percentiles(adds), "replace": percentiles(replaces), "delete": percentiles(deletes)}


def run_one(spec: EngineSpec, scale: int, *, squad: Sequence[Document], distractors: Sequence[Document],
            spare: Sequence[Document], questions: Sequence[Question], article_ids: dict[str, set[str]],
            embedder: CachingEmbedder, work_dir: Path) -> dict[str, Any]:
    directory = work_dir / f"{spec.name}-{scale}x"
    if directory.exists():
        shutil.rmtree(directory)
    timed = TimedEmbedder(embedder)
    documents = [*squad, *distractors[: (scale - 1) * len(squad)]]
    index = open_index(spec, directory, timed)
    try:
        if spec.dsn:  # a server index starts from what it holds: empty it
            held = index.stats().documents
            if held:
                raise RuntimeError(f"the server index at {_shown_dsn(spec.dsn)} holds {held} documents: give an empty one")
        started = time.perf_counter()
        for first in range(0, len(documents), BATCH):
            index.ingest(documents[first:first + BATCH])
            print(f"  {spec.name} {scale}x: {min(first + BATCH, len(documents))}/{len(documents)} documents "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        ingest_s, encoder_s = time.perf_counter() - started, timed.seconds
        stats = index.stats()
        sequential, retrieved, _ = timed_queries(index, questions, 1)
        concurrent_times, _, concurrent_wall = timed_queries(index, questions, CONCURRENT_CALLERS)
        timed.seconds = 0.0
        operations = single_operations(index, spare, squad[:SINGLE_OPERATIONS])
        return {
            "engine": spec.name, "scale": scale, "documents": stats.documents, "chunks": stats.chunks,
            "ingest": {"seconds": ingest_s, "encoder_seconds": encoder_s,
                       "ms_per_document": 1000 * ingest_s / len(documents),
                       "encoder_ms_per_document": 1000 * encoder_s / len(documents),
                       "engine_ms_per_document": 1000 * (ingest_s - encoder_s) / len(documents)},
            "one_document_at_a_time": operations,
            "queries": {"questions": len(questions), "one_caller": percentiles(sequential),
                        f"{CONCURRENT_CALLERS}_callers": percentiles(concurrent_times) | {
                            "queries_per_s": len(questions) / concurrent_wall}},
            "memory": {"bench_process_rss_mb": own_rss_mb(), "server_rss_mb": server_rss_mb(spec, directory),
                       "bytes_on_disk": stats.bytes_on_disk},
            "retrieval": recalls(questions, retrieved, article_ids),
        }
    finally:
        index.close()


def _shown_dsn(arg: str) -> str:
    """A command-line argument as the results show it: a DSN without its password."""
    if "://" in arg or "password" in arg:
        from cloud.info.pg_index import redacted_dsn

        return redacted_dsn(arg)
    return arg


def machine() -> dict[str, Any]:
    from bench.retrieval_tuning import machine as base

    found = base()
    found["cores"] = os.cpu_count()
    found["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    for package in ("psycopg", "pgserver"):
        try:
            from importlib.metadata import version

            found[package] = version(package)
        except Exception:  # not installed: the files engine alone
            found[package] = None
    return found


def git_commit() -> dict[str, Any]:
    from router.core.provenance import code_provenance

    return code_provenance()


def render(report: dict[str, Any]) -> str:
    lines = ["# The Info index at scale", "",
             f"`{report['command']}` on {report['date_utc']} (commit {str(report['code']['commit'])[:12]}"
             f"{', with local changes' if report['code']['dirty'] else ''})", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
             f"{report['machine']['memory_gib']} GiB; Python {report['machine']['python']}, numpy "
             f"{report['machine']['numpy']}, onnxruntime {report['machine']['onnxruntime']}, psycopg "
             f"{report['machine']['psycopg']}, pgserver {report['machine']['pgserver']}; load average "
             f"{report['load_average']['start']:.2f} at the start, {report['load_average']['end']:.2f} at the end "
             "(anything above 0 shares the cores with this run).", "",
             f"{report['questions']} SQuAD part A questions (the held-out half of the article split, seed 0); "
             f"distractors: {report['distractors']}.", "",
             "| engine | scale | documents | chunks | ingest ms/doc: engine (encoder) | add one / replace one / delete one p50 ms "
             "| query p50 / p99 ms, 1 caller | query p50 / p99 ms, 16 callers (q/s) | RSS MB bench (+ server) | on disk MB "
             "| R@1 / R@3 / R@5 | strict R@3 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["runs"]:
        if "skipped" in row:
            lines.append(f"| {row['engine']} | {row['scale']}x | – | – | skipped: {row['skipped']} | | | | | | | |")
            continue
        ops, queries, memory, found = row["one_document_at_a_time"], row["queries"], row["memory"], row["retrieval"]
        many = queries[f"{CONCURRENT_CALLERS}_callers"]
        server = f" + {memory['server_rss_mb']:.0f}" if memory["server_rss_mb"] is not None else ""
        lines.append(
            f"| {row['engine']} | {row['scale']}x | {row['documents']} | {row['chunks']} | "
            f"{row['ingest']['engine_ms_per_document']:.1f} ({row['ingest']['encoder_ms_per_document']:.1f}) | "
            f"{ops['add']['p50_ms']:.0f} / {ops['replace']['p50_ms']:.0f} / {ops['delete']['p50_ms']:.0f} | "
            f"{queries['one_caller']['p50_ms']:.1f} / {queries['one_caller']['p99_ms']:.1f} | "
            f"{many['p50_ms']:.1f} / {many['p99_ms']:.1f} ({many['queries_per_s']:.1f}) | "
            f"{memory['bench_process_rss_mb']:.0f}{server} | {memory['bytes_on_disk'] / 2 ** 20:.0f} | "
            f"{found['recall@1']:.3f} / {found['recall@3']:.3f} / {found['recall@5']:.3f} | "
            f"{found['strict_recall@3']:.3f} |")
    lines += ["", "Ingest: the engine's own time per document, and in brackets the encoder's (the same model for "
              "every engine; a text already encoded at this scale by the engine before is taken from memory, so "
              "the first engine at a scale shows the encoder's real cost). One-document operations run once the index is full. The 16 callers are threads of this "
              "process, each query timed alone. RSS is this process's resident size after the run (the encoder "
              "and, for the files engine, the whole index in memory), plus the embedded server's processes.", "",
              f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.info_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--scales", default=",".join(map(str, SCALES)))
    parser.add_argument("--dsn", help="postgres: a server's URI instead of the embedded one (its index emptied)")
    parser.add_argument("--questions", type=int, default=500, help="held-out questions asked (default 500)")
    parser.add_argument("--files-max-scale", type=int, default=100,
                        help="skip the hand-written index above this scale (default 100)")
    parser.add_argument("--threads", type=int, default=2, help="the encoder's threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR)
    args = parser.parse_args(argv)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    if not engines or any(name not in ENGINES for name in engines):
        parser.error(f"--engines: names from {', '.join(ENGINES)}")
    try:
        scales = sorted({int(text) for text in args.scales.split(",") if text.strip()})
    except ValueError:
        parser.error("--scales: whole numbers, e.g. 1,10,100")
    if not scales or scales[0] < 1:
        parser.error("--scales: at least 1")
    load_start = os.getloadavg()[0]
    squad = list(read_documents(SQUAD_PART_A, "squad"))
    try:
        pool = distractor_documents((scales[-1] - 1) * len(squad) + SINGLE_OPERATIONS)
    except (FileNotFoundError, ValueError) as exc:
        print(f"info_scale: {exc}", file=sys.stderr)
        return 2
    spare, distractors = pool[-SINGLE_OPERATIONS:], pool[:-SINGLE_OPERATIONS]
    _, held_out = split_articles(load_questions(SQUAD_PART_A), 0)
    questions = random.Random(0).sample(held_out, min(args.questions, len(held_out)))
    titles = {document.id: document.metadata.get("title", "") for document in squad}
    article_ids: dict[str, set[str]] = {}
    for document_id, title in titles.items():
        article_ids.setdefault(title, set()).add(document_id)
    embedder = CachingEmbedder(args.work_dir / "no-cache", args.threads)  # in memory: both engines share it
    runs = []
    for scale in scales:
        for name in engines:
            spec = EngineSpec(name, args.dsn if name == "postgres" else None)
            if name == "files" and scale > args.files_max_scale:
                runs.append({"engine": name, "scale": scale, "skipped": f"above --files-max-scale {args.files_max_scale}"})
                continue
            print(f"{name} at {scale}x", file=sys.stderr)
            runs.append(run_one(spec, scale, squad=squad, distractors=distractors, spare=spare, questions=questions,
                                article_ids=article_ids, embedder=embedder, work_dir=args.work_dir))
    sources: dict[str, int] = {}
    for document in distractors[: (scales[-1] - 1) * len(squad)]:
        sources[document.metadata["source"]] = sources.get(document.metadata["source"], 0) + 1
    report = {"benchmark": "info_scale",
              "command": " ".join(["python", "-m", "bench.info_scale",
                                   *(_shown_dsn(arg) for arg in shown_command(list(argv or sys.argv[1:])))]),
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": git_commit(),
              "machine": machine(), "questions": len(questions),
              "distractors": ", ".join(f"{source} {count}" for source, count in sources.items()) or "none",
              "load_average": {"start": load_start, "end": os.getloadavg()[0]},
              "settings": IndexSettings().__dict__, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "info_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "info_scale.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
