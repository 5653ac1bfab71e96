"""The SPEC §10 keys of a pipeline file: ``backend:``, ``resources:``, ``replicas:``, located errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from avstream.engine.errors import ConfigError
from avstream.engine.runtime.config import Overrides, load_pipeline

BASE = """\
version: 1
name: p
{backend}streams:
  cam0: {{uri: "synthetic://scene?seed=1&duration=4", realtime: false{stream_extra}}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0]{window_extra}}}
  score: {{type: avstream/highlight@v1, inputs: [window]{score_extra}, params: {{model: "builtin:highlight"}}}}
"""


def write(tmp_path: Path, backend: str = "", stream_extra: str = "", window_extra: str = "", score_extra: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(BASE.format(backend=backend, stream_extra=stream_extra, window_extra=window_extra,
                                score_extra=score_extra))
    return path


def problems(path: Path, overrides: Overrides | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_pipeline(str(path), overrides)
    return [str(p) for p in exc.value.problems]


def test_valid_keys_compile(tmp_path: Path) -> None:
    spec = load_pipeline(str(write(tmp_path, backend="backend: {kind: ray, address: '127.0.0.1:6379'}\n",
                                   stream_extra=", resources: {camera_host: 1}",
                                   score_extra=", replicas: 2, resources: {num_cpus: 0.5, num_gpus: 0.25}")))
    assert (spec.backend.kind, spec.backend.address) == ("ray", "127.0.0.1:6379")
    assert spec.nodes["cam0"].resources == {"camera_host": 1.0}
    assert sorted(spec.replicated()["score"]) == ["score#0", "score#1"]
    assert spec.nodes["score#1"].resources == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert {e.dst for e in spec.edges if e.src == "window"} == {"score#0", "score#1"}
    assert sorted(spec.processes()) == ["cam0", "score#0", "score#1", "window"]


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, backend="backend: {kind: local}\n")
    spec = load_pipeline(str(path), Overrides(backend="ray", address="10.0.0.5:6379"))
    assert (spec.backend.kind, spec.backend.address) == ("ray", "10.0.0.5:6379")


def test_bad_values_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, backend="backend: {kind: slurm, adress: x}\n", stream_extra=", resources: {camera_host: -1}",
                 window_extra=", replicas: 2", score_extra=", replicas: 0, resources: [1]")
    got = problems(path)
    name = str(path)
    assert any(p.startswith(f"{name}:3:") and "backend.kind" in p and "'local' or 'ray'" in p for p in got), got
    assert any("backend.adress: unknown key" in p for p in got), got
    assert any(p.startswith(f"{name}:5:") and "streams.cam0.resources" in p and "camera_host: an amount >= 0" in p
               for p in got), got
    assert any(p.startswith(f"{name}:7:") and "nodes.window.replicas: replicas: only on an encoder node" in p
               for p in got), got
    assert any("nodes.score.replicas: replicas is an integer from 1 to 64 (got 0)" in p for p in got), got
    assert any("nodes.score.resources: resources is a mapping" in p for p in got), got


def test_an_address_without_ray_and_a_shared_process(tmp_path: Path) -> None:
    path = write(tmp_path, window_extra=", process: av", score_extra=", replicas: 2, process: av")
    got = problems(path, Overrides(address="127.0.0.1:6379"))
    assert any("backend.address: an address is for the ray backend" in p for p in got), got
    assert any("nodes.score.replicas: replicas need a process of their own: process 'av' also runs window" in p
               for p in got), got


def test_ray_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from avstream.engine.runtime.raybackend import RayError, _import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(RayError) as exc:
        _import_ray()
    assert "pip install 'avstream[ray]'" in str(exc.value) and exc.value.code == 2
