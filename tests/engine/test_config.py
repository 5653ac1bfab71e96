"""Pipeline files: every problem reported at once as FILE:LINE:COL: key.path: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from avstream.engine.capture.fit import frame_fits
from avstream.engine.errors import ConfigError
from avstream.engine.items import MediaFit
from avstream.engine.runtime.config import Overrides, load_pipeline
from avstream.engine.runtime.graph import PipelineSpec
from tests.conftest import run_cli

GOOD = """\
version: 1
name: t
streams:
  cam0:
    uri: synthetic://scene?seed=1&duration=3
    realtime: false
nodes:
  window: {type: avstream/av_window@v1, inputs: [cam0]}
  score:  {type: avstream/highlight@v1, inputs: [window], params: {model: "builtin:highlight"}}
outputs:
  publish: {endpoint: "tcp://127.0.0.1:5599"}
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, overrides: Overrides | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(str(path), overrides)
    return [str(p) for p in info.value.problems]


def test_good_pipeline_compiles_with_window_from_model(tmp_path: Path) -> None:
    spec = load_pipeline(str(write(tmp_path, GOOD)))
    assert set(spec.nodes) == {"cam0", "window", "score"}
    window = spec.nodes["window"].window
    assert window is not None and window.seconds > 0 and window.source == "score"
    assert [(e.src, e.dst) for e in spec.edges] == [("cam0", "window"), ("window", "score"), ("score", "@outputs")]
    assert spec.nodes["score"].streams == ["cam0"]
    assert spec.edges[0].policy == "block"  # realtime: false -> no drops


