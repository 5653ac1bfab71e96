"""The procedural scene generator: determinism, ground truth vs pixels and sound, speed, MP4 output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from avstream.engine.synthetic.audio import SOUND_CLASSES
from avstream.engine.synthetic.scene import (
    GENERATOR_VERSION,
    LOOKS,
    SceneConfig,
    generate_truth,
    render_audio,
    render_video_frame,
    scene_for,
    write_scene,
)

SMALL: dict[str, Any] = {"width": 320, "height": 180}


def _frame_rms(cfg: SceneConfig, truth: dict) -> np.ndarray:
    """Audio RMS over each video frame's interval [t, t + 1/fps)."""
    audio = render_audio(cfg, truth, 0, cfg.num_samples)
    per = cfg.sample_rate / cfg.fps
    return np.array(
        [np.sqrt(np.mean(audio[round(i * per) : round((i + 1) * per)] ** 2)) for i in range(cfg.num_frames)]
    )


def _inside(t: float, events: list[dict], kind: str) -> bool:
    return any(e["kind"] == kind and e["t0"] <= t < e["t1"] for e in events)


def test_same_seed_same_scene_and_json_round_trip() -> None:
    cfg = SceneConfig(seed=5, duration=3.0, **SMALL)
    a, b = generate_truth(cfg), generate_truth(cfg)
    assert a == b
    assert a["generator_version"] == GENERATOR_VERSION
    loaded = json.loads(json.dumps(a))  # JSON-serialisable, and the loaded copy renders the same
    for i in (0, 17, cfg.num_frames - 1):
        assert np.array_equal(render_video_frame(cfg, a, i), render_video_frame(cfg, loaded, i))
    assert np.array_equal(render_audio(cfg, a, 1000, 5000), render_audio(cfg, loaded, 1000, 5000))
    other = generate_truth(SceneConfig(seed=6, duration=3.0, **SMALL))
    assert other["frames"][0]["boxes"] != a["frames"][0]["boxes"]
    assert not np.array_equal(
        render_video_frame(cfg, a, 0), scene_for(SceneConfig(seed=6, duration=3.0, **SMALL)).frame(0)
    )


def test_truth_structure() -> None:
    cfg = SceneConfig(seed=3, duration=20.0, violence=True, **SMALL)
    truth = generate_truth(cfg)
    assert truth["num_frames"] == 500 and len(truth["frames"]) == 500
    assert 1 <= len(truth["objects"]) <= 3
    sounding = [o for o in truth["objects"] if o["sounding"]]
    assert len(sounding) == 1 and sounding[0]["id"] == truth["sounding_object"]
    assert truth["sound_class"] == sounding[0]["class"] in SOUND_CLASSES
    assert len({o["class"] for o in truth["objects"]}) == len(truth["objects"])  # distinct classes
    kinds = [e["kind"] for e in truth["events"]]
    assert "highlight" in kinds and "violence" in kinds
    for e in truth["events"]:
        assert 0 <= e["t0"] < e["t1"] <= cfg.duration
    # captions partition the whole scene
    caps = truth["captions"]
    assert caps[0]["t0"] == 0.0 and caps[-1]["t1"] == pytest.approx(cfg.duration)
    assert all(c1["t1"] == c2["t0"] for c1, c2 in zip(caps, caps[1:], strict=False))
    assert all(c["text"] for c in caps)
    for f in truth["frames"]:
        assert len(f["boxes"]) == len(truth["objects"])
        for x0, y0, x1, y1 in f["boxes"]:
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert 0.0 <= f["envelope"] <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 7])
def test_boxes_contain_the_drawn_object(seed: int) -> None:
    cfg = SceneConfig(seed=seed, duration=12.0, objects=3 if seed % 2 else 0, **SMALL)
    truth = generate_truth(cfg)
    w, h = cfg.width, cfg.height
    for index in range(0, cfg.num_frames, 23):
        frame = render_video_frame(cfg, truth, index)
        rec = truth["frames"][index]
        for obj in truth["objects"]:
            gain = 0.55 + 0.45 * rec["envelope"] if obj["sounding"] else 0.85
            colour = [int(c * gain) for c in LOOKS[obj["class"]][1]]
            mask = np.all(frame == np.array(colour, dtype=np.uint8), axis=2)
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = rec["boxes"][obj["id"]]
            assert np.all((xs >= x0 * w - 0.01) & (xs < x1 * w + 0.01)), (seed, index, obj)
            assert np.all((ys >= y0 * h - 0.01) & (ys < y1 * h + 0.01)), (seed, index, obj)
            if obj["sounding"]:  # drawn on top, so it always fills a good part of its box
                area = (x1 - x0) * w * (y1 - y0) * h
                assert mask.sum() >= 0.3 * area


