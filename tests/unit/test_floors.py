"""The folder layout is the dependency rule: each floor of router/ imports only the floors below it,
edge/ and cloud/ never import router/, nothing in router/ imports the bench (which sits on top), and
the ledger knows none of the parts of the core that learn from it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Bottom to top. The SDK (router/client.py) and the console script stand on the doors floor.
FLOORS = ("domain", "core", "assembly", "doors")
TOP_LEVEL = {"client": "doors", "__main__": "doors", "__init__": "domain"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def floor_of(path: Path) -> str:
    parts = path.relative_to(ROOT / "router").parts
    return TOP_LEVEL[path.stem] if len(parts) == 1 else parts[0]


def router_sources() -> list[Path]:
    return sorted(p for p in (ROOT / "router").rglob("*.py") if "v1" not in p.relative_to(ROOT).parts)


def test_every_router_module_is_on_a_floor() -> None:
    strays = [str(p.relative_to(ROOT)) for p in router_sources() if floor_of(p) not in FLOORS]
    assert strays == []


@pytest.mark.parametrize("path", router_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_floor_imports_only_the_floors_below_it(path: Path) -> None:
    own = FLOORS.index(floor_of(path))
    wrong = []
    for module in imported_modules(path):
        parts = module.split(".")
        if parts[0] == "bench":
            wrong.append(f"{module} (the bench talks to the router through the SDK, not the other way)")
        elif parts[0] == "router" and len(parts) > 1 and parts[1] in FLOORS and FLOORS.index(parts[1]) > own:
            wrong.append(f"{module} (floor {parts[1]} is above {FLOORS[own]})")
        elif parts[0] == "router" and len(parts) > 1 and parts[1] == "client" and own < FLOORS.index("doors"):
            wrong.append(f"{module} (the SDK is a door)")
    assert wrong == []


@pytest.mark.parametrize("package", ["edge", "cloud"])
def test_the_backends_never_import_the_router(package: str) -> None:
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / package).rglob("*.py"))
                 for m in imported_modules(p) if m.split(".")[0] in ("router", "bench")]
    assert offenders == []


# The ledger records; it does not train. The learners (router/core/learning) read it through its read API
# (router/core/ledger/records.py), and the models they train are theirs: a sink that imported them would
# know its consumers.
LEDGER_NEVER_IMPORTS = ("router.core.arbiters", "router.core.routing", "router.core.probes", "router.core.learning")


def test_the_ledger_imports_none_of_its_learners() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "router" / "core" / "ledger").rglob("*.py"))
                 for m in imported_modules(p)
                 if any(m == package or m.startswith(package + ".") for package in LEDGER_NEVER_IMPORTS)]
    assert offenders == []


TRANSPORTS = ("grpc", "starlette", "fastapi", "uvicorn", "sse_starlette")


@pytest.mark.parametrize("floor", ["domain", "core"])
def test_the_domain_and_the_core_know_no_transport(floor: str) -> None:
    """Errors carry a kind, not a status code: each door maps kinds to its own codes."""
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "router" / floor).rglob("*.py"))
                 for m in imported_modules(p) if m.split(".")[0] in TRANSPORTS]
    assert offenders == []
