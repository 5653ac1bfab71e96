"""Continuous-footage evaluation of the violence detector: clips joined back to back.

A camera does not cut its stream into labelled clips: scenes change under a running window. Here the
held-out clips of a fold are joined in a seeded random order into one stream on the model's frame
grid (each clip's frames and audio exactly as its own windows carry them, the padding of its last
window dropped), cut again into windows at the model's hop — so windows straddle clip edges — scored
by the same stateful stream scorer, and turned into alerts by the violence node's own hysteresis
(``plugins/violence.py``: ``on_threshold``, ``off_threshold``, ``hold_s``).

Per clip it measures: whether a fight clip alerts at some time inside it; whether an alert *starts*
inside a calm clip (a false alarm, counted per hour of calm footage; a start in the last hop before a
fight clip is the fight's, as that window's newest snippet holds the fight's start); and how long an alert carried
over from the clip before stays on into a calm clip (*bleed*; the detector should not hold it longer
than ``hold_s`` plus one hop, the window granularity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avstream.plugins.violence import Hysteresis

from .metrics import average_precision
from .violence_clips import StreamScorer, StreamWindows


@dataclass
class JoinedStream:
    windows: StreamWindows
    starts: np.ndarray  # (C,) media time each clip starts at
    ends: np.ndarray
    labels: np.ndarray  # (C,) clip labels
    clip_index: np.ndarray  # (C,) index of each joined clip in the caller's list


def clip_media(w: StreamWindows) -> tuple[np.ndarray, np.ndarray]:
    """A clip's frames (N, H, W, 3) on the window grid and its audio, without the end-of-stream padding."""
    fps = w.fps
    frames = [w.frames[0]]
    for i in range(1, len(w.t0)):
        new = int(round((w.t1[i] - w.t1[i - 1]) * fps))
        if new > 0:
            frames.append(w.frames[i][-new:])
    seq = np.concatenate(frames)
    n = len(seq)
    while n > 1 and np.array_equal(seq[n - 1], seq[n - 2]):  # repeats of the last frame: padding
        n -= 1
    seq = seq[:n]
    n_audio = w.audio.shape[1]
    per_s = n_audio / (w.frames.shape[1] / fps)
    audio = [w.audio[0]]
    for i in range(1, len(w.t0)):
        new = int(round((w.t1[i] - w.t1[i - 1]) * per_s))
        if new > 0:
            audio.append(w.audio[i][-new:])
    a = np.concatenate(audio)[: int(round(n / fps * per_s))]
    return seq, a


def join(clips: Sequence[StreamWindows], labels: Sequence[int], order: Sequence[int], hop_frames: int) -> JoinedStream:
    """Join ``clips`` in ``order`` into one stream and cut it into windows like the window node."""
    first = clips[0]
    fps, n_frames, n_audio = first.fps, first.frames.shape[1], first.audio.shape[1]
    per_frame = n_audio // n_frames
    frames, audio, starts, ends = [], [], [], []
    t = 0.0
    for k in order:
        f, a = clip_media(clips[k])
        a = np.pad(a, (0, max(0, len(f) * per_frame - len(a))))[: len(f) * per_frame]
        frames.append(f)
        audio.append(a)
        starts.append(t)
        t += len(f) / fps
        ends.append(t)
    allf, alla = np.concatenate(frames), np.concatenate(audio)
    win_f, win_a, t0 = [], [], []
    for s in range(0, max(1, len(allf) - n_frames + hop_frames), hop_frames):
        f = allf[s : s + n_frames]
        if len(f) < n_frames:  # the stream's end: the window node repeats the last frame
            f = np.concatenate([f, np.repeat(f[-1:], n_frames - len(f), axis=0)])
        a = alla[s * per_frame : s * per_frame + n_audio]
        win_f.append(f)
        win_a.append(np.pad(a, (0, n_audio - len(a))))
        t0.append(s / fps)
    t0a = np.array(t0)
    sw = StreamWindows(np.stack(win_f), np.stack(win_a).astype(np.float32), t0a, t0a + n_frames / fps, fps,
                       first.has_audio)
    return JoinedStream(sw, np.array(starts), np.array(ends), np.asarray(labels)[list(order)], np.asarray(order))


