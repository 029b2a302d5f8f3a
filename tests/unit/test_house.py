"""House habits that a reader relies on, checked over the whole package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ablate"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 80


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_says_what_it_owns_and_functions_fit_a_screen(path):
    tree = ast.parse(path.read_text())
    if path.name not in ("__init__.py", "__main__.py"):
        assert "Owns" in (ast.get_docstring(tree) or ""), "the module docstring says what it owns"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_comments_point_at_the_repository_not_at_a_page_a_clone_lacks():
    assert not [p for p in MODULES if "DESIGN.md" in p.read_text()]
    assert (PACKAGE.parent / "docs" / "architecture.md").is_file()
