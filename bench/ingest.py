"""The bench's documents for the Info service: what `python -m bench --ingest SPEC` sends before a run.

Sent through the Info client (router/assembly/info_client.py) to the daemon's Info service, the way a
user's `hybrid-router info ingest` does; ids replace, so a resumed run ingests again harmlessly.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from bench.datasets import DEFAULT_PATHS, SQUAD, BenchItem, demo_items
from cloud.info.documents import Document, detect_format, read_documents
from router.assembly.grpc_channels import ChannelTrust
from router.assembly.info_client import InfoClient

INGEST_TIMEOUT_S = 600.0


def demo_documents() -> Iterator[Document]:
    """The demo sample's passages (its SQuAD items' paragraphs), one document each."""
    seen: set[str] = set()
    for item in demo_items():
        if item.context and item.context not in seen:
            seen.add(item.context)
            yield Document(id=f"demo-{hashlib.sha256(item.context.encode()).hexdigest()[:12]}", text=item.context,
                           metadata={"title": item.group.split(":", 1)[-1]})


def documents_for(spec: str) -> Iterator[Document]:
    if spec == "demo":
        return demo_documents()
    if spec == SQUAD:
        return read_documents(DEFAULT_PATHS[SQUAD], "squad")
    path, _, fmt = spec.partition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    return read_documents(Path(path), fmt or detect_format(Path(path)))


@dataclass(frozen=True)
class Ingested:
    report: dict[str, dict[str, int]]  # per spec: documents, chunks, replaced (for run.json)
    ids_by_text: Mapping[str, str]  # document text -> id: where each item's own passage went


def ingest(specs: Sequence[str], target: str, trust: Optional[ChannelTrust] = None) -> Ingested:
    """Ingests each spec into the Info service at `target` (an admin's token in `trust`)."""
    report: dict[str, dict[str, int]] = {}
    ids_by_text: dict[str, str] = {}
    with InfoClient(target, timeout_s=INGEST_TIMEOUT_S, price_per_retrieval_usd=0.0, trust=trust) as info:
        for spec in specs:
            documents = list(documents_for(spec))
            counts = info.ingest(documents)
            report[spec] = {"documents": counts.documents, "chunks": counts.chunks, "replaced": counts.replaced}
            ids_by_text.update({document.text: document.id for document in documents})
    return Ingested(report, ids_by_text)



def gold_document_id(item: BenchItem, ids_by_text: Mapping[str, str]) -> Optional[str]:
    """The id of the ingested document that is the item's passage, if this run ingested one."""
    return ids_by_text.get(item.context) if item.context else None


def rank_of_document(passage_ids: Sequence[str], document_id: Optional[str]) -> Optional[int]:
    """1-based rank of the first passage ("<document id>#<chunk>") from `document_id`; None if absent."""
    if document_id is None:
        return None
    return next((rank for rank, pid in enumerate(passage_ids, start=1) if pid.rsplit("#", 1)[0] == document_id), None)
