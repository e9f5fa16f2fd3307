"""Arrows point one way: the planning stages never import the measuring, regression, fitting, tracing or
CLI side, and nothing imports the CLI verbs but the CLI. Read from the source (every import statement,
also those inside functions), so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "planner"
PLANNING = ("inputs", "memory", "search", "pricing", "output")
NOT_FROM_PLANNING = ("planner.measure", "planner.regress", "planner.commands", "planner.fit", "planner.trace",
                     "planner.cli", "planner.integrations")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules(*PLANNING), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_planning_modules_import_no_other_side(path):
    bad = sorted(name for name in imports(path) if name.startswith(NOT_FROM_PLANNING))
    assert bad == []


def test_the_planning_stages_are_all_there():
    assert all((PACKAGE / package / "__init__.py").is_file() for package in PLANNING)
    assert len(modules(*PLANNING)) >= 25


def test_only_the_cli_imports_the_verbs():
    outside = [p for p in PACKAGE.rglob("*.py") if "commands" not in p.parts and p.name != "cli.py"]
    users = sorted(str(p.relative_to(PACKAGE)) for p in outside
                   if any(name.startswith("planner.commands") for name in imports(p)))
    assert users == []


def test_planning_imports_no_torch():
    heavy = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")
    users = sorted(str(p.relative_to(PACKAGE)) for p in modules(*PLANNING)
                   if any(name.split(".")[0] in heavy for name in imports(p)))
    assert users == []
