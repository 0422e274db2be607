"""Everything under tests/unit is a `unit` test: no model, no daemon, no network beyond loopback servers
the test starts itself. `pytest -m unit` runs them alone (docs/development.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Fixtures that load a model or start a daemon: a test that needs one belongs in tests/integration.
MODEL_FIXTURES = frozenset({"smollm_path", "daemon", "standin", "smollm_edge", "encoder"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.unit)
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError("unit tests load no model; move these to tests/integration: "
                                + ", ".join(misplaced))