@pytest.mark.parametrize("sound", SOUND_CLASSES)
def test_audio_follows_the_sounding_objects_envelope(sound: str) -> None:
    cfg = SceneConfig(seed=11, duration=12.0, violence=False, sound=sound, **SMALL)
    truth = generate_truth(cfg)
    assert truth["sound_class"] == sound
    env = np.array([f["envelope"] for f in truth["frames"]])
    rms = _frame_rms(cfg, truth)
    assert env.std() > 0.05
    assert np.corrcoef(env, rms)[0, 1] > 0.8
    # highlights are louder than the rest
    t = np.array([f["t"] for f in truth["frames"]])
    high = np.array([_inside(x, truth["events"], "highlight") for x in t])
    assert high.any() and rms[high].mean() > 1.3 * rms[~high].mean()


def test_violence_has_bangs_and_erratic_motion() -> None:
    cfg = SceneConfig(seed=2, duration=12.0, violence=True, **SMALL)
    truth = generate_truth(cfg)
    audio = render_audio(cfg, truth, 0, cfg.num_samples)
    ev = next(e for e in truth["events"] if e["kind"] == "violence")
    s0, s1 = round(ev["t0"] * cfg.sample_rate), round(ev["t1"] * cfg.sample_rate)
    assert np.abs(audio[s0:s1]).max() > 0.6
    assert np.abs(audio[s0:s1]).max() > 1.2 * np.abs(np.concatenate([audio[:s0], audio[s1:]])).max()
    boxes = np.array([f["boxes"] for f in truth["frames"]])  # (T, objects, 4)
    centre = (boxes[:, :, :2] + boxes[:, :, 2:]) / 2
    speed = np.linalg.norm(np.diff(centre, axis=0), axis=2).mean(axis=1)
    t = np.array([f["t"] for f in truth["frames"]])[1:]
    inside = (t > ev["t0"] + 0.2) & (t < ev["t1"] - 0.2)
    assert speed[inside].mean() > 3 * speed[~inside].mean()


def test_audio_is_chunk_independent_and_in_range() -> None:
    cfg = SceneConfig(seed=4, duration=4.0, violence=True, **SMALL)
    truth = generate_truth(cfg)
    whole = render_audio(cfg, truth, 0, cfg.num_samples)
    chunks = np.concatenate([render_audio(cfg, truth, s, 640) for s in range(0, cfg.num_samples, 640)])
    assert whole.dtype == np.float32 and whole.shape == (cfg.num_samples,)
    np.testing.assert_allclose(chunks[: len(whole)], whole, atol=1e-6)
    assert np.abs(whole).max() <= 1.0
    assert not render_audio(cfg, truth, cfg.num_samples, 100).any()  # past the end: silence


def test_frame_render_speed() -> None:
    cfg = SceneConfig(seed=1, duration=10.0)  # 640x360
    scene = scene_for(cfg)
    frame = scene.frame(0)
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8 and frame.flags["C_CONTIGUOUS"]
    start = time.perf_counter()
    for i in range(100):
        scene.frame(i)
    fps = 100 / (time.perf_counter() - start)
    assert fps > 100, f"{fps:.0f} frames/s"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="duration"):
        SceneConfig(duration=0)
    with pytest.raises(ValueError, match="sound"):
        SceneConfig(sound="kazoo")
    with pytest.raises(ValueError, match="frame size"):
        SceneConfig(width=8)


def test_write_scene_makes_a_real_file(tmp_path: Path) -> None:
    cfg = SceneConfig(seed=2, duration=2.0, **SMALL)
    mp4, side = tmp_path / "scene.mp4", tmp_path / "scene.json"
    truth = write_scene(cfg, mp4, side)
    assert json.loads(side.read_text()) == json.loads(json.dumps(truth))
    with av.open(str(mp4)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = list(c.decode(video=0))
    assert len(frames) == cfg.num_frames
    first = frames[0].to_ndarray(format="bgr24").astype(int)
    assert np.abs(first - render_video_frame(cfg, truth, 0).astype(int)).mean() < 6  # lossy but close
