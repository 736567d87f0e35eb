"""The package's shape: it imports, no two of its modules import each other (also through imports inside
functions), and every ``_target_`` the configs name resolves to an object."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fgzoom"


def module_name(path: Path) -> str:
    parts = ("fgzoom", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """fgzoom module -> the fgzoom modules it imports anywhere in its source (top level or inside functions)."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_imports_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", "import fgzoom"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_two_modules_import_each_other():
    graph = import_graph()
    assert graph["fgzoom.cli.train"] and not cycles(graph), cycles(graph)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


TARGETS = sorted({(t, f.relative_to(ROOT).as_posix()) for f in (ROOT / "configs").rglob("*.yaml")
                  for t in _targets(yaml.safe_load(f.read_text()) or {})})


@pytest.mark.parametrize(("target", "config"), TARGETS, ids=[f"{c}:{t}" for t, c in TARGETS])
def test_every_config_target_resolves(target, config):
    top = target.split(".")[0]
    if top not in ("fgzoom", "lightning", "torch", "timm", "torchvision"):  # an optional extra's package
        pytest.importorskip(top, reason=f"{config} names {target}, from an optional extra")
    assert hydra.utils.get_object(target) is not None
    assert importlib.import_module(target.rsplit(".", 1)[0])


# the subpackages in the order they may import each other: each imports only from itself, from the ones before
# it and from fgzoom.errors (docs/architecture.md, "Package layout")
LAYERS = ("ops", "data", "callbacks", "models", "eval", "checkpoints", "sweeps", "bench", "cli")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``importer -> imported`` for every import of a later layer's module (or an unknown subpackage's)."""

    def layer(module: str) -> int | None:
        part = module.split(".")[1] if module.count(".") else ""
        return LAYERS.index(part) if part in LAYERS else None

    found = []
    for importer, imported in graph.items():
        rank = layer(importer)
        for other in imported:
            if other in ("fgzoom", "fgzoom.errors"):
                continue
            other_rank = layer(other)
            if rank is None or other_rank is None or other_rank > rank:
                found.append(f"{importer} -> {other}")
    return sorted(found)


def test_subpackages_import_only_from_the_layers_before_them():
    graph = import_graph()
    assert {m.split(".")[1] for m in graph if m.count(".")} - {"errors"} == set(LAYERS)
    assert layer_violations(graph) == []


def test_the_layer_check_finds_an_upward_import():
    assert layer_violations({"fgzoom.ops.x": {"fgzoom.cli.train"}, "fgzoom.cli.train": {"fgzoom.ops.x"}}) == [
        "fgzoom.ops.x -> fgzoom.cli.train"
    ]
