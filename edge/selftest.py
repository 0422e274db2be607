"""The llama.cpp self-test: one short decode on a small model, in a child process.

A llama.cpp build whose CPU code the machine cannot run does not raise: it kills the process
(SIGSEGV, SIGILL) at the first decode. So the decode runs in a child, and the parent turns a crash
into one line that says what failed, which instruction sets the build used, and how to rebuild.

    python -m edge.selftest MODEL.gguf          # prints one line; exit 0 ok, 3 crashed, 1 failed

The child first prints what it loaded (variant and system info), then decodes, so the parent knows
the build even when the decode is what kills the child.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

REBUILD_COMMAND = "make llama-rebuild LLAMA_POLICY=conservative"
DECODE_TOKENS = 8
DEFAULT_TIMEOUT_S = 180.0
EXIT_CRASHED = 3
# Test-only: make the child die the way a bad build does, at the point where a bad build dies.
FAULT_CRASH_AT_DECODE = "crash-at-decode"


@dataclass(frozen=True)
class SelfTestResult:
    ok: bool
    summary: str  # the one line to show
    variant: str = ""
    features: tuple[str, ...] = ()
    system_info: str = ""
    tokens_per_s: Optional[float] = None
    signal_name: str = ""
    details: dict[str, object] = field(default_factory=dict)


def run_selftest(model_path: Path, *, python: str = sys.executable, timeout_s: float = DEFAULT_TIMEOUT_S,
                 inject_fault: Optional[str] = None) -> SelfTestResult:
    command = [python, "-m", "edge.selftest", "--child", str(model_path)]
    if inject_fault:
        command += ["--inject-fault", inject_fault]
    root = Path(__file__).resolve().parent.parent
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=environment)
    except subprocess.TimeoutExpired as exc:
        loaded = _loaded_line(exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        return _failure(f"llama.cpp self-test hung: no {DECODE_TOKENS}-token decode within {timeout_s:.0f} s", loaded)
    loaded = _loaded_line(completed.stdout)
    if completed.returncode < 0:
        name = signal.Signals(-completed.returncode).name
        stage = "at the first decode" if loaded else "while loading llama.cpp"
        return _failure(f"llama.cpp self-test crashed ({name}) {stage}", loaded, signal_name=name)
    finished = _finished_line(completed.stdout)
    if completed.returncode != 0 or finished is None:
        reason = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        return SelfTestResult(ok=False, summary=f"llama.cpp self-test failed: {reason}",
                              details={"stderr": completed.stderr[-2000:]}, **_build_fields(loaded))
    speed = finished.get("tokens_per_s")
    fields = _build_fields(loaded)
    return SelfTestResult(ok=True, tokens_per_s=speed, details=finished,
                          summary=(f"llama.cpp self-test ok: {finished.get('tokens')} tokens decoded, "
                                   f"CPU variant {fields['variant']} "
                                   f"({', '.join(fields['features']) or 'no SIMD features reported'})"),
                          **fields)


def _failure(what: str, loaded: Optional[dict], *, signal_name: str = "") -> SelfTestResult:
    fields = _build_fields(loaded)
    used = ", ".join(fields["features"]) or "unknown"
    summary = (f"{what}; the build uses CPU variant {fields['variant'] or 'unknown'} with {used}; "
               f"rebuild with the safe flags: {REBUILD_COMMAND}")
    return SelfTestResult(ok=False, summary=summary, signal_name=signal_name, **fields)


def _build_fields(loaded: Optional[dict]) -> dict:
    loaded = loaded or {}
    return {"variant": str(loaded.get("variant", "")), "features": tuple(loaded.get("features", ())),
            "system_info": str(loaded.get("system_info", ""))}


def _json_lines(stdout: str) -> list[dict]:
    found = []
    for line in stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _loaded_line(stdout: str) -> Optional[dict]:
    return next((v for v in _json_lines(stdout) if v.get("stage") == "loaded"), None)


def _finished_line(stdout: str) -> Optional[dict]:
    return next((v for v in _json_lines(stdout) if v.get("stage") == "decoded"), None)


def _child(model_path: Path, inject_fault: Optional[str]) -> int:
    from edge.ggml_runtime import ensure_cpu_backend

    backend = ensure_cpu_backend()
    print(json.dumps({"stage": "loaded", "variant": backend.variant, "library": backend.library,
                      "features": backend.enabled_features(), "system_info": backend.system_info}), flush=True)
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, n_threads=min(2, os.cpu_count() or 1),
                          verbose=False)
    prompt = llm.tokenize(b"The capital of France is", add_bos=True)
    if inject_fault == FAULT_CRASH_AT_DECODE:
        os.kill(os.getpid(), signal.SIGSEGV)
    started = time.perf_counter()
    generated = 0
    for _token in llm.generate(prompt, temp=0.0, reset=True):
        generated += 1
        if generated >= DECODE_TOKENS:
            break
    seconds = time.perf_counter() - started
    print(json.dumps({"stage": "decoded", "tokens": generated, "seconds": round(seconds, 4),
                      "tokens_per_s": round(generated / seconds, 1) if seconds > 0 else None}), flush=True)
    llm.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.selftest", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a small GGUF model (the test model, SmolLM2-135M)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inject-fault", choices=(FAULT_CRASH_AT_DECODE,), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.model, args.inject_fault)
    if not args.model.is_file():
        print(f"llama.cpp self-test: model file {args.model} does not exist", file=sys.stderr)
        return 1
    result = run_selftest(args.model, timeout_s=args.timeout, inject_fault=args.inject_fault)
    print(result.summary, file=sys.stdout if result.ok else sys.stderr)
    if result.ok:
        return 0
    return EXIT_CRASHED if result.signal_name else 1


if __name__ == "__main__":
    sys.exit(main())
