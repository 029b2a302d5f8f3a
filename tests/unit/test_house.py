"""House habits that a reader relies on, checked over the whole package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ablate.nets import families

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


def _module_imports(path: Path) -> set[str]:
    """The ablate modules a module imports when it is imported: its top-level imports, not
    those inside functions (lazy by design) or under `if TYPE_CHECKING:` (never run)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0] == "ablate":
                names |= {f"{n.module}.{a.name}" for a in n.names} | {n.module}
            elif isinstance(n, ast.Import):
                names |= {a.name for a in n.names if a.name.split(".")[0] == "ablate"}
    return names


def _import_graph() -> dict[str, set[str]]:
    """Every ablate module → the ablate modules it imports when it is imported."""
    modules = {".".join(("ablate", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in MODULES}
    return {m: {i for i in _module_imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_the_package_has_no_import_cycle():
    """Walks the import graph of every module: a cycle makes the import order matter and hides
    which stage depends on which."""
    graph = _import_graph()
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for nxt in sorted(graph[m]):
            assert state.get(nxt) != "open", " → ".join([*path[path.index(nxt):], nxt]) if nxt in path else nxt
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_analysis_side_does_not_import_planning_or_training():
    """analysis/ reads the store and CSVs: nothing it imports, however indirectly, plans trials
    (run/sources.py), runs them (run/runner.py) or trains (training/loop.py)."""
    graph = _import_graph()
    for start in (m for m in graph if m.startswith("ablate.analysis")):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        assert not seen & {"ablate.run.sources", "ablate.run.runner", "ablate.training.loop"}, (start, seen & {"ablate.run.sources", "ablate.run.runner", "ablate.training.loop"})


def _family_literals(tree: ast.AST) -> list[str]:
    """Family names written as constants where code decides by them: compared, tested for
    membership, or keys of a dict."""
    def names(node) -> list[str]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [i.value for i in items if isinstance(i, ast.Constant) and i.value in families.FAMILY]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found += [n for side in (node.left, *node.comparators) for n in names(side)]
        elif isinstance(node, ast.Dict):
            found += [n for k in node.keys if k is not None for n in names(k)]
    return found


def test_only_the_family_module_decides_by_a_family_name():
    """Each family is one class (families.py): no other module compares a family's name or
    keys a table by it, so adding a family is one class and its tests."""
    own = Path(families.__file__).resolve()
    for path in MODULES:
        if path.resolve() == own:
            continue
        text = path.read_text()
        assert not re.search(r"family *(==|!=| in )", text), path
        assert not _family_literals(ast.parse(text)), (path, _family_literals(ast.parse(text)))


def test_the_check_finds_a_family_name_compared():
    assert _family_literals(ast.parse('x = config.family == "gan"')) == ["gan"]
    assert _family_literals(ast.parse('y = f in ("vae", "gan")')) == ["vae", "gan"]
    assert _family_literals(ast.parse('z = {"vae": 2}.get(f)')) == ["vae"]