@dataclass
class ContinuousFigures:
    fight_detected: float  # share of fight clips with the alert on at some time inside them
    calm_false_alarms: int  # alerts that started inside a calm clip
    calm_hours: float
    calm_with_alert: float  # share of calm clips with the alert on at any time inside them (carried or not)
    bleed_over_hold: float  # share of calm clips where a carried-over alert outlived hold_s + one hop
    max_bleed_s: float
    accuracy: float  # fight detected / calm clean (no alert starting, bleed within hold_s + hop)
    inside_ap: float  # AP of windows lying wholly inside one clip

    @property
    def false_alarms_per_hour(self) -> float:
        return self.calm_false_alarms / self.calm_hours if self.calm_hours else 0.0


def alert_spans(w: StreamWindows, scores: np.ndarray, on: float, off: float, hold_s: float) -> list[tuple[float, float]]:
    """Media-time spans [start, end) the node's alert is on for these window scores."""
    alarm = Hysteresis(on, off, hold_s)
    spans: list[tuple[float, float]] = []
    prev_t1: float | None = None
    for i in range(len(w.t0)):
        new_t0 = float(w.t0[i]) if prev_t1 is None else max(float(w.t0[i]), prev_t1)
        was = alarm.alert
        alarm.update(new_t0, float(w.t1[i]), float(scores[i]))
        if not was and alarm.alert:
            spans.append((new_t0, float("inf")))
        elif was and not alarm.alert:  # this window's result is the first to say alert: false
            spans[-1] = (spans[-1][0], new_t0)
        prev_t1 = float(w.t1[i])
    if spans and spans[-1][1] == float("inf"):
        spans[-1] = (spans[-1][0], float(w.t1[-1]))
    return spans


def evaluate(stream: JoinedStream, scores: np.ndarray, on: float, off: float, hold_s: float,
             hop_s: float) -> ContinuousFigures:
    """The continuous-footage figures of one joined stream (see the module docstring)."""
    w = stream.windows
    spans = alert_spans(w, scores, on, off, hold_s)
    detected, calm_alert, over, correct, bleeds, false_alarms = [], [], [], [], [0.0], 0
    calm_s = 0.0
    n = len(stream.labels)
    for k, (a, b, lab) in enumerate(zip(stream.starts, stream.ends, stream.labels, strict=True)):
        inside = [(max(s, a), min(e, b)) for s, e in spans if s < b and e > a]
        if lab == 1:
            detected.append(bool(inside))
            correct.append(bool(inside))
            continue
        calm_s += b - a
        # a start in the last hop before a fight belongs to the fight: that window's new snippet holds its start
        last = b - hop_s if k + 1 < n and stream.labels[k + 1] == 1 else b
        started = sum(1 for s, _ in spans if a <= s < last)
        false_alarms += started
        carried = [e for s, e in spans if s < a <= e]
        bleed = (min(carried[0], b) - a) if carried else 0.0
        bleeds.append(bleed)
        calm_alert.append(bool(inside))
        over.append(bleed > hold_s + hop_s + 1e-6)
        correct.append(started == 0 and bleed <= hold_s + hop_s + 1e-6)
    inside_w = [(i, k) for i in range(len(w.t0)) for k in range(len(stream.starts))
                if w.t0[i] >= stream.starts[k] - 1e-6 and w.t1[i] <= stream.ends[k] + 1e-6]
    y = np.array([stream.labels[k] for _, k in inside_w])
    s = np.array([scores[i] for i, _ in inside_w])
    inside_ap = average_precision(y, s) if len(set(y.tolist())) == 2 else float("nan")
    return ContinuousFigures(float(np.mean(detected)) if detected else float("nan"), false_alarms, calm_s / 3600.0,
                             float(np.mean(calm_alert)) if calm_alert else float("nan"),
                             float(np.mean(over)) if over else float("nan"), float(max(bleeds)),
                             float(np.mean(correct)), inside_ap)


def run_scorer(scorer: StreamScorer, stream: JoinedStream) -> np.ndarray:
    return np.asarray(scorer(stream.windows), dtype=np.float64).reshape(-1)


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def pooled(figures: Sequence[ContinuousFigures]) -> ContinuousFigures:
    """Figures of several folds' streams pooled (means weighted equally per fold; counts summed)."""
    return ContinuousFigures(
        _mean([f.fight_detected for f in figures]), sum(f.calm_false_alarms for f in figures),
        sum(f.calm_hours for f in figures), _mean([f.calm_with_alert for f in figures]),
        _mean([f.bleed_over_hold for f in figures]), max(f.max_bleed_s for f in figures),
        _mean([f.accuracy for f in figures]), _mean([f.inside_ap for f in figures]))
