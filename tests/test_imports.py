"""The import graph of our packages (sdl, drivers, simulators), read from the source with `ast`.

Every `import` / `from ... import` counts, wherever it is (module level, inside a function: lazy
imports, under `if TYPE_CHECKING:`; the messages say which); relative imports are resolved.
`import a.b.c` is an edge to `a.b.c`. `from a.b import c` is an edge to `a.b.c` when that is one of
our modules, and to `a.b` when some imported name is not (`c` is then an attribute of `a.b`, so
`a/b/__init__.py` is what is imported). The implicit import of parent packages (importing `a.b.c`
runs `a/__init__` and `a/b/__init__` first) is not counted: nor, therefore, is the `a.b` of
`from a.b import c` when `c` is a submodule, which is that same parent import (counting it would
make every `from sdl import analysis` inside sdl a cycle through sdl/__init__.py). Third-party
modules are ignored.

The rules:
- no import cycles among our modules;
- `simulators` (pure physics) imports nothing of `sdl` or `drivers`;
- `sdl` imports nothing of `drivers`;
- no module of `sdl` outside `sdl/techniques/` imports `sdl.techniques.*`: the framework core finds
  techniques through the `sdl.techniques` entry points only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdl", "drivers", "simulators")


@dataclass
class Graph:
    modules: dict[str, Path]  # module name -> file
    packages: set[str]  # modules that are packages (an __init__.py)
    # (importer, imported) -> where: "sdl/x.py:12" (+ " (lazy, in f)" inside a function)
    edges: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def tops(self) -> set[str]:
        return {m.split(".")[0] for m in self.modules}

    def targets(self, src: str) -> set[str]:
        return {b for a, b in self.edges if a == src}

    def show(self, edge: tuple[str, str]) -> str:
        return f"{edge[0]} -> {edge[1]}  ({'; '.join(self.edges[edge])})"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> Graph:
    files = sorted(f for pkg in packages for f in (root / pkg).rglob("*.py") if "__pycache__" not in f.parts)
    g = Graph(modules={module_name(root, f): f for f in files},
              packages={module_name(root, f) for f in files if f.name == "__init__.py"})
    for name, path in g.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        _Collector(g, name, f"{path.relative_to(root).as_posix()}").visit(tree)
    return g


class _Collector(ast.NodeVisitor):
    """Adds the edges of one module's import statements, wherever they are."""

    def __init__(self, g: Graph, module: str, where: str):
        self.g, self.module, self.where = g, module, where
        self.functions: list[str] = []
        self.type_checking = 0  # inside `if TYPE_CHECKING:`

    def _function(self, node) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_If(self, node: ast.If) -> None:
        t = node.test
        if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
                (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"):
            self.visit(t)
            self.type_checking += 1
            for n in node.body:
                self.visit(n)
            self.type_checking -= 1
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def _add(self, target: str, node: ast.AST) -> None:
        if target.split(".")[0] not in self.g.tops:
            return  # third party (or the standard library)
        # the module itself, else the deepest of ours it names (`import sdl.nonexistent` -> sdl)
        parts = target.split(".")
        while parts and ".".join(parts) not in self.g.modules:
            parts.pop()
        resolved = ".".join(parts)
        if not resolved or resolved == self.module:
            return
        notes = ([f"lazy, in {self.functions[-1]}"] if self.functions else []) + \
            (["TYPE_CHECKING only"] if self.type_checking else [])
        where = f"{self.where}:{node.lineno}" + (f" ({', '.join(notes)})" if notes else "")
        self.g.edges[(self.module, resolved)].append(where)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            # relative to the importing module's package (a package's __init__ is its own package)
            base = self.module.split(".")
            if self.module not in self.g.packages:
                base = base[:-1]
            if node.level - 1 > len(base) - 1:
                raise ValueError(f"{self.where}:{node.lineno}: relative import beyond the top-level package")
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in self.g.modules]
        if len(submodules) < len(node.names):  # an attribute of the package/module `target` (or `*`)
            self._add(target, node)
        for m in submodules:
            self._add(m, node)


def strongly_connected(g: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each a set of cycles)."""
    adj = {m: sorted(g.targets(m)) for m in g.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return sorted(out)


def a_cycle(g: Graph, comp: list[str]) -> list[str]:
    """One shortest cycle through the component's first module: [a, b, ..., a]."""
    inside = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g.targets(v) & inside):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {comp}")


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph()


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# ----- the graph is read right -------------------------------------------------------------------------


