"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` and ``from ... import`` under calibkit/ counts, at module level and inside
functions; relative imports are resolved; imports under ``if TYPE_CHECKING:`` do not count
(they never run). ``from pkg import name`` is an edge to the submodule ``pkg.name`` where
that is a module, else to ``pkg`` itself.

How package ``__init__`` files count: an import of a package is an edge to its
``__init__``, and an ``__init__`` that re-exports its submodules has edges to them, like
any module. The implicit import Python makes of a parent package (importing ``a.b`` runs
``a/__init__`` first) is not an edge: counted, it would close a circle between every
re-exporting ``__init__`` and its own submodules, which Python resolves by design.
calibkit/__init__.py re-exports lazily (PEP 562, module names in importlib strings), so
it has no edges at all.

Asserted: (a) no import circle among calibkit's modules; (b) no module uses another
module's ``_``-prefixed name (``from m import _x``, or ``m._x`` on an imported module),
and a ``_``-prefixed module is imported only from inside its own package; (c) the layers
of the design: the statistics half (calibration, metrics, evaluation, comparison, ...)
and the model half (backends, server, scoring, templates, data sets, ...) meet only at
the shared leaves (LabelScores, the n×K seam; names; progress; version), and every module
is in a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "calibkit"

#: Arrays in, arrays out: calibrators, metrics, their evaluation and comparison, and the report.
STATISTICS = (
    "calibkit.arrays", "calibkit.bins", "calibkit.calibration", "calibkit.comparison", "calibkit.conclusion",
    "calibkit.conformal",
    "calibkit.diagrams", "calibkit.evaluation", "calibkit.metrics", "calibkit.report", "calibkit.selective",
    "calibkit.smoothing",
)
#: Talking to models, and the text they read: protocol, backends, cache, server, prompts, data sets, scoring.
MODEL = (
    "calibkit.api", "calibkit.backends", "calibkit.cache", "calibkit.datasets", "calibkit.scoring",
    "calibkit.server", "calibkit.templates",
)
#: Leaves both halves may import: the n×K label scores (the seam), shared names, progress, version.
SHARED = ("calibkit.label_scores", "calibkit.names", "calibkit.progress", "calibkit.version")
#: What joins the halves: the scikit-learn estimator, the form search, the study, the command line.
TOP = ("calibkit", "calibkit.cli", "calibkit.estimator", "calibkit.form_search", "calibkit.study")

