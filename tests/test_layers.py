"""The layers of docs/architecture.md hold: no import cycle, and the device side never imports the host side."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "exporter"
# What unet-bench imports (docs/architecture.md, "The device side"); everything else is the host side.
DEVICE_SIDE = ("exporter.cli.bench", "exporter.cli.common", "exporter.bench", "exporter.runtimes",
               "exporter.contracts", "exporter.figures", "exporter.metrics", "exporter.drift", "exporter.fleet",
               "exporter.parameters",
               "exporter.stdio", "exporter.errors", "exporter.fileio", "exporter.classes", "exporter.text_table",
               "exporter.tflite_io")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The exporter modules ``path`` imports (at module level only, or anywhere; type-checking imports aside)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    nodes = [n for n in (tree.body if top_level_only else ast.walk(tree)) if id(n) not in typing_only]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    modules = _modules()
    return {name for name in names if name in modules and name.startswith("exporter")}


def _is_device(name: str) -> bool:
    return any(name == d or name.startswith(d + ".") for d in DEVICE_SIDE)


def test_the_device_side_imports_no_host_module_even_inside_functions():
    wrong = {name: sorted(n for n in _imports(path, top_level_only=False) if not _is_device(n) and n != "exporter")
             for name, path in _modules().items() if _is_device(name)}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = {name: _imports(path, top_level_only=False) - {name} for name, path in _modules().items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = 1
        for other in sorted(graph.get(name, ())):
            if other == "exporter" or other.startswith(name + "."):  # a package importing its own modules
                continue
            if state.get(other) == 1:
                return [*trail, name, other]
            if state.get(other) is None and (cycle := visit(other, [*trail, name])):
                return cycle
        state[name] = 2
        return None

    cycles = [cycle for name in sorted(graph) if state.get(name) is None and (cycle := visit(name, []))]
    assert cycles == []
