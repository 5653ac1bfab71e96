"""Encoder nodes on hand-made AV windows: result fields and payloads, per-stream causal highlight scores."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.items import AVWindow, EndOfStream, Result
from avstream.engine.node import CheckContext, NodeContext, WindowRequirement
from avstream.engine.runtime.registry import check_interface
from avstream.plugins.encoders import (
    HighlightNode,
    HighlightParams,
    OnnxEncoderNode,
    OnnxEncoderParams,
    RollingScore,
    encoder_node_types,
)
from tests.conftest import results

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from avstream.exporters.testing import contract_variant, tiny_model  # noqa: E402


def ctx_for(base: Path, node_id: str = "enc") -> NodeContext:
    return NodeContext(node_id=node_id, streams=("a", "b"), base_dir=base, stop_event=threading.Event(),
                       logger=logging.getLogger("test"))


def window(stream: str, t0: float, level: int, audio: float | None = 0.0, seed: int = 0) -> AVWindow:
    rng = np.random.default_rng(seed)
    frames = np.clip(level + rng.integers(-3, 4, (4, 4, 6, 3)), 0, 255).astype(np.uint8)
    samples = None if audio is None else np.full(160, audio, np.float32)
    return AVWindow(stream, t0, t0 + 2.0, 100.0 + t0, frames, samples, 2.0, 80)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "tiny.onnx")


def test_node_types_register() -> None:
    for cls in encoder_node_types():
        check_interface(cls, "builtin")
        for name, f in cls.Params.model_fields.items():
            assert f.description, f"{cls.type_id}: param {name} has no description"
    assert [c.type_id for c in encoder_node_types()] == ["avstream/onnx_encoder@v1", "avstream/highlight@v1"]


def test_window_requirement_and_check(tmp_path: Path, model: Path) -> None:
    req = OnnxEncoderNode.window_requirement({"model": "tiny.onnx"}, tmp_path)
    assert req == WindowRequirement(2.0, 1.0, 2.0, 4, 4, 6, 80, 160, "tiny@1")
    ok = CheckContext("enc", tmp_path, downstream=[req])
    assert OnnxEncoderNode.check(OnnxEncoderParams(model="tiny.onnx"), ok) == []
    problems = OnnxEncoderNode.check({"model": "missing.onnx"}, ok)
    assert len(problems) == 1 and problems[0][0] == "model" and "not found" in problems[0][1]
    tiny_model(tmp_path / "plain.onnx", meta=None)
    assert "no 'avstream' metadata" in OnnxEncoderNode.check({"model": "plain.onnx"}, ok)[0][1]
    wrong = CheckContext("enc", tmp_path, downstream=[WindowRequirement(2.0, 1.0, fps=5.0, frames=10)])
    assert any("fps=2" in m for _, m in OnnxEncoderNode.check({"model": "tiny.onnx"}, wrong))
    assert OnnxEncoderNode.check({"model": "tiny.onnx", "providers": ["gpu9"]}, ok)[0][0] == "providers.0"
    tiny_model(tmp_path / "noact.onnx", contract_variant(outputs={"frame_mean": {"name": "frame_mean"}}))
    assert "no 'activation' output" in HighlightNode.check({"model": "noact.onnx"}, ok)[0][1]


def test_generic_encoder_result(tmp_path: Path, model: Path) -> None:
    node = OnnxEncoderNode(ctx_for(tmp_path), OnnxEncoderParams(model="tiny.onnx", providers=["cpu"], threads=1))
    node.on_start()
    w = window("a", 4.0, 100, audio=0.5)
    assert w.frames is not None
    (res,) = results(node.process(w))
    assert isinstance(res, Result)
    assert (res.kind, res.stream, res.t0, res.t1, res.capture_wall, res.model) == ("tinytask", "a", 4.0, 6.0, 104.0, "tiny@1")
    assert set(res.fields) == {"activation"} and isinstance(res.fields["activation"], float)
    assert res.fields["activation"] == pytest.approx(w.frames.astype(float).mean() + 0.5, rel=1e-5)
    assert set(res.payloads) == {"frame_mean"}
    assert res.payloads["frame_mean"].shape == (4,) and res.payloads["frame_mean"].dtype == np.float32
    # no audio in the window: silence is fed
    (silent,) = results(node.process(window("a", 5.0, 100, audio=None)))
    assert silent.fields["activation"] == pytest.approx(w.frames.astype(float).mean(), rel=1e-5)
    # other items are ignored; a batch of several streams gives one result each, in order
    assert list(node.process(EndOfStream("a"))) == []
    batch = node.process_batch([window("b", 0.0, 10), window("a", 0.0, 200)])
    assert [r.stream for r in batch] == ["b", "a"]
    assert node.ctx.counters["windows"] == 4.0
    node.on_stop()


def test_kind_override_and_audio_only(tmp_path: Path) -> None:
    meta = contract_variant(inputs__video=None, outputs={"activation": {"name": "activation"}})
    tiny_model(tmp_path / "a.onnx", meta, video=False)
    node = OnnxEncoderNode(ctx_for(tmp_path), OnnxEncoderParams(model="a.onnx", kind="loudness", providers=["cpu"]))
    node.on_start()
    (res,) = results(node.process(window("a", 0.0, 0, audio=0.25)))
    assert res.kind == "loudness" and res.fields == {"activation": pytest.approx(0.25)} and res.payloads == {}


def test_rolling_score() -> None:
    r = RollingScore(horizon_s=10.0)
    assert r.update(1.0, 5.0) == 0.5  # no past: neutral
    for t in range(2, 12):
        r.update(float(t), 5.0 + 0.01 * (t % 3))
    assert r.update(12.0, 9.0) > 0.99 and r.update(13.0, 1.0) < 0.01
    assert len(r.history) <= 11  # older than the horizon dropped
    r.update(0.5, 3.0)  # media time went back: a fresh start
    assert len(r.history) == 1


def highlight_scores(node: HighlightNode, windows: list[AVWindow]) -> list[float]:
    out = []
    for w in windows:
        (res,) = results(node.process(w))
        assert res.kind == "highlight" and res.model == "tiny@1"
        out.append(res.fields["score"])
    return out


def test_highlight_causal_per_stream(tmp_path: Path, model: Path) -> None:
    rng = np.random.default_rng(3)
    levels = rng.integers(40, 200, 20)
    common = [window("a", float(i), int(v), seed=i) for i, v in enumerate(levels[:12])]
    tail_1 = [window("a", float(12 + i), int(v), seed=50 + i) for i, v in enumerate(levels[12:])]
    tail_2 = [window("a", float(12 + i), 255 - int(v), seed=90 + i) for i, v in enumerate(levels[12:])]

    def fresh() -> HighlightNode:
        n = HighlightNode(ctx_for(tmp_path, "hl"), HighlightParams(model="tiny.onnx", horizon_s=30.0, providers=["cpu"]))
        n.on_start()
        return n

    s1 = highlight_scores(fresh(), common + tail_1)
    s2 = highlight_scores(fresh(), common + tail_2)
    assert s1[:12] == s2[:12] and s1[12:] != s2[12:]  # later windows never change earlier scores
    assert all(0.0 <= s <= 1.0 for s in s1 + s2)
    # a second stream interleaved on the same node does not change stream a's scores
    node = fresh()
    mixed: list[float] = []
    for i, w in enumerate(common):
        mixed += highlight_scores(node, [w])
        highlight_scores(node, [window("b", float(i), 255 - int(levels[i]), seed=200 + i)])
    assert mixed == s1[:12]
    assert set(node.status()["score"]) == {"a", "b"}
    list(node.on_eos("b"))
    assert "b" not in node.scores


def test_builtin_highlight_model(tmp_path: Path) -> None:
    req = HighlightNode.window_requirement({}, tmp_path)
    assert req is not None and (req.seconds, req.hop, req.frames, req.height, req.sample_rate) == (2.0, 1.0, 8, 64, 16000)
    node = HighlightNode(ctx_for(tmp_path, "hl"), HighlightParams(providers=["cpu"], threads=1))
    node.on_start()
    rng = np.random.default_rng(0)
    scores = []
    for i in range(4):
        frames = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
        audio = (0.1 * i * rng.normal(size=32000)).astype(np.float32)
        w = AVWindow("cam0", float(i), i + 2.0, 50.0 + i, frames, audio if i % 2 else None, 4.0, 16000)
        (res,) = results(node.process(w))
        assert res.model == "highlight@2" and np.isfinite(res.fields["activation"])
        scores.append(res.fields["score"])
    assert all(0.0 <= s <= 1.0 for s in scores)  # the first is judged against the model's prior, not 0.5
