"""The README and docs/ stay true: the quick start is two commands, the README stays short, every setting
and its default is in docs/configuration.md, and every relative link leads to a file that exists."""
import re
from pathlib import Path

from router.domain.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 300
ROW = re.compile(r"^\| `(?P<key>[a-z_]+\.[a-z_0-9]+)` \| `(?P<env>[A-Z_0-9]+)` \| `(?P<default>[^`]*)` \|", re.M)
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCED = re.compile(r"^```.*?^```", re.M | re.S)
EXTERNAL = ("http://", "https://", "mailto:")


def shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    return str(value)


def test_every_setting_and_its_default_is_in_the_configuration_doc() -> None:
    rows = {m["key"]: m for m in ROW.finditer(CONFIGURATION.read_text())}
    defaults = Settings()
    for section, field in Settings.model_fields.items():
        for name in field.annotation.model_fields:
            key = f"{section}.{name}"
            assert key in rows, f"{key} is not documented in docs/configuration.md"
            assert rows[key]["env"] == f"HYBRID_ROUTER_{section.upper()}__{name.upper()}"
            assert rows[key]["default"] == shown(getattr(getattr(defaults, section), name)), key


def test_quick_start_is_make_run_then_make_test() -> None:
    first_block = README.read_text().split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert commands == ["make run", "make test"]
    assert "make test" in (README.parent / ".ci" / "run").read_text()


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {README_MAX_LINES})"


def anchors(document: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCED.sub("", document.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def relative_links(document: Path) -> list[str]:
    text = FENCED.sub("", document.read_text())  # a code block's brackets are code, not links
    return [m["target"] for m in LINK.finditer(text) if not m["target"].startswith(EXTERNAL)]


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file_that_exists() -> None:
    documents = [README, *sorted((ROOT / "docs").glob("*.md"))]
    assert len(documents) > 1, "docs/ holds the README's details"
    broken = []
    for document in documents:
        for target in relative_links(document):
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists():
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{document.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_can_fail(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text("# Title\n\n[ok](doc.md#title) [gone](missing.md) [web](https://example.com)\n"
                        "```\n[code](not-a-link.md)\n```\n")
    assert relative_links(document) == ["doc.md#title", "missing.md"]
    assert anchors(document) == {"title"}
