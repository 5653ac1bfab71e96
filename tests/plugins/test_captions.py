"""The captions node with the built-in caption models: pacing per stream, sources, validation, results,
and the captions pipeline as a user runs it."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.items import AVWindow, EndOfStream, Result
from avstream.engine.node import CheckContext, NodeContext, WindowRequirement
from avstream.engine.runtime.registry import check_interface
from avstream.exporters.caption_scenes import mentioned_events
from avstream.plugins.captions import CaptionNode, CaptionParams, resolve_encoder

pytest.importorskip("onnxruntime")
from tests.conftest import REPO, run_cli  # noqa: E402

CLASSES = ("bell", "drum", "engine", "siren", "voice")


def ctx_for(base: Path) -> NodeContext:
    return NodeContext(node_id="cap", streams=("a", "b"), base_dir=base, stop_event=threading.Event(),
                       logger=logging.getLogger("test"))


def scene_windows(sound: str, seed: int, starts: list[float], stream: str = "a",
                  video: bool = True, audio: bool = True) -> list[AVWindow]:
    """Windows of a calm 12 s scene (no violence) whose sounding object is ``sound``, built like the
    window node builds them (2 fps frames resized to 64x64, 16 kHz audio)."""
    import cv2

    from avstream.engine.synthetic.scene import SceneConfig, scene_for

    cfg = SceneConfig(seed=seed, duration=12.0, violence=False, sound=sound)
    scene = scene_for(cfg)
    out = []
    for t0 in starts:
        frames = np.stack([cv2.resize(scene.frame(round((t0 + k * 0.5) * cfg.fps)), (64, 64),
                                      interpolation=cv2.INTER_AREA) for k in range(10)]) if video else None
        samples = scene.audio(round(t0 * 16000), 80000) if audio else None
        out.append(AVWindow(stream, t0, t0 + 5.0, 1000.0 + t0, frames, samples, 2.0 if video else 0.0,
                            16000 if audio else 0))
    return out


@pytest.fixture(scope="module")
def node() -> CaptionNode:
    n = CaptionNode(ctx_for(REPO), CaptionParams(every_s=2.0, providers=["cpu"], threads=1))
    n.on_start()
    return n


def test_registers_with_described_params() -> None:
    check_interface(CaptionNode, "builtin")
    for name, f in CaptionParams.model_fields.items():
        assert f.description, name
    from avstream.plugins.builtin import node_types

    assert CaptionNode in node_types()


def test_builtin_lookup_and_window_requirement(tmp_path: Path) -> None:
    assert resolve_encoder("builtin:captions", tmp_path).name == "captions_encoder.onnx"
    req = CaptionNode.window_requirement({"every_s": 5.0}, tmp_path)
    assert req == WindowRequirement(5.0, 5.0, 2.0, 10, 64, 64, 16000, 80000, "captions@1")


def test_check_reports_each_problem(tmp_path: Path) -> None:
    req = CaptionNode.window_requirement({}, tmp_path)
    assert req is not None
    ok = CheckContext("cap", tmp_path, downstream=[req])
    assert CaptionNode.check({}, ok) == []
    assert CaptionNode.check({"model": "nope.onnx"}, ok)[0][0] == "model"
    assert "not found" in CaptionNode.check({"decoder": "nope.onnx"}, ok)[0][1]
    assert CaptionNode.check({"source": "video"}, ok) == [("source", "captions@1 captions from av, audio, not video")]
    assert CaptionNode.check({"max_tokens": 40}, ok)[0][0] == "max_tokens"
    assert CaptionNode.check({"min_tokens": 9, "max_tokens": 5}, ok)[0][0] == "min_tokens"
    hop1 = CheckContext("cap", tmp_path, downstream=[WindowRequirement(5.0, 1.0, 2.0, 10, 64, 64, 16000, 80000)])
    assert CaptionNode.check({"every_s": 2.5}, hop1)[0][0] == "every_s"
    assert CaptionNode.check({"every_s": 3.0}, hop1) == []
    # an encoder copied without its decoder: the missing decoder is named
    for name in ("captions_encoder.onnx",):
        shutil.copy(resolve_encoder("builtin:captions", tmp_path), tmp_path / name)
    problems = CaptionNode.check({"model": "captions_encoder.onnx"}, ok)
    assert problems[0][0] == "decoder" and "captions_decoder_step.onnx" in problems[0][1]


@pytest.mark.parametrize("sound", CLASSES)
def test_captions_name_the_sounding_class(node: CaptionNode, sound: str) -> None:
    # training scenes use seeds < 1,000,000 with the seed's own class; these force each class
    (res,) = node.process_batch(scene_windows(sound, 2_000_000 + CLASSES.index(sound), [3.0], stream=f"s_{sound}"))
    assert isinstance(res, Result) and res.kind == "caption" and res.model == "captions@1"
    assert set(res.fields) == {"text", "source", "confidence"}
    assert res.fields["source"] == "av" and 0.0 < res.fields["confidence"] <= 1.0
    assert (res.t0, res.t1, res.capture_wall) == (3.0, 8.0, 1003.0)
    assert sound in mentioned_events(res.fields["text"]), res.fields["text"]


def test_pacing_per_stream_and_restart(node: CaptionNode) -> None:
    a = scene_windows("drum", 7, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], stream="pa")
    b = scene_windows("siren", 8, [0.0, 1.0, 2.0], stream="pb")
    got = []
    for w in [a[0], b[0], a[1], b[1], a[2], b[2], *a[3:]]:  # two streams interleaved, windows every 1 s
        got += [(r.stream, r.t0) for r in node.process(w)]
    assert got == [("pa", 0.0), ("pb", 0.0), ("pa", 2.0), ("pb", 2.0), ("pa", 4.0)]  # every_s = 2
    assert list(node.process(EndOfStream("pa"))) == []
    assert [r.t0 for r in node.process_batch(a[:1])] == [0.0]  # media time went back: a fresh start
    list(node.on_eos("pa"))
    assert [r.t0 for r in node.process_batch(a[1:2])] == [1.0]  # after the end of a stream, too
    assert node.status()["caption"]["pa"]


def test_sources(node: CaptionNode, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (av,) = node.process_batch(scene_windows("engine", 11, [2.0], stream="x1"))
    (no_video,) = node.process_batch(scene_windows("engine", 11, [2.0], stream="x2", video=False))
    assert av.fields["source"] == "av" and no_video.fields["source"] == "audio"
    assert "engine" in no_video.fields["text"] and "silently" not in no_video.fields["text"]
    audio_node = CaptionNode(ctx_for(tmp_path), CaptionParams(source="audio", providers=["cpu"], threads=1))
    audio_node.on_start()
    (forced,) = audio_node.process_batch(scene_windows("engine", 11, [2.0], stream="x3"))
    assert forced.fields["source"] == "audio" and forced.fields["text"] == no_video.fields["text"]
    # a stream without audio: this model cannot caption from video alone, says so once, emits nothing
    with caplog.at_level(logging.WARNING):
        assert node.process_batch(scene_windows("engine", 11, [2.0, 4.0], stream="x4", audio=False)) == []
    assert sum("no captions" in r.message for r in caplog.records) == 1
    assert node.ctx.counters["skipped"] >= 1


def test_beam_and_greedy(tmp_path: Path) -> None:
    windows = scene_windows("voice", 21, [1.0], stream="g")
    greedy = CaptionNode(ctx_for(tmp_path), CaptionParams(beam=1, providers=["cpu"], threads=1))
    short = CaptionNode(ctx_for(tmp_path), CaptionParams(max_tokens=4, min_tokens=4, providers=["cpu"], threads=1))
    for n in (greedy, short):
        n.on_start()
    (g,) = greedy.process_batch(windows)
    (s,) = short.process_batch(windows)
    assert "voice" in mentioned_events(g.fields["text"])
    assert len(s.fields["text"].split()) == 4


@pytest.mark.slow
def test_pipeline_runs_on_the_demo(tmp_path: Path, port: int) -> None:
    assert run_cli("validate", str(REPO / "pipelines" / "captions.yaml")).returncode == 0
    out = tmp_path / "captions.jsonl"
    proc = run_cli("run", "captions", "--duration", "12", "--jsonl", str(out), "--quiet",
                   "--set", "streams.cam0.realtime=false", "--publish", f"tcp://127.0.0.1:{port}", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    msgs = [json.loads(line) for line in out.read_text().splitlines()]
    caps = [m for m in msgs if m["kind"] == "caption"]
    assert [m["t1"] for m in caps] == [5.0, 7.5, 10.0, 12.0] or [m["t1"] for m in caps][:3] == [5.0, 7.5, 10.0]
    for m in caps:
        assert m["text"] and m["source"] == "av" and 0 < m["confidence"] <= 1 and m["model"] == "captions@1"
        assert m["stream"] == "cam0" and m["latency_ms"] >= 0
