"""Which llama.cpp CPU code runs in this process, and loading it when the build dispatches at run time.

A `dispatch` build (edge/llama_build.py) ships one CPU library per instruction-set level, and
llama-cpp-python 0.3.36 installs them into `site-packages/bin/` and never loads them: a model then
fails with "no backends are loaded". `ensure_cpu_backend()` asks ggml to load the best variant for
this CPU from that folder. It must talk to the very libggml that `llama_cpp` mapped: a second copy
of the library has its own, empty backend registry. So the handle is taken from the mapped file
itself (RTLD_NOLOAD), never opened afresh.

Safe to call any number of times, from any module that uses llama_cpp (the edge backend, the
stand-in's server, the benches); a build with the CPU code linked in needs no loading and is left as is.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import llama_cpp

from edge.errors import EdgeError

# Entries of llama.cpp's system info that are build options, not instruction sets.
NOT_INSTRUCTION_SETS = frozenset({"LLAMAFILE", "OPENMP", "REPACK", "KLEIDIAI", "ACCELERATE"})
_CPU_VARIANT = re.compile(r"(?:lib)?ggml-cpu-([A-Za-z0-9_.]+?)\.(?:so|dylib|dll)$")


class CpuBackendError(EdgeError):
    """No llama.cpp CPU backend could be loaded: the build is broken or incomplete."""


@dataclass(frozen=True)
class CpuBackend:
    dynamic: bool  # True: a variant library chosen at run time; False: CPU code linked into libggml
    variant: str  # e.g. "zen4"; "built-in" for a build without dispatch
    library: str  # the variant's file, or libggml's
    system_info: str  # llama_print_system_info(): the instruction sets the running code was built with

    def features(self) -> dict[str, str]:
        """`system_info` as {"AVX2": "1", ...} (the CPU section only)."""
        found: dict[str, str] = {}
        for part in self.system_info.split("|"):
            name, sep, value = part.partition("=")
            name = name.strip().split(":")[-1].strip()
            if sep and name:
                found[name] = value.strip()
        return found

    def enabled_features(self) -> list[str]:
        """The instruction sets the running CPU code uses (build options such as OPENMP left out)."""
        return sorted(name for name, value in self.features().items()
                      if value == "1" and name not in NOT_INSTRUCTION_SETS)


def package_dir() -> Path:
    return Path(llama_cpp.__file__).resolve().parent


def variant_dirs() -> list[Path]:
    """Where a dispatch build's CPU variants can be: `site-packages/bin` (0.3.36) or `llama_cpp/lib`."""
    return [package_dir().parent / "bin", package_dir() / "lib"]


def shipped_variants() -> dict[str, Path]:
    """Every CPU variant library the installed build ships, by variant name."""
    found: dict[str, Path] = {}
    for folder in variant_dirs():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                match = _CPU_VARIANT.search(path.name)
                if match:
                    found.setdefault(match.group(1), path)
    return found


def _mapped_libraries() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return list(dict.fromkeys(line.split()[-1] for line in lines if line.endswith((".so", ".so.0")) or ".so." in line))


def _libggml() -> ctypes.CDLL:
    """The libggml that llama_cpp's libllama is linked against, as already mapped in this process."""
    for path in _mapped_libraries():
        name = os.path.basename(path)
        if name.startswith("libggml.so"):
            return ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    from llama_cpp import _ggml  # no /proc (macOS): llama_cpp's own handle, loaded by install name

    return _ggml.libggml


def _loaded_variant() -> Optional[str]:
    for path in _mapped_libraries():
        match = _CPU_VARIANT.search(os.path.basename(path))
        if match:
            return path
    return None


def _has_cpu_backend(libggml: ctypes.CDLL) -> bool:
    by_name = libggml.ggml_backend_reg_by_name
    by_name.restype, by_name.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    return bool(by_name(b"CPU"))


def ensure_cpu_backend() -> CpuBackend:
    """Loads the best CPU variant for this machine if the build dispatches at run time; describes it."""
    libggml = _libggml()
    if not _has_cpu_backend(libggml):
        load_all = libggml.ggml_backend_load_all_from_path
        load_all.restype, load_all.argtypes = None, [ctypes.c_char_p]
        for folder in variant_dirs():
            if any(_CPU_VARIANT.search(p.name) for p in folder.glob("*ggml-cpu-*")):
                load_all(os.fsencode(folder))
                break
        if not _has_cpu_backend(libggml):
            raise CpuBackendError(
                f"llama.cpp has no CPU backend: none of the CPU variant libraries in "
                f"{', '.join(map(str, variant_dirs()))} loads on this {platform.machine()} CPU. "
                "Rebuild with: make llama-rebuild LLAMA_POLICY=conservative")
    variant_path = _loaded_variant()
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    if variant_path is None:
        return CpuBackend(dynamic=False, variant="built-in", library=str(package_dir() / "lib"), system_info=info)
    match = _CPU_VARIANT.search(os.path.basename(variant_path))
    return CpuBackend(dynamic=True, variant=match.group(1) if match else "unknown", library=variant_path,
                      system_info=info)


@dataclass(frozen=True)
class VariantFeatures:
    variant: str
    library: str
    runnable_here: bool  # ggml_backend_score() > 0: this CPU has what the variant was compiled for
    features: tuple[str, ...]  # compiled-in instruction sets the variant reports ("AVX2", ...)


def variant_features(library: Path) -> VariantFeatures:
    """What one shipped variant was compiled with, read from the library itself.

    Loading a variant is what ggml's own dispatcher does with each of them to score it; only a
    variant that scores > 0 here is initialised, so no unsupported instruction runs. Call it in a
    child process all the same: it is a check, and a check must not take its caller down.
    """
    handle = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    match = _CPU_VARIANT.search(library.name)
    name = match.group(1) if match else library.name
    score = handle.ggml_backend_score
    score.restype, score.argtypes = ctypes.c_int, []
    if score() <= 0:
        return VariantFeatures(name, str(library), False, ())
    init = handle.ggml_backend_init
    init.restype, init.argtypes = ctypes.c_void_p, []
    reg = init()
    base = _libggml_base()
    get_proc = base.ggml_backend_reg_get_proc_address
    get_proc.restype, get_proc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    address = get_proc(reg, b"ggml_backend_get_features")
    if not address:
        return VariantFeatures(name, str(library), True, ())

    class Feature(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]

    get_features = ctypes.CFUNCTYPE(ctypes.POINTER(Feature), ctypes.c_void_p)(address)
    features = get_features(reg)
    enabled = []
    index = 0
    while features[index].name:
        if features[index].value == b"1":
            enabled.append(features[index].name.decode())
        index += 1
    return VariantFeatures(name, str(library), True, tuple(enabled))


def _libggml_base() -> ctypes.CDLL:
    for path in _mapped_libraries():
        if os.path.basename(path).startswith("libggml-base.so"):
            return ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(package_dir() / "lib" / "libggml-base.so"))


__all__ = ["CpuBackend", "CpuBackendError", "VariantFeatures", "ensure_cpu_backend", "shipped_variants",
           "variant_dirs", "variant_features"]