def test_every_problem_at_once_with_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        version: 1
        name: broken
        streams:
          cam0: {uri: "sample://demo", realtim: true}
        nodes:
          window: {type: avstream/av_window@v1, inputs: [cam9], params: {seconds: -1}}
          score:  {type: avstream/highlite@v1, inputs: [window]}
          bad:    {type: avstream/av_window@v1, inputs: [window], colour: red}
          lonely: {type: avstream/highlight@v1}
        outputs:
          publish: {endpoint: "tcp://127.0.0.1:5599", wait_for_subscribers: -2}
        """)
    f = str(path)
    assert problems(path) == [
        f"{f}:4:32: streams.cam0.realtim: unknown key (did you mean 'realtime'?)",
        f"{f}:6:50: nodes.window.inputs[0]: unknown input 'cam9' (did you mean 'cam0'?)",
        f"{f}:6:66: nodes.window.params.seconds: Input should be greater than 0 (got -1)",
        f"{f}:7:12: nodes.score.type: unknown node type 'avstream/highlite@v1' (did you mean 'avstream/highlight@v1'?); "
        "`avstream plugins` lists the installed ones",
        f"{f}:8:3: nodes.bad.params.seconds: no consumer states a window length: set seconds",
        f"{f}:8:50: nodes.bad.inputs[0]: input 'window' gives av_window items but avstream/av_window@v1 takes media",
        f"{f}:8:59: nodes.bad.colour: unknown key (allowed: type, inputs, params, process, restart, resources, replicas)",
        f"{f}:9:3: nodes.lonely.inputs: avstream/highlight@v1 needs at least one input",
        f"{f}:11:47: outputs.publish.wait_for_subscribers: Input should be greater than or equal to 0",
    ]


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstreams: {cam0: [unclosed\n")
    (msg,) = problems(path)
    assert msg.startswith(f"{path}:3:1: YAML syntax error")


def test_missing_sections_and_version(tmp_path: Path) -> None:
    got = problems(write(tmp_path, "version: 2\nname: x\n"))
    assert any(":1:1: version: unsupported pipeline format version 2" in p for p in got)
    assert any("streams: missing (required)" in p for p in got)
    assert any("nodes: missing (required)" in p for p in got)


def test_env_substitution_and_unset_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD.replace("synthetic://scene?seed=1&duration=3", "${AVS_TEST_URI}")
    path = write(tmp_path, text)
    monkeypatch.setenv("AVS_TEST_URI", "synthetic://scene?seed=2&duration=2")
    assert load_pipeline(str(path)).nodes["cam0"].params["uri"] == "synthetic://scene?seed=2&duration=2"
    monkeypatch.delenv("AVS_TEST_URI")
    assert f"{path}:5:10: streams.cam0.uri: environment variable AVS_TEST_URI is not set" in problems(path)


def test_set_overrides_and_cli_options(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    ov = Overrides(sets=["nodes.window.params.hop=0.5", "outputs.publish.wait_for_subscribers=1", "nodes.window.inputs[0]=cam0"],
                   input_uri="synthetic://scene?seed=5&duration=1", publish="tcp://127.0.0.1:5601",
                   jsonl=str(tmp_path / "o.jsonl"), duration=1.5)
    spec = load_pipeline(str(path), ov)
    assert spec.nodes["window"].window is not None and spec.nodes["window"].window.hop == 0.5
    assert spec.outputs.wait_for_subscribers == 1
    assert spec.nodes["cam0"].params["uri"] == "synthetic://scene?seed=5&duration=1"
    assert spec.outputs.publish == "tcp://127.0.0.1:5601"
    assert spec.outputs.jsonl == str(tmp_path / "o.jsonl")
    assert spec.duration == 1.5


def test_set_errors_are_located_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    got = problems(path, Overrides(sets=["nodes.window.params.seconds=abc", "nodes.score.inputs[3]=x", "novalue"]))
    assert "<--set>:1:1: nodes.window.params.seconds: Input should be a valid number, unable to parse string as a number (got 'abc')" in got
    assert "<--set>:2:1: nodes.score.inputs[3]: no such list item" in got
    assert "<--set>:3:1: --set 'novalue': expected KEY=VALUE" in got


def test_input_needs_a_single_stream(tmp_path: Path) -> None:
    text = GOOD.replace("nodes:", "  cam1: {uri: 'sample://demo'}\nnodes:")
    got = problems(write(tmp_path, text), Overrides(input_uri="x.mp4"))
    assert any("--input needs a pipeline with exactly one stream, this one has 2" in p for p in got)


def test_window_setting_the_model_cannot_take(tmp_path: Path) -> None:
    text = GOOD.replace("inputs: [cam0]}", "inputs: [cam0], params: {seconds: 7.5}}")
    got = problems(write(tmp_path, text))
    assert any("nodes.window.params.seconds: 7.5 s windows cannot feed 'score'" in p for p in got)


def test_relative_model_path_resolves_against_yaml_folder(tmp_path: Path) -> None:
    text = GOOD.replace('"builtin:highlight"', "models/missing.onnx")
    got = problems(write(tmp_path, text))
    assert any("nodes.score.params.model" in p and "missing.onnx" in p for p in got)


def test_validate_cli_exit_codes_and_no_traceback(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD)
    res = run_cli("validate", str(good))
    assert res.returncode == 0, res.stderr
    bad = write(tmp_path, GOOD.replace("avstream/highlight@v1", "avstream/nope@v1"), "bad.yaml")
    res = run_cli("validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        f"{bad}:9:12: nodes.score.type: unknown node type 'avstream/nope@v1'; `avstream plugins` lists the installed ones"]
    res = run_cli("run", str(tmp_path / "does-not-exist.yaml"))
    assert res.returncode == 2 and "no such file or built-in pipeline" in res.stderr


def test_builtin_pipeline_by_name() -> None:
    spec = load_pipeline("highlight")
    assert spec.name == "highlight"
    assert spec.nodes["cam0"].params["uri"] == "sample://demo"


def test_publish_endpoint_must_be_a_zeromq_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"tcp://127.0.0.1:5599"', '"127.0.0.1:5599"'))
    assert problems(path) == [f"{path}:11:13: outputs.publish.endpoint: not a ZeroMQ endpoint: '127.0.0.1:5599' "
                              "(e.g. tcp://127.0.0.1:5560 or ipc:///tmp/avstream.sock)"]
    got = problems(write(tmp_path, GOOD, "ok.yaml"), Overrides(publish="localhost"))
    assert got == ["<--publish>:1:1: outputs.publish.endpoint: not a ZeroMQ endpoint: 'localhost' "
                   "(e.g. tcp://127.0.0.1:5560 or ipc:///tmp/avstream.sock)"]


def test_sources_are_told_what_each_window_takes() -> None:
    spec = load_pipeline("monitor", Overrides(input_uri="synthetic://scene?seed=1&duration=3",
                                              sets=["streams.cam0.realtime=false"]))
    fits = {e.dst: e.fit for e in spec.edges if e.src == "cam0"}
    assert fits == {"w_highlight": MediaFit(64, 64, 4.0, 16000), "w_violence": MediaFit(112, 112, 8.0, 16000),
                    "w_localization": MediaFit(112, 112, 4.0, 16000), "w_captions": MediaFit(64, 64, 2.0, 16000)}
    for dst, fit in fits.items():  # exactly what each window node resolved from its model
        w = spec.nodes[dst].window
        assert w is not None and fit == MediaFit(w.width, w.height, w.fps, w.sample_rate)
    src = spec.nodes["cam0"].params
    # the source stays at its native rate and size: the reader makes each size, on each grid
    assert (src["fps"], src["min_size"], src["sample_rate"], src["audio_chunk_s"]) == (0.0, None, 16000, 0.1)
    assert {f.size for f in frame_fits(fits.values())} == {(112, 112), (64, 64)}
    again = PipelineSpec.from_json(spec.to_json())  # what a worker reads
    assert [e.fit for e in again.edges] == [e.fit for e in spec.edges]
    assert all(e.fit is None for e in spec.edges if e.src != "cam0")  # only a source's edges carry fits


def test_a_users_own_rate_or_size_wins_over_the_fits(tmp_path: Path) -> None:
    given = GOOD.replace("    realtime: false", "    realtime: false\n    fps: 12\n    min_size: [320, 180]\n    audio_chunk_s: 0.02")
    spec = load_pipeline(str(write(tmp_path, given, "given.yaml")))
    src = spec.nodes["cam0"].params
    assert (src["fps"], src["min_size"], src["audio_chunk_s"]) == (12, [320, 180], 0.02)
    assert spec.edges[0].fit is None  # the window node resizes (and counts it)
    only_fps = GOOD.replace("    realtime: false", "    realtime: false\n    fps: 12")
    spec = load_pipeline(str(write(tmp_path, only_fps, "fps.yaml")))
    assert spec.nodes["cam0"].params["min_size"] == [64, 64] and spec.edges[0].fit is None  # paced as before
    live = load_pipeline(str(write(tmp_path, GOOD.replace("realtime: false", "realtime: true"), "rt.yaml")))
    assert live.nodes["cam0"].params["audio_chunk_s"] == 0.04


def test_windows_wanting_different_sample_rates_from_one_stream(tmp_path: Path) -> None:
    from avstream.exporters.testing import tiny_model

    tiny_model(tmp_path / "tiny.onnx")  # 80 Hz audio
    score = '  score:  {type: avstream/highlight@v1, inputs: [window], params: {model: "builtin:highlight"}}\n'
    text = GOOD.replace(score, score + "  w_tiny: {type: avstream/av_window@v1, inputs: [cam0]}\n"
                        "  tiny:   {type: avstream/onnx_encoder@v1, inputs: [w_tiny], params: {model: tiny.onnx}}\n")
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}:4:3: streams.cam0: its window nodes take audio at different rates ('window' "
                              "16000 Hz, 'w_tiny' 80 Hz); a stream is resampled once, to one rate: give the models "
                              "one rate, or set sample_rate here (the window nodes then resample the others)"]
    spec = load_pipeline(str(path), Overrides(sets=["streams.cam0.sample_rate=16000"]))
    assert [e.fit.sample_rate for e in spec.edges if e.fit] == [16000, 80]  # the 80 Hz window resamples


def test_graph_shows_what_each_edge_takes() -> None:
    res = run_cli("graph", "monitor", "--input", "synthetic://scene?seed=1&duration=3")
    assert res.returncode == 0, res.stderr
    assert "video at native fps, frames made at 112x112, 64x64 (once each), audio 16000 Hz" in res.stdout
    assert "cam0 -> w_localization  [media, drop_oldest, queue 8, shared memory + ipc, frames 112x112 @ 4 fps]" in res.stdout
