"""The installed llama.cpp build keeps to the build policy, and the self-test turns a crash into one line.

Read from the build itself: the system info of the CPU code this machine runs, and the compiled-in
instruction sets of every CPU variant the build ships (each read in a child process, as ggml's own
dispatcher reads them, so a check cannot take the test run down).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.ggml_runtime import ensure_cpu_backend, shipped_variants
from edge.llama_build import EXCLUDED_FEATURES, EXCLUDED_VARIANTS, installed_build
from edge.selftest import FAULT_CRASH_AT_DECODE, REBUILD_COMMAND, run_selftest
from tests.conftest import models_dir

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_code_running_here_uses_no_excluded_instruction_set() -> None:
    backend = ensure_cpu_backend()
    features = backend.features()
    assert features, f"llama_print_system_info() gave nothing to check: {backend.system_info!r}"
    used = sorted(name for name in EXCLUDED_FEATURES if features.get(name) == "1")
    assert not used, f"the loaded CPU code ({backend.variant}) uses {used}: {backend.system_info}"


def test_the_build_ships_no_excluded_variant() -> None:
    shipped = shipped_variants()
    if installed_build(sys.prefix) and installed_build(sys.prefix).get("policy") == "dispatch":
        assert shipped, "a dispatch build ships CPU variants, but none were found"
    assert not set(shipped) & set(EXCLUDED_VARIANTS), f"excluded variants shipped: {sorted(shipped)}"


def variant_report(library: Path) -> dict:
    code = ("import json, sys, dataclasses; from pathlib import Path; "
            "from edge.ggml_runtime import variant_features; "
            "print(json.dumps(dataclasses.asdict(variant_features(Path(sys.argv[1])))))")
    completed = subprocess.run([sys.executable, "-c", code, str(library)], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, f"reading {library.name} failed: {completed.stderr[-500:]}"
    return json.loads(completed.stdout.strip().splitlines()[-1])


NO_VARIANTS = "(no variants: CPU code linked in)"


@pytest.mark.parametrize("name", sorted(shipped_variants()) or [NO_VARIANTS])
def test_every_shipped_variant_was_compiled_without_the_excluded_instruction_sets(name: str) -> None:
    variants = shipped_variants()
    if name == NO_VARIANTS:
        build = installed_build(sys.prefix) or {}
        assert build.get("policy") != "dispatch", "a dispatch build ships CPU variants, but none were found"
        # Nothing to read here: the linked-in CPU code is checked where it runs, by
        # test_the_cpu_code_running_here_uses_no_excluded_instruction_set.
        pytest.skip(f"this build ({build.get('policy', 'unrecorded policy')}) ships no CPU variant to read")
    report = variant_report(variants[name])
    if report["runnable_here"]:
        assert report["features"], f"{name} reports no compiled-in instruction sets"
        assert not set(report["features"]) & set(EXCLUDED_FEATURES), report
    # A variant this CPU cannot run is not loaded beyond its score; its name keeps it in the policy.
    assert name not in EXCLUDED_VARIANTS


def test_the_selftest_decodes_on_the_test_model() -> None:
    result = run_selftest(models_dir() / "smollm2-135m.gguf")
    assert result.ok, result.summary
    assert result.variant and result.features
    assert "self-test ok" in result.summary


def test_a_crash_at_the_first_decode_becomes_one_line_with_the_build_and_the_fix() -> None:
    result = run_selftest(models_dir() / "smollm2-135m.gguf", inject_fault=FAULT_CRASH_AT_DECODE)
    assert not result.ok
    assert result.signal_name == "SIGSEGV"
    assert "\n" not in result.summary
    assert "crashed (SIGSEGV) at the first decode" in result.summary
    assert result.variant and result.variant in result.summary
    assert "AVX2" in result.summary or "NEON" in result.summary
    assert REBUILD_COMMAND in result.summary


def test_the_selftest_command_exits_3_on_a_crash() -> None:
    completed = subprocess.run([sys.executable, "-m", "edge.selftest", str(models_dir() / "smollm2-135m.gguf"),
                                "--inject-fault", FAULT_CRASH_AT_DECODE], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 3
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "Segmentation fault" not in completed.stderr
