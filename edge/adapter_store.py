"""Versions of the edge model's LoRA adapters, kept beside the model cache, and which one is in use.

    <adapters dir>/<base model name>/        (models.adapters_dir: ~/.cache/hybrid-router/adapters by default)
        v0001/adapter.gguf    the adapter, as edge/lora_gguf.py wrote it
        v0001/meta.json       the base model's SHA-256, when it was added, where from, the training report
        active                the version in use, or "none" for the base model alone
        history.jsonl         every change of `active`, oldest first: what `rollback` walks back

A version is never changed once added: it is written in a staging folder, then renamed into place. `active`
is replaced through a temporary file; the history is appended, and a line cut short by a crash is skipped
when it is read. A damaged `meta.json` or `active` is an AdapterStoreError naming the file. `hybrid-router
adapter list|use|rollback` and `hybrid-router finetune --install` drive it; the daemon reads `active` at
start-up and on `UseAdapter`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from edge.errors import EdgeError
from edge.lora_adapter import file_sha256

ADAPTER_FILE = "adapter.gguf"
META_FILE = "meta.json"
ACTIVE_FILE = "active"
HISTORY_FILE = "history.jsonl"
BASE_ONLY = "none"
_VERSION = re.compile(r"^v(\d{4,})$")


class AdapterStoreError(EdgeError):
    """A version that does not exist, an adapter for another base model, or nothing to roll back to."""


@dataclass(frozen=True)
class AdapterVersion:
    version: str                 # "v0003"
    path: Path                   # its adapter.gguf
    meta: Mapping[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.meta.get("sha256", ""))


class AdapterStore:
    def __init__(self, adapters_dir: Path, base_name: str) -> None:
        self.base_name = base_name
        self.root = Path(adapters_dir).expanduser() / base_name

    def versions(self) -> list[AdapterVersion]:
        """Every version, oldest first."""
        if not self.root.is_dir():
            return []
        found = sorted((int(m.group(1)), d) for d in self.root.iterdir()
                       if d.is_dir() and (m := _VERSION.match(d.name)) and (d / META_FILE).is_file())
        return [self._version(d) for _, d in found]

    def get(self, version: str) -> AdapterVersion:
        directory = self.root / version
        if not _VERSION.match(version) or not (directory / META_FILE).is_file():
            known = ", ".join(v.version for v in self.versions()) or "none yet"
            raise AdapterStoreError(f"no adapter {version!r} for {self.base_name} in {self.root} (versions: {known})")
        return self._version(directory)

    def active(self) -> Optional[AdapterVersion]:
        """The version in use; None for the base model alone (also before any `use`)."""
        try:
            name = (self.root / ACTIVE_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AdapterStoreError(f"cannot read {self.root / ACTIVE_FILE}: {exc}") from exc
        return None if name in ("", BASE_ONLY) else self.get(name)

    def add(self, adapter_gguf: Path, *, base_sha256: str, source: Mapping[str, Any]) -> AdapterVersion:
        """Copies a converted adapter in as the next version (not yet used). `source`: what made it (the
        training report), kept in its meta.json."""
        self.root.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for d in self.root.iterdir() if (m := _VERSION.match(d.name))]
        version = f"v{max(numbers, default=0) + 1:04d}"
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            shutil.copyfile(adapter_gguf, staging / ADAPTER_FILE)
            meta = {"version": version, "base_model": self.base_name, "base_sha256": base_sha256,
                    "sha256": file_sha256(staging / ADAPTER_FILE), "added_unix_s": round(time.time(), 3),
                    "source": dict(source)}
            (staging / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
            staging.rename(self.root / version)  # another add that claimed this number first makes it fail
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise AdapterStoreError(f"could not add {adapter_gguf} to {self.root} as {version}: {exc}") from exc
        return self._version(self.root / version)

    def use(self, version: Optional[str], *, reason: str = "") -> Optional[AdapterVersion]:
        """Makes `version` (None: the base model alone) the one in use, and records the change."""
        chosen = None if version is None else self.get(version)
        previous = self.active()
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.root / ACTIVE_FILE, (chosen.version if chosen else BASE_ONLY) + "\n")
        entry = {"unix_s": round(time.time(), 3), "from": previous.version if previous else BASE_ONLY,
                 "to": chosen.version if chosen else BASE_ONLY, "reason": reason}
        with (self.root / HISTORY_FILE).open("a+", encoding="utf-8") as history:
            history.seek(0, os.SEEK_END)
            cut = history.tell() > 0 and (history.seek(history.tell() - 1) or history.read(1) != "\n")
            history.write(("\n" if cut else "") + json.dumps(entry) + "\n")  # a line a crash cut short stays alone
        return chosen

    def rollback(self) -> Optional[AdapterVersion]:
        """Goes back to what was in use before the last change (the base model alone is a state too)."""
        history = self.history()
        if not history:
            raise AdapterStoreError(f"nothing to roll back to: no adapter of {self.base_name} was ever used")
        previous = history[-1]["from"]
        return self.use(None if previous == BASE_ONLY else previous, reason=f"rollback from {history[-1]['to']}")

    def history(self) -> list[dict[str, Any]]:
        try:
            lines = (self.root / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AdapterStoreError(f"cannot read {self.root / HISTORY_FILE}: {exc}") from exc
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:  # a line a crash cut short: the change it was recording did not finish
                continue
            if isinstance(entry, dict) and {"from", "to"} <= entry.keys():
                entries.append(entry)
        return entries

    def _version(self, directory: Path) -> AdapterVersion:
        try:
            meta = json.loads((directory / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise AdapterStoreError(f"the adapter {directory.name} of {self.base_name} is damaged: "
                                    f"{directory / META_FILE}: {exc}") from exc
        return AdapterVersion(version=directory.name, path=directory / ADAPTER_FILE, meta=meta)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temporary, path)
