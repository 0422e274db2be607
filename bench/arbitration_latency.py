"""POST_ARBITRATION's and AUTO's latency with the edge and the cloud stand-in each on a core of its own.

On two shared cores the local stand-in competes with the edge for CPU, which a real cloud never does. Here
each model gets one core and one llama.cpp thread: the cloud stand-in (llama-cpp-python's OpenAI-compatible
server) under `taskset -c CLOUD_CORE`, and for each arbiter a daemon (the router and its edge model) under
`taskset -c EDGE_CORE` that reaches the stand-in as an external cloud. The bench (`python -m bench`, through
the SDK only) runs the items against each daemon; CLOUD_ONLY runs once, in the first arbiter's daemon.

    .venv/bin/python -m bench.arbitration_latency                      # parallel, cascade, early; ~20 min idle
    .venv/bin/python -m bench.arbitration_latency --arbiters cascade --dataset squad_passage=2   # a smoke run
    .venv/bin/python -m bench.arbitration_latency --arbiters auto --dataset squad_passage=10 --dataset gsm8k=10 \
        --out bench/results/auto_latency --work-dir bench/out/auto_latency

`auto` is not an arbiter but AUTO mode with its defaults (the shipped probes and bands); its daemon runs EDGE_ONLY too,
item by item before AUTO, so AUTO's p50 is set against both CLOUD_ONLY's and EDGE_ONLY's on the same items.

Writes OUT/arbitration_latency.json and .md (OUT defaults to bench/results); the bench's own results per
arbiter and data set go to --work-dir (bench/out/arbitration_latency). Targets (the issue): parallel's p50
is at most 1.1 x CLOUD_ONLY's on the same items; early escalation's escalated requests have a lower p50 than
cascade's. Run it on an otherwise idle machine: anything else running shares the two cores.

By default (--no-settle turns it off) each request is sent only once both processes are idle (their CPU time has stopped
growing), so a request never queues behind the stand-in still working on a call that the parallel arbiter
cancelled (llama.cpp cannot stop in the middle of a prompt): a real cloud serves each call apart. The bench
is then invoked once per item and mode, growing --limit by one (its seeded samples are prefixes of each
other, and it resumes, so each call sends just the next request).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from bench.portable import shown_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK_DIR = REPO / "bench" / "out" / "arbitration_latency"
ARBITERS = ("parallel", "cascade", "early", "auto")
DEFAULT_ARBITERS = ("parallel", "cascade", "early")
AUTO = "auto"  # AUTO mode, not an arbiter: its daemon answers EDGE_ONLY and AUTO
DEFAULT_DATASETS = ("squad_passage=20", "gsm8k=4")
EDGE_MODEL = "qwen2.5-coder-0.5b"
CLOUD_MODEL = "qwen2.5-coder-1.5b"
THREADS = 1  # llama.cpp threads of each model
N_CTX = 4096
N_BATCH = 512
# The calls to the stand-in are priced like any cloud call: its reported tokens times cloud.*_usd_per_mtok.
# These are the configuration's defaults, gpt-4o-mini's list prices, written out so the setup says them.
CLOUD_USD_PER_MTOK = MappingProxyType({"input": 0.15, "output": 0.60})
STANDIN_API_KEY = "local-standin"  # the stand-in checks no key; the OpenAI client wants one
PARALLEL_TARGET = 1.1  # parallel p50 <= 1.1 x CLOUD_ONLY p50
BOOTSTRAP_RESAMPLES = 2000
SETUP_FILE = "setup.json"
# llama_cpp.server reads HOST, PORT, CONFIG_FILE and API_KEY from the environment (cloud/standin.py).
_STANDIN_ENV_TO_DROP = frozenset({"host", "port", "config_file", "api_key"})


# ---------------------------------------------------------------------------------------------- arguments

@dataclass(frozen=True)
class DatasetPlan:
    spec: str  # as `python -m bench --dataset` takes it
    limit: int  # items drawn with the seed

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.spec).strip("_") or "dataset"


def parse_dataset(text: str) -> DatasetPlan:
    """`SPEC=N`: a bench data set spec (gsm8k, squad_passage, jsonl:PATH, ...) and how many of its items."""
    spec, sep, limit = text.rpartition("=")
    if not sep or not spec:
        raise argparse.ArgumentTypeError(f"{text!r}: give SPEC=N, e.g. squad_passage=20")
    try:
        count = int(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be a whole number") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be at least 1")
    return DatasetPlan(spec, count)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/arbitration_latency.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arbiters", default=",".join(DEFAULT_ARBITERS),
                        help=f"comma-separated from {', '.join(ARBITERS)}, in run order (default "
                             f"{','.join(DEFAULT_ARBITERS)}); CLOUD_ONLY runs in the first one's daemon; auto is "
                             "AUTO mode with its defaults, beside EDGE_ONLY")
    parser.add_argument("--dataset", action="append", type=parse_dataset, metavar="SPEC=N",
                        help=f"a bench data set and its item count (repeatable; default "
                             f"{' '.join(DEFAULT_DATASETS)})")
    parser.add_argument("--limit", type=int, help="at most this many items of every data set (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scorer", default="rule", help="arbitration.scorer (default rule)")
    parser.add_argument("--model-dir", type=Path, help="arbitration.model_dir, for --scorer learned")
    parser.add_argument("--threshold", type=float, default=0.5, help="arbitration.fixed_threshold (default 0.5)")
    parser.add_argument("--edge-core", type=int, default=0)
    parser.add_argument("--cloud-core", type=int, default=1)
    parser.add_argument("--cloud-only", choices=("first", "each"), default="first",
                        help="run CLOUD_ONLY in the first arbiter's daemon only (default), or in each")
    parser.add_argument("--no-settle", dest="settle", action="store_false",
                        help="send requests back to back (one bench call per data set) instead of waiting "
                             "until both processes are idle before each")
    parser.add_argument("--fresh", action="store_true", help="delete --work-dir's earlier bench results first")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes (default bench/results)")
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR,
                        help="the bench's results per arbiter and data set (default bench/out/arbitration_latency)")
    args = parser.parse_args(argv)
    arbiters = [name.strip() for name in args.arbiters.split(",") if name.strip()]
    unknown = [name for name in arbiters if name not in ARBITERS]
    if not arbiters or unknown or len(set(arbiters)) != len(arbiters):
        parser.error(f"--arbiters: give distinct names from {', '.join(ARBITERS)} (got {args.arbiters!r})")
    args.arbiters = arbiters
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    plans = args.dataset or [parse_dataset(text) for text in DEFAULT_DATASETS]
    if args.limit is not None:
        plans = [DatasetPlan(plan.spec, min(plan.limit, args.limit)) for plan in plans]
    if len({plan.slug for plan in plans}) != len(plans):
        parser.error("--dataset: each data set once")
    args.dataset = plans
    if not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be in [0, 1]")
    if args.edge_core < 0 or args.cloud_core < 0 or args.edge_core == args.cloud_core:
        parser.error("--edge-core and --cloud-core must be two different cores")
    return args


# ----------------------------------------------------------------------------------------------- the report

def percentile(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def distribution(values: Sequence[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90)}


def item_key(record: Mapping[str, Any]) -> tuple[str, str]:
    return (record["dataset"], record["item_id"])


def answered(records: Iterable[Mapping[str, Any]], mode: str) -> list[Mapping[str, Any]]:
    """The records of `mode` that got an answer with a latency (error records have none)."""
    return [r for r in records if r.get("mode") == mode and not r.get("error") and r.get("latency_s") is not None]


def is_escalated(record: Mapping[str, Any]) -> bool:
    return bool((record.get("decision") or {}).get("escalated"))


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def bootstrap_ratio_of_medians(numerator: Sequence[float], denominator: Sequence[float], *, paired: bool,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Optional[list[float]]:
    """A 95% percentile-bootstrap interval of median(numerator) / median(denominator): paired resamples the
    items together (both lists in the same item order), unpaired each list apart. None with under 2 values."""
    top, bottom = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if len(top) < 2 or len(bottom) < 2:
        return None
    if paired and len(top) != len(bottom):
        raise ValueError("paired samples must have the same length")
    rng = np.random.default_rng(seed)
    top_index = rng.integers(0, len(top), size=(resamples, len(top)))
    bottom_index = top_index if paired else rng.integers(0, len(bottom), size=(resamples, len(bottom)))
    bottoms = np.median(bottom[bottom_index], axis=1)
    ratios = np.median(top[top_index], axis=1)[bottoms > 0] / bottoms[bottoms > 0]
    if not len(ratios):
        return None
    low, high = np.percentile(ratios, [2.5, 97.5])
    return [float(low), float(high)]


def mode_of(arbiter: str) -> str:
    """The mode whose latency an entry of --arbiters measures."""
    return "AUTO" if arbiter == AUTO else "POST_ARBITRATION"


def arbiter_report(post: Sequence[Mapping[str, Any]], cloud_only: Sequence[Mapping[str, Any]],
                   mode: str = "POST_ARBITRATION") -> dict[str, Any]:
    """One arbiter's records of `mode` against CLOUD_ONLY's (both lists may hold other modes' records
    and errors; only answered records of the right mode count)."""
    posts, clouds = answered(post, mode), answered(cloud_only, "CLOUD_ONLY")
    errors = sum(1 for r in post if r.get("mode") == mode and r.get("error"))
    escalated = [r for r in posts if is_escalated(r)]
    kept = [r for r in posts if not is_escalated(r)]
    cloud_by_item = {item_key(r): r for r in clouds}
    common = [r for r in posts if item_key(r) in cloud_by_item]
    post_common = [r["latency_s"] for r in common]
    cloud_common = [cloud_by_item[item_key(r)]["latency_s"] for r in common]
    by_dataset = {}
    for dataset in sorted({r["dataset"] for r in posts}):
        mine = [r for r in posts if r["dataset"] == dataset]
        theirs = [r["latency_s"] for r in clouds if r["dataset"] == dataset]
        by_dataset[dataset] = {"n": len(mine), "p50_s": percentile([r["latency_s"] for r in mine], 50),
                               "escalated": sum(map(is_escalated, mine)),
                               "cloud_only_n": len(theirs), "cloud_only_p50_s": percentile(theirs, 50)}
    costs = [float(r.get("cost_usd") or 0.0) for r in posts]
    return {
        "requests": len(posts), "errors": errors,
        "latency_s": distribution([r["latency_s"] for r in posts]),
        "ttft_s": distribution([r["ttft_s"] for r in posts if r.get("ttft_s") is not None]),
        "escalated": {"n": len(escalated), "share": len(escalated) / len(posts) if posts else None,
                      "latency_s": distribution([r["latency_s"] for r in escalated])},
        "kept": {"n": len(kept), "latency_s": distribution([r["latency_s"] for r in kept])},
        "served_correct_share": (sum(bool(r.get("correct")) for r in posts) / len(posts)) if posts else None,
        "usd_per_request": float(np.mean(costs)) if costs else None,
        "cloud_usd_per_request": float(np.mean([float(r.get("cloud_cost_usd") or 0.0) for r in posts]))
        if posts else None,
        "cloud_usage_estimated": sum(bool(r.get("cloud_usage_estimated")) for r in posts),
        "same_items_as_cloud_only": {
            "n": len(common), "p50_s": percentile(post_common, 50), "cloud_only_p50_s": percentile(cloud_common, 50),
            "ratio": ratio(percentile(post_common, 50), percentile(cloud_common, 50)),
            "ratio_ci95": bootstrap_ratio_of_medians(post_common, cloud_common, paired=True)},
        "by_dataset": by_dataset,
        **({"routes": auto_routes(posts)} if mode == "AUTO" else {}),
    }


def auto_routes(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many AUTO requests took each route (the decision's `auto_route` feature)."""
    names = {0.0: "edge", 1.0: "cascade", 2.0: "cloud"}
    routes: dict[str, int] = {}
    for record in records:
        code = ((record.get("decision") or {}).get("features") or {}).get("auto_route")
        name = names.get(code, "unknown") if code is not None else "unknown"
        routes[name] = routes.get(name, 0) + 1
    return routes


