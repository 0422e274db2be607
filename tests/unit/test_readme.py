"""The README stays true: its quick start is two commands, and it documents every setting and default."""
import re
from pathlib import Path

from router.domain.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<key>[a-z_]+\.[a-z_0-9]+)` \| `(?P<env>[A-Z_0-9]+)` \| `(?P<default>[^`]*)` \|", re.M)


def shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, Path)):
        return f'"{value}"'
    return str(value)


def test_every_setting_and_its_default_is_in_the_readme() -> None:
    rows = {m["key"]: m for m in ROW.finditer(README.read_text())}
    defaults = Settings()
    for section, field in Settings.model_fields.items():
        for name in field.annotation.model_fields:
            key = f"{section}.{name}"
            assert key in rows, f"{key} is not documented in the README"
            assert rows[key]["env"] == f"HYBRID_ROUTER_{section.upper()}__{name.upper()}"
            assert rows[key]["default"] == shown(getattr(getattr(defaults, section), name)), key


def test_quick_start_is_make_run_then_make_test() -> None:
    first_block = README.read_text().split("```")[1]
    commands = [line for line in first_block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert commands == ["make run", "make test"]
    assert "make test" in (README.parent / ".ci" / "run").read_text()
