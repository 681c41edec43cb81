"""Import layers of the package: nothing imports upward or sideways, and no import cycle, beyond today's list.

The import graph is read with `ast` from kvnand/**/*.py: every `import`/`from ... import` anywhere in a file
(function-local, lazy imports are dependencies all the same), relative imports resolved, and module names
handed to importlib.import_module as string literals (the CLI's command registry). Importing the package
root `kvnand` counts as importing kvnand.evaluation: the root is a facade whose `kvnand.evaluate` loads it.

Each known violation and cycle is allow-listed below with what should change, and runs as a strict xfail:
it shows up as a to-do in `pytest -rx`, and once the refactor removes it the xfail passes, which fails the run
until the entry is deleted. So the lists only shrink; a violation that is not listed fails immediately.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import kvnand

PACKAGE = Path(kvnand.__file__).resolve().parent

# Target order, bottom to top. A module may import its own unit and any unit of a lower layer; a different
# unit of the same layer is a sideways import (e.g. dse -> report), a unit of a higher layer an upward one.
LAYERS = (
    ("errors", "paths"),
    ("io",),  # output files and JSON
    ("config",),
    ("workload",),
    ("scenario",),  # a query resolved into its parts, once
    ("program",),  # the IR: pipes, tasks and their composition
    ("hw",),
    ("mapping",),
    ("lowering",),
    ("sim",),
    ("energy", "cost"),  # cost prices memory from the config alone, as energy prices actions
    ("reliability",),
    ("result",),  # the record of one point, typed
    ("evaluation",),
    ("columnar",),  # evaluate() over many points, as columns
    ("study",),  # sweeps and their cache, validation, design-space exploration: studies over evaluate()
    ("present",),  # tables, figures, traces: never evaluates
    ("cli",),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}



def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["kvnand", *path.relative_to(PACKAGE).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `module` imports (the deepest existing module of each imported name)."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    dynamic = "import_module" in source  # then string literals naming package modules are imports too
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        elif dynamic and isinstance(node, ast.Constant) and node.value in modules:
            names.append(node.value)
    out = set()
    for name in names:
        if name.split(".")[0] != "kvnand":
            continue
        while name not in modules:  # `from kvnand.x import func` -> kvnand.x
            name = name.rsplit(".", 1)[0]
        out.add("kvnand.evaluation" if name == "kvnand" else name)
    out.discard(module)
    return out


def _graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(m for m in modules if m != "kvnand")
    for module, path in modules.items():
        if module != "kvnand":  # the facade itself: it only loads kvnand.evaluation
            g.add_edges_from((module, target) for target in _imports(module, path, modules))
    return g


def _unit(module: str) -> str:
    return module.split(".")[1]


def _violations(g: nx.DiGraph) -> set[tuple[str, str]]:
    return {(a, b) for a, b in g.edges if _unit(a) != _unit(b) and LAYER_OF[_unit(b)] >= LAYER_OF[_unit(a)]}


def _cycles(g: nx.DiGraph) -> set[tuple[str, ...]]:
    out = set()
    for cycle in nx.simple_cycles(g):
        i = cycle.index(min(cycle))
        out.add(tuple(cycle[i:] + cycle[:i]))
    return out


GRAPH = _graph()


def test_every_module_has_a_layer():
    """A new top-level module or subpackage must be placed in LAYERS before it can be checked."""
    assert {_unit(m) for m in GRAPH} <= LAYER_OF.keys()


def test_no_upward_or_sideways_import():
    """Every import goes down the layers."""
    new = sorted(_violations(GRAPH))
    assert not new, "imports against the layer order (importer -> imported):\n" + "\n".join(f"  {a} -> {b}"
                                                                                            for a, b in new)


def test_no_import_cycle():
    new = sorted(_cycles(GRAPH))
    assert not new, "import cycles:\n" + "\n".join("  " + " -> ".join((*c, c[0])) for c in new)
