"""The type check sees across modules: with the project's mypy configuration the avstream.* imports
resolve to the real modules (typecheck/avstream links them), so misusing the engine API is an error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# A plugin module with three mistakes that only a check reading avstream.engine can see.
BROKEN_PLUGIN = textwrap.dedent('''\
    from collections.abc import Iterable

    import avstream.engine.node
    from avstream.engine.items import Item
    from avstream.engine.node import Node, Params, parse_type_id


    class EchoNode(Node[Params]):
        def process(self, item: Item) -> Iterable[Item]:
            self.ctx.count(self.ctx.no_such_counter)
            return [item]


    def describe(node: Node[Params]) -> str:
        return node.no_such_attribute


    name, version = parse_type_id(42)
    reveal_type(avstream.engine.node.Node)
''')


def run_mypy(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(cache), "--no-error-summary", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=110)


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for this module's runs: the second run does not analyse numpy and pydantic again."""
    pytest.importorskip("mypy")
    return tmp_path_factory.mktemp("mypy_cache")


def test_a_plugin_misusing_the_engine_api_fails_the_check(tmp_path: Path, mypy_cache: Path) -> None:
    (tmp_path / "broken_plugin.py").write_text(BROKEN_PLUGIN)
    proc = run_mypy("broken_plugin.py", cwd=tmp_path, cache=mypy_cache)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("broken_plugin.py:")]
    errors = {(int(ln.split(":")[1]), ln.rsplit("[", 1)[-1].rstrip("]")) for ln in lines if ": error: " in ln}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert errors == {(10, "attr-defined"), (15, "attr-defined"), (18, "arg-type")}, proc.stdout
    out = proc.stdout
    assert '"NodeContext" has no attribute "no_such_counter"' in out
    assert '"Node[Params]" has no attribute "no_such_attribute"' in out
    assert 'Argument 1 to "parse_type_id" has incompatible type "int"; expected "str"' in out
    (revealed,) = [ln for ln in lines if "Revealed type is" in ln]
    assert "-> avstream.engine.node.Node[" in revealed and '"Any"' not in revealed, revealed


def test_a_missing_avstream_module_is_an_error_not_any(tmp_path: Path, mypy_cache: Path) -> None:
    (tmp_path / "stale_plugin.py").write_text("from avstream.engine.no_such_module import Thing\n\n"
                                              "value: int = Thing()\n")
    proc = run_mypy("stale_plugin.py", cwd=tmp_path, cache=mypy_cache)
    assert proc.returncode == 1
    assert re.search(r'stale_plugin\.py:1: error: .*"avstream\.engine\.no_such_module".*\[import-not-found\]',
                     proc.stdout), proc.stdout


def test_the_typecheck_layout_links_every_mapped_package() -> None:
    """typecheck/avstream mirrors pyproject's package-dir mapping (a new mapped folder needs its link)."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = REPO / "typecheck"
    for name, folder in mapping.items():
        linked = root.joinpath(*name.split("."))
        if name == "avstream":
            assert (linked / "__init__.py").resolve() == (REPO / folder / "__init__.py").resolve()
        else:
            assert linked.is_symlink() and linked.resolve() == (REPO / folder).resolve(), name
