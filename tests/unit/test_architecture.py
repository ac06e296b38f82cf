"""The import graph of the project's code: no cycles (function-level imports included), the library never imports
the orchestration or serving frameworks, and its packages only import downwards."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from models.settings import PROJECT_ROOT

TOP_LEVEL = ("models", "flows", "serving", "feature_repo")
FORBIDDEN_IN_MODELS = ("prefect", "bentoml", "mlflow", "flows", "serving", "feature_repo")
LAYERS = {
    "models.settings": 0, "models.files": 0, "models.data": 1, "models.text": 2, "models.retrieval": 3,
    "models.features": 3, "models.ranking": 3, "models.recommender": 4, "models.training": 5, "models.live": 5,
    "models.evaluation": 6,
}  # fmt: skip
"""Each part of the library and its floor: a module imports only from lower floors or its own package."""


def project_modules(root: Path = PROJECT_ROOT) -> dict[str, Path]:
    modules = {}
    for top in TOP_LEVEL:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (inside functions too), with ``from a import b``
    giving both ``a`` and ``a.b`` (``b`` may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Edges between project modules (an import of a package's name points at its ``__init__``)."""
    return {name: {n for n in imported_names(path) if n in modules and n != name} for name, path in modules.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_of(module: str) -> str | None:
    return next((part for part in LAYERS if module == part or module.startswith(part + ".")), None)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from models.data import splits\n    import flows.cli\n")
    assert {"models.data", "models.data.splits", "flows.cli"} <= imported_names(source)


def test_no_import_cycles(graph):
    assert find_cycles(graph) == []


def test_the_library_imports_no_framework_and_nothing_above_it():
    offenders = {
        name: sorted(n for n in imported_names(path) if n.split(".")[0] in FORBIDDEN_IN_MODELS)
        for name, path in project_modules().items()
        if name.startswith("models")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_library_packages_only_import_downwards(graph):
    upward = []
    for source, targets in graph.items():
        source_layer = layer_of(source)
        if source_layer is None:
            continue
        for target in targets:
            target_layer = layer_of(target)
            if target_layer is None or target_layer == source_layer:
                continue
            if LAYERS[target_layer] >= LAYERS[source_layer]:
                upward.append(f"{source} -> {target}")
    assert upward == []


def test_flows_and_serving_do_not_import_each_other(graph):
    crossing = [
        f"{source} -> {target}"
        for source, targets in graph.items()
        for target in targets
        if {source.split(".")[0], target.split(".")[0]} == {"flows", "serving"}
    ]
    assert crossing == []


def test_every_library_package_states_its_purpose_and_imports():
    for package in (PROJECT_ROOT / "models").iterdir():
        if (package / "__init__.py").exists():
            docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
            assert "Imports" in docstring, f"{package.name}/__init__.py must say what it may import"