def cloud_only_report(cloud_only: Sequence[Mapping[str, Any]], mode: str = "CLOUD_ONLY") -> dict[str, Any]:
    """One single-model mode's records (CLOUD_ONLY, or EDGE_ONLY with `mode`)."""
    clouds = answered(cloud_only, mode)
    return {"requests": len(clouds),
            "errors": sum(1 for r in cloud_only if r.get("mode") == mode and r.get("error")),
            "latency_s": distribution([r["latency_s"] for r in clouds]),
            "ttft_s": distribution([r["ttft_s"] for r in clouds if r.get("ttft_s") is not None]),
            "served_correct_share": (sum(bool(r.get("correct")) for r in clouds) / len(clouds)) if clouds else None,
            "usd_per_request": float(np.mean([float(r.get("cost_usd") or 0.0) for r in clouds])) if clouds else None}


def targets(records: Mapping[str, Sequence[Mapping[str, Any]]],
            cloud_only: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, from each arbiter's records (by name) and CLOUD_ONLY's. A target whose
    arbiters did not run, or that has no requests to compare, is None."""
    found: dict[str, Any] = {}
    if "parallel" in records:
        same = arbiter_report(records["parallel"], cloud_only)["same_items_as_cloud_only"]
        found["parallel_vs_cloud_only"] = {
            "what": "p50 total latency of POST_ARBITRATION (parallel) / CLOUD_ONLY's, on the items both answered",
            "target": f"<= {PARALLEL_TARGET}", "n": same["n"], "parallel_p50_s": same["p50_s"],
            "cloud_only_p50_s": same["cloud_only_p50_s"], "ratio": same["ratio"], "ratio_ci95": same["ratio_ci95"],
            "met": None if same["ratio"] is None else same["ratio"] <= PARALLEL_TARGET}
    if "cascade" in records and "early" in records:
        cascade = [r for r in answered(records["cascade"], "POST_ARBITRATION") if is_escalated(r)]
        early = [r for r in answered(records["early"], "POST_ARBITRATION") if is_escalated(r)]
        cascade_s, early_s = [r["latency_s"] for r in cascade], [r["latency_s"] for r in early]
        cascade_by_item = {item_key(r): r["latency_s"] for r in cascade}
        both = [(cascade_by_item[item_key(r)], r["latency_s"]) for r in early if item_key(r) in cascade_by_item]
        found["early_vs_cascade_escalated"] = {
            "what": "p50 total latency of escalated requests: early / cascade (each arbiter's own escalated set)",
            "target": "< 1", "cascade_n": len(cascade_s), "early_n": len(early_s),
            "cascade_p50_s": percentile(cascade_s, 50), "early_p50_s": percentile(early_s, 50),
            "ratio": ratio(percentile(early_s, 50), percentile(cascade_s, 50)),
            "ratio_ci95": bootstrap_ratio_of_medians(early_s, cascade_s, paired=False),
            "met": None if ratio(percentile(early_s, 50), percentile(cascade_s, 50)) is None
            else percentile(early_s, 50) < percentile(cascade_s, 50),
            "escalated_by_both": {
                "n": len(both), "cascade_p50_s": percentile([c for c, _ in both], 50),
                "early_p50_s": percentile([e for _, e in both], 50),
                "ratio": ratio(percentile([e for _, e in both], 50), percentile([c for c, _ in both], 50)),
                "ratio_ci95": bootstrap_ratio_of_medians([e for _, e in both], [c for c, _ in both], paired=True)}}
    if AUTO in records:
        autos = answered(records[AUTO], "AUTO")
        found["auto_vs_single_models"] = {
            "what": "p50 total latency of AUTO / CLOUD_ONLY's and / EDGE_ONLY's, on the items both answered",
            "cloud_only": _paired_p50(autos, answered(cloud_only, "CLOUD_ONLY")),
            "edge_only": _paired_p50(autos, answered(records[AUTO], "EDGE_ONLY"))}
    return found


def _paired_p50(mine: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_item = {item_key(r): r["latency_s"] for r in theirs}
    pairs = [(r["latency_s"], by_item[item_key(r)]) for r in mine if item_key(r) in by_item]
    top, bottom = [a for a, _ in pairs], [b for _, b in pairs]
    return {"n": len(pairs), "auto_p50_s": percentile(top, 50), "other_p50_s": percentile(bottom, 50),
            "ratio": ratio(percentile(top, 50), percentile(bottom, 50)),
            "ratio_ci95": bootstrap_ratio_of_medians(top, bottom, paired=True)}


def request_rows(arbiter: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-request numbers the report is computed from, small enough to keep in the JSON."""
    return [{"arbiter": arbiter if r.get("mode") == mode_of(arbiter) else None, "mode": r.get("mode"),
             "dataset": r["dataset"], "item_id": r["item_id"], "latency_s": r.get("latency_s"),
             "ttft_s": r.get("ttft_s"), "escalated": is_escalated(r), "served_by": r.get("served_by"),
             "correct": r.get("correct"), "cost_usd": r.get("cost_usd"), "error": r.get("error"),
             "finished_at": r.get("finished_at")} for r in records]


# ------------------------------------------------------------------------------------------- the processes

class PinnedProcess:
    """A child under `taskset -c CORE`, in its own process group; it dies with this process (PDEATHSIG)."""

    def __init__(self, name: str, command: Sequence[str], *, core: int, env: Mapping[str, str], log_path: Path,
                 death_signal: int) -> None:
        self.name = name
        self.command = ["taskset", "-c", str(core), *command]
        self.core = core
        self.env = dict(env)
        self.log_path = log_path
        self.death_signal = death_signal
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> "PinnedProcess":
        from cloud.standin import die_with_parent

        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                                            preexec_fn=die_with_parent(os.getpid(), self.death_signal))
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def exited(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the group, SIGKILL to it after timeout_s. Safe to call twice."""
        process = self.process
        if process is None:
            return
        for signum, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(wait_s)
        with contextlib.suppress(ProcessLookupError):  # anything the group still holds
            os.killpg(process.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, all its threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_affinity(self) -> dict[str, Any]:
        """The CPUs each of its threads may run on (read from /proc), to show the pinning took."""
        allowed: set[str] = set()
        threads = 0
        for status in Path(f"/proc/{self.pid}/task").glob("*/status"):
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        allowed.add(line.split(":", 1)[1].strip())
                        threads += 1
        return {"threads": threads, "cpus_allowed": sorted(allowed)}


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lists_model(url: str, alias: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            listing = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return any(isinstance(m, dict) and m.get("id") == alias for m in (listing or {}).get("data") or [])


def wait_until(ready, process: PinnedProcess, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.exited() is not None:
            raise RuntimeError(f"{process.name} exited with status {process.exited()} before {what}; "
                               f"its log ({process.log_path}):\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name}: not {what} after {timeout_s:g} s; its log ({process.log_path}):\n"
                               f"{process.log_tail()}")
        time.sleep(0.25)


def check_pinned(process: PinnedProcess) -> dict[str, Any]:
    affinity = process.thread_affinity()
    if affinity["cpus_allowed"] != [str(process.core)]:
        raise RuntimeError(f"{process.name}: its threads may run on {affinity['cpus_allowed']}, "
                           f"not on core {process.core} alone")
    return affinity


def wait_idle(processes: Sequence[PinnedProcess], *, window_s: float = 0.3, busy_cpu_s: float = 0.03,
              timeout_s: float = 300.0) -> float:
    """Waits until none of the processes used more than busy_cpu_s of CPU in a window; returns the wait."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = [p.cpu_seconds() for p in processes]
        time.sleep(window_s)
        if all(p.cpu_seconds() - b <= busy_cpu_s for p, b in zip(processes, before)):
            break
    return time.monotonic() - started


def daemon_toml(*, base_url: str, arbiter: str, scorer: str, threshold: float,
                model_dir: Optional[Path]) -> str:
    lines = ["[edge]", f'model = "{EDGE_MODEL}"', f"n_threads = {THREADS}", f"n_ctx = {N_CTX}",
             f"n_batch = {N_BATCH}", "",
             "[cloud]", f"base_url = {json.dumps(base_url)}", f'api_key = "{STANDIN_API_KEY}"',
             f'model = "{CLOUD_MODEL}"',
             f"input_usd_per_mtok = {CLOUD_USD_PER_MTOK['input']}",
             f"output_usd_per_mtok = {CLOUD_USD_PER_MTOK['output']}", "",
             "[ledger]", "enabled = false", ""]
    if arbiter != AUTO:  # AUTO runs on its defaults: the shipped probes, bands and threshold
        lines += ["[arbitration]", f"arbiter = {json.dumps(arbiter)}", f"scorer = {json.dumps(scorer)}",
                  'threshold = "fixed"', f"fixed_threshold = {threshold}"]
    if model_dir is not None and arbiter != AUTO:
        lines.append(f"model_dir = {json.dumps(str(model_dir.expanduser().resolve()))}")
    lines += ["", "[logging]", 'level = "WARNING"', ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the run

class BenchFailed(RuntimeError):
    pass


def run_bench(target: str, plan: DatasetPlan, limit: int, modes: Sequence[str], out_dir: Path, seed: int,
              log_path: Path) -> None:
    """One `python -m bench` run against the daemon, its output into log_path."""
    from bench.__main__ import main as bench_main

    argv = ["--target", target, "--dataset", plan.spec, "--limit", str(limit), "--seed", str(seed),
            "--modes", ",".join(modes), "--out", str(out_dir)]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ python -m bench {shlex.join(argv)}\n")
        log.flush()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            status = bench_main(argv)
    if status != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise BenchFailed(f"python -m bench {shlex.join(argv)} exited with {status}:\n{tail}")


def item_count(plan: DatasetPlan, seed: int) -> int:
    from bench.datasets import load_dataset, sample

    return len(sample(load_dataset(plan.spec), limit=plan.limit, seed=seed))


def guard_work_dir(arbiter_dir: Path, setup: Mapping[str, Any], fresh: bool) -> None:
    """Bench results are resumed only when made with the same setup; otherwise refuse (or --fresh)."""
    setup_path = arbiter_dir / SETUP_FILE
    if fresh and arbiter_dir.exists():
        shutil.rmtree(arbiter_dir)
    if setup_path.exists():
        before = json.loads(setup_path.read_text())
        changed = sorted(key for key in set(before) | set(setup) if before.get(key) != setup.get(key))
        if changed:
            raise BenchFailed(f"{arbiter_dir} holds results made with other {', '.join(changed)}; "
                              "give --fresh or another --work-dir")
    arbiter_dir.mkdir(parents=True, exist_ok=True)
    setup_path.write_text(json.dumps(setup, indent=2, sort_keys=True) + "\n")


def run_arbiter(args: argparse.Namespace, arbiter: str, *, with_cloud_only: bool, standin: PinnedProcess,
                base_url: str, tmp: Path, sizes: Mapping[str, int]) -> dict[str, Any]:
    """Starts a pinned daemon with this arbiter, runs the data sets through it, stops it."""
    from router.client import RouterClient
    from router.domain.config import load_settings

    arbiter_dir = args.work_dir / arbiter
    config_path = tmp / f"{arbiter}.toml"
    config_path.write_text(daemon_toml(base_url=base_url, arbiter=arbiter, scorer=args.scorer,
                                       threshold=args.threshold, model_dir=args.model_dir))
    settings = load_settings(config_path, {})
    setup = {"arbitration": settings.arbitration.model_dump(mode="json"), "auto": settings.auto.model_dump(mode="json"),
             "routing": settings.routing.model_dump(mode="json"), "edge_core": args.edge_core,
             "cloud_core": args.cloud_core, "threads": THREADS, "edge_model": EDGE_MODEL, "cloud_model": CLOUD_MODEL,
             "seed": args.seed, "settle": args.settle, "cloud_usd_per_mtok": dict(CLOUD_USD_PER_MTOK)}
    guard_work_dir(arbiter_dir, setup, args.fresh)
    target = f"unix:{tmp}/{arbiter}.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_ROUTER_")}  # the TOML alone decides
    daemon = PinnedProcess(f"daemon ({arbiter})", [sys.executable, "-m", "router", "--config", str(config_path),
                                                   "serve", "--listen", target],
                           core=args.edge_core, env=env, log_path=tmp / f"daemon-{arbiter}.log",
                           death_signal=signal.SIGTERM)
    modes = (["CLOUD_ONLY"] if with_cloud_only else []) + (["EDGE_ONLY", "AUTO"] if arbiter == AUTO
                                                            else ["POST_ARBITRATION"])
    waits: list[float] = []
    log_path = args.work_dir / "bench.log"
    started = time.monotonic()
    try:
        daemon.start()
        with RouterClient(target) as client:
            wait_until(client.is_serving, daemon, 600.0, "serving")
            info = client.info()
        affinity = check_pinned(daemon)
        print(f"[{arbiter}] daemon pid {daemon.pid} on core {args.edge_core} "
              f"({affinity['threads']} threads); modes {','.join(modes)}", file=sys.stderr)
        for plan in args.dataset:
            out_dir = arbiter_dir / plan.slug
            if not args.settle:
                run_bench(target, plan, plan.limit, modes, out_dir, args.seed, log_path)
                continue
            # One mode over every item, then the next: run item by item, a POST_ARBITRATION cloud call
            # would find its prompt still in the stand-in's cache from CLOUD_ONLY's call just before, a
            # head start no real cloud gives.
            for mode in modes:
                for k in range(1, sizes[plan.slug] + 1):
                    waits.append(wait_idle([standin, daemon]))
                    run_bench(target, plan, k, [mode], out_dir, args.seed, log_path)
                print(f"[{arbiter}] {plan.spec}: {mode} on {sizes[plan.slug]} items", file=sys.stderr)
    finally:
        daemon.stop()
    return {"affinity": affinity, "wall_s": time.monotonic() - started, "modes": modes,
            "models": {"edge": {"name": info.edge.name, "sha256": info.edge.sha256, "n_ctx": info.edge.n_ctx},
                       "cloud": {"name": info.cloud.name, "endpoint": info.cloud.endpoint,
                                 "priced_as": info.cloud.priced_as, "local_standin": info.cloud.local_standin}},
            "machine": info.hardware, "packages": dict(info.packages),
            "settle_waits": {"n": len(waits), "total_s": float(sum(waits)),
                             "over_1s": sum(w > 1.0 for w in waits), "max_s": max(waits, default=0.0)},
            "config": config_path.read_text()}


