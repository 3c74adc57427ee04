"""The package's shape, as docs/ARCHITECTURE.md draws it: areas in layers, each importing only
the layers below it; no import circles; only `cli/` imports `cli/`; no product module
imports the test kit; functions of more than five parameters say what each is. Read from the
source (every import, at any depth), without importing it."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

from fink_spark.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "fink_spark"
ARCHITECTURE = PROJECT_ROOT / "docs" / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The fink_spark modules a module imports (a package's name where it imports the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fink_spark")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fink_spark"):
            for alias in node.names:  # `from fink_spark.view import plots` imports a module
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def area(module: str) -> str:
    """A subpackage (`sink`), or a module of the package's top level (`surveys`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fink_spark"


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of the graph, if it has one (depth first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node))), None)


def documented_layers() -> list[list[str]]:
    """The areas of ARCHITECTURE.md's table "Areas, top-down", row by row (first column, in backquotes)."""
    text = ARCHITECTURE.read_text()
    table = text.split("## Areas, top-down", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return [re.findall(r"`([a-z_]+)/?`", row.split("|")[1]) for row in rows]


def test_no_module_imports_in_a_circle() -> None:
    assert cycle_in(GRAPH) is None, " -> ".join(cycle_in(GRAPH) or [])


def test_areas_import_only_the_layers_below_them_as_the_architecture_says() -> None:
    layers = documented_layers()
    rank = {name: index for index, row in enumerate(layers) for name in row}
    areas = {area(module) if area(module) != "fink_spark" else module.split(".")[-1] for module in MODULES
             if module != "fink_spark"}
    assert areas <= set(rank), f"not in ARCHITECTURE.md's areas: {sorted(areas - set(rank))}"
    wrong = []
    for module, imported in GRAPH.items():
        mine = area(module) if area(module) != "fink_spark" else module.split(".")[-1]
        for other in imported:
            theirs = area(other) if area(other) != "fink_spark" else other.split(".")[-1]
            if theirs != mine and theirs in rank and mine in rank and rank[theirs] <= rank[mine]:
                wrong.append(f"{module} imports {other} ({theirs} is not below {mine})")
    assert not wrong, "\n".join(sorted(wrong))


def test_areas_have_no_circle_and_only_the_cli_imports_the_cli() -> None:
    by_area: dict[str, set[str]] = defaultdict(set)
    for module, imported in GRAPH.items():
        by_area[area(module)] |= {area(other) for other in imported} - {area(module)}
    assert cycle_in(dict(by_area)) is None
    assert not [name for name, imported in by_area.items() if "cli" in imported]
    assert not [module for module, imported in GRAPH.items() if area(module) != "testing"
                and any(area(other) == "testing" for other in imported)]


def test_each_area_says_what_it_offers_and_the_architecture_names_every_module() -> None:
    text = ARCHITECTURE.read_text()
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring naming what it offers"
        elif area(module) != "testing":
            assert f"`{path.relative_to(PACKAGE).as_posix()}`" in text or f"`{path.stem}`" in text, \
                f"ARCHITECTURE.md does not name {path.relative_to(PACKAGE)}"


def test_functions_of_more_than_five_parameters_say_what_each_is() -> None:
    undocumented = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        classes = {id(function): node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for function in node.body}
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            arguments = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
            if len([a for a in arguments if a.arg not in ("self", "cls")]) <= 5:
                continue
            owner = classes.get(id(function)) if function.name == "__init__" else None
            docstring = ast.get_docstring(owner or function) or ""
            if "Parameters\n---" not in docstring and "parameters are `" not in docstring:
                undocumented.append(f"{module}.{function.name}")
    assert not undocumented, f"give these a numpydoc 'Parameters' section: {undocumented}"
