"""router/domain/jsonl.py: JSON Lines split on "\n" alone, torn last lines skipped and cut."""
import json

from router.domain.jsonl import cut_torn_tail, read_records, split_lines

# The breaks str.splitlines() honours that json.dumps(ensure_ascii=False) leaves unescaped (it escapes \\x0b, \\x0c and
# \\x1c as control characters).
UNUSUAL_BREAKS = "line\u2028separator\u2029paragraph\x85next"


def test_unicode_line_boundaries_inside_a_record_do_not_split_it():
    text = json.dumps({"text": UNUSUAL_BREAKS}, ensure_ascii=False) + "\n" + json.dumps({"text": "b"}) + "\n"
    assert [json.loads(line)["text"] for line in split_lines(text)] == [UNUSUAL_BREAKS, "b"]
    assert len(text.splitlines()) > 2  # what str.splitlines() would have done to the same file


def test_line_numbers_match_an_editor_s():
    assert split_lines("a\n\nb\n") == ["a", "", "b"] and split_lines("a\nb") == ["a", "b"] and split_lines("") == []


def test_a_torn_last_line_is_skipped_then_cut(tmp_path):
    path = tmp_path / "progress.jsonl"
    whole = json.dumps({"text": UNUSUAL_BREAKS}, ensure_ascii=False) + "\n"
    path.write_text(whole + '{"text": "half', encoding="utf-8")
    assert read_records(path) == [{"text": UNUSUAL_BREAKS}]
    cut_torn_tail(path)
    assert path.read_text(encoding="utf-8") == whole
    cut_torn_tail(path)  # a whole file is left alone
    assert path.read_text(encoding="utf-8") == whole


def test_a_missing_file_has_no_records_and_nothing_to_cut(tmp_path):
    assert read_records(tmp_path / "absent.jsonl") == []
    cut_torn_tail(tmp_path / "absent.jsonl")
    assert not (tmp_path / "absent.jsonl").exists()


def test_a_tail_cut_inside_a_multi_byte_character_costs_only_that_line(tmp_path):
    path = tmp_path / "progress.jsonl"
    whole = json.dumps({"text": "a"}) + "\n"
    path.write_bytes(whole.encode() + json.dumps({"text": "caf\u00e9"}, ensure_ascii=False).encode()[:-3])
    assert read_records(path) == [{"text": "a"}]
    cut_torn_tail(path)
    assert path.read_text(encoding="utf-8") == whole
