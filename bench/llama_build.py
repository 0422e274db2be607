"""Decode speed of two llama-cpp-python builds on this machine, interleaved round by round.

    python -m bench.llama_build --build native=/path/venv-native/bin/python --build dispatch=.venv/bin/python

Each round runs every build once, in a rotating order, in a fresh child process: load the model,
warm up, then time `--tokens` greedy decode steps (prompt evaluation excluded). The child reports
which CPU code it ran (the dispatch variant, or the built-in one) and llama.cpp's system info, so
the report shows what was compared. Writes bench/results/llama_build.{json,md}.

The build-policy decision (README, "llama.cpp build policy") rests on this: a build may lose at
most 3% of decode speed against the native one.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.portable import shown_command

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a long essay about the history of the bicycle, with many details."

CHILD = r"""
import json, sys, time
from edge.ggml_runtime import ensure_cpu_backend
backend = ensure_cpu_backend()
import llama_cpp
model, threads, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=threads, logits_all=False, verbose=False)
prompt = llm.tokenize(sys.argv[4].encode(), add_bos=True)
def decode(count):
    generated, started = 0, None
    for _ in llm.generate(prompt, temp=0.0, reset=True):
        if started is None:
            started = time.perf_counter()  # the first token came with the prompt's evaluation
        generated += 1
        if generated > count:
            break
    return count / (time.perf_counter() - started)
decode(8)
rate = decode(tokens)
print(json.dumps({"tokens_per_s": rate, "variant": backend.variant, "features": backend.enabled_features(),
                  "llama_cpp_python": llama_cpp.__version__}))
"""


def run_child(python: str, model: str, threads: int, tokens: int) -> dict:
    completed = subprocess.run([python, "-c", CHILD, model, str(threads), str(tokens), PROMPT], cwd=ROOT,
                               capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"{python} failed (exit {completed.returncode}): {completed.stderr[-800:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="append", required=True, metavar="NAME=PYTHON",
                        help="a build to measure: a name and the interpreter of the venv that has it")
    parser.add_argument("--model", default=str(Path("~/.cache/hybrid-router/models/qwen2.5-coder-0.5b.gguf").expanduser()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", default="native", help="the build the others are compared with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    builds = dict(item.split("=", 1) for item in args.build)
    if args.baseline not in builds:
        parser.error(f"--baseline {args.baseline!r} is not among the builds: {', '.join(builds)}")
    names = list(builds)
    rates: dict[str, list[float]] = {name: [] for name in names}
    described: dict[str, dict] = {}
    for round_number in range(args.rounds):
        for offset in range(len(names)):
            name = names[(round_number + offset) % len(names)]
            found = run_child(builds[name], args.model, args.threads, args.tokens)
            rates[name].append(found["tokens_per_s"])
            described[name] = {k: v for k, v in found.items() if k != "tokens_per_s"}
            print(f"round {round_number + 1}: {name} {found['tokens_per_s']:.1f} tok/s", file=sys.stderr)
    baseline = statistics.median(rates[args.baseline])
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    report = {
        "benchmark": "llama_build", "command": " ".join(["python", "-m", "bench.llama_build", *shown_command(sys.argv[1:])]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{cpu}, {platform.system()} {platform.release()}", "python": platform.python_version(),
        "model": args.model, "threads": args.threads, "tokens": args.tokens, "rounds": args.rounds,
        "builds": {name: {**described[name], "tokens_per_s": rates[name], "median": statistics.median(rates[name]),
                          "min": min(rates[name]), "max": max(rates[name]),
                          "vs_baseline": statistics.median(rates[name]) / baseline} for name in names},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llama_build.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# llama.cpp builds: decode speed\n", f"`{report['command']}` on {report['date_utc']}\n",
             f"Machine: {report['machine']}; Python {report['python']}; model {Path(args.model).name}, "
             f"{args.threads} threads, greedy, {args.tokens} decode steps after 8 warm-up steps, "
             f"{args.rounds} rounds interleaved in a rotating order, each build in a fresh process.\n",
             "| build | CPU code run | tok/s median (min–max) | vs " + args.baseline + " |", "|---|---|---|---|"]
    for name in names:
        entry = report["builds"][name]
        lines.append(f"| {name} | {entry['variant']}: {' '.join(entry['features'])} | {entry['median']:.1f} "
                     f"({entry['min']:.1f}–{entry['max']:.1f}) | {entry['vs_baseline']:.3f} |")
    md = "\n".join(lines) + "\n"
    (args.out / "llama_build.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
