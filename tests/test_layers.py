"""The package is a building: each subpackage imports only from the layers below it (or itself),
and no module imports another that imports it back, not even inside a function. A newcomer
can then read the package bottom up, and change a layer without reading the ones above it.

    core  <  features  <  classify  <  runs  <  inference  <  api  <  cli
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fec"
LAYERS = ["core", "features", "classify", "runs", "inference", "api", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The fec modules `path` imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fec":
            for alias in node.names:  # `from fec.features import pooling` imports the module fec.features.pooling
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "fec")
    return found


def layer(module: str) -> int:
    """A module's layer: its subpackage's place in LAYERS; the package root (`fec`, the public
    names) sits on top of them all."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_every_module_lives_in_a_layer():
    assert [name for name in modules() if name != "fec" and name.split(".")[1] not in LAYERS] == []


def test_no_module_imports_from_a_higher_layer():
    upward = sorted(f"{name} -> {dep}" for name, deps in graph().items() for dep in deps if layer(dep) > layer(name))
    assert upward == []


def test_the_imports_have_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(trail[trail.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_commands_are_reached_only_through_the_dispatcher():
    """The command line is a face over the library: no module imports a command module (commands
    share what lies below them), but `fec/cli/__init__.py`, which loads the one asked for."""
    from fec.cli import SUBCOMMANDS

    commands = {module for module, _ in SUBCOMMANDS.values()}
    reaching = sorted(f"{name} -> {dep}" for name, deps in graph().items() for dep in deps & commands if name != "fec.cli")
    assert reaching == []
