"""Hostile YAML is refused with a located message: deep nesting, alias bombs, huge files, random bytes.

The two attack files of the finding run through the real CLI (``avstream validate`` and ``avstream
serve``), in a child process; the property tests feed the loader random trees and random bytes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avstream.engine.errors import ConfigError
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.runtime.yamlsrc import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES, load_yaml
from tests.conftest import run_cli

LOCATED = re.compile(r"^\S+:\d+:\d+: ")


def deep_flow(levels: int) -> str:
    return "version: 1\nname: deep\nstreams: " + "[" * levels + "]" * levels + "\n"


def billion_laughs() -> str:
    """Ten levels of nine aliases each: 9**10 (3.5e9) strings once expanded."""
    lines = ["version: 1", "name: lol", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    lines.append("streams: {cam0: {uri: *a9}}")
    return "\n".join(lines) + "\n"


def assert_clean_refusal(res: Any, needle: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and all(LOCATED.match(line) for line in lines), res.stderr
    assert needle in res.stderr, res.stderr


def test_validate_refuses_5000_levels_of_flow_nesting_with_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(deep_flow(5000))
    res = run_cli("validate", str(path))
    assert_clean_refusal(res, f"nesting deeper than {MAX_YAML_DEPTH} levels")
    assert f"{path}:3:" in res.stderr  # the line of the nesting


def test_validate_refuses_a_billion_laughs_file_fast(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    started = time.monotonic()
    res = run_cli("validate", str(path))
    elapsed = time.monotonic() - started
    assert_clean_refusal(res, f"more than {MAX_YAML_VALUES} values once aliases are expanded")
    # In process the refusal takes milliseconds (below); the child's time is mostly interpreter start-up.
    assert elapsed < 30
    started = time.monotonic()
    with pytest.raises(ConfigError):
        load_pipeline(str(path))
    assert time.monotonic() - started < 1.0


def test_serve_config_goes_through_the_same_limits(tmp_path: Path) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("version: 1\nserver: " + "{a: " * 200 + "1" + "}" * 200 + "\n")
    res = run_cli("serve", str(path))
    assert_clean_refusal(res, "nesting deeper than")


def test_a_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("version: 1\nname: loop\nstreams: &s {cam0: *s}\n")
    res = run_cli("validate", str(path))
    assert_clean_refusal(res, "alias *s refers to the collection that contains it")


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\nname: big\n# " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(str(path))
    assert "file larger than" in str(info.value)


def test_a_bomb_in_a_set_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nname: p\nstreams: {cam0: {uri: 'sample://demo'}}\nnodes: {}\n")
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    flow = "{" + ", ".join(levels) + "}"
    res = run_cli("validate", str(path), "--set", f"streams.cam0.extra={flow}")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "aliases are expanded" in res.stderr


def test_limits_leave_ordinary_anchors_and_pipelines_alone() -> None:
    text = "base: &b {x: 1, y: [1, 2, 3]}\none: *b\ntwo: *b\n"
    tree, _, problems = load_yaml(text, "t.yaml")
    assert problems == [] and tree == {"base": {"x": 1, "y": [1, 2, 3]}, "one": {"x": 1, "y": [1, 2, 3]},
                                       "two": {"x": 1, "y": [1, 2, 3]}}
    nested = "a: " + "[" * (MAX_YAML_DEPTH - 2) + "1" + "]" * (MAX_YAML_DEPTH - 2) + "\n"
    tree, _, problems = load_yaml(nested, "t.yaml")
    assert problems == [] and tree is not None


trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=40,
)


def nesting(value: Any) -> int:
    """Levels of collections in ``value`` (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    return 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, depth=st.integers(min_value=0, max_value=120), flow=st.booleans())
def test_random_nested_structures_load_or_are_refused_with_a_located_problem(tree: Any, depth: int,
                                                                              flow: bool) -> None:
    column: Any = 0
    for _ in range(depth):
        column = [column]
    document = {"deep": column, "wrap": tree}
    text = yaml.safe_dump(document, default_flow_style=flow)
    result, _, problems = load_yaml(text, "t.yaml")
    if nesting(document) > MAX_YAML_DEPTH:
        assert result is None and len(problems) == 1 and "nesting deeper" in problems[0].message
    else:
        assert problems == [] and result == document
    assert all(LOCATED.match(str(p)) for p in problems)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400) | st.text(alphabet="[]{}&*!|>:-,'\"#%@`? \n\tab0", max_size=300))
def test_random_bytes_never_escape_as_an_exception(data: bytes | str) -> None:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    _, _, problems = load_yaml(text, "t.yaml")
    assert all(LOCATED.match(str(p)) for p in problems)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_files_through_the_pipeline_loader_give_config_errors_only(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "p.yaml"
    path.write_bytes(data)
    try:
        load_pipeline(str(path))
    except ConfigError as exc:
        assert exc.problems and all(LOCATED.match(str(p)) for p in exc.problems)


@pytest.mark.parametrize("text", ["a: 2020-02-30", "a: !!int zz", "a: !!python/object:os.system x", "\x00", "<<: 5"])
def test_values_yaml_cannot_build_are_located_problems(text: str) -> None:
    _, _, problems = load_yaml(text, "t.yaml")
    assert len(problems) == 1 and LOCATED.match(str(problems[0])), problems
