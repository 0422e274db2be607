"""How llama-cpp-python is compiled for this project, and the wheel cache that keeps each build.

    python -m edge.llama_build ensure [--policy dispatch|conservative|native]
    python -m edge.llama_build show   [--policy ...]

Policies (the README's "llama.cpp build policy" section has the measurements behind them):

- `dispatch` (the default): llama.cpp's runtime CPU dispatch. One build holds a CPU library per
  instruction-set level (`GGML_BACKEND_DL`, `GGML_CPU_ALL_VARIANTS`, `GGML_NATIVE=OFF`); at start the
  best one this CPU supports is loaded (edge/ggml_runtime.py). The variants that use AMX
  (`sapphirerapids`) are removed from the wheel: with llama-cpp-python 0.3.36, AMX code crashes at
  the first decode on Intel Xeons that have it. So the build's safety shows in its file list, and
  every CPU from SSE4.2 to AVX-512 still gets a variant compiled for it.
- `conservative`: one CPU library at the AVX2/FMA/F16C level (`GGML_NATIVE=OFF`), for a machine
  where the self-test fails with `dispatch`.
- `native`: llama-cpp-python's own default (`-march=native`, AMX included where the CPU has it).
  Kept only to measure against; it is the build that crashes on AMX machines.

pip's wheel cache is keyed by the sdist, not by CMAKE_ARGS, so a cached native wheel would be reused
for any policy. Builds are therefore made with `--no-cache-dir` into our own cache, one folder per
(policy, flags, version, Python, platform), and installed from there.

Standard library only: it runs before anything else is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_POLICY = "dispatch"
POLICIES = ("dispatch", "conservative", "native")
AUTO = "auto"  # the policy the environment already has, else DEFAULT_POLICY
# CPU variants never shipped: they use instructions that crash llama.cpp 0.3.36 (AMX, see above).
EXCLUDED_VARIANTS = ("sapphirerapids",)
# Features a loaded llama.cpp must never report under the dispatch or conservative policy.
EXCLUDED_FEATURES = ("AMX_INT8", "AMX_TILE", "AMX_BF16")
MARKER_NAME = "hybrid-router-llama-build.json"  # in the virtualenv's root: which build is installed


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class BuildPlan:
    policy: str
    cmake_args: tuple[str, ...]
    excluded_variants: tuple[str, ...]

    @property
    def key(self) -> str:
        identity = json.dumps([self.policy, self.cmake_args, self.excluded_variants,
                               LLAMA_CPP_PYTHON_VERSION, sysconfig.get_platform(),
                               sys.implementation.cache_tag])
        return f"{self.policy}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"

    def describe(self) -> dict[str, object]:
        return {"policy": self.policy, "cmake_args": list(self.cmake_args),
                "excluded_variants": list(self.excluded_variants),
                "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "key": self.key}


def plan_for(policy: str, system: Optional[str] = None, machine: Optional[str] = None) -> BuildPlan:
    if policy not in POLICIES:
        raise BuildError(f"unknown llama.cpp build policy {policy!r}; use one of: {', '.join(POLICIES)}")
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    x86 = machine in ("x86_64", "amd64")
    arm = machine in ("aarch64", "arm64")
    if policy == "native":
        return BuildPlan(policy, ("-DGGML_NATIVE=ON",), ())
    if system == "Darwin":
        # Apple silicon has no x86 AMX; llama-cpp-python's default macOS build (Metal) is kept.
        return BuildPlan(policy, (), ())
    if policy == "dispatch" and system == "Linux" and (x86 or arm):
        return BuildPlan(policy, ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"),
                         EXCLUDED_VARIANTS if x86 else ())
    if x86:  # conservative, or dispatch on a system where ggml has no variant list
        return BuildPlan("conservative" if policy == "conservative" else policy,
                         ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON",
                          "-DGGML_F16C=ON", "-DGGML_BMI2=ON"), ())
    if arm:
        return BuildPlan(policy, ("-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a"), ())
    return BuildPlan(policy, ("-DGGML_NATIVE=OFF",), ())


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "hybrid-router" / "wheels"


def cached_wheel(plan: BuildPlan, cache_dir: Path) -> Optional[Path]:
    found = sorted((cache_dir / plan.key).glob("llama_cpp_python-*.whl"))
    return found[0] if found else None


def build_wheel(plan: BuildPlan, cache_dir: Path, *, python: str = sys.executable) -> Path:
    """Compiles llama-cpp-python under `plan` into the cache (minutes) and returns the wheel."""
    target = cache_dir / plan.key
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=cache_dir) as tmp:
        env = dict(os.environ, CMAKE_ARGS=" ".join(plan.cmake_args))
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        command = [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary",
                   "llama-cpp-python", "-w", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        print(f"llama.cpp build: compiling llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} with policy "
              f"{plan.policy} (CMAKE_ARGS={env['CMAKE_ARGS']!r}); this takes several minutes",
              file=sys.stderr, flush=True)
        completed = subprocess.run(command, env=env)
        if completed.returncode != 0:
            raise BuildError(f"compiling llama-cpp-python failed (exit {completed.returncode}); "
                             f"command: CMAKE_ARGS={env['CMAKE_ARGS']!r} {' '.join(command)}")
        wheels = list(Path(tmp).glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"pip wheel produced {len(wheels)} wheels in {tmp}, expected one")
        built = wheels[0]
        if plan.excluded_variants:
            remove_variants(built, plan.excluded_variants)
        target.mkdir(parents=True, exist_ok=True)
        final = target / built.name
        shutil.move(str(built), final)
        (target / "build.json").write_text(json.dumps(plan.describe(), indent=2) + "\n")
        return final


def variant_name(member: str) -> Optional[str]:
    """'bin/libggml-cpu-zen4.so' -> 'zen4'; None for anything that is not a CPU variant library."""
    name = member.rsplit("/", 1)[-1]
    for prefix in ("libggml-cpu-", "ggml-cpu-"):
        if name.startswith(prefix):
            return name[len(prefix):].split(".", 1)[0]
    return None


def remove_variants(wheel: Path, excluded: Sequence[str]) -> list[str]:
    """Rewrites `wheel` without the excluded CPU variants (and their RECORD lines). Returns what went."""
    removed: list[str] = []
    rewritten = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as target:
        record_name = next(n for n in source.namelist() if n.endswith(".dist-info/RECORD"))
        for info in source.infolist():
            if variant_name(info.filename) in excluded:
                removed.append(info.filename)
            elif info.filename != record_name:
                target.writestr(info, source.read(info.filename))
        kept_lines = [line for line in source.read(record_name).decode().splitlines()
                      if line.split(",", 1)[0] not in removed]
        target.writestr(record_name, "\n".join(kept_lines) + "\n")
    missing = set(excluded) - {variant_name(name) for name in removed}
    if missing:
        rewritten.unlink()
        raise BuildError(f"the build has no CPU variant named {', '.join(sorted(missing))} to remove; "
                         "ggml's variant list changed: review EXCLUDED_VARIANTS in edge/llama_build.py")
    rewritten.replace(wheel)
    return removed


def wheel_digest(wheel: Path) -> str:
    return urlsafe_b64encode(hashlib.sha256(wheel.read_bytes()).digest()).decode().rstrip("=")


def marker_path(prefix: str = sys.prefix) -> Path:
    return Path(prefix) / MARKER_NAME


def installed_build(prefix: str = sys.prefix) -> Optional[dict[str, object]]:
    try:
        return json.loads(marker_path(prefix).read_text())
    except (OSError, ValueError):
        return None


def _prefix_of(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def ensure(plan: BuildPlan, cache_dir: Path, *, python: str = sys.executable) -> Path:
    """Builds (if not cached) and installs the wheel for `plan` into `python`'s environment."""
    wheel = cached_wheel(plan, cache_dir) or build_wheel(plan, cache_dir, python=python)
    digest = wheel_digest(wheel)
    prefix = _prefix_of(python)
    current = installed_build(prefix)
    if current is not None and current.get("wheel_sha256") == digest:
        return wheel
    command = [python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--no-cache-dir",
               "--disable-pip-version-check", "-q", str(wheel)]
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise BuildError(f"installing {wheel} failed (exit {completed.returncode})")
    marker_path(prefix).write_text(json.dumps({**plan.describe(), "wheel": str(wheel),
                                               "wheel_sha256": digest}, indent=2) + "\n")
    print(f"llama.cpp build: installed {wheel.name} (policy {plan.policy})", file=sys.stderr)
    return wheel


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.llama_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("ensure", "show"))
    parser.add_argument("--policy", default=AUTO, choices=(AUTO, *POLICIES))
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="wheel cache (default: $XDG_CACHE_HOME/hybrid-router/wheels, else ~/.cache/...)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose environment gets the wheel")
    args = parser.parse_args(argv)
    policy = args.policy
    if policy == AUTO:
        current = installed_build(_prefix_of(args.python))
        policy = str(current["policy"]) if current and current.get("policy") in POLICIES else DEFAULT_POLICY
    plan = plan_for(policy)
    cache_dir = args.cache_dir or default_cache_dir()
    if args.action == "show":
        print(json.dumps({**plan.describe(), "cached_wheel": str(cached_wheel(plan, cache_dir) or ""),
                          "installed": installed_build(_prefix_of(args.python))}, indent=2))
        return 0
    try:
        ensure(plan, cache_dir, python=args.python)
    except BuildError as exc:
        print(f"llama.cpp build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
