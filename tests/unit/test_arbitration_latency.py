"""bench/arbitration_latency.py without models: argument parsing, the report's numbers from hand-made
records (medians, escalated subsets, ratios against CLOUD_ONLY and between arbiters), the daemon's TOML,
the work directory guard, the markdown table, and a pinned child process (a `sleep`, not a model)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys

import pytest

from bench.arbitration_latency import (DatasetPlan, PinnedProcess, arbiter_report, bootstrap_ratio_of_medians,
                                       cloud_only_report, daemon_toml, distribution, guard_work_dir, markdown,
                                       parse_args, parse_dataset, request_rows, targets, wait_idle)
from router.domain.config import load_settings
from tests.conftest import wait_until


def record(mode, item_id, latency, *, escalated=False, dataset="squad_passage", ttft=None, cost=0.0,
           correct=True, error=None):
    return {"dataset": dataset, "item_id": str(item_id), "mode": mode, "latency_s": None if error else latency,
            "ttft_s": None if error else (latency / 4 if ttft is None else ttft), "cost_usd": cost,
            "cloud_cost_usd": cost, "correct": correct, "served_by": "CLOUD" if escalated else "EDGE",
            "decision": None if error else {"mode": mode, "escalated": escalated}, "error": error}


def post(item_id, latency, **kw):
    return record("POST_ARBITRATION", item_id, latency, **kw)


def cloud(item_id, latency, **kw):
    return record("CLOUD_ONLY", item_id, latency, **kw)


# ------------------------------------------------------------------------------------------------ arguments

def test_defaults_are_the_three_arbiters_on_the_mixed_sample():
    args = parse_args([])
    assert args.arbiters == ["parallel", "cascade", "early"]
    assert args.dataset == [DatasetPlan("squad_passage", 20), DatasetPlan("gsm8k", 4)]
    assert (args.edge_core, args.cloud_core, args.threshold, args.scorer) == (0, 1, 0.5, "rule")
    assert args.settle and args.cloud_only == "first"
    assert args.out.name == "results" and args.out.parent.name == "bench"


def test_limit_caps_every_data_set_and_arbiters_keep_their_order():
    args = parse_args(["--arbiters", "early,cascade", "--dataset", "gsm8k=6", "--dataset", "squad_passage=24",
                       "--limit", "2", "--threshold", "0.7", "--scorer", "logprob"])
    assert args.arbiters == ["early", "cascade"]
    assert args.dataset == [DatasetPlan("gsm8k", 2), DatasetPlan("squad_passage", 2)]
    assert (args.threshold, args.scorer) == (0.7, "logprob")


def test_a_dataset_spec_may_hold_a_path_and_its_slug_is_a_file_name():
    plan = parse_dataset("jsonl:/data/my=set.jsonl=5")
    assert plan == DatasetPlan("jsonl:/data/my=set.jsonl", 5)
    assert "/" not in plan.slug and ":" not in plan.slug


@pytest.mark.parametrize("argv", [
    ["--arbiters", "shadow"], ["--arbiters", "cascade,cascade"], ["--arbiters", ""],
    ["--dataset", "gsm8k"], ["--dataset", "gsm8k=0"], ["--dataset", "gsm8k=two"],
    ["--dataset", "gsm8k=2", "--dataset", "gsm8k=3"], ["--limit", "0"],
    ["--edge-core", "1", "--cloud-core", "1"], ["--threshold", "1.5"], ["--cloud-only", "never"],
])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------------------------------- report

def test_distribution_is_median_and_p90_with_n():
    assert distribution([1.0, 2.0, 3.0, 4.0, 100.0]) == {"n": 5, "p50": 3.0, "p90": pytest.approx(61.6)}
    assert distribution([]) == {"n": 0, "p50": None, "p90": None}


def test_arbiter_report_splits_escalated_from_kept_and_leaves_errors_out():
    records = [post(1, 2.0), post(2, 4.0), post(3, 10.0, escalated=True, cost=0.002),
               post(4, 20.0, escalated=True, cost=0.004), post(5, 0.0, error="CloudUnavailableError: down"),
               cloud(1, 99.0)]  # another mode's record is not this arbiter's
    report = arbiter_report(records, [])
    assert (report["requests"], report["errors"]) == (4, 1)
    assert report["latency_s"]["p50"] == 7.0
    assert report["escalated"]["n"] == 2 and report["escalated"]["share"] == 0.5
    assert report["escalated"]["latency_s"]["p50"] == 15.0
    assert report["kept"]["latency_s"]["p50"] == 3.0
    assert report["ttft_s"]["p50"] == pytest.approx(7.0 / 4)
    assert report["usd_per_request"] == pytest.approx(0.0015)
    assert report["same_items_as_cloud_only"]["n"] == 0 and report["same_items_as_cloud_only"]["ratio"] is None


def test_the_ratio_to_cloud_only_is_on_the_items_both_answered():
    posts = [post(1, 3.0), post(2, 6.0), post(3, 9.0), post(9, 1000.0)]  # item 9 has no CLOUD_ONLY answer
    clouds = [cloud(1, 2.0), cloud(2, 4.0), cloud(3, 6.0), cloud(4, 0.1, error="boom")]
    same = arbiter_report(posts, clouds)["same_items_as_cloud_only"]
    assert same["n"] == 3
    assert (same["p50_s"], same["cloud_only_p50_s"]) == (6.0, 4.0)
    assert same["ratio"] == pytest.approx(1.5)
    low, high = same["ratio_ci95"]
    assert low <= 1.5 <= high


def test_by_dataset_rows_count_each_data_set_apart():
    posts = [post(1, 2.0), post(2, 4.0, escalated=True), post(1, 30.0, dataset="gsm8k", escalated=True)]
    clouds = [cloud(1, 3.0), cloud(1, 40.0, dataset="gsm8k")]
    rows = arbiter_report(posts, clouds)["by_dataset"]
    assert rows["squad_passage"] == {"n": 2, "p50_s": 3.0, "escalated": 1, "cloud_only_n": 1,
                                     "cloud_only_p50_s": 3.0}
    assert rows["gsm8k"]["p50_s"] == 30.0 and rows["gsm8k"]["cloud_only_p50_s"] == 40.0


def test_parallel_target_is_met_at_most_1_1_times_cloud_only():
    clouds = [cloud(i, 10.0) for i in range(4)]
    ok = targets({"parallel": [post(i, 11.0) for i in range(4)]}, clouds)["parallel_vs_cloud_only"]
    assert ok["ratio"] == pytest.approx(1.1) and ok["met"] is True and ok["n"] == 4
    slow = targets({"parallel": [post(i, 11.5) for i in range(4)]}, clouds)["parallel_vs_cloud_only"]
    assert slow["ratio"] == pytest.approx(1.15) and slow["met"] is False
    assert "early_vs_cascade_escalated" not in targets({"parallel": []}, clouds)


def test_early_against_cascade_compares_escalated_requests_only():
    cascade = [post(1, 1.0), post(2, 30.0, escalated=True), post(3, 40.0, escalated=True),
               post(4, 50.0, escalated=True)]
    early = [post(1, 1.0), post(2, 20.0, escalated=True), post(5, 10.0, escalated=True), post(3, 2.0)]
    found = targets({"cascade": cascade, "early": early}, [])
    assert "parallel_vs_cloud_only" not in found
    t = found["early_vs_cascade_escalated"]
    assert (t["cascade_n"], t["early_n"]) == (3, 2)
    assert (t["cascade_p50_s"], t["early_p50_s"]) == (40.0, 15.0)
    assert t["ratio"] == pytest.approx(15.0 / 40.0) and t["met"] is True
    assert t["escalated_by_both"]["n"] == 1  # only item 2 was escalated by both
    assert t["escalated_by_both"]["ratio"] == pytest.approx(20.0 / 30.0)
    slower = targets({"cascade": cascade, "early": [post(2, 45.0, escalated=True)]}, [])
    assert slower["early_vs_cascade_escalated"]["met"] is False


def test_no_escalations_means_no_verdict():
    t = targets({"cascade": [post(1, 1.0)], "early": [post(1, 1.0)]}, [])["early_vs_cascade_escalated"]
    assert t["ratio"] is None and t["met"] is None


def test_bootstrap_interval_brackets_the_ratio_and_needs_two_values():
    numerator, denominator = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    assert bootstrap_ratio_of_medians(numerator, denominator, paired=True) == pytest.approx([0.5, 0.5])
    low, high = bootstrap_ratio_of_medians(numerator, denominator, paired=False)
    assert low < 0.5 < high
    assert bootstrap_ratio_of_medians([1.0], [1.0, 2.0], paired=False) is None
    with pytest.raises(ValueError):
        bootstrap_ratio_of_medians([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)


def test_request_rows_keep_what_the_report_is_computed_from():
    rows = request_rows("early", [post(1, 2.0, escalated=True), cloud(1, 3.0)])
    assert [(r["arbiter"], r["mode"], r["latency_s"], r["escalated"]) for r in rows] == [
        ("early", "POST_ARBITRATION", 2.0, True), (None, "CLOUD_ONLY", 3.0, False)]


def report_for_markdown(records, clouds):
    plan_setup = {
        "cloud": {"model": "qwen2.5-coder-1.5b", "core": 1, "threads": 1, "n_ctx": 4096,
                  "base_url": "http://127.0.0.1:1/v1"},
        "edge": {"model": "qwen2.5-coder-0.5b", "core": 0, "threads": 1, "n_ctx": 4096},
        "client": "client", "scorer": "rule", "threshold": 0.5, "early_threshold": 0.4, "early_window": 16,
        "samples": 3, "seed": 0, "datasets": [{"spec": "squad_passage", "limit": 2, "items": 2}],
        "max_tokens": {"numeric": 400, "text": 48}, "cloud_only": "once", "settle": "settled",
        "pricing": "priced", "latency_definition": "daemon"}
    return {"command": "python -m bench.arbitration_latency", "date_utc": "2026-01-01T00:00:00Z",
            "git": {"commit": "0" * 40, "dirty": False}, "machine": "cpu",
            "packages": {"python": "3.11", "llama-cpp-python": "0.3", "grpcio": "1.7"},
            "load_average": {"start": 0.1, "end": 0.2}, "setup": plan_setup,
            "cloud_only": cloud_only_report(clouds),
            "arbiters": {name: arbiter_report(recs, clouds) for name, recs in records.items()},
            "targets": targets(records, clouds), "reproduce": ".venv/bin/python -m bench.arbitration_latency"}


def test_markdown_tables_have_as_many_cells_as_headers_and_state_the_verdicts():
    clouds = [cloud(1, 10.0), cloud(2, 12.0)]
    records = {"parallel": [post(1, 10.0), post(2, 30.0, escalated=True)],
               "cascade": [post(1, 5.0), post(2, 40.0, escalated=True)],
               "early": [post(1, 5.0), post(2, 20.0, escalated=True)]}
    text = markdown(report_for_markdown(records, clouds))
    for table in [block for block in text.split("\n\n") if block.lstrip().startswith("|")]:
        widths = {line.count("|") for line in table.splitlines()}
        assert len(widths) == 1, table
    assert "parallel p50 / CLOUD_ONLY p50 = 1.818" in text and "not met" in text
    assert "early p50 / cascade p50 = 0.500" in text
    assert "taskset -c 1" in text and "taskset -c 0" in text


# ------------------------------------------------------------------------------------------- configuration

def test_the_daemon_toml_pins_one_edge_thread_and_points_at_the_standin(tmp_path):
    path = tmp_path / "early.toml"
    path.write_text(daemon_toml(base_url="http://127.0.0.1:4321/v1", arbiter="early", scorer="logprob",
                                threshold=0.3, model_dir=None))
    settings = load_settings(path, {})
    assert settings.edge.n_threads == 1 and settings.edge.model == "qwen2.5-coder-0.5b"
    assert settings.cloud.base_url == "http://127.0.0.1:4321/v1" and not settings.cloud.uses_standin
    assert settings.cloud.model == "qwen2.5-coder-1.5b"
    assert (settings.cloud.input_usd_per_mtok, settings.cloud.output_usd_per_mtok) == (0.15, 0.60)
    assert settings.ledger.enabled is False
    a = settings.arbitration
    assert (a.arbiter, a.scorer, a.threshold, a.fixed_threshold) == ("early", "logprob", "fixed", 0.3)


def test_work_dir_results_resume_only_under_the_same_setup(tmp_path):
    arbiter_dir = tmp_path / "cascade"
    guard_work_dir(arbiter_dir, {"scorer": "rule", "threads": 1}, fresh=False)
    (arbiter_dir / "squad_passage").mkdir()
    guard_work_dir(arbiter_dir, {"scorer": "rule", "threads": 1}, fresh=False)  # the same: resumes
    assert (arbiter_dir / "squad_passage").is_dir()
    with pytest.raises(RuntimeError, match="other scorer.*--fresh"):
        guard_work_dir(arbiter_dir, {"scorer": "logprob", "threads": 1}, fresh=False)
    guard_work_dir(arbiter_dir, {"scorer": "logprob", "threads": 1}, fresh=True)
    assert not (arbiter_dir / "squad_passage").exists()
    assert json.loads((arbiter_dir / "setup.json").read_text())["scorer"] == "logprob"


# ------------------------------------------------------------------------------------------------ processes

class ScriptedCpuFaultInjectionProcess:
    """Stands in for a PinnedProcess whose CPU time follows a script: what wait_idle reads."""

    def __init__(self, usage):
        self.usage = iter(usage)

    def cpu_seconds(self):
        return next(self.usage)


def test_wait_idle_waits_while_a_process_still_uses_cpu():
    busy_then_idle = ScriptedCpuFaultInjectionProcess([0.0, 0.5, 0.5, 1.0, 1.0, 1.0])  # busy in two windows, idle in the third
    idle = ScriptedCpuFaultInjectionProcess([0.0] * 6)
    wait_idle([busy_then_idle, idle], window_s=0.0)
    assert next(busy_then_idle.usage, "exhausted") == "exhausted"  # it took all three windows


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_a_pinned_child_runs_on_its_core_alone_and_stops_with_its_group(tmp_path):
    core = min(os.sched_getaffinity(0))
    # A child with two threads that only have to exist until the test stops it: its sleeps order nothing.
    lives = "import threading, time; threading.Thread(target=time.sleep, args=(600,)).start(); time.sleep(600)"
    child = PinnedProcess("sleeper", [sys.executable, "-c", lives],
                          core=core, env=os.environ, log_path=tmp_path / "log", death_signal=signal.SIGKILL)
    child.start()
    try:
        wait_until(lambda: child.thread_affinity()["threads"] >= 2, "the child's second thread")
        assert child.thread_affinity() == {"threads": 2, "cpus_allowed": [str(core)]}
    finally:
        child.stop(timeout_s=5.0)
    assert child.exited() is not None


# ---------------------------------------------------------------------------------------------------- AUTO

def auto(item_id, latency, route, **kw):
    made = record("AUTO", item_id, latency, escalated=route == 2.0, **kw)
    made["decision"]["features"] = {"auto_route": route}
    return made


def test_auto_is_set_against_cloud_only_and_edge_only_on_the_same_items_and_counts_its_routes():
    clouds = [cloud(1, 10.0), cloud(2, 12.0), cloud(3, 14.0)]
    records = {"auto": [record("EDGE_ONLY", 1, 4.0), record("EDGE_ONLY", 2, 5.0), record("EDGE_ONLY", 3, 6.0),
                        auto(1, 5.0, 0.0), auto(2, 6.0, 1.0), auto(3, 20.0, 2.0)]}
    found = targets(records, clouds)["auto_vs_single_models"]
    assert (found["cloud_only"]["n"], found["cloud_only"]["auto_p50_s"], found["cloud_only"]["other_p50_s"]) == (3, 6.0, 12.0)
    assert found["cloud_only"]["ratio"] == pytest.approx(0.5)
    assert (found["edge_only"]["other_p50_s"], found["edge_only"]["ratio"]) == (5.0, pytest.approx(1.2))
    report = arbiter_report(records["auto"], clouds, "AUTO")
    assert report["requests"] == 3 and report["routes"] == {"edge": 1, "cascade": 1, "cloud": 1}
    assert report["escalated"]["n"] == 1
    text = markdown({**report_for_markdown({}, clouds), "arbiters": {"auto": report},
                     "edge_only": cloud_only_report(records["auto"], "EDGE_ONLY"),
                     "targets": targets(records, clouds)})
    assert "| EDGE_ONLY | 3 | 5.00 s |" in text
    assert "AUTO p50 / CLOUD_ONLY p50 = 0.500" in text and "AUTO p50 / EDGE_ONLY p50 = 1.200" in text
    assert "auto's routes: cascade 1, cloud 1, edge 1" in text


def test_the_auto_daemon_runs_on_the_defaults(tmp_path):
    path = tmp_path / "auto.toml"
    path.write_text(daemon_toml(base_url="http://127.0.0.1:4321/v1", arbiter="auto", scorer="rule",
                                threshold=0.3, model_dir=None))
    settings = load_settings(path, {})
    defaults = load_settings(None, {})
    assert settings.arbitration == defaults.arbitration and settings.auto == defaults.auto
    assert parse_args(["--arbiters", "auto"]).arbiters == ["auto"]
