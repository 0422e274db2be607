"""What a bench run was (run.json), and whether a resumed run may add to it.

A results directory accumulates over several invocations: a killed run is resumed, and later issues add modes
to the same results. Records from different models, prompts or decoding settings must never be mixed in one
summary, so a resume is refused when any of those changed; everything else (more items, more modes) merges.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional


class RunMetaError(ValueError):
    """The results directory cannot take this run: unreadable, or made with something else."""


class IncompatibleRunError(RunMetaError):
    """The results directory holds a run made with other models (or the cloud model they are priced as),
    prompts, decoding settings or sampling seed."""


def _model_identity(model: Mapping[str, Any]) -> Dict[str, Any]:
    # The endpoint is a fresh loopback port on every start, so only what the model is and costs counts.
    return {key: model.get(key) for key in ("name", "sha256", "priced_as", "local_standin")}


def _identity(meta: Mapping[str, Any]) -> Dict[str, Any]:
    return {
        "models": {role: _model_identity(model) for role, model in meta.get("models", {}).items()},
        "prompts": meta.get("prompts"),
        "max_tokens": meta.get("max_tokens"),
        "temperature": meta.get("temperature"),
        # Another seed draws other items: the summary's sample would silently change under the same limit.
        "seed": meta.get("seed", 0),  # the bench's default seed, for a run.json older than this key
    }


def _history_entry(meta: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: meta.get(key) for key in ("started_utc", "command", "hardware", "packages", "code")}


def _union(first: List[str], second: List[str]) -> List[str]:
    return list(dict.fromkeys([*first, *second]))


def _merged_limit(previous: Mapping[str, Any], current: Mapping[str, Any]) -> Optional[int]:
    """The largest limit asked for; None is "every item". Seeded samples are prefixes of each other, so the
    larger one holds both. A run with no "limit" key (the fixed demo sample alone) leaves it as it was."""
    if "limit" not in current:
        return previous.get("limit")
    if "limit" not in previous:
        return current["limit"]
    first, second = previous["limit"], current["limit"]
    return None if first is None or second is None else max(first, second)


def merge_run_meta(previous: Mapping[str, Any], current: Mapping[str, Any]) -> Dict[str, Any]:
    """The run.json for `current` continuing `previous`; IncompatibleRunError if they must not share results."""
    before, now = _identity(previous), _identity(current)
    changed = [key for key in now if before[key] != now[key]]
    if changed:
        raise IncompatibleRunError(
            f"the results there were made with different {', '.join(changed)}; "
            "give a new --out directory (or delete the old results) rather than mix runs in one summary")
    started = previous.get("started_utc", current["started_utc"])
    # Each invocation's command, machine and versions are kept: the run is only as reproducible as its parts.
    history = [*previous.get("history", [_history_entry(previous)] if previous.get("command") else []),
               _history_entry(current)]
    return {
        **current,
        "history": history,
        "datasets": _union(previous.get("datasets", []), current["datasets"]),
        "modes": _union(previous.get("modes", []), current["modes"]),
        "limit": _merged_limit(previous, current),
        "started_utc": started,
    }
