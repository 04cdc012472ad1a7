"""The import graph of ``src/ultrasam`` agrees with docs/architecture.md.

Every module is parsed with :mod:`ast` (nothing is imported), every ``import`` / ``from ...
import`` of the package (top-level, inside functions and under ``TYPE_CHECKING`` alike) becomes
an edge to the module it names, and the graph must have
(a) no cycle between modules,
(b) only the cross-package imports that :data:`ALLOWED` (the table of docs/architecture.md)
    permits,
(c) no import of the package front door (``ultrasam/__init__.py``) from inside the package.
The checker is tested on fake graphs and a fake source tree, so it is known to fail when a
forbidden import appears.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "ultrasam"
DOC = ROOT / "docs" / "architecture.md"

FRONT = "__init__"  # key of the front door (ultrasam/__init__.py) in the table

_BASE = {"errors", "config"}
_MODEL = _BASE | {"io", "modeling", "weights", "inference"}
# Which top-level package (or top-level module) may import which, besides itself. The same
# table is printed in docs/architecture.md (test_doc_table_matches).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "io": {"errors", "config"},
    "modeling": {"errors", "config"},
    "weights": {"errors", "config", "modeling"},
    "inference": {"errors", "config", "io", "modeling", "weights"},
    "data": {"errors", "config", "io"},
    "evaluate": _MODEL | {"data"},
    "train": _MODEL | {"data", "evaluate"},
    "finetune": _MODEL | {"data", "evaluate", "train"},
    "export": _MODEL,
    "serve": _MODEL | {"data", "evaluate"},
    "commands": _MODEL | {"data", "evaluate", "train", "finetune", "export", "serve"},
    "cli": {"errors", "commands"},
    FRONT: {"config", "modeling", "weights", "inference"},
}

Graph = dict[str, dict[str, int]]  # module -> {imported module: first line}


# ----------------------------------------------------------------------------- the checker
def _modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is_package) for every ``.py`` under ``src``."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _resolve(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The longest existing module that ``name`` starts with (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def build_graph(src: Path) -> Graph:
    """Intra-package import graph of the package rooted at ``src`` (its folder name)."""
    modules = _modules(src)
    root = src.name
    graph: Graph = {}
    for name, (path, is_pkg) in modules.items():
        package = name if is_pkg else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from pkg import sub`` names the submodule when there is one.
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem
                           for a in node.names]
            for target in targets:
                if target != root and not target.startswith(root + "."):
                    continue
                resolved = _resolve(target, modules)
                if resolved and resolved != name:
                    edges.setdefault(resolved, node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph.get(start, {})))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, {}))))
    return None


def top_package(module: str) -> str:
    """``ultrasam.io.images`` -> ``io``; ``ultrasam.cli`` -> ``cli``; ``ultrasam`` -> FRONT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FRONT


def layer_violations(graph: Graph, allowed: dict[str, set[str]]) -> list[str]:
    out = []
    for module, edges in sorted(graph.items()):
        own = top_package(module)
        if own not in allowed:
            out.append(f"{module}: package {own!r} is not in the layering table")
            continue
        for target, line in sorted(edges.items()):
            other = top_package(target)
            if other != own and other not in allowed[own]:
                out.append(f"{module} (line {line}) imports {target}: {own} may import only "
                           f"{sorted(allowed[own])}")
    return out


def front_door_violations(graph: Graph) -> list[str]:
    return [f"{module} (line {edges[root]}) imports the package front door {root}; import the "
            f"module that defines the name instead"
            for module, edges in sorted(graph.items())
            for root in [module.split(".")[0]]
            if module != root and root in edges]


# ----------------------------------------------------------------------------- the package
@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(SRC)


def test_graph_sees_the_package(graph: Graph) -> None:
    # Guards against a parser that silently finds nothing.
    assert "ultrasam.inference.predictor" in graph
    assert "ultrasam.modeling.sam" in graph["ultrasam.inference.predictor"]
    assert "ultrasam.weights.checkpoints" in graph["ultrasam"]


def test_no_import_cycles(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layering_rule(graph: Graph) -> None:
    problems = layer_violations(graph, ALLOWED)
    assert not problems, "\n".join(problems)


def test_no_front_door_imports_inside_the_package(graph: Graph) -> None:
    problems = front_door_violations(graph)
    assert not problems, "\n".join(problems)


def test_every_package_of_the_tree_is_in_the_table(graph: Graph) -> None:
    assert {top_package(m) for m in graph} == set(ALLOWED)


def test_doc_table_matches() -> None:
    """docs/architecture.md prints the same table, row for row."""
    text = DOC.read_text("utf-8")
    section = text.split("## Who may import whom", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([\w_]+)`[^|]*\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([\w_]+)`", m.group(2)))
    assert rows == ALLOWED


# ----------------------------------------------------------------------------- the checker
def test_checker_finds_a_cycle() -> None:
    g = {"u.a": {"u.b": 1}, "u.b": {"u.c": 2}, "u.c": {"u.a": 3}, "u.d": {"u.a": 1}}
    cycle = find_cycle(g)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"u.a", "u.b", "u.c"}
    assert find_cycle({"u.a": {"u.b": 1}, "u.b": {"u.c": 1}, "u.d": {"u.c": 1}}) is None


def test_checker_finds_a_layer_violation_and_a_front_door_import() -> None:
    down = {"ultrasam.inference.predictor": {"ultrasam.io.images": 3}}
    up = {"ultrasam.io.images": {"ultrasam.inference.predictor": 7}}
    assert layer_violations(down, ALLOWED) == []
    [problem] = layer_violations(up, ALLOWED)
    assert "ultrasam.io.images (line 7) imports ultrasam.inference.predictor" in problem
    assert layer_violations({"ultrasam.newpkg.x": {}}, ALLOWED)  # unknown package
    [door] = front_door_violations({"ultrasam.data.coco": {"ultrasam": 5}})
    assert "ultrasam.data.coco (line 5)" in door
    assert front_door_violations({"ultrasam": {"ultrasam.config": 1}}) == []


def test_checker_on_a_source_tree(tmp_path: Path) -> None:
    """Relative, absolute and function-level imports of a fake tree all become edges."""
    src = tmp_path / "ultrasam"
    files = {
        "__init__.py": "",
        "io/__init__.py": "",
        "io/images.py": "def f():\n    from ..inference import predictor\n",
        "inference/__init__.py": "",
        "inference/predictor.py": ("from ultrasam.io.images import f\n"
                                   "def g():\n    from ultrasam import load_model\n"),
    }
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    g = build_graph(src)
    assert g["ultrasam.io.images"] == {"ultrasam.inference.predictor": 2}
    assert g["ultrasam.inference.predictor"] == {"ultrasam.io.images": 1, "ultrasam": 3}
    assert set(find_cycle(g) or []) >= {"ultrasam.io.images", "ultrasam.inference.predictor"}
    assert any("ultrasam.io.images" in p for p in layer_violations(g, ALLOWED))
    [door] = front_door_violations(g)
    assert door.startswith("ultrasam.inference.predictor (line 3) imports the package front door")
