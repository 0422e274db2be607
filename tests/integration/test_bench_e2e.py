"""The bench end to end: a tiny run on the test models, resumed, summarised and plotted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import isolated_env

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GSM8K = f"gsm8k:{FIXTURES / 'gsm8k-train-first6.jsonl'}"
SQUAD = f"squad:{FIXTURES / 'squad-dev-first-article-2-passages.json'}"


def run_bench(out: Path, *args: str, datasets: tuple[str, ...] = (GSM8K, SQUAD)) -> subprocess.CompletedProcess:
    env = isolated_env(out.parent / "home", dict(
               HYBRID_ROUTER_EDGE__MODEL="smollm2-135m", HYBRID_ROUTER_STANDIN__MODEL="smollm2-135m",
               HYBRID_ROUTER_EDGE__N_CTX="2048", HYBRID_ROUTER_STANDIN__N_CTX="2048",
               HYBRID_ROUTER_LEDGER__ENABLED="false", HYBRID_ROUTER_INFO__INDEX_DIR=str(out.parent / "info-index")))
    return subprocess.run([sys.executable, "-m", "bench", *(arg for spec in datasets for arg in ("--dataset", spec)),
                           "--max-tokens", "24", "--seed", "3", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=900)


def test_tiny_bench_runs_resumes_and_writes_its_summary(tmp_path: Path, smollm_path: Path) -> None:
    out = tmp_path / "run"
    # The four modes that need no Info service (the retrieval modes' bench fields: test_bench_rag_fields.py).
    modes = ("--modes", "EDGE_ONLY,CLOUD_ONLY,POST_ARBITRATION,PRE_ARBITRATION")
    first = run_bench(out, "--limit", "1", *modes)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len((out / "results.jsonl").read_text().splitlines()) == 8  # 2 data sets x 1 item x 4 modes

    second = run_bench(out, "--limit", "2", *modes)  # the first item of each set is done already
    assert second.returncode == 0, second.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = [(r["dataset"], r["item_id"], r["mode"]) for r in records]
    assert len(keys) == 16 and len(set(keys)) == 16, "a finished request was repeated"
    for record in records:
        assert record["error"] is None
        assert set(record) >= {"dataset", "item_id", "mode", "question", "gold", "text", "served_by", "correct",
                               "f1", "cost_usd", "cloud_cost_usd", "edge_cost_usd", "ttft_s", "latency_s",
                               "cloud_calls", "edge_tokens", "cloud_tokens", "decision"}
        expected_calls = {"CLOUD_ONLY": (1,), "EDGE_ONLY": (0,), "POST_ARBITRATION": (0, 1),
                          "PRE_ARBITRATION": (0, 1)}[record["mode"]]
        assert record["cloud_calls"] in expected_calls
        if record["mode"] == "POST_ARBITRATION":
            assert record["decision"]["arbiter"] == "cascade" and record["decision"]["features"]
            assert record["edge_text"] is not None
        if record["mode"] == "PRE_ARBITRATION":  # one model answers, the one the router picked
            assert record["decision"]["arbiter"] == "pre" and record["decision"]["scorer"].startswith("rule (")
            assert (record["cloud_calls"] == 1) == record["decision"]["escalated"]

    summary = json.loads((out / "summary.json").read_text())
    assert "--limit 2" in summary["meta"]["command"]
    history = summary["meta"]["history"]  # the resume is recorded beside the first invocation
    assert len(history) == 2 and "--limit 1" in history[0]["command"] and "--limit 2" in history[1]["command"]
    assert len(summary["meta"]["models"]["edge"]["sha256"]) == 64
    assert "## Per mode" in (out / "summary.md").read_text()
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)

    # A run that names one data set and one mode, all done already, still summarises the whole directory.
    narrower = run_bench(out, "--limit", "2", "--modes", "EDGE_ONLY", datasets=(GSM8K,))
    assert narrower.returncode == 0, narrower.stderr[-3000:]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    assert sorted((r["dataset"], r["mode"], r["n"]) for r in rows) == [
        ("gsm8k", "CLOUD_ONLY", 2), ("gsm8k", "EDGE_ONLY", 2), ("gsm8k", "POST_ARBITRATION", 2),
        ("gsm8k", "PRE_ARBITRATION", 2), ("squad", "CLOUD_ONLY", 2), ("squad", "EDGE_ONLY", 2),
        ("squad", "POST_ARBITRATION", 2), ("squad", "PRE_ARBITRATION", 2)]
    assert len((out / "results.jsonl").read_text().splitlines()) == 16

    # A report over part of what was run: no daemon, no requests, only the records asked for.
    report = run_bench(out, "--limit", "1", "--report-only", "--target", "unix:/nowhere")
    assert report.returncode == 0, report.stderr[-3000:]
    partial = json.loads((out / "summary.json").read_text())["meta"]
    assert partial["planned_requests"] == partial["recorded_requests"] == 8
    assert len((out / "results.jsonl").read_text().splitlines()) == 16

    # Other decoding settings must not add to these results: the run is refused before any request.
    other = run_bench(out, "--limit", "3", "--max-tokens", "30")
    assert other.returncode == 2
    assert "different max_tokens" in other.stderr and "new --out" in other.stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 16


def test_report_only_on_an_empty_directory_says_there_is_nothing_to_report(tmp_path: Path) -> None:
    report = run_bench(tmp_path / "empty", "--limit", "1", "--report-only", "--target", "unix:/nowhere")
    assert report.returncode == 2
    assert "nothing was run there" in report.stderr and "Traceback" not in report.stderr


def test_a_malformed_dataset_stops_with_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"question": "ok?", "answer": "yes"}\n{"question": "no answer"}\n')
    proc = subprocess.run([sys.executable, "-m", "bench", "--dataset", f"jsonl:{data}", "--target", "unix:/nowhere"],
                          capture_output=True, text=True, timeout=60, env=isolated_env(tmp_path / "home"))
    assert proc.returncode == 2
    assert f"{data}:2:" in proc.stderr
