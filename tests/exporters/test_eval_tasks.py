"""The localization / highlight benchmark protocol on hand-made cases and short real scenes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from avstream.engine.items import AVWindow
from avstream.engine.node import WindowRequirement
from avstream.engine.synthetic.scene import GENERATOR_VERSION, SceneConfig, render_video_frame
from avstream.exporters import eval_tasks as E
from avstream.plugins.encoders import RollingScore
from tests.conftest import invoke_cli


def test_protocol_is_held_out_and_pinned() -> None:
    assert E.GENERATOR == GENERATOR_VERSION
    assert min(E.LOC_SEEDS) >= 1_000_000 and min(E.HIGH_SEEDS) >= 1_000_000
    assert not set(E.LOC_SEEDS) & set(E.HIGH_SEEDS)
    assert len(E.LOC_SEEDS) == 48 and len(E.HIGH_SEEDS) == 40
    assert E.TARGETS == {"localization": {"ciou@0.5": 0.6, "auc": 0.5}, "highlight": {"mAP": 0.85}}


def test_heatmap_ciou_on_hand_made_maps() -> None:
    box = [0.25, 0.25, 0.5, 0.5]
    on = np.zeros((28, 28), np.float32)
    on[7:14, 7:14] = 1.0  # exactly the box's cells
    assert E.heatmap_ciou(on, box) > 0.9
    off = np.zeros((28, 28), np.float32)
    off[20:27, 20:27] = 1.0
    assert E.heatmap_ciou(off, box) == 0.0
    coarse = np.zeros((7, 7), np.float32)
    coarse[2:4, 2:4] = 1.0  # a 7x7 map still points at a box of its cells after upsampling
    assert E.heatmap_ciou(coarse, [2 / 7, 2 / 7, 4 / 7, 4 / 7]) > 0.5
    assert E.heatmap_ciou(np.zeros((7, 7), np.float32), box) < 0.5  # a flat map says nothing


def test_highlight_labels_need_half_the_window() -> None:
    ws = [AVWindow("s", t, t + 2.0, 0.0, None, None) for t in (0.0, 1.0, 2.0, 3.0, 4.0)]
    events = [{"kind": "highlight", "t0": 2.0, "t1": 4.5}, {"kind": "violence", "t0": 0.0, "t1": 2.0}]
    assert E.highlight_labels(ws, events).tolist() == [0, 1, 1, 1, 0]  # [1,3): half inside; [4,6): 0.5 s


def test_causal_scores_are_the_nodes_and_never_look_ahead() -> None:
    acts = [0.1, 0.3, 0.2, 2.0, 0.25, 0.15]
    t1 = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    full = E.causal_scores(acts, t1)
    roll = RollingScore(60.0)
    assert full.tolist() == [roll.update(t, a) for t, a in zip(t1, acts, strict=True)]
    assert E.causal_scores(acts[:4], t1[:4]).tolist() == full[:4].tolist()
    assert full.argmax() == 3 and np.all((full >= 0) & (full <= 1))


def test_clip_highlight_metrics() -> None:
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 0])
    assert E.clip_highlight_metrics(labels, labels.astype(float)) == (1.0, 0.6)  # 3 positives in the top 5
    ap, p5 = E.clip_highlight_metrics(labels, -labels.astype(float))
    assert ap < 0.5 and p5 == 0.0
    assert all(np.isnan(v) for v in E.clip_highlight_metrics(np.zeros(8, int), np.arange(8.0)))


def test_energy_motion_baseline_prefers_loud_moving_windows() -> None:
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 255, (1, 16, 16, 3), dtype=np.uint8), 8, axis=0)
    moving = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    quiet, loud = 0.01 * rng.standard_normal(3200), 0.3 * rng.standard_normal(3200)
    a = E.energy_motion_activation
    assert a(moving, loud) > a(moving, quiet) and a(moving, loud) > a(still, loud)


def test_motion_correlation_finds_the_patch_in_step_with_the_sound() -> None:
    rng = np.random.default_rng(1)
    t = 25
    on = rng.random(t) < 0.5  # the sound's bursts, one per frame interval
    frames = np.full((t, 112, 112, 3), 100, np.uint8)
    synced = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    other = synced.copy()
    for k in range(t):
        if on[k]:  # this textured patch moves (changes) while the sound is on
            synced = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        if rng.random() < 0.5:  # this one changes at random
            other = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        frames[k, 60:84, 10:34] = synced
        frames[k, 10:34, 70:94] = other
    audio = np.concatenate([(0.5 if on[k] else 0.01) * rng.standard_normal(640) for k in range(t)])
    heat = E.motion_correlation_heatmap(frames, audio.astype(np.float32))
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 15 <= y < 21 and 2 <= x < 9  # cells of rows 60..84, columns 10..34 on the 28x28 grid
    assert E.heatmap_ciou(heat, [10 / 112, 60 / 112, 34 / 112, 84 / 112]) > 0.5


def test_windows_are_the_runtimes_and_the_last_frame_is_found() -> None:
    req = WindowRequirement(seconds=1.0, hop=0.5, fps=4.0, frames=4, height=112, width=112, sample_rate=16000,
                            audio_samples=16000)
    truth, wins = E.build_windows(7, 4.0, {"m": req, "b": E.LOC_BASELINE_WINDOW})
    assert [w.t0 for w in wins["m"]] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]  # no padded window past 4 s
    assert [w.t1 for w in wins["b"]] == [2.0, 2.5, 3.0, 3.5, 4.0]
    cfg = SceneConfig(seed=7, duration=4.0, width=640, height=360, fps=25.0)
    for w, r in [(w, req) for w in wins["m"]] + [(w, E.LOC_BASELINE_WINDOW) for w in wins["b"]]:
        k = E.last_frame_index(w, r)
        want = cv2.resize(render_video_frame(cfg, truth, k), (112, 112), interpolation=cv2.INTER_AREA)
        assert w.frames is not None and np.array_equal(w.frames[-1], want)
    audio, frames = wins["m"][0].audio, wins["b"][0].frames
    assert audio is not None and audio.shape == (16000,) and frames is not None and frames.shape == (25, 112, 112, 3)


def test_benchmarks_run_on_short_training_scenes() -> None:
    loc = E.evaluate_localization([E.localization_baseline()], seeds=[3], seconds=4.0, progress=lambda s: None)
    (r,) = loc.values()
    assert r["frames"] == 5 and 0.0 <= r["ciou@0.5"] <= 1.0 and 0.0 <= r["auc"] <= 1.0
    high = E.evaluate_highlight([E.highlight_baseline()], seeds=[3, 4], seconds=12.0, progress=lambda s: None)
    (h,) = high.values()
    assert h["clips"] == 2 and 0.0 <= h["mAP"] <= 1.0 and 0.0 <= h["P@5"] <= 1.0
    lines = E.format_table("highlight", high)
    assert "mAP >= 0.85" in lines[0] and len(lines) == 4


def test_cli_names_a_missing_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    res = invoke_cli("eval", "localization", "--no-random", "--model", str(tmp_path / "x.onnx"))
    err, code = res.stderr, res.exit_code
    assert code == 2 and "x.onnx" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_scoring_v2_prior_judges_the_first_windows() -> None:
    acts, t1 = [3.0, 0.0, 0.1, -0.1], [2.0, 3.0, 4.0, 5.0]
    plain = E.causal_scores(acts, t1)
    assert plain[0] == 0.5  # protocol 1: the first window has nothing to compare with
    with_prior = E.causal_scores(acts, t1, prior=(0.0, 1.0, 30.0))
    assert with_prior[0] > 0.9 and abs(with_prior[1] - 0.5) < 0.1  # 3 spreads above the prior median
    assert E.causal_scores(acts[:2], t1[:2], prior=(0.0, 1.0, 30.0)).tolist() == with_prior[:2].tolist()
