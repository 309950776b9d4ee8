"""The package's import graph has no cycles: every module only imports modules below it.

The graph is read with ``ast`` (nothing is imported): an edge for every ``import`` and
``from ... import`` of a ``robustbench_dc`` module, at module level or inside a function.
``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``
(its ``__init__``). Importing a submodule does not count as importing its parent packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "robustbench_dc"


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _known(name: str, modules: dict) -> str | None:
    """``name`` or its longest prefix that is a module of the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        here = name if is_pkg else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(t for a in node.names if (t := _known(a.name, modules)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != PACKAGE.name:
                    continue
                for a in node.names:
                    full = f"{target}.{a.name}"
                    edges.add(full if full in modules else _known(target, modules) or target)
        edges.discard(name)
        graph[name] = {e for e in edges if e in modules}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_graph_is_read_correctly():
    graph = import_graph()
    assert "robustbench_dc.errors" in graph["robustbench_dc.data.errors"]  # from robustbench_dc.errors import UserError
    assert "robustbench_dc.cli.zoo" in graph["robustbench_dc.cli"]  # from robustbench_dc.cli import ... zoo
    assert "robustbench_dc.zoo" in graph["robustbench_dc.cli.transfer"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert cycles == [], "modules importing each other (move the shared piece down a layer): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_ground_floor_imports_nothing_of_the_package():
    graph = import_graph()
    assert graph["robustbench_dc.errors"] == set()
    # the library never imports the command line (``python -m robustbench_dc`` runs it)
    assert not [m for m, edges in graph.items() if (m.split(".") + [""])[1] not in ("cli", "__main__")
                and any(e.startswith("robustbench_dc.cli") for e in edges)]


def test_the_attack_library_never_imports_the_evaluation() -> None:
    """evaluation/ (how a model is judged) imports attacks/ (the attack library), never the reverse,
    and attacks/__init__ does not re-export the evaluation's names."""
    graph = import_graph()
    upward = sorted((m, e) for m, edges in graph.items() if m.startswith("robustbench_dc.attacks")
                    for e in edges if e.startswith("robustbench_dc.evaluation"))
    assert upward == []
    assert any(e.startswith("robustbench_dc.attacks") for m, edges in graph.items()
               if m.startswith("robustbench_dc.evaluation") for e in edges)
    import robustbench_dc.attacks as attacks

    assert not {"evaluate_whitebox", "evaluate_transfer", "run_eps_sweep", "AttackResult", "MaskingFlag"} \
        & set(attacks.__all__)


def test_no_private_name_crosses_modules() -> None:
    """What one module uses of another is public in that module: no ``_name`` is imported from
    another module of the package (nor a private name of torch or numpy)."""
    import ast

    found = []
    for path in sorted((REPO / "robustbench_dc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          or (a.asname or "").startswith("_")]
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(REPO)}: {a.name} as {a.asname}" for a in node.names
                          if (a.asname or "").startswith("_")]
    assert found == []


def test_no_package_holds_more_than_a_sixth_of_the_code() -> None:
    """No room of the tree above 15% of the package's lines (attacks/ was a quarter before the
    evaluation moved out of it)."""
    lines = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    total = sum(lines.values())
    for room in [d for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__"]:
        share = sum(n for p, n in lines.items() if room in p.parents) / total
        assert share <= 0.15, f"{room.name}/ holds {100 * share:.1f}% of the package's lines"
