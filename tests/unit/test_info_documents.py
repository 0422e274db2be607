"""cloud/info/documents.py: each parser, format detection, and validation messages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud.info import Document, InvalidDocumentError, detect_format, read_documents, validate_document
from cloud.info.documents import slug


def test_text_files_are_one_document_each_named_by_stem(tmp_path: Path) -> None:
    (tmp_path / "leave-policy.txt").write_text("Leave is approved by your manager.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "expenses.txt").write_text("Expenses need receipts.")
    (tmp_path / "notes.md").write_text("# Not text format")
    documents = list(read_documents(tmp_path, "text"))
    assert [(d.id, d.text) for d in documents] == [("leave-policy", "Leave is approved by your manager.\n"),
                                                  ("expenses", "Expenses need receipts.")]
    assert documents[0].metadata == {} and documents[0].groups == ()


def test_markdown_title_goes_into_metadata(tmp_path: Path) -> None:
    path = tmp_path / "onboarding.md"
    path.write_text("# Onboarding guide\n\nWelcome aboard.\n")
    [document] = read_documents(path, "markdown")
    assert document.id == "onboarding"
    assert document.metadata == {"title": "Onboarding guide"}
    assert "Welcome aboard." in document.text
    (tmp_path / "untitled.md").write_text("No heading here.\n# Late heading\n")
    [untitled] = read_documents(tmp_path / "untitled.md", "markdown")
    assert untitled.metadata == {}


def test_jsonl_reads_metadata_and_groups(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "Alpha."}) + "\n\n"
                    + json.dumps({"id": "b", "text": "Beta.", "metadata": {"team": "hr"}, "groups": ["hr", "admin"]})
                    + "\n")
    a, b = read_documents(path, "jsonl")
    assert a == Document("a", "Alpha.")
    assert b.metadata == {"team": "hr"} and set(b.groups) == {"hr", "admin"}


def test_a_jsonl_document_holding_unicode_line_separators_is_one_document(tmp_path: Path) -> None:
    """JSON leaves U+2028 and U+0085 unescaped in strings, and web text holds them: str.splitlines() split the
    line there and the file was refused as "not JSON"."""
    text = "First line\u2028second line\x85third."
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "a", "text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert list(read_documents(path, "jsonl")) == [Document("a", text)]


@pytest.mark.parametrize("bad_line, hint", [
    ("{not json", "not JSON"),
    (json.dumps({"text": "no id"}), "string \"id\""),
    (json.dumps({"id": "c", "text": "x", "metadata": {"year": 2020}}), "strings to strings"),
    (json.dumps({"id": "c", "text": "x", "groups": "hr"}), "list of group names"),
    (json.dumps({"id": "c", "text": "   "}), "has no text"),
])
def test_a_bad_jsonl_line_is_reported_with_file_and_line(tmp_path: Path, bad_line: str, hint: str) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "Fine."}) + "\n" + json.dumps({"id": "b", "text": "Fine."})
                    + "\n" + bad_line + "\n")
    with pytest.raises(InvalidDocumentError) as raised:
        list(read_documents(path, "jsonl"))
    assert f"{path} line 3" in str(raised.value)
    assert hint in str(raised.value)


def test_squad_is_one_document_per_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [
        {"title": "Super_Bowl_50", "paragraphs": [{"context": "First.", "qas": []}, {"context": "Second.", "qas": []}]},
        {"title": "Warsaw", "paragraphs": [{"context": "Third.", "qas": []}]},
    ]}))
    documents = list(read_documents(path, "squad"))
    assert [(d.id, d.text, dict(d.metadata)) for d in documents] == [
        ("super-bowl-50-000", "First.", {"title": "Super_Bowl_50"}),
        ("super-bowl-50-001", "Second.", {"title": "Super_Bowl_50"}),
        ("warsaw-000", "Third.", {"title": "Warsaw"}),
    ]


def test_slug() -> None:
    assert slug("Jacksonville,_Florida") == "jacksonville-florida"
    assert slug("Victoria_(Australia)") == "victoria-australia"


def test_detect_format_by_suffix(tmp_path: Path) -> None:
    detected = [detect_format(Path(n)) for n in ("a.txt", "b.md", "c.jsonl", "d.json")]
    assert detected == ["text", "markdown", "jsonl", "squad"]
    (tmp_path / "x.md").write_text("x")
    assert detect_format(tmp_path) == "markdown"
    with pytest.raises(InvalidDocumentError, match="name the format explicitly"):
        detect_format(Path("e.pdf"))


def test_unknown_format_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        list(read_documents(tmp_path, "pdf"))


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(InvalidDocumentError, match="latin1.txt is not UTF-8"):
        list(read_documents(path, "text"))


@pytest.mark.parametrize("document, hint", [
    (Document("", "text"), "non-blank id"),
    (Document("x" * 513, "text"), "limited to 512"),
    (Document("doc-1", " \n"), "'doc-1' has no text"),
    (Document("doc-1", "text", metadata={"year": 2020}), "'doc-1' has metadata with non-string entries 'year': int"),
    (Document("doc-1", "text", groups=("hr", "")), "'doc-1' has groups"),
])
def test_validation_names_the_document_and_the_fix(document: Document, hint: str) -> None:
    with pytest.raises(InvalidDocumentError) as raised:
        validate_document(document)
    assert hint in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_documents_copy_their_metadata_and_are_read_only() -> None:
    metadata = {"k": "v"}
    document = Document("a", "text", metadata=metadata, groups=["hr"])  # type: ignore[arg-type]
    metadata["k"] = "changed"
    assert document.metadata == {"k": "v"} and document.groups == ("hr",)
    with pytest.raises(TypeError):
        document.metadata["k"] = "x"  # type: ignore[index]
    validate_document(document)
