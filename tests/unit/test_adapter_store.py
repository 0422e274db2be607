"""The adapter store: versions added in order and never changed, `use` and `rollback` through the history."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.adapter_store import AdapterStore, AdapterStoreError
from edge.lora_adapter import file_sha256


def _adapter(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"adapter-{len(content)}.gguf"
    path.write_bytes(content)
    return path


def test_versions_are_numbered_in_order_and_keep_their_file_and_meta(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters", "smollm2-135m")
    first = store.add(_adapter(tmp_path, b"one"), base_sha256="b" * 64, source={"run": "a"})
    second = store.add(_adapter(tmp_path, b"second"), base_sha256="b" * 64, source={"run": "b"})
    assert [v.version for v in store.versions()] == ["v0001", "v0002"]
    assert (first.path.read_bytes(), second.path.read_bytes()) == (b"one", b"second")
    assert second.sha256 == file_sha256(second.path)
    meta = json.loads((second.path.parent / "meta.json").read_text())
    assert (meta["base_model"], meta["base_sha256"], meta["source"]) == ("smollm2-135m", "b" * 64, {"run": "b"})
    assert store.active() is None  # added is not used


def test_rollback_undoes_the_last_change_so_two_in_a_row_toggle(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path, "m")
    for content in (b"1", b"22"):
        store.add(_adapter(tmp_path, content), base_sha256="", source={})
    store.use("v0001")
    store.use("v0002")
    assert store.active().version == "v0002"
    assert store.rollback().version == "v0001"
    assert store.active().version == "v0001"
    store.use(None)
    assert store.active() is None
    assert store.rollback().version == "v0001"
    assert store.rollback() is None  # undoing the undo
    assert [(h["from"], h["to"]) for h in store.history()][:5] == [
        ("none", "v0001"), ("v0001", "v0002"), ("v0002", "v0001"), ("v0001", "none"), ("none", "v0001")]


def test_unknown_versions_and_an_empty_history_are_refused_by_name(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path, "m")
    with pytest.raises(AdapterStoreError, match="nothing to roll back"):
        store.rollback()
    store.add(_adapter(tmp_path, b"x"), base_sha256="", source={})
    for bad in ("v0009", "../../etc", "latest"):
        with pytest.raises(AdapterStoreError, match="versions: v0001"):
            store.use(bad)
    assert store.active() is None
    assert store.history() == []


def test_a_half_written_version_is_not_listed(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path, "m")
    store.add(_adapter(tmp_path, b"x"), base_sha256="", source={})
    (store.root / "v0002").mkdir()  # a copy that died before its meta.json: never a version
    assert [v.version for v in store.versions()] == ["v0001"]
    assert store.add(_adapter(tmp_path, b"yy"), base_sha256="", source={}).version == "v0003"


def test_a_damaged_meta_file_or_a_cut_history_line_is_named_not_a_crash(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path, "m")
    store.add(_adapter(tmp_path, b"x"), base_sha256="", source={})
    store.use("v0001")
    with (store.root / "history.jsonl").open("a") as history:
        history.write('{"unix_s": 1, "from": "v0001", "to"')  # a crash mid-append
    assert [(h["from"], h["to"]) for h in store.history()] == [("none", "v0001")]
    store.use(None)  # the next change is not glued to the cut line
    assert [(h["from"], h["to"]) for h in store.history()] == [("none", "v0001"), ("v0001", "none")]
    store.use("v0001")
    (store.root / "v0001" / "meta.json").write_text("{not json")  # damaged on disk after it was used
    with pytest.raises(AdapterStoreError, match=r"v0001 of m is damaged: .*meta\.json"):
        store.active()
