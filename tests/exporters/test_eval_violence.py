"""The violence evaluation protocol on hand-made cases: folds, frame/clip scoring, baselines, CV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.node import WindowRequirement
from avstream.exporters.eval_violence import (
    ON_THRESHOLD,
    clip_figures,
    clip_score,
    cross_validate,
    fit_threshold,
    frame_scores,
    grouped_folds,
    synthetic_frame_ap,
    synthetic_scenes,
)
from avstream.exporters.violence_baselines import motion_energy, new_frame_mask
from avstream.exporters.violence_clips import (
    Clip,
    ClipData,
    StreamScorer,
    StreamWindows,
    load_clips,
    windows_of,
)
from tests.conftest import SHARED_DATA

REQ = WindowRequirement(seconds=2.0, hop=0.5, fps=4.0, frames=8, height=16, width=16, sample_rate=8000,
                        audio_samples=16000)


def stream(levels: Sequence[Sequence[float]], audio: float = 0.0, hop: float = 0.5) -> StreamWindows:
    """Windows whose frame k of window i has grey level levels[i][k] (8 frames of 4x4 at 4 fps)."""
    lv = np.asarray(levels, dtype=np.float64)
    frames = np.broadcast_to(lv[:, :, None, None, None], (*lv.shape, 4, 4, 3)).astype(np.uint8).copy()
    t0 = np.arange(len(lv)) * hop
    return StreamWindows(frames, np.full((len(lv), 100), audio, np.float32), t0, t0 + 2.0, 4.0, True)


def test_grouped_folds_keep_groups_whole_and_balance() -> None:
    rng = np.random.default_rng(1)
    groups = [f"g{int(x)}" for x in rng.integers(0, 30, 200)]
    labels = [int(x) for x in rng.integers(0, 2, 200)]
    folds = grouped_folds(groups, labels, k=5, seed=3)
    assert len(folds) == 5
    allix = np.concatenate(folds)
    assert sorted(allix) == list(range(200))  # each clip in exactly one test fold
    for f in folds:
        others = set(np.setdiff1d(np.arange(200), f))
        assert not {groups[i] for i in f} & {groups[i] for i in others}  # no group on both sides
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 20
    assert [list(f) for f in folds] == [list(f) for f in grouped_folds(groups, labels, k=5, seed=3)]
    assert [list(f) for f in folds] != [list(f) for f in grouped_folds(groups, labels, k=5, seed=4)]
    with pytest.raises(ValueError):
        grouped_folds(["a", "a", "b"], [0, 1, 0], k=3)


def test_new_frames_and_motion_energy() -> None:
    static = stream([[10] * 8, [10] * 8, [10] * 8])
    mask = new_frame_mask(static)
    assert mask[0].all()  # the first window brings all its frames
    assert list(mask[1]) == [False] * 6 + [True] * 2  # hop 0.5 s at 4 fps: two new frames
    assert np.allclose(motion_energy(static), 0.0)
    # window 1: a flash in an old frame (already counted by window 0) and motion in its new frames
    moving = stream([[10, 10, 10, 10, 10, 10, 10, 10],
                     [10, 10, 10, 10, 250, 10, 10, 61],
                     [10] * 8])
    m = motion_energy(moving)
    assert m[0] == pytest.approx(0.0)
    assert m[1] == pytest.approx(np.mean([0.0, 51 / 255]), abs=1e-6)  # only pairs ending in new frames
    assert m[2] == pytest.approx(0.0)


def test_frame_scores_use_the_first_window_covering_each_frame() -> None:
    t1 = np.array([2.0, 2.5, 3.0])
    times = np.array([0.0, 1.9, 2.0, 2.4, 2.5, 2.9, 3.5])
    assert list(frame_scores(t1, np.array([0.1, 0.2, 0.3]), times)) == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3]


def test_clip_score_is_the_highest_window_and_checks_length() -> None:
    w = stream([[0] * 8, [0] * 8])
    assert clip_score(lambda s: np.array([0.2, 0.7]), w) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="3 scores for 2 windows"):
        clip_score(lambda s: np.zeros(3), w)


def test_fit_threshold_and_clip_figures() -> None:
    y = np.array([0, 0, 1, 1])
    assert fit_threshold(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.5)
    assert fit_threshold(1 - y, np.array([0.1, 0.2, 0.8, 0.9])) < 0.1  # nothing beats 50%: the first candidate
    labels = np.array([0, 1] * 10)
    groups = np.repeat(np.arange(10), 2)
    perfect = clip_figures(labels, labels * 0.8 + 0.1, np.full(20, 0.5), groups, rounds=200)
    assert perfect["clip_ap"].value == 1.0 and perfect["accuracy"].value == 1.0
    assert perfect["clip_ap"].lo == 1.0
    wrong = clip_figures(labels, 0.9 - labels * 0.8, np.full(20, 0.5), groups, rounds=200)
    assert wrong["accuracy"].value == 0.0 and wrong["clip_ap"].value < 0.6
    flat = clip_figures(labels, np.full(20, 0.3), np.full(20, 0.5), groups, rounds=200)
    assert flat["clip_ap"].value == pytest.approx(0.5) and flat["accuracy"].value == pytest.approx(0.5)
    assert flat["accuracy"].lo <= 0.5 <= flat["accuracy"].hi


class LoudnessLearner:
    """Hand-made learner: scores a window by its audio level; records what it was trained on."""

    def __init__(self) -> None:
        self.trained_on: list[set[str]] = []

    def fit(self, clips: Sequence[ClipData], seed: int, progress: Callable[[str], None]) -> StreamScorer:
        self.trained_on.append({c.clip.id for c in clips})
        return lambda w: np.clip(np.abs(w.audio).mean(axis=1), 0, 1)

    def untrained(self, seed: int) -> StreamScorer:
        return lambda w: np.full(len(w.t0), 0.5)


def test_cross_validate_on_hand_made_clips() -> None:
    data = []
    for i in range(24):
        label = i % 2
        # fights are loud and move (a level step in the last frames); groups of 3 clips. Frames flicker by
        # one level: repeats of the last frame read as the window node's end-of-stream padding
        lv = [[10 + k % 2 for k in range(6)] + [10 + 40 * label, 11 + 40 * label]]
        w = stream(lv, audio=0.9 if label else 0.1)
        data.append(ClipData(Clip(f"c{i}", label, f"g{i // 3}", Path(f"c{i}.mp4")), w))
    learner = LoudnessLearner()
    cv = cross_validate(data, learner, folds=4, seed=0, progress=lambda s: None, rounds=100)
    assert len(learner.trained_on) == 4
    for fold, seen in zip(cv["folds"], learner.trained_on, strict=True):
        assert not seen & {data[i].clip.id for i in fold}  # never trained on its test clips
        assert len(seen) == 24 - len(fold)
    rows = cv["rows"]
    assert set(rows) == {(m, c) for m in ("learned", "random", "motion", "flow") for c in ("recorded", "silenced")}
    assert rows[("learned", "recorded")]["clip_ap"].value == 1.0
    # thresholds chosen on the other folds' out-of-fold scores separate 0.9 from 0.1
    assert rows[("learned", "recorded")]["accuracy"].value == 1.0
    assert rows[("learned", "recorded")]["false_alarm_share"].value == 0.0
    points = cv["operating_points"]["recorded"]
    assert 0.1 < points["accuracy"]["on_threshold"] < 0.9 and points["accuracy"]["clip_accuracy"] == 1.0
    assert points["low_false_alarm"]["clip_false_alarm_share"] <= 0.05
    # silenced: every clip scores 0, below the on-threshold: ties give AP = share of positives
    assert rows[("learned", "silenced")]["clip_ap"].value == pytest.approx(0.5)
    assert rows[("learned", "silenced")]["accuracy"].value == pytest.approx(0.5)
    assert rows[("random", "recorded")]["accuracy"].value == pytest.approx(0.5)  # every score 0.5: all alike
    assert ON_THRESHOLD == 0.5
    # the motion baseline sees the step and its fitted threshold separates the classes
    assert rows[("motion", "recorded")]["clip_ap"].value == 1.0
    assert rows[("motion", "silenced")]["accuracy"].value == 1.0
    assert 0.0 <= rows[("flow", "recorded")]["clip_ap"].value <= 1.0  # flat frames: no flow to see
    # continuous footage: the loud fights alert inside themselves, calm clips never start an alert
    cont = cv["continuous"]
    assert set(cont) >= {("learned", "recorded"), ("learned", "silenced"), ("motion", "recorded"), ("flow", "recorded")}
    assert cont[("learned", "recorded")].fight_detected == 1.0
    assert cont[("learned", "recorded")].calm_false_alarms == 0
    # baselines only
    cv2 = cross_validate(data, None, folds=4, seed=0, progress=lambda s: None, rounds=50)
    assert set(cv2["rows"]) == {(m, c) for m in ("motion", "flow") for c in ("recorded", "silenced")}


def test_windows_of_uses_the_window_node() -> None:
    w = windows_of("synthetic://scene?seed=5&duration=3&width=64&height=36", REQ)
    assert w.frames.shape[1:] == (8, 16, 16, 3) and w.frames.dtype == np.uint8
    assert w.audio.shape[1] == 16000 and w.audio.dtype == np.float32 and w.has_audio
    assert np.allclose(w.t1 - w.t0, 2.0) and np.allclose(np.diff(w.t0), 0.5)
    assert w.t0[0] == 0.0 and len(w.t0) >= 3  # full windows at 0, 0.5, 1.0 and padded ones at the end
    assert np.abs(w.silenced().audio).max() == 0.0 and np.abs(w.audio).max() > 0


def test_windows_of_a_file_without_audio(tmp_path: Path) -> None:
    import av

    path = tmp_path / "noaudio.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="bgr24")
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    w = windows_of(str(path), REQ)
    assert not w.has_audio and np.abs(w.audio).max() == 0.0  # a missing track is silence
    assert w.frames.shape[1:] == (8, 16, 16, 3)
    assert motion_energy(w).max() > 0


def test_synthetic_scenes_are_held_out_and_labelled() -> None:
    with pytest.raises(ValueError, match="held-out"):
        synthetic_scenes(REQ, n=1, seed0=5)
    scenes = synthetic_scenes(REQ, n=2, duration=6.0)
    assert [s.seed for s in scenes] == [1_000_000, 1_000_001]
    assert scenes[0].labels.sum() > 0 and scenes[1].labels.sum() == 0  # every other scene has violence
    assert len(scenes[0].times) == 24
    # an oracle scorer: the share of violent frames among the window's new frames
    sc = scenes[0]

    def oracle(w: StreamWindows) -> np.ndarray:
        prev = np.r_[-np.inf, w.t1[:-1]]
        new = [sc.labels[(sc.times >= max(p, t0)) & (sc.times < t1)] for p, t0, t1 in zip(prev, w.t0, w.t1, strict=True)]
        return np.array([x.mean() if len(x) else 0.0 for x in new])  # windows past the end: no frames

    flat = synthetic_frame_ap(lambda w: np.zeros(len(w.t0)), scenes, rounds=20)
    assert flat.value == pytest.approx(scenes[0].labels.sum() / 48)
    fig = synthetic_frame_ap(oracle, scenes[:1], rounds=20)
    assert fig.value > 0.8 > flat.value  # only the first window, 2 s of new frames at once, blurs it


@pytest.mark.skipif(not (SHARED_DATA / "fight-surveillance").is_dir(),
                    reason="needs ../shared/data/fight-surveillance (the real development clips)")
def test_load_real_clips() -> None:
    clips = load_clips(SHARED_DATA / "fight-surveillance")
    assert len(clips) == 215
    assert sum(c.label for c in clips) == 106
    assert len({c.group for c in clips}) == 49


def test_load_clips_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="groups.csv"):
        load_clips(tmp_path)
    (tmp_path / "groups.csv").write_text("clip,label,source_group\nx1,brawl,1\n")
    with pytest.raises(ValueError, match="unknown label 'brawl'"):
        load_clips(tmp_path)


def test_flow_statistics_measure_the_motion_of_a_texture() -> None:
    from avstream.exporters.violence_baselines import FLOW_FEATURES, flow_statistics

    rng = np.random.default_rng(0)
    texture = cv2_blur(rng.integers(0, 256, (80, 120)).astype(np.uint8))
    still = np.stack([np.repeat(texture[:64, :64, None], 3, axis=2)] * 8)
    moving = np.stack([np.repeat(texture[:64, 2 * k : 2 * k + 64, None], 3, axis=2) for k in range(8)])
    f_still, f_moving = flow_statistics(still), flow_statistics(moving)
    assert f_still.shape == f_moving.shape == (FLOW_FEATURES,)
    assert f_still[0] < 0.1  # mean magnitude, pixels per frame
    assert 1.5 < f_moving[0] < 2.5  # the texture moves 2 px per frame
    assert f_moving[10] < 1.0  # direction entropy: one direction (bins 0 and 7), far from uniform (2.08)


def cv2_blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.GaussianBlur(img, (0, 0), 2.0))
