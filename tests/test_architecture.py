"""The package's module structure: no import cycles, detection independent of scoring, figures in one place.

Imports are read from the source (module level and inside functions alike), so a cycle hidden in a
function-level import is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hrtemnet

PACKAGE_DIR = Path(hrtemnet.__file__).parent


def hrtemnet_imports(path: Path) -> set[str]:
    """Names of the hrtemnet modules one source file imports (anywhere in it, TYPE_CHECKING blocks excepted)."""
    tree = ast.parse(path.read_text())
    type_checking_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrtemnet"):
            if node.module == "hrtemnet":  # `from hrtemnet import plotting`
                found |= {f"hrtemnet.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("hrtemnet")}
    modules = {f"hrtemnet.{p.stem}" for p in PACKAGE_DIR.glob("*.py")}
    return {name for name in found if name in modules} - {f"hrtemnet.{path.stem}"}


def import_graph() -> dict[str, set[str]]:
    return {f"hrtemnet.{p.stem}": hrtemnet_imports(p) for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "hrtemnet.evaluation" in graph and graph["hrtemnet.evaluation"], "the import reader found nothing"
    assert find_cycle(graph) is None


def test_detection_does_not_depend_on_scoring():
    assert "hrtemnet.metrics" not in hrtemnet_imports(PACKAGE_DIR / "peaks.py")


def test_simulation_does_not_import_molecular_dynamics():
    for module in ("simulation", "vibrations", "dataset"):
        assert "hrtemnet.md" not in hrtemnet_imports(PACKAGE_DIR / f"{module}.py")
    assert not any(m.startswith("lammps") for m in imported_modules(PACKAGE_DIR / "vibrations.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, e.g. `matplotlib.figure` for `from matplotlib.figure import Figure`."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_figures_are_drawn_only_in_plotting_without_pyplot():
    for path in PACKAGE_DIR.glob("*.py"):
        modules = imported_modules(path)
        assert "matplotlib.pyplot" not in modules, f"{path.name} uses pyplot (global state): draw on a Figure"
        if path.stem != "plotting":
            assert not any(m.startswith("matplotlib") for m in modules), f"{path.name} draws: move it to plotting.py"
