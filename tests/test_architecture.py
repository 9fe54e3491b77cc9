"""The package's shape: no import cycle, layers that only import downwards, short modules.

Every module under ``grounded_sam/`` is parsed with :mod:`ast` (nothing is imported) and every
import between ``grounded_sam`` modules is collected: at module level, inside functions and
under ``if TYPE_CHECKING:`` alike (a type-only cycle is still a cycle for a reader, a type
checker and the next refactor), relative imports resolved. ``from grounded_sam.pkg import x``
is an edge to ``grounded_sam.pkg.x`` when that is a module, else to ``grounded_sam.pkg``.
Importing a submodule is not counted as importing its parent packages (they are lazy).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "grounded_sam"
MAX_LINES = 600

#: Layers, lowest first: a module may import its own layer and the layers below it only.
#: Keys are the first name under ``grounded_sam`` (a subpackage or a top-level module);
#: ``__init__`` is ``grounded_sam/__init__.py`` (the lazy facade, above the engine).
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "errors limits utils device hub inputs",  # leaves: no models
        "sam clip",  # the two model back-ends
        "grounding",  # text -> regions over an index
        "results export",  # sv.Detections and files from them
        "pipeline batch testing video",  # the engine (video: its tracker over a video)
        "__init__",  # the package facade (imports the engine for type checkers)
        "labeling deploy",  # datasets, ONNX
        "app distributed serve",  # the web page, Ray, the HTTP server
        "cli",  # the command line: may import anything
    )
)

# -- the import graph -------------------------------------------------------------------------


def find_modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is_package)}`` of every ``.py`` file under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


def _known(name: str, modules: Mapping[str, object]) -> str:
    """``name`` or its closest enclosing module that exists."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(
    name: str, path: Path, is_package: bool, modules: Mapping[str, object], package: str
) -> set[str]:
    """Every in-package module that ``name`` imports, anywhere in its file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    out.add(_known(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, level - 1 packages up
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join([*here, *([node.module] if node.module else [])])
            if base.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else _known(base, modules))
    out.discard(name)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over the package."""
    modules = find_modules(root, package)
    return {
        name: imports_of(name, path, is_pkg, modules, package)
        for name, (path, is_pkg) in modules.items()
    }


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One import cycle per strongly connected component, as a path ``[a, b, ..., a]``.

    Tarjan's algorithm finds the components; a breadth-first search inside each one gives a
    shortest cycle through its first module (sorted), so the message is short and stable.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(sorted(comp))

    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    cycles = []
    for comp in sorted(components):
        members, start = set(comp), comp[0]
        parent: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parent:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w in members and w not in parent:
                        parent[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while path[-1] != start or len(path) == 1:
            path.append(parent[path[-1]])
        cycles.append(path[::-1])
    return cycles


def layer_of(module: str) -> int:
    """Index into :data:`LAYERS` of a module (by its first name under the package)."""
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(
        f"{module} is in no layer: add {key!r} to LAYERS in tests/test_architecture.py."
    )


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """``"a (layer) imports b (layer)"`` for every import of a higher layer."""

    def named(m: str) -> str:
        return " ".join(sorted(LAYERS[layer_of(m)]))

    return [
        f"{a} ({named(a)}) imports {b} ({named(b)})"
        for a in sorted(graph)
        for b in sorted(graph[a])
        if layer_of(b) > layer_of(a)
    ]


def long_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, int]:
    """``{module: line count}`` of the modules over :data:`MAX_LINES` lines."""
    out = {}
    for name, (path, _) in find_modules(root, package).items():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out[name] = n
    return out


# -- the package ------------------------------------------------------------------------------


GRAPH = import_graph()


def test_no_import_cycle() -> None:
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles (any import counts, TYPE_CHECKING ones too):\n" + "\n".join(
        " -> ".join(c) for c in cycles
    )


def test_layers_only_import_downwards() -> None:
    bad = upward_imports(GRAPH)
    assert not bad, "imports of a higher layer (see LAYERS):\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("sam clip utils", "pipeline batch cli app labeling distributed deploy"),
        ("grounding", "pipeline batch cli app labeling distributed deploy export"),
        ("export", "pipeline cli app labeling distributed"),
        ("labeling deploy", "cli app distributed"),
        ("app distributed", "cli"),
    ],
)
def test_named_layering_rules(low: str, high: str) -> None:
    # the rules the layers exist for, spelled out (and a check that LAYERS still says them)
    lows, highs = set(low.split()), set(high.split())
    bad = [
        f"{a} imports {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if a.split(".")[1:2] and a.split(".")[1] in lows and b.split(".")[1:2]
        and b.split(".")[1] in highs
    ]  # fmt: skip
    assert not bad, "\n".join(sorted(bad))
    assert all(layer_of(f"{PACKAGE}.{h}") > layer_of(f"{PACKAGE}.{lo}") for lo in lows
               for h in highs)  # fmt: skip


def test_no_module_is_over_600_lines_but_the_known_ones() -> None:
    over = {m: n for m, n in long_modules().items()}
    assert not over, f"modules over {MAX_LINES} lines (split them): " + ", ".join(
        f"{m} ({n})" for m, n in sorted(over.items())
    )


# -- the checks themselves ------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_kind_of_import_is_an_edge_and_cycles_are_reported(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.sub import b\n",
            "pkg/sub/__init__.py": "from .b import thing\n",
            "pkg/sub/b.py": "def f():\n    from ..c import g\n",
            "pkg/c.py": "import pkg.a\nimport os\nfrom pkg import sub\nfrom pkg.sub import thing\n",
            "pkg/d.py": "from . import c\nfrom .sub.b import f\n",
        },
    )
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.sub.b"},  # under TYPE_CHECKING
        "pkg.sub": {"pkg.sub.b"},  # relative, in a package
        "pkg.sub.b": {"pkg.c"},  # inside a function, two levels up
        "pkg.c": {"pkg.a", "pkg.sub"},  # `from pkg.sub import thing`: the package
        "pkg.d": {"pkg.c", "pkg.sub.b"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    assert find_cycles({"x": {"x"}, "y": set()}) == [["x", "x"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


def test_layer_and_length_checks_report_offenders(tmp_path: Path) -> None:
    graph = {"grounded_sam.sam.x": {"grounded_sam.cli.main"}, "grounded_sam.cli.main": set()}
    (bad,) = upward_imports(graph)
    assert bad.startswith("grounded_sam.sam.x (clip sam) imports grounded_sam.cli.main (cli)")
    with pytest.raises(AssertionError, match="in no layer"):
        layer_of("grounded_sam.newthing")
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/big.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(tmp_path, "pkg") == {"pkg.big": MAX_LINES + 1}
