"""Operating points and the continuous-footage measures of the violence evaluation, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from avstream.exporters.violence_calibration import (
    best_accuracy_threshold,
    false_alarm_share,
    false_alarm_threshold,
    operating_points,
)
from avstream.exporters.violence_clips import StreamWindows
from avstream.exporters.violence_continuous import alert_spans, clip_media, evaluate, join


def test_best_accuracy_and_false_alarm_thresholds() -> None:
    labels = np.array([0] * 20 + [1] * 10)
    calm = np.linspace(0.0, 0.6, 20)  # the two highest calm scores overlap the fights
    scores = np.r_[calm, np.linspace(0.55, 1.0, 10)]
    thr = best_accuracy_threshold(labels, scores)
    acc = ((scores >= thr) == labels).mean()
    assert acc == max(((scores >= c) == labels).mean() for c in np.r_[scores, 2.0])
    low = false_alarm_threshold(labels, scores, rate=0.05)  # 1 of 20 calm clips may alert
    assert false_alarm_share(labels, scores, low) == pytest.approx(0.05)
    assert false_alarm_share(labels, scores, low - 0.02) > 0.05  # the lowest such threshold
    assert false_alarm_threshold(labels, scores, rate=0.0) > calm.max()
    points = operating_points(labels, scores)
    assert set(points) == {"accuracy", "low_false_alarm"}
    for p in points.values():
        assert p["off_threshold"] == pytest.approx(0.7 * p["on_threshold"], abs=1e-4)
    assert points["low_false_alarm"]["clip_false_alarm_share"] <= 0.05
    with pytest.raises(ValueError, match="no non-violent clip"):
        false_alarm_threshold(np.ones(3), np.ones(3))


def clip(levels: list[int], seconds_audio: float = 0.0) -> StreamWindows:
    """A clip's windows (8 frames of 2x2 at 4 fps, hop 0.5 s = 2 frames) over frames of these levels;
    the last window padded with repeats of the last frame, as the window node pads a stream's end."""
    n = len(levels)
    frames = np.array(levels, np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    starts = list(range(0, max(1, n - 8 + 2), 2)) or [0]
    wins = []
    for s in starts:
        f = frames[s : s + 8]
        wins.append(np.concatenate([f, np.repeat(f[-1:], 8 - len(f), axis=0)]) if len(f) < 8 else f)
    t0 = np.array(starts) / 4.0
    audio = np.full((len(wins), 80), seconds_audio, np.float32)
    return StreamWindows(np.stack(wins), audio, t0, t0 + 2.0, 4.0, True)


def test_clip_media_drops_the_padding_and_join_cuts_new_windows() -> None:
    a = clip(list(range(10, 20)))  # 10 frames, 2.5 s
    frames, audio = clip_media(a)
    assert len(frames) == 10 and frames[-1, 0, 0, 0] == 19 and len(audio) == 100
    b = clip(list(range(100, 108)))  # 8 frames
    joined = join([a, b], [0, 1], [1, 0], hop_frames=2)
    assert joined.starts.tolist() == [0.0, 2.0] and joined.ends.tolist() == [2.0, 4.5]
    assert joined.labels.tolist() == [1, 0]
    w = joined.windows
    assert w.t0[1] == 0.5 and w.frames[1, 0, 0, 0, 0] == 102  # windows run across the edge
    assert w.frames[3, -1, 0, 0, 0] == 15  # the window at 1.5 s ends 1.5 s into the calm clip


def test_alert_spans_and_continuous_figures() -> None:
    # one stream: fight 0-2 s, calm 2-6 s, calm 6-10 s; windows every 0.5 s (new span: the last 0.5 s)
    t0 = np.arange(17) * 0.5
    w = StreamWindows(np.zeros((17, 8, 2, 2, 3), np.uint8), np.zeros((17, 80), np.float32), t0, t0 + 2.0, 4.0, False)
    from avstream.exporters.violence_continuous import JoinedStream

    stream = JoinedStream(w, np.array([0.0, 2.0, 6.0]), np.array([2.0, 6.0, 10.0]), np.array([1, 0, 0]),
                          np.arange(3))
    # new spans: window i adds [1.5 + 0.5 i, 2 + 0.5 i); the fight's windows are 0..0 (t1 <= 2)
    scores = np.zeros(17)
    scores[0] = 0.9  # alert on at once (first window: new span from its t0)
    scores[12] = 0.9  # a false alarm starting at 7.5 s in the second calm clip
    spans = alert_spans(w, scores, 0.5, 0.35, hold_s=2.0)
    # under off from 2.0 s; the window ending 2 s later (new span from 3.5 s) is the first to say false
    assert spans[0][0] == 0.0 and spans[0][1] == pytest.approx(3.5)
    assert spans[1][0] == pytest.approx(7.5)
    fig = evaluate(stream, scores, 0.5, 0.35, hold_s=2.0, hop_s=0.5)
    assert fig.fight_detected == 1.0
    assert fig.calm_false_alarms == 1 and fig.calm_with_alert == 1.0
    assert fig.max_bleed_s == pytest.approx(1.5) and fig.bleed_over_hold == 0.0  # within hold_s
    assert fig.accuracy == pytest.approx(2 / 3)  # the fight, and the first calm clip (bleed within hold)
    assert fig.false_alarms_per_hour == pytest.approx(1 / (8.0 / 3600))
