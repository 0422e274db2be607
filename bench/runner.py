"""Runs data sets through modes via the SDK, one JSONL record per (item, mode), resumable.

A killed run continues from its results file: every (dataset, item_id, mode) already recorded without
an error is skipped; a half-written last line is ignored.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from tqdm import tqdm

from bench.datasets import BenchItem, build_messages
from bench.ingest import gold_document_id, rank_of_document
from bench.run_meta import RunMetaError
from router.assembly.grpc_channels import ChannelTrust
from router.client import AsyncRouterClient
from router.domain.errors import RouterError
# The results file is JSON Lines that a killed run may leave torn: read and mended by the product's own helpers.
from router.domain.jsonl import cut_torn_tail, read_records as load_records
from router.domain.scoring import score_answer
from router.domain.types import BackendKind, GenerateResult, Mode

RESULTS_FILE = "results.jsonl"
# The daemon takes request ids of at most 128 characters from [A-Za-z0-9._:-] (router/domain/validation.py).
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
_REQUEST_ID_LABEL_CHARS = 64
# New-token budgets by scoring method: worked maths needs room, short answers do not.
DEFAULT_MAX_TOKENS = MappingProxyType({"numeric": 400, "text": 48})


@dataclass(frozen=True)
class RunPlan:
    items: Sequence[BenchItem]
    modes: Sequence[Mode]
    out_dir: Path
    concurrency: int = 1
    max_tokens: Optional[int] = None
    request_timeout_s: float = 900.0
    # Document text -> id of what this run ingested into the Info service (bench/ingest.py): lets a
    # record say where retrieval ranked the item's own passage.
    ids_by_text: Mapping[str, str] = field(default_factory=dict)


def record_key(record: Mapping[str, Any]) -> tuple[str, str, str]:
    return (record["dataset"], record["item_id"], record["mode"])


def refuse_other_questions_under_the_same_ids(items: Sequence[BenchItem], out_dir: Path) -> None:
    """Another file of the same kind (gsm8k:test.jsonl against the shared train set) reuses ids; its
    items must not be skipped as done on the strength of someone else's answers. Called before a run
    writes anything into `out_dir`, so a refused run leaves the directory as it was."""
    path = out_dir / RESULTS_FILE
    questions = {(item.dataset, item.item_id): item.question for item in items}
    for record in latest_records(load_records(path)):
        expected = questions.get((record["dataset"], record["item_id"]))
        if expected is not None and record.get("question") != expected:
            raise RunMetaError(f"{path} holds another question under {record['dataset']}/{record['item_id']}: "
                               "the data file is not the one this run started with; give a new --out")


def latest_records(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per (item, mode): the last one written wins (a retried error replaces the error)."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        latest[record_key(record)] = dict(record)
    return list(latest.values())


def rescore(records: Iterable[Mapping[str, Any]], items: Iterable[BenchItem]) -> tuple[list[dict[str, Any]], int]:
    """The records scored again with the current scorer, and how many scores changed.

    A results file grows over several runs, so its oldest records may carry an older scorer's verdict;
    a summary must score every record the same way. Error records stay wrong.
    """
    by_key = {(item.dataset, item.item_id): item for item in items}
    rescored, changed = [], 0
    for record in records:
        item = by_key.get((record["dataset"], record["item_id"]))
        if item is None or record.get("error"):
            rescored.append(dict(record))
            continue
        score = score_answer(record.get("text") or "", item.golds, method=item.scoring)
        changed += (score.correct, score.f1) != (record.get("correct"), record.get("f1"))
        rescored.append({**record, "correct": score.correct, "f1": score.f1})
    return rescored, changed


def write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace the results file in one step, so a kill leaves the old file or the new one, never half."""
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(partial, path)


def to_record(item: BenchItem, mode: Mode, result: GenerateResult,
              ids_by_text: Mapping[str, str] = MappingProxyType({})) -> dict[str, Any]:
    score = score_answer(result.text, item.golds, method=item.scoring)
    edge = result.run_for(BackendKind.EDGE)
    cloud_runs = [run for run in result.runs if run.backend == BackendKind.CLOUD]
    decision = asdict(result.decision)
    decision["mode"] = result.decision.mode.name if isinstance(result.decision.mode, Mode) else decision["mode"]
    return {
        "dataset": item.dataset, "item_id": item.item_id, "mode": mode.name, "question": item.question,
        "gold": list(item.golds), "text": result.text, "served_by": result.served_by.name,
        "correct": score.correct, "f1": score.f1, "cost_usd": result.cost_usd,
        "cloud_cost_usd": result.cloud_cost_usd, "edge_cost_usd": result.edge_cost_usd,
        "ttft_s": result.latency.ttft_s, "latency_s": result.latency.total_s,
        "cloud_calls": len(cloud_runs),
        "edge_tokens": sum(r.prompt_tokens + r.completion_tokens for r in result.runs if r.backend == BackendKind.EDGE),
        "cloud_tokens": sum(r.prompt_tokens + r.completion_tokens for r in cloud_runs),
        "cloud_usage_estimated": any(r.usage_estimated for r in cloud_runs),
        "decision": decision,
        "edge_mean_logprob": edge.mean_logprob if edge else None,
        # Each model's own answer, scored apart: what an arbitration record is labelled with (the corpus).
        **answer_scores(item, result),
        "runs": [{"backend": run.backend.name, "purpose": getattr(run, "purpose", "answer"),
                  "prompt_tokens": run.prompt_tokens, "completion_tokens": run.completion_tokens,
                  "cost_usd": run.cost_usd, "total_s": run.total_s, "finish_reason": run.finish_reason}
                 for run in result.runs],
        "finish_reason": result.finish_reason, "request_id": result.request_id, "error": None,
        # The Info service's part (EDGE_RAG_CLOUD_INFO, the agent's search): what it cost and took, what
        # came back (passage ids "<document id>#<chunk>", best first) and what the answer cites.
        "info_cost_usd": result.info_cost_usd, "info_s": result.latency.info_s,
        "info_calls": len(result.info_calls),
        "retrieved_ids": list(result.info_calls[0].passage_ids) if result.info_calls else [],
        "citations": list(result.citations), "degraded": result.decision.degraded,
        **_gold_passage(item, result, ids_by_text),
        "agent_steps": len(result.decision.steps),
    }


