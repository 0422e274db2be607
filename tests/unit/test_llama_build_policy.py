"""The build policy as flags and files: what each policy compiles, and the wheel without the AMX variant."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from edge.llama_build import (EXCLUDED_VARIANTS, BuildError, plan_for, remove_variants, variant_name)


def test_dispatch_on_x86_linux_compiles_every_variant_at_run_time_and_drops_amx() -> None:
    plan = plan_for("dispatch", "Linux", "x86_64")
    assert "-DGGML_BACKEND_DL=ON" in plan.cmake_args and "-DGGML_CPU_ALL_VARIANTS=ON" in plan.cmake_args
    assert "-DGGML_NATIVE=OFF" in plan.cmake_args
    assert "sapphirerapids" in plan.excluded_variants


def test_conservative_never_asks_for_avx512_or_amx() -> None:
    plan = plan_for("conservative", "Linux", "x86_64")
    assert "-DGGML_NATIVE=OFF" in plan.cmake_args and "-DGGML_AVX2=ON" in plan.cmake_args
    assert not [arg for arg in plan.cmake_args if "AVX512" in arg or "AMX" in arg]


def test_arm_linux_dispatches_without_exclusions_and_macos_keeps_the_default_build() -> None:
    assert "-DGGML_CPU_ALL_VARIANTS=ON" in plan_for("dispatch", "Linux", "aarch64").cmake_args
    assert plan_for("dispatch", "Darwin", "arm64").cmake_args == ()


def test_each_policy_and_flag_set_has_its_own_cache_key() -> None:
    keys = {plan_for(policy, "Linux", "x86_64").key for policy in ("dispatch", "conservative", "native")}
    assert len(keys) == 3


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(BuildError, match="unknown llama.cpp build policy"):
        plan_for("fastest")


def make_wheel(path: Path, members: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for member in members:
            wheel.writestr(member, b"\x7fELF" + member.encode())
        record = "\n".join(f"{m},sha256=x,4" for m in members) + "\nllama_cpp_python-0.3.36.dist-info/RECORD,,\n"
        wheel.writestr("llama_cpp_python-0.3.36.dist-info/RECORD", record)
    return path


def test_remove_variants_drops_the_file_and_its_record_line(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", ["bin/libggml-cpu-zen4.so", "bin/libggml-cpu-sapphirerapids.so",
                                            "llama_cpp/lib/libllama.so"])
    removed = remove_variants(wheel, EXCLUDED_VARIANTS)
    assert removed == ["bin/libggml-cpu-sapphirerapids.so"]
    with zipfile.ZipFile(wheel) as rewritten:
        names = rewritten.namelist()
        record = rewritten.read("llama_cpp_python-0.3.36.dist-info/RECORD").decode()
    assert "bin/libggml-cpu-sapphirerapids.so" not in names and "sapphirerapids" not in record
    assert "bin/libggml-cpu-zen4.so" in names and "libggml-cpu-zen4.so" in record


def test_remove_variants_fails_loudly_when_ggml_renamed_the_variant(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", ["bin/libggml-cpu-zen4.so"])
    with pytest.raises(BuildError, match="no CPU variant named sapphirerapids"):
        remove_variants(wheel, EXCLUDED_VARIANTS)
    assert zipfile.ZipFile(wheel).namelist()[0] == "bin/libggml-cpu-zen4.so"


def test_variant_names_are_read_from_library_file_names() -> None:
    assert variant_name("bin/libggml-cpu-zen4.so") == "zen4"
    assert variant_name("bin/ggml-cpu-haswell.dll") == "haswell"
    assert variant_name("llama_cpp/lib/libggml-base.so") is None
