"""A backend call's completion is described in four places that cannot share a class (edge/ and cloud/ never
import router/): the core's Completion protocol and CompletionRecord, the edge's EdgeCompletion and the cloud's
CloudCompletion; and BackendRun carries it into results, the wire and the ledger. A field added to one and
not the others fails here, naming where it is missing."""
import dataclasses
import typing

from cloud.openai_backend import CloudCompletion
from edge.llama_backend import EdgeCompletion
from router.core.backends import Completion, CompletionRecord
from router.domain.types import BackendRun

EDGE_ONLY_FIELDS = {
    "token_logprobs",  # the edge's per-token logprobs, summarised as BackendRun.mean_logprob
    "states",  # the hidden states a probe reads (BackendCall.hidden_states), too large for a run or the ledger
}


def names(cls: type) -> set[str]:
    return {field.name for field in dataclasses.fields(cls)}


def test_every_completion_has_the_same_fields() -> None:
    record = names(CompletionRecord)
    assert set(typing.get_type_hints(Completion)) == record, "router/core/backends.py: Completion vs CompletionRecord"
    assert names(CloudCompletion) == record, "cloud/openai_backend.py: CloudCompletion"
    assert names(EdgeCompletion) - EDGE_ONLY_FIELDS == record, "edge/llama_backend.py: EdgeCompletion"


def test_a_backend_run_carries_every_completion_field() -> None:
    assert names(CompletionRecord) <= names(BackendRun), "router/domain/types.py: BackendRun"