def test_the_reader_of_the_graph(tmp_path):
    """Absolute, relative, lazy and `from package import module` imports on a made-up package."""
    pkg = tmp_path / "sdl"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import os\nimport numpy as np\nfrom . import b\nfrom .sub import c, VALUE\n",
        "b.py": "def f():\n    from sdl.sub.c import thing\n    import sdl.a\n"
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sdl import sub\nelse:\n    import sdl.a\n",
        "sub/__init__.py": "from .c import VALUE\nfrom .. import b as _b\n",
        "sub/c.py": "from ..a import x\nfrom sdl import nonexistent\nimport sdl.sub.missing\nVALUE = 1\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    g = build_graph(tmp_path, ("sdl",))
    assert set(g.modules) == {"sdl", "sdl.a", "sdl.b", "sdl.sub", "sdl.sub.c"}
    assert g.packages == {"sdl", "sdl.sub"}
    assert set(g.edges) == {
        ("sdl.a", "sdl.b"), ("sdl.a", "sdl.sub"), ("sdl.a", "sdl.sub.c"),  # VALUE: an attribute of sdl.sub
        ("sdl.b", "sdl.sub.c"), ("sdl.b", "sdl.a"), ("sdl.b", "sdl.sub"),
        ("sdl.sub", "sdl.sub.c"), ("sdl.sub", "sdl.b"),  # `from .. import b`: sdl is b's parent, not counted
        ("sdl.sub.c", "sdl.a"), ("sdl.sub.c", "sdl"), ("sdl.sub.c", "sdl.sub"),
    }
    assert g.edges[("sdl.b", "sdl.a")] == ["sdl/b.py:3 (lazy, in f)", "sdl/b.py:8"]
    assert g.edges[("sdl.b", "sdl.sub")] == ["sdl/b.py:6 (TYPE_CHECKING only)"]
    assert strongly_connected(g) == [["sdl.a", "sdl.b", "sdl.sub", "sdl.sub.c"]]
    cyc = a_cycle(g, ["sdl.a", "sdl.b", "sdl.sub", "sdl.sub.c"])
    assert cyc[0] == cyc[-1] == "sdl.a" and all((x, y) in g.edges for x, y in zip(cyc, cyc[1:]))


def test_the_graph_covers_our_packages(graph):
    assert {"sdl", "sdl.cli", "sdl.runner.loop", "sdl.analysis", "drivers.simulated", "simulators.world"} <= set(graph.modules)
    assert ("drivers.simulated", "simulators.world") in graph.edges  # module level
    assert ("drivers.labs", "drivers.simulated") in graph.edges  # lazy, inside the factories
    assert all(b in graph.modules and a != b for a, b in graph.edges)


# ----- the rules -----------------------------------------------------------------------------------------


def test_no_import_cycles(graph):
    comps = strongly_connected(graph)
    lines = []
    for comp in comps:
        cyc = a_cycle(graph, comp)
        lines.append(f"cycle among {len(comp)} modules {comp}: e.g. {' -> '.join(cyc)}")
        inside = set(comp)
        lines += [f"    {graph.show(e)}" for e in sorted(graph.edges) if e[0] in inside and e[1] in inside]
    assert not comps, f"{len(comps)} import cycle(s) (strongly connected components):\n" + "\n".join(lines)


def _offending(graph: Graph, importer: str, imported: tuple[str, ...], exempt: str | None = None) -> list[str]:
    return [graph.show(e) for e in sorted(graph.edges)
            if _under(e[0], importer) and not (exempt and _under(e[0], exempt))
            and any(_under(e[1], p) for p in imported)]


def test_simulators_import_nothing_of_sdl_or_drivers(graph):
    bad = _offending(graph, "simulators", ("sdl", "drivers"))
    assert not bad, "simulators (pure physics) imports sdl/drivers:\n" + "\n".join(bad)


def test_sdl_imports_nothing_of_drivers(graph):
    bad = _offending(graph, "sdl", ("drivers",))
    assert not bad, "sdl imports drivers:\n" + "\n".join(bad)


def test_framework_core_finds_techniques_by_entry_point_only(graph):
    bad = _offending(graph, "sdl", ("sdl.techniques",), exempt="sdl.techniques")
    assert not bad, ("modules of sdl outside sdl/techniques/ import sdl.techniques (they must find techniques "
                     "through the `sdl.techniques` entry points):\n" + "\n".join(bad))
