"""The package's shape, checked from the source: no import cycles, and no layer importing a higher one.

Layers (docs/architecture.md), lowest first::

    data -> models, labeling, curation -> methods -> engine -> adapt, evaluate, report -> export -> workflows -> api -> cli

``errors`` and ``config`` are shared by all. Every ``import`` statement counts, also
one inside a function or under ``TYPE_CHECKING``: a lazy import hides a dependency
from the reader, not from the design. Known exceptions, in code being redesigned,
are listed below by name (``LAYER_EXCEPTIONS``, ``CYCLE_EXCEPTIONS``); remove an entry
once its import is gone (a stale entry fails the test too).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "greenfm"

# What each part of the package may never import: anything above it (siblings such as adapt and
# evaluate may use each other; errors and config are shared by all and import nothing of greenfm).
FORBIDDEN = {
    "data": {"models", "labeling", "curation", "methods", "engine", "adapt", "evaluate", "report", "export", "workflows", "api",
             "cli"},
    "models": {"methods", "engine", "adapt", "evaluate", "report", "export", "workflows", "api", "cli"},
    "labeling": {"methods", "engine", "adapt", "evaluate", "report", "export", "workflows", "api", "cli"},
    "methods": {"engine", "adapt", "evaluate", "report", "export", "workflows", "api", "cli"},
    # prototype curation (METHODS 4.2) sits beside models and labeling: methods wrap it, workflows use it alone
    "curation": {"methods", "engine", "adapt", "evaluate", "report", "export", "workflows", "api", "cli"},
    "engine": {"adapt", "evaluate", "report", "export", "workflows", "api", "cli"},
    "adapt": {"export", "workflows", "api", "cli"},
    "evaluate": {"export", "workflows", "api", "cli"},
    "report": {"export", "workflows", "api", "cli"},
    "export": {"workflows", "api", "cli"},
    "workflows": {"api", "cli"},
    "api": {"cli"},
    "errors": {"data", "models", "labeling", "curation", "methods", "engine", "adapt", "evaluate", "report", "export",
               "workflows", "api", "cli"},
    "config": {"data", "models", "labeling", "curation", "methods", "engine", "adapt", "evaluate", "report", "export",
               "workflows", "api", "cli"},
}

# Known exceptions, in modules being redesigned (methods/, engine/, models/export.py, export/,
# workflows/pretrain.py, the demo, config.py): remove an entry once its import is gone.
# Layer violations, as (importer, imported) module pairs:
LAYER_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()

# Import cycles, each as the sorted modules of one strongly connected group:
CYCLE_EXCEPTIONS: frozenset[tuple[str, ...]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / PACKAGE).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The greenfm modules ``name`` imports: ``from pkg import mod`` names ``pkg.mod`` when it is a module."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import greenfm.data.cache`` and the like
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE + ".") and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def part_of(module: str) -> str:
    """The layer a module belongs to: its first name under ``greenfm`` (``greenfm.data.cache`` -> ``data``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (importer, imported)
        for importer, targets in graph.items()
        for imported in targets
        if part_of(imported) in FORBIDDEN.get(part_of(importer), set())
    }


def import_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected groups of more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.add(tuple(sorted(group)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _lines(pairs) -> str:
    return "\n".join("  " + " -> ".join(pair) for pair in sorted(pairs))


def test_every_import_goes_down_the_layers():
    violations = layer_violations(import_graph())
    new = violations - LAYER_EXCEPTIONS
    assert not new, "a layer imports a higher one:\n" + _lines(new)


def test_the_layer_exceptions_are_still_needed():
    stale = LAYER_EXCEPTIONS - layer_violations(import_graph())
    assert not stale, "remove these from LAYER_EXCEPTIONS, the imports are gone:\n" + _lines(stale)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    new = cycles - CYCLE_EXCEPTIONS
    assert not new, "modules importing each other (directly or through others):\n" + _lines(new)


def test_the_cycle_exceptions_are_still_needed():
    stale = CYCLE_EXCEPTIONS - import_cycles(import_graph())
    assert not stale, "remove these from CYCLE_EXCEPTIONS, the cycles are gone:\n" + _lines(stale)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    package = tmp_path / "greenfm"
    (package / "data").mkdir(parents=True)
    (package / "workflows").mkdir()
    for init in (package, package / "data", package / "workflows"):
        (init / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("def f():\n    from greenfm.workflows import b\n")
    (package / "data" / "c.py").write_text("from . import a\n")
    (package / "workflows" / "b.py").write_text("import greenfm.data.a\n")
    modules = {module_name_under(tmp_path, p): p for p in package.rglob("*.py")}
    graph = {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}
    assert graph["greenfm.data.a"] == {"greenfm.workflows.b"}
    assert graph["greenfm.data.c"] == {"greenfm.data.a"}
    assert layer_violations(graph) == {("greenfm.data.a", "greenfm.workflows.b")}
    assert import_cycles(graph) == {("greenfm.data.a", "greenfm.workflows.b")}


def module_name_under(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
