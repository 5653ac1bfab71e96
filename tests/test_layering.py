"""The package's import graph: no cycles (imports inside functions included), no private names
imported across modules of the engine by plugins."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"engine": "avstream.engine", "plugins": "avstream.plugins", "exporters": "avstream.exporters"}


def module_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, prefix in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Every avstream module that ``name`` imports, anywhere in the file, with its line."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


def import_graph() -> dict[str, dict[str, int]]:
    files = module_files()
    known = set(files)
    return {name: dict(imports_of(name, path, known)) for name, path in files.items()}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}}) is None


def test_graph_is_read_from_the_tree() -> None:
    graph = import_graph()
    assert "avstream.engine.runtime.worker" in graph["avstream.engine.runtime.spawner"]
    assert "avstream.engine.items" in graph["avstream.plugins.window"]
    assert len(graph) > 50


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    if cycle:
        files = module_files()
        steps = [f"{a} ({files[a].relative_to(ROOT)}:{graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


@pytest.mark.parametrize("layer, forbidden", [
    ("avstream.engine", ("avstream.plugins", "avstream.exporters")),
    ("avstream.plugins", ("avstream.exporters",)),
])
def test_layers_import_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    """The engine knows nothing of plugins and exporters, plugins nothing of exporters.

    The CLI is the one engine module that dispatches to the exporters' commands."""
    graph = import_graph()
    bad = [f"{mod} -> {dep}" for mod, deps in graph.items() if mod.startswith(layer + ".")
           and mod != "avstream.engine.cli" for dep in deps if dep.startswith(forbidden)]
    assert not bad, bad


def test_plugins_import_no_private_engine_names() -> None:
    bad = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("avstream")):
                bad += [f"{path.name}:{node.lineno}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
