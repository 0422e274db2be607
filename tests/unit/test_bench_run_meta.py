"""bench.run_meta: a resumed run keeps its history and never mixes models, prompts or decoding settings."""
import copy

import pytest

from bench.run_meta import IncompatibleRunError, merge_run_meta


def meta(**changes):
    base = {
        "command": "python -m bench --dataset gsm8k --limit 100", "seed": 0, "limit": 100,
        "datasets": ["gsm8k"], "modes": ["EDGE_ONLY", "CLOUD_ONLY"], "concurrency": 1,
        "max_tokens": {"numeric": 400, "text": 48}, "temperature": 0.0,
        "models": {"edge": {"name": "qwen2.5-coder-0.5b", "sha256": "a" * 64, "endpoint": "in-process"},
                   "cloud": {"name": "qwen2.5-coder-1.5b", "sha256": "b" * 64,
                             "endpoint": "http://127.0.0.1:41000/v1", "priced_as": "gpt-4o-mini",
                             "local_standin": True}},
        "prompts": {"system": "You are a helpful assistant."}, "started_utc": "2026-11-22T04:15:34Z",
    }
    base.update(changes)
    return base


def test_a_resume_keeps_the_first_start_and_each_invocations_command_machine_and_versions():
    first = merge_run_meta(meta(), meta(started_utc="2026-11-22T08:11:04Z", packages={"grpcio": "1.86.0"}))
    second = merge_run_meta(first, meta(started_utc="2026-11-22T09:00:00Z", command="python -m bench --limit 200"))
    assert second["started_utc"] == "2026-11-22T04:15:34Z"
    assert [entry["started_utc"] for entry in second["history"]] == [
        "2026-11-22T04:15:34Z", "2026-11-22T08:11:04Z", "2026-11-22T09:00:00Z"]
    assert second["history"][1]["packages"] == {"grpcio": "1.86.0"}
    assert second["history"][2]["command"] == second["command"] == "python -m bench --limit 200"


def test_more_items_data_sets_and_modes_merge_in_order():
    merged = merge_run_meta(meta(), meta(limit=200, datasets=["squad", "gsm8k"],
                                         modes=["EDGE_ONLY", "POST_ARBITRATION"]))
    assert merged["limit"] == 200
    assert merged["datasets"] == ["gsm8k", "squad"]
    assert merged["modes"] == ["EDGE_ONLY", "CLOUD_ONLY", "POST_ARBITRATION"]


def test_a_new_loopback_port_for_the_standin_is_the_same_model():
    current = meta()
    current["models"]["cloud"]["endpoint"] = "http://127.0.0.1:52000/v1"
    assert merge_run_meta(meta(), current)["models"]["cloud"]["endpoint"].endswith(":52000/v1")


@pytest.mark.parametrize("field, change", [
    ("models", lambda m: m["models"]["edge"].update(sha256="c" * 64)),
    ("models", lambda m: m["models"]["cloud"].update(name="gpt-4o-mini")),
    ("models", lambda m: m["models"]["cloud"].update(priced_as="gpt-4o")),
    ("prompts", lambda m: m["prompts"].update(system="Be brief.")),
    ("max_tokens", lambda m: m.update(max_tokens=30)),
    ("temperature", lambda m: m.update(temperature=0.7)),
])
def test_other_models_prompts_or_decoding_are_refused(field, change):
    current = copy.deepcopy(meta())
    change(current)
    with pytest.raises(IncompatibleRunError, match=f"different {field}.*new --out"):
        merge_run_meta(meta(), current)


def test_an_old_run_json_without_newer_keys_still_resumes():
    old = {key: value for key, value in meta().items() if key not in ("datasets", "modes", "history")}
    merged = merge_run_meta(old, meta(started_utc="2026-11-22T08:11:04Z"))
    assert merged["datasets"] == ["gsm8k"] and len(merged["history"]) == 2


def test_another_seed_is_refused_because_it_draws_other_items():
    with pytest.raises(IncompatibleRunError, match="different seed.*new --out"):
        merge_run_meta(meta(), meta(seed=1))


@pytest.mark.parametrize("before, now, merged", [(200, 10, 200), (10, 200, 200), (None, 10, None), (10, None, None)])
def test_the_recorded_limit_is_the_largest_asked_for(before, now, merged):
    assert merge_run_meta(meta(limit=before), meta(limit=now))["limit"] == merged


def test_a_demo_only_run_leaves_the_recorded_limit_alone():
    demo_only = {key: value for key, value in meta(datasets=["demo"]).items() if key != "limit"}
    assert merge_run_meta(meta(limit=200), demo_only)["limit"] == 200


def test_an_old_run_json_without_a_seed_resumes_at_the_default_seed():
    old = {key: value for key, value in meta().items() if key != "seed"}
    assert merge_run_meta(old, meta(seed=0))["seed"] == 0
    with pytest.raises(IncompatibleRunError, match="different seed"):
        merge_run_meta(old, meta(seed=3))