#: Which layers each layer may import.
ALLOWED = {
    "statistics": {"statistics", "shared"},
    "model": {"model", "shared"},
    "shared": {"shared"},
    "top": {"top", "statistics", "model", "shared"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST):
    """Every node of the tree, except the bodies of ``if TYPE_CHECKING:`` blocks (their ``else:`` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class Imports:
    """One module's edges to calibkit modules, each with the line and the names it takes."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.edges: list[tuple[str, int, str]] = []  # (target module, line, the name taken or "")
        self.private_uses: list[str] = []
        self.unresolved: list[str] = []
        tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
        aliases: dict[str, str] = {}  # local name -> calibkit module it is bound to
        for node in _nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "calibkit" and self._known(alias.name, node.lineno):
                        self.edges.append((alias.name, node.lineno, ""))
                        # "import calibkit.a.b" binds calibkit; "import calibkit.a.b as x" binds a.b
                        aliases[alias.asname or "calibkit"] = alias.name if alias.asname else "calibkit"
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                if source.split(".")[0] != "calibkit" or not self._known(source, node.lineno):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in MODULES:  # from pkg import submodule
                        self.edges.append((sub, node.lineno, ""))
                        aliases[alias.asname or alias.name] = sub
                    else:
                        self.edges.append((source, node.lineno, alias.name))
        for node in _nodes(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and _is_private(node.attr) and f"{aliases[node.value.id]}.{node.attr}" not in MODULES):
                self.private_uses.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")

    def _known(self, name: str, line: int) -> bool:
        if name not in MODULES:
            self.unresolved.append(f"{MODULES[self.module].relative_to(PACKAGE.parent)}:{line}: no module {name}")
        return name in MODULES


GRAPH = {m: Imports(m) for m in MODULES}


def _layer(module: str) -> str | None:
    for layer, prefixes in (("statistics", STATISTICS), ("model", MODEL), ("shared", SHARED), ("top", TOP)):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None


def _cycles() -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a list of modules."""
    succ = {m: sorted({t for t, _, _ in GRAPH[m].edges if t != m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for m in MODULES:
        if m not in index:
            visit(m)
    circles = []
    for group in groups:  # a shortest path back to the start, within the group
        start = min(group)
        paths = {start: [start]}
        frontier = [start]
        while frontier and start not in {w for v in frontier for w in succ[v]}:
            nxt = []
            for v in frontier:
                for w in succ[v]:
                    if w in group and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        end = next(v for v in frontier if start in succ[v])
        circles.append(paths[end] + [start])
    return circles


def _line(source: str, target: str) -> str:
    line = min(n for t, n, _ in GRAPH[source].edges if t == target)
    return f"{source} -> {target} ({MODULES[source].relative_to(PACKAGE.parent)}:{line})"


def test_the_graph_sees_the_imports_it_should() -> None:
    # relative, package-relative and function-level imports resolve; TYPE_CHECKING blocks do not count
    comparison = {t for t, _, _ in GRAPH["calibkit.comparison"].edges}
    assert {"calibkit.evaluation", "calibkit.metrics", "calibkit.conformal"} <= comparison
    report = {t for t, _, _ in GRAPH["calibkit.report"].edges}
    assert "calibkit.diagrams" in report and "calibkit.evaluation" not in report  # a TYPE_CHECKING import
    assert "calibkit.arrays" in {t for t, _, _ in GRAPH["calibkit.calibration._base"].edges}
    assert [t for t, _, _ in GRAPH["calibkit"].edges] == ["calibkit.version"]  # the lazy re-exports are strings


def test_every_import_names_a_module() -> None:
    bad = [u for imports in GRAPH.values() for u in imports.unresolved]
    assert not bad, "imports of calibkit modules that do not exist:\n  " + "\n  ".join(bad)


def test_no_import_circle() -> None:
    circles = _cycles()
    assert not circles, "import circles:\n" + "\n".join(
        "  " + "; ".join(_line(a, b) for a, b in zip(c, c[1:])) for c in circles
    )


def test_no_module_uses_another_modules_private_names() -> None:
    bad = []
    for m, imports in GRAPH.items():
        bad += imports.private_uses
        for target, line, name in imports.edges:
            where = f"{MODULES[m].relative_to(PACKAGE.parent)}:{line}"
            if name and _is_private(name):
                bad.append(f"{where}: {m} imports {target}.{name}")
            private_parts = [i for i, part in enumerate(target.split(".")) if _is_private(part)]
            if private_parts:
                owner = ".".join(target.split(".")[: private_parts[0]])
                if m != owner and not m.startswith(owner + "."):
                    bad.append(f"{where}: {m} imports {target}, private to {owner}")
    assert not bad, "private names used from outside their module:\n  " + "\n  ".join(dict.fromkeys(bad))


def test_every_module_is_in_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer(m) is None]
    assert not unplaced, f"modules in no layer: {unplaced}; add each to STATISTICS, MODEL, SHARED or TOP here"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_they_may(layer: str) -> None:
    bad = sorted(
        f"{_line(m, t)}: {layer} may not import {_layer(t)}"
        for m in MODULES if _layer(m) == layer
        for t in {t for t, _, _ in GRAPH[m].edges}
        if _layer(t) is not None and _layer(t) not in ALLOWED[layer]
    )
    assert not bad, f"the {layer} layer imports across the seam:\n  " + "\n  ".join(bad)
