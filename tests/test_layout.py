"""The test suite's own layout: test modules never import one another (conftest.py included);
what they share lives in tests/helpers/ under public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODULES = sorted(p for p in TESTS.rglob("*.py") if "helpers" not in p.relative_to(TESTS).parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in ``path``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_no_test_module_imports_another(path):
    for module, names in _imports(path):
        if module == "tests":
            assert all(n == "helpers" for n in names), f"{path.name} imports {names} from tests"
        elif module.startswith("tests."):
            assert module.startswith("tests.helpers"), (
                f"{path.name} imports {module}: move it to tests/helpers/"
            )
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name} imports private names {private} from {module}"
