"""A third-party plugin package found through the entry-point group, validated and run for real."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.timeout(120)
PLUGIN_PATH = str(REPO / "tests" / "plugin_pkg")


def env_with(*paths: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}


PIPELINE = """\
version: 1
name: loud
streams:
  cam0: {uri: "synthetic://scene?seed=9&duration=4", realtime: false}
nodes:
  window: {type: avstream/av_window@v1, inputs: [cam0], params: {seconds: 1.0, hop: 1.0, fps: 2}}
  level:  {type: demo/loudness@v1, inputs: [window]}
outputs:
  publish: {endpoint: "tcp://127.0.0.1:0"}
"""


def test_plugins_lists_third_party_node_types() -> None:
    res = run_cli("plugins", env=env_with(PLUGIN_PATH))
    assert res.returncode == 0, res.stderr
    assert "demo/loudness@v1  (avstream-demo-plugin 0.1.0, plugin 'demo')" in res.stdout
    assert "floor_db: level reported for silence, in dBFS (default -80.0)" in res.stdout
    assert "avstream/highlight@v1" in res.stdout


def test_third_party_node_runs_in_a_pipeline(tmp_path: Path, port: int) -> None:
    path = tmp_path / "loud.yaml"
    path.write_text(PIPELINE.replace("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}"))
    res = run_cli("run", str(path), "--jsonl", "-", "--quiet", env=env_with(PLUGIN_PATH))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(m["kind"], m["t0"]) for m in lines] == [("loudness", float(t)) for t in range(4)]
    assert all(-80.0 <= m["db"] < 0 for m in lines)


def test_cycle_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cycle.yaml"
    text = PIPELINE.replace("  level:", "  a: {type: demo/passthrough@v1, inputs: [b]}\n  b: {type: demo/passthrough@v1, inputs: [a]}\n  level:")
    path.write_text(text)
    res = run_cli("validate", str(path), env=env_with(PLUGIN_PATH))
    assert res.returncode == 2
    assert f"{path}:7:34: nodes.a.inputs: cycle: a -> b -> a" in res.stderr


def test_unknown_type_without_the_plugin_installed(tmp_path: Path) -> None:
    path = tmp_path / "loud.yaml"
    path.write_text(PIPELINE)
    res = run_cli("validate", str(path))
    assert res.returncode == 2
    assert f"{path}:7:12: nodes.level.type: unknown node type 'demo/loudness@v1'; " in res.stderr


def test_broken_plugin_is_reported_and_others_still_load(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[avstream.plugins]\nbroken = no_such_module_xyz:node_types\n"
                                           "wrong = json:dumps\n")
    res = run_cli("plugins", env=env_with(str(tmp_path)))
    assert res.returncode == 1
    assert "plugin 'broken' (broken-plugin): import failed: No module named 'no_such_module_xyz'" in res.stderr
    assert "plugin 'wrong' (broken-plugin): wrong interface" in res.stderr
    assert "avstream/highlight@v1" in res.stdout
