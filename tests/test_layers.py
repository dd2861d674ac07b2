"""The layers of shared/DESIGN.md hold: imports go downward only, no cycles, no private names across packages.

Read from the source with ``ast`` (nothing is imported), so a violation anywhere
in src/stemnmf fails here with the file and line.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

#: Rank of each top-level part of stemnmf: a module may import from its own part or a lower rank only.
#: engine is the ground floor; decompose and kselect share a floor, where kselect may use decompose.
RANKS = {
    "__init__": 0, "errors": 0, "version": 0,
    "engine": 1,
    "io": 2, "config": 2,
    "calibrate": 3, "simulate": 3,
    "filters": 4,
    "features": 5,
    "decompose": 6,
    "kselect": 6.5,
    "analysis": 7,
    "crystal": 8,
    "report": 9,
    "pipeline": 10,
    "reproduce": 11,
    "cli": 12,
    "demo": 13,
    "__main__": 14,
}


#: (module, imported module) pairs imported inside a function on purpose, with the reason.
INNER_IMPORTS_ALLOWED = {
    ("stemnmf.engine.core", "stemnmf.engine"): "its cluster module: dask.distributed takes ~1.5 s to import: only for a cluster run",
    ("stemnmf.pipeline", "stemnmf.decompose.distributed"): "dask.distributed takes ~1.5 s to import: only for a cluster run",
}

#: A command's entry point (``main`` of a stemnmf.cli module) imports the layer that runs the command
#: when the command runs, so that ``stemnmf --help`` and a mistyped option answer in ~1.4 s instead
#: of the ~4.4 s it takes to import every layer (pipeline, crystal, report, reproduce, simulate).
CLI_ENTRY_POINTS = {"main", "_execute"}


def _modules():
    for path in sorted((SRC / "stemnmf").rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module):
    """(imported stemnmf module, names, line, enclosing function name or None) for every runtime import."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    inside = {}  # id of a node inside a function -> the name of the outermost function around it
    for node in ast.walk(tree):  # breadth first: outer functions come before the functions they hold
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(node):
                if n is not node:
                    inside.setdefault(id(n), node.name)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target == "stemnmf" or target.startswith("stemnmf."):
                yield target, [a.name for a in node.names], node.lineno, inside.get(id(node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("stemnmf"):
                    yield alias.name, [], node.lineno, inside.get(id(node))


MODULES = list(_modules())


def test_every_part_has_a_rank():
    parts = {_part(name) for name, _, _ in MODULES}
    assert parts <= set(RANKS), f"parts without a layer: {sorted(parts - set(RANKS))} (add them to RANKS)"


def test_imports_go_downward_only():
    upward = []
    for name, path, tree in MODULES:
        here = _part(name)
        for target, names, line, _ in _imports(name, tree):
            there = _part(target)
            if target == "stemnmf":  # `from stemnmf import x`: x's own part
                for n in names:
                    if n != "__version__" and RANKS.get(n, 0) > RANKS[here]:
                        upward.append(f"{path.name}:{line} {name} -> stemnmf.{n}")
            elif RANKS[there] > RANKS[here]:
                upward.append(f"{path.name}:{line} {name} -> {target}")
    assert not upward, "imports that climb a layer:\n" + "\n".join(upward)


def test_no_private_name_crosses_a_package():
    crossing = []
    for name, path, tree in MODULES:
        for target, names, line, _ in _imports(name, tree):
            if target == "stemnmf" or _part(target) == _part(name):
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    crossing.append(f"{path.name}:{line} {name} uses {target}.{n}")
            if any(p.startswith("_") and p != "__init__" for p in target.split(".")):
                crossing.append(f"{path.name}:{line} {name} imports the private module {target}")
    assert not crossing, "private names used outside their package:\n" + "\n".join(crossing)


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    names = {name for name, _, _ in MODULES}
    for name, _, tree in MODULES:
        edges = set()
        for target, imported, _, _ in _imports(name, tree):
            for candidate in [f"{target}.{n}" for n in imported] + [target]:
                if candidate in names and candidate != name:
                    edges.add(candidate)
                    break
        graph[name] = edges
    cycles = []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not nxt.endswith("__init__") and not node.endswith("__init__"):
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("part", sorted(p for p in RANKS if p not in ("__init__", "__main__")))
def test_no_stemnmf_import_inside_a_function(part):
    found = []
    for name, path, tree in MODULES:
        if _part(name) != part:
            continue
        for target, _, line, inside in _imports(name, tree):
            if part == "cli" and inside in CLI_ENTRY_POINTS:
                continue
            if inside and (name, target) not in INNER_IMPORTS_ALLOWED:
                found.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not found, "imports inside functions (move them to the top of the module):\n" + "\n".join(found)


def test_every_stemnmf_module_imported_exists():
    """A module renamed under an import inside a function fails only when that function runs: caught here."""
    missing = []
    for name, path, tree in MODULES:
        for target, _, line, _ in _imports(name, tree):
            parts = target.split(".")
            base = SRC.joinpath(*parts)
            if not (base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()):
                missing.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)