def _gold_passage(item: BenchItem, result: GenerateResult, ids_by_text: Mapping[str, str]) -> dict[str, Any]:
    """Where retrieval put the item's own passage (recall@k from the result's passage ids), when this run
    ingested it."""
    if not result.info_calls or not ids_by_text:
        return {}
    gold = gold_document_id(item, ids_by_text)
    return {"gold_document_id": gold, "gold_rank": rank_of_document(result.info_calls[0].passage_ids, gold)}


def answer_scores(item: BenchItem, result: GenerateResult) -> dict[str, Any]:
    """The first edge answer and the first cloud answer of the request, with their scores."""
    scored: dict[str, Any] = {}
    for kind in (BackendKind.EDGE, BackendKind.CLOUD):
        run = next((r for r in result.runs if r.backend == kind and getattr(r, "purpose", "answer") in
                    ("answer", "draft")), None)
        name = kind.name.lower()
        if run is None:
            scored.update({f"{name}_text": None, f"{name}_correct": None, f"{name}_f1": None})
            continue
        score = score_answer(run.text, item.golds, method=item.scoring)
        scored.update({f"{name}_text": run.text, f"{name}_correct": score.correct, f"{name}_f1": score.f1})
    return scored


def request_id_for(item: BenchItem, mode: Mode, run_token: str) -> str:
    """A readable id that no other request has: the daemon refuses an id its ledger already holds, and
    that ledger outlives bench runs, so each run has its own token (a pid is not enough: containers hand
    the same ones out again). The digest keeps ids apart whose labels are cut or cleaned alike."""
    key = f"{item.dataset}\x00{item.item_id}"
    label = _REQUEST_ID_UNSAFE.sub("_", f"{item.dataset}-{item.item_id}")[:_REQUEST_ID_LABEL_CHARS]
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"bench-{run_token}-{mode.name}-{label}-{digest}"


def error_record(item: BenchItem, mode: Mode, exc: Exception) -> dict[str, Any]:
    return {"dataset": item.dataset, "item_id": item.item_id, "mode": mode.name, "question": item.question,
            "gold": list(item.golds), "text": "", "served_by": None, "correct": False, "f1": None,
            "cost_usd": 0.0, "cloud_cost_usd": 0.0, "edge_cost_usd": 0.0, "ttft_s": None, "latency_s": None,
            "cloud_calls": 0, "edge_tokens": 0, "cloud_tokens": 0, "decision": None, "edge_mean_logprob": None,
            "error": f"{type(exc).__name__}: {exc}"}


@dataclass
class _Progress:
    bar: tqdm
    correct: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, record: Mapping[str, Any]) -> None:
        key = f"{record['dataset']}/{record['mode']}"
        self.seen[key] += 1
        self.correct[key] += bool(record["correct"])
        self.bar.set_postfix_str(" ".join(f"{k}={self.correct[k] / self.seen[k]:.0%}" for k in sorted(self.seen)))
        self.bar.update(1)


async def run(plan: RunPlan, target: str, trust: Optional[ChannelTrust] = None) -> list[dict[str, Any]]:
    """Send every (item, mode) not yet recorded; append each record as it completes."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    path = plan.out_dir / RESULTS_FILE
    previous = latest_records(load_records(path))
    done = {record_key(r) for r in previous if not r.get("error")}
    todo = [(item, mode) for item in plan.items for mode in plan.modes
            if (item.dataset, item.item_id, mode.name) not in done]
    semaphore = asyncio.Semaphore(plan.concurrency)
    run_token = uuid.uuid4().hex[:12]
    progress = _Progress(tqdm(total=len(todo), desc="bench", unit="req", dynamic_ncols=True))
    cut_torn_tail(path)
    with open(path, "a", encoding="utf-8") as results:
        trust = trust or ChannelTrust()
        async with AsyncRouterClient(target, timeout_s=plan.request_timeout_s, token=trust.token,
                                     ca_file=trust.ca_file) as client:
            async def one(item: BenchItem, mode: Mode) -> None:
                async with semaphore:
                    try:
                        result = await client.generate(
                            messages=build_messages(item), mode=mode,
                            max_tokens=plan.max_tokens or DEFAULT_MAX_TOKENS[item.scoring],
                            temperature=0.0, reference_answer=item.golds[0],
                            request_id=request_id_for(item, mode, run_token),
                            metadata={"bench_dataset": item.dataset, "bench_item": item.item_id})
                        record = to_record(item, mode, result, plan.ids_by_text)
                    except RouterError as exc:
                        record = error_record(item, mode, exc)
                # When it finished: lets a reader drop records taken while the machine was busy.
                record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                results.write(json.dumps(record, ensure_ascii=False) + "\n")
                results.flush()
                progress.add(record)

            await asyncio.gather(*(one(item, mode) for item, mode in todo))
    progress.bar.close()
    wanted = {(item.dataset, item.item_id, mode.name) for item in plan.items for mode in plan.modes}
    return [r for r in latest_records(load_records(path)) if record_key(r) in wanted]