def load_results(arbiter_dir: Path, plans: Sequence[DatasetPlan], seed: int) -> list[dict[str, Any]]:
    """The bench's latest record of each planned (item, mode) under one arbiter's work directory."""
    from bench.datasets import load_dataset, sample
    from bench.runner import RESULTS_FILE, latest_records, load_records

    records: list[dict[str, Any]] = []
    for plan in plans:
        wanted = {(item.dataset, item.item_id) for item in sample(load_dataset(plan.spec), limit=plan.limit,
                                                                  seed=seed)}
        records += [r for r in latest_records(load_records(arbiter_dir / plan.slug / RESULTS_FILE))
                    if item_key(r) in wanted]
    return records


def _s(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _x(value: Optional[float], ci: Optional[Sequence[float]] = None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _share(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"


def _verdict(met: Optional[bool]) -> str:
    return "no data" if met is None else ("met" if met else "not met")


def markdown(report: Mapping[str, Any]) -> str:
    setup = report["setup"]
    items = ", ".join(f"{d['spec']} {d['items']}" for d in setup["datasets"])
    lines = [
        "# Arbitration latency (POST_ARBITRATION's arbiters, AUTO), each model on its own core", "",
        f"`{report['command']}` on {report['date_utc']} (commit {report['git']['commit'][:12]}"
        f"{', with local changes' if report['git']['dirty'] else ''})", "",
        f"Machine: {report['machine']}; Python {report['packages']['python']}, llama-cpp-python "
        f"{report['packages']['llama-cpp-python']}, grpcio {report['packages']['grpcio']}; load average "
        f"{report['load_average']['start']:.2f} at the start, {report['load_average']['end']:.2f} at the end.", "",
        "Setup:", "",
        f"- cloud: {setup['cloud']['model']} behind llama-cpp-python's OpenAI-compatible server, "
        f"`taskset -c {setup['cloud']['core']}`, {setup['cloud']['threads']} thread, n_ctx {setup['cloud']['n_ctx']}, "
        f"reached by the daemon as an external cloud ({setup['cloud']['base_url']})",
        f"- edge: {setup['edge']['model']} in the daemon, `taskset -c {setup['edge']['core']}` (the whole daemon "
        f"process), {setup['edge']['threads']} thread, n_ctx {setup['edge']['n_ctx']}",
        f"- {setup['client']}",
        f"- arbitration: scorer {setup['scorer']}, fixed threshold {setup['threshold']}; early: threshold "
        f"{setup['early_threshold']}, window {setup['early_window']} tokens; consistency samples {setup['samples']}"
        + ("; auto runs on the defaults instead (the shipped probes, `[auto]`'s bands and threshold)"
           if AUTO in report["arbiters"] else ""),
        f"- items: {items} (seed {setup['seed']}); "
        f"greedy; max_tokens {setup['max_tokens']}",
        f"- {setup['cloud_only']}",
        f"- {setup['settle']}",
        f"- pricing: {setup['pricing']}",
        f"- latency: {setup['latency_definition']}", "",
        "| arbiter | n | p50 | p90 | ttft p50 | ttft p90 | escalated | escalated p50 | kept p50 | "
        "p50 / CLOUD_ONLY p50 (same items) [95% CI] | served correct | $ / 1k requests |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cloud = report["cloud_only"]
    lines.append(f"| CLOUD_ONLY | {cloud['requests']} | {_s(cloud['latency_s']['p50'])} | "
                 f"{_s(cloud['latency_s']['p90'])} | {_s(cloud['ttft_s']['p50'])} | {_s(cloud['ttft_s']['p90'])} | "
                 f"| | | | {_share(cloud['served_correct_share'])} | "
                 f"{_x(None if cloud['usd_per_request'] is None else cloud['usd_per_request'] * 1000)} |")
    edge = report.get("edge_only")
    if edge:
        lines.append(f"| EDGE_ONLY | {edge['requests']} | {_s(edge['latency_s']['p50'])} | "
                     f"{_s(edge['latency_s']['p90'])} | {_s(edge['ttft_s']['p50'])} | {_s(edge['ttft_s']['p90'])} | "
                     f"| | | | {_share(edge['served_correct_share'])} | "
                     f"{_x(None if edge['usd_per_request'] is None else edge['usd_per_request'] * 1000)} |")
    for name, arb in report["arbiters"].items():
        share = arb["escalated"]["share"]
        same = arb["same_items_as_cloud_only"]
        lines.append(
            f"| {name} | {arb['requests']} | {_s(arb['latency_s']['p50'])} | {_s(arb['latency_s']['p90'])} | "
            f"{_s(arb['ttft_s']['p50'])} | {_s(arb['ttft_s']['p90'])} | {arb['escalated']['n']}"
            f"{'' if share is None else f' ({share:.0%})'} | {_s(arb['escalated']['latency_s']['p50'])} | "
            f"{_s(arb['kept']['latency_s']['p50'])} | {_x(same['ratio'], same['ratio_ci95'])} (n {same['n']}) | "
            f"{_share(arb['served_correct_share'])} | "
            f"{_x(None if arb['usd_per_request'] is None else arb['usd_per_request'] * 1000)} |")
    lines += ["", "By data set (p50 total latency):", "", "| arbiter | data set | n | p50 | escalated | "
              "CLOUD_ONLY p50 |", "|---|---|---|---|---|---|"]
    for name, arb in report["arbiters"].items():
        for dataset, row in arb["by_dataset"].items():
            lines.append(f"| {name} | {dataset} | {row['n']} | {_s(row['p50_s'])} | {row['escalated']} | "
                         f"{_s(row['cloud_only_p50_s'])} |")
    for name, arb in report["arbiters"].items():
        if "routes" in arb:
            lines += ["", f"{name}'s routes: " + ", ".join(f"{route} {n}" for route, n in sorted(arb["routes"].items()))]
    lines += ["", "Targets:", ""]
    found = report["targets"]
    if "parallel_vs_cloud_only" in found:
        t = found["parallel_vs_cloud_only"]
        lines.append(f"- parallel p50 / CLOUD_ONLY p50 = {_x(t['ratio'], t['ratio_ci95'])} on {t['n']} items "
                     f"({_s(t['parallel_p50_s'])} vs {_s(t['cloud_only_p50_s'])}); target {t['target']}: "
                     f"{_verdict(t['met'])}")
    if "early_vs_cascade_escalated" in found:
        t = found["early_vs_cascade_escalated"]
        both = t["escalated_by_both"]
        lines.append(f"- escalated requests, early p50 / cascade p50 = {_x(t['ratio'], t['ratio_ci95'])} "
                     f"({_s(t['early_p50_s'])}, n {t['early_n']} vs {_s(t['cascade_p50_s'])}, n {t['cascade_n']}); "
                     f"target {t['target']}: {_verdict(t['met'])}. On the {both['n']} items both escalated: "
                     f"{_s(both['early_p50_s'])} vs {_s(both['cascade_p50_s'])}, ratio "
                     f"{_x(both['ratio'], both['ratio_ci95'])}")
        paired = both.get("ratio_ci95")
        if t["met"] and paired and paired[1] >= 1:
            lines.append("  - but the paired 95% interval includes 1: on these items early shows no real cut "
                         "against cascade (check whether its confidence ever fell below arbitration.early_threshold)")
    if "auto_vs_single_models" in found:
        t = found["auto_vs_single_models"]
        for other in ("cloud_only", "edge_only"):
            row = t[other]
            lines.append(f"- AUTO p50 / {other.upper()} p50 = {_x(row['ratio'], row['ratio_ci95'])} on the {row['n']} "
                         f"items both answered ({_s(row['auto_p50_s'])} vs {_s(row['other_p50_s'])}); no target, "
                         "reported as issue 29 asks")
    if not found:
        lines.append("- none measured: run parallel for the first, cascade and early for the second, auto for AUTO")
    lines += ["", "Medians over few requests; the 95% intervals are percentile bootstraps over the items "
              "(paired where the same items are compared).", "",
              f"Reproduce: `{report['reproduce']}`", ""]
    return "\n".join(lines)


def git_state() -> dict[str, Any]:
    def git(*arguments: str) -> str:
        try:
            return subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain"))}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: everything started here is stopped


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if shutil.which("taskset") is None:
        print("arbitration_latency: taskset is not installed (it is in util-linux)", file=sys.stderr)
        return 2
    usable = os.sched_getaffinity(0)
    if not {args.edge_core, args.cloud_core} <= usable:
        print(f"arbitration_latency: cores {args.edge_core} and {args.cloud_core} are not both usable here "
              f"(usable: {sorted(usable)})", file=sys.stderr)
        return 2

    from bench.runner import DEFAULT_MAX_TOKENS
    from edge.catalogue import CATALOGUE, ModelCache
    from edge.errors import ModelFileError
    from router.domain.config import ArbitrationSettings, ConfigError, load_settings

    reproduce = shlex.join([".venv/bin/python", "bench/arbitration_latency.py",
                            *(sys.argv[1:] if argv is None else argv)])
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"arbitration_latency: load average {load_start:.2f}: something else is running; its CPU time "
              "is taken from these two cores and the latencies will show it", file=sys.stderr)
    try:
        for arbiter in args.arbiters:  # a bad --scorer or --model-dir stops here, before a model loads
            check = Path(tempfile.mkstemp(suffix=".toml")[1])
            try:
                check.write_text(daemon_toml(base_url="http://127.0.0.1:1/v1", arbiter=arbiter, scorer=args.scorer,
                                             threshold=args.threshold, model_dir=args.model_dir))
                load_settings(check, {})
            finally:
                check.unlink()
        sizes = {plan.slug: item_count(plan, args.seed) for plan in args.dataset}
        cache = ModelCache(Path("~/.cache/hybrid-router/models").expanduser())
        cloud_path, edge_path = cache.require(CLOUD_MODEL), cache.require(EDGE_MODEL)
    except (ConfigError, ModelFileError, OSError, ValueError) as exc:  # bad settings, a data set not there, a model not pulled
        print(f"arbitration_latency: {exc}", file=sys.stderr)
        return 2
    args.work_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = tempfile.TemporaryDirectory(prefix="arbitration-latency-")
    tmp = Path(tmp_dir.name)
    port = free_loopback_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    standin_env = {k: v for k, v in os.environ.items() if k.lower() not in _STANDIN_ENV_TO_DROP}
    standin_env["PYTHONUNBUFFERED"] = "1"
    standin_command = [sys.executable, "-m", "edge.openai_server", "--model", str(cloud_path),
                       "--model_alias", CLOUD_MODEL, "--host", "127.0.0.1", "--port", str(port),
                       "--n_ctx", str(N_CTX), "--n_threads", str(THREADS), "--n_batch", str(N_BATCH),
                       "--logits_all", "false", "--interrupt_requests", "false"]
    standin = PinnedProcess("cloud stand-in", standin_command, core=args.cloud_core, env=standin_env,
                            log_path=args.work_dir / "standin.log", death_signal=signal.SIGKILL)
    runs: dict[str, Any] = {}
    started = time.monotonic()
    try:
        standin.start()
        wait_until(lambda: lists_model(f"{base_url}/models", CLOUD_MODEL), standin, 600.0, "answering /v1/models")
        standin_affinity = check_pinned(standin)
        print(f"cloud stand-in pid {standin.pid} on core {args.cloud_core} at {base_url}", file=sys.stderr)
        for index, arbiter in enumerate(args.arbiters):
            runs[arbiter] = run_arbiter(args, arbiter, with_cloud_only=index == 0 or args.cloud_only == "each",
                                        standin=standin, base_url=base_url, tmp=tmp, sizes=sizes)
    except RuntimeError as exc:  # BenchFailed too
        print(f"arbitration_latency: {exc}", file=sys.stderr)
        return 1
    finally:
        standin.stop()
        tmp_dir.cleanup()

    records = {arbiter: load_results(args.work_dir / arbiter, args.dataset, args.seed) for arbiter in args.arbiters}
    cloud_only = [r for arbiter in args.arbiters for r in records[arbiter] if r.get("mode") == "CLOUD_ONLY"]
    arbitration = ArbitrationSettings()
    first = args.arbiters[0]
    report: dict[str, Any] = {
        "benchmark": "arbitration_latency", "command": shlex.join(["python", "-m", "bench.arbitration_latency",
                                                                   *(sys.argv[1:] if argv is None else argv)]),
        "reproduce": reproduce, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.monotonic() - started, "git": git_state(),
        # As the daemon reports them (Info): the bench talks to the router only through the SDK.
        "machine": runs[first]["machine"], "packages": runs[first]["packages"],
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "setup": {
            "cloud": {"model": CLOUD_MODEL, "sha256": CATALOGUE[CLOUD_MODEL].sha256, "core": args.cloud_core,
                      "threads": THREADS, "n_ctx": N_CTX, "n_batch": N_BATCH, "base_url": base_url,
                      "command": shlex.join(shown_command(standin.command)), "affinity": standin_affinity},
            "edge": {"model": EDGE_MODEL, "sha256": CATALOGUE[EDGE_MODEL].sha256, "core": args.edge_core,
                     "threads": THREADS, "n_ctx": N_CTX, "n_batch": N_BATCH,
                     "command": f"taskset -c {args.edge_core} {Path(sys.executable).name} -m router --config "
                                "ARBITER.toml serve --listen unix:…"},
            "client": "the bench client (this process, through the SDK over a unix socket) is not pinned",
            "scorer": args.scorer, "threshold": args.threshold, "early_threshold": arbitration.early_threshold,
            "early_window": arbitration.early_window, "samples": arbitration.samples, "seed": args.seed,
            "datasets": [{"spec": p.spec, "limit": p.limit, "items": sizes[p.slug]} for p in args.dataset],
            "max_tokens": dict(DEFAULT_MAX_TOKENS),
            "cloud_only": (f"CLOUD_ONLY ran in each arbiter's daemon" if args.cloud_only == "each" else
                           f"CLOUD_ONLY ran once, in the first arbiter's ({first}) daemon, each item's request "
                           "before the other modes' requests"),
            "settle": ("each request was sent once the stand-in and the daemon were idle (no queueing behind a "
                       "cancelled cloud call)" if args.settle else
                       "requests were sent back to back (a request may queue behind a cancelled cloud call)"),
            "pricing": (f"cloud calls priced at ${CLOUD_USD_PER_MTOK['input']:.2f} / ${CLOUD_USD_PER_MTOK['output']:.2f} per "
                        "million prompt/completion tokens (cloud.input_usd_per_mtok / output_usd_per_mtok: "
                        "gpt-4o-mini's list prices, the defaults) on the token counts the stand-in reports; "
                        f"cloud.model = {CLOUD_MODEL} is only the name sent and shown as priced_as; the edge "
                        "is priced by its estimated energy"),
            "latency_definition": "latency.total_s and latency.ttft_s as the daemon times them (request in to "
                                  "result out, without the gRPC round trip); errors are left out and counted",
        },
        "runs": runs,
        "cloud_only": cloud_only_report(cloud_only),
        "arbiters": {arbiter: arbiter_report(records[arbiter], cloud_only, mode_of(arbiter))
                     for arbiter in args.arbiters},
        **({"edge_only": cloud_only_report(records[AUTO], "EDGE_ONLY")} if AUTO in records else {}),
        "targets": targets(records, cloud_only),
        "requests": [row for arbiter in args.arbiters for row in request_rows(arbiter, records[arbiter])],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arbitration_latency.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / "arbitration_latency.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
