"""The README stays true: its quick start is two commands, and it documents every setting."""
from pathlib import Path

from router.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_and_default_is_in_the_readme() -> None:
    text = README.read_text()
    for section, field in Settings.model_fields.items():
        for name in field.annotation.model_fields:
            assert f"`{section}.{name}`" in text, f"{section}.{name} is not documented in the README"
            assert f"`HYBRID_ROUTER_{section.upper()}__{name.upper()}`" in text


def test_quick_start_is_make_run_then_make_test() -> None:
    first_block = README.read_text().split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert commands == ["make run", "make test"]
    assert "make test" in (README.parent / ".ci" / "run").read_text()
