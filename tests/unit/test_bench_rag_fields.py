"""The bench's retrieval fields: where the item's own passage ranked, recall, the Info service's dollars."""
from __future__ import annotations

import pytest

from bench.ingest import demo_documents, gold_document_id, rank_of_document
from bench.datasets import demo_items
from bench.summary import mode_row, render_markdown, _retrieval_markdown
from dataclasses import asdict


def test_rank_of_document_reads_passage_ids() -> None:
    ids = ["a-001#0", "b-002#1", "b-002#0"]
    assert rank_of_document(ids, "b-002") == 2
    assert rank_of_document(ids, "a-001") == 1
    assert rank_of_document(ids, "c-003") is None and rank_of_document(ids, None) is None
    assert rank_of_document(["x#y#0"], "x#y") == 1  # only the last '#' separates the chunk


def test_the_demo_items_gold_passages_are_the_ingested_demo_documents() -> None:
    documents = {d.id: d.text for d in demo_documents()}
    squad = [item for item in demo_items() if item.context]
    assert squad and len(documents) == len({item.context for item in squad})
    ids_by_text = {text: document_id for document_id, text in documents.items()}
    for item in squad:
        assert documents[gold_document_id(item, ids_by_text)] == item.context
    assert gold_document_id(squad[0], {}) is None  # nothing ingested by this run: no gold passage to rank


def record(rank, retrieved=3, info=0.0001, degraded=False):
    return {"correct": True, "f1": 1.0, "cost_usd": 0.001 + info, "cloud_cost_usd": 0.0, "edge_cost_usd": 0.001,
            "info_cost_usd": info, "latency_s": 1.0, "ttft_s": 0.5, "cloud_calls": 0, "degraded": degraded,
            "gold_document_id": "doc", "gold_rank": rank, "retrieved_ids": [f"d{i}#0" for i in range(retrieved)]}


def test_recall_and_info_dollars_per_mode() -> None:
    row = mode_row("squad", "EDGE_RAG_CLOUD_INFO", [record(1), record(2), record(None), record(None, degraded=True)],
                   seed=0)
    assert (row.gold_recall_at_1, row.gold_recall_at_k, row.retrieved_k) == (0.25, 0.5, 3)
    assert row.info_usd_per_1k_requests == pytest.approx(0.1) and row.degraded == 1
    table = "\n".join(_retrieval_markdown([asdict(row)]))
    assert "| squad | EDGE_RAG_CLOUD_INFO | 4 | 3 | 0.250 | 0.500 |" in table


def test_modes_without_retrieval_get_no_retrieval_section() -> None:
    row = mode_row("squad", "EDGE_ONLY", [{"correct": False, "cost_usd": 0.001, "latency_s": 1.0}], seed=0)
    assert row.gold_recall_at_k is None and _retrieval_markdown([asdict(row)]) == []
