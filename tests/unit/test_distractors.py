"""bench/distractors.py: how real documentation is cut into passages of about a SQuAD paragraph's length."""
from __future__ import annotations

import gzip
from pathlib import Path

from bench.distractors import (MIN_PASSAGE_WORDS, HtmlManual, man_documents, man_paragraphs, manual_documents,
                               page_paragraphs, passages)


def words(count: int, word: str = "w") -> str:
    return " ".join(f"{word}{n}" for n in range(count))


def test_paragraphs_join_up_to_the_passage_length_and_cut_only_at_their_ends():
    found = passages([words(50, "a"), words(50, "b"), words(50, "c")], words=120)
    assert found == [f"{words(50, 'a')} {words(50, 'b')}", words(50, "c")]


def test_a_paragraph_longer_than_a_passage_is_cut_at_words_and_a_short_tail_is_dropped():
    found = passages([words(250, "x") + " " + "tail " * (MIN_PASSAGE_WORDS - 1)], words=100)
    assert [len(p.split()) for p in found] == [100, 100, 50 + MIN_PASSAGE_WORDS - 1]
    assert passages(["too short"], words=100) == []


def test_a_page_gives_its_visible_text_without_scripts_or_navigation():
    html = ("<html><head><title>T</title><script>var x = 1;</script></head><body><nav>Home | Next</nav>"
            "<h1>The heading</h1><p>First   paragraph,\n spread.</p><ul><li>one item</li></ul></body></html>")
    assert page_paragraphs(html) == ["The heading", "First paragraph, spread.", "one item"]


def test_a_manual_page_loses_its_requests_and_escapes_and_keeps_its_headings():
    roff = ('.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH DESCRIPTION\n'
            'List information about the \\fBFILEs\\fR.\n.PP\nSort entries \\(em alphabetically.\n')
    assert man_paragraphs(roff) == ["NAME ls list directory contents", "DESCRIPTION List information about the FILEs.",
                                    "Sort entries alphabetically."]


def test_documents_are_named_by_source_page_and_piece(tmp_path: Path):
    (tmp_path / "html" / "lib").mkdir(parents=True)
    (tmp_path / "html" / "lib" / "os.html").write_text(f"<p>{words(130, 'o')}</p><p>{words(40, 'p')}</p>")
    (tmp_path / "man" / "man1").mkdir(parents=True)
    (tmp_path / "man" / "man1" / "ls.1.gz").write_bytes(gzip.compress(f".SH NAME\n{words(30, 'l')}\n".encode()))
    html = list(manual_documents(HtmlManual("py", "python3-doc", tmp_path / "html")))
    assert [d.id for d in html] == ["py/lib/os:p000", "py/lib/os:p001"]
    assert {d.metadata["source"] for d in html} == {"py"}
    assert [d.id for d in man_documents(tmp_path / "man")] == ["man/man1/ls.1:p000"]
