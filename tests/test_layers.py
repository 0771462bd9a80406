"""The import structure: libraries below flows, flows in four floors, no import circle.

Every ``import`` counts, also one inside a function (a lazy import is still an arrow);
only ``if TYPE_CHECKING:`` blocks are left out (they never run). docs/architecture.md
describes the layers this test holds the code to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("generator", "trainer", "evaluator", "policy", "flows", "deployments")

# a module may import only first-party modules of its own floor or below (prefix match)
FLOORS: list[tuple[str, ...]] = [
    ("generator",),
    ("trainer",),
    ("evaluator",),
    ("policy",),
    ("flows.loop",),
    ("flows.tracking", "flows.tracking_model"),
    ("flows.orchestration",),
    ("flows.commands", "flows.cli", "flows"),
    ("deployments",),
]
# third-party packages a floor may not import (the libraries and the loop stay plain)
FORBIDDEN = {"generator": ("prefect", "mlflow"), "trainer": ("prefect", "mlflow"),
             "evaluator": ("prefect", "mlflow"), "policy": ("prefect", "mlflow"),
             "flows.loop": ("prefect", "mlflow"), "flows.tracking": ("prefect",)}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports (first-party resolved to the deepest known module,
    third-party as its top-level name), at any depth, outside TYPE_CHECKING blocks."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    out.add(sub if sub in known else child.module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m if m in known else m.split(".")[0] for m in out}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    return {module_name(p): imports(p, known) for p in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


def floor(module: str) -> int:
    best, level = -1, -1
    for i, prefixes in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    return level


def upward_arrows(g: dict[str, set[str]]) -> list[str]:
    out = []
    for m, deps in sorted(g.items()):
        for d in sorted(deps):
            if d in g and floor(d) > floor(m):
                out.append(f"{m} -> {d}")
            for prefix, banned in FORBIDDEN.items():
                if (m == prefix or m.startswith(prefix + ".")) and d in banned:
                    out.append(f"{m} -> {d} (third-party, not on this floor)")
    return out


def test_no_import_circle() -> None:
    assert cycles(graph()) == []


def test_every_arrow_points_down_the_floors() -> None:
    assert upward_arrows(graph()) == []


def test_every_module_has_a_floor() -> None:
    assert [m for m in graph() if floor(m) < 0] == []


@pytest.mark.parametrize("planted, found", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_circle_finder_finds_a_planted_circle(planted: dict[str, set[str]], found: list[list[str]]) -> None:
    assert cycles(planted) == found


def test_an_upward_or_forbidden_arrow_is_reported() -> None:
    planted = {"flows.loop.steps": {"flows.tracking.runs", "mlflow"}, "flows.tracking.runs": set(),
               "generator.params": {"policy.mixture"}, "policy.mixture": set()}
    assert upward_arrows(planted) == [
        "flows.loop.steps -> flows.tracking.runs", "flows.loop.steps -> mlflow (third-party, not on this floor)",
        "generator.params -> policy.mixture"]


def test_lazy_imports_count_and_type_checking_ones_do_not(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flows.cli\n"
                   "def f():\n    from flows.loop import steps\n    import prefect.flows\n")
    assert imports(src, {"flows.loop", "flows.loop.steps", "flows.cli"}) == {"typing", "flows.loop.steps", "prefect"}
