"""Non-deep baselines of the violence evaluation: motion energy and optical-flow statistics.

Both see exactly the windows the model sees (the pipeline's window node output: 16 frames at 8 fps,
112x112), so a difference in figures comes from the method, not from its input.

- *Motion energy*: mean absolute grey frame difference over a window's new frames; it has no
  calibrated scale, so its alert threshold is fitted on the training folds.
- *Optical-flow logistic regression*: dense Farneback flow between consecutive frames (OpenCV), 16
  statistics per window (magnitude mean/spread/percentiles, share of moving pixels, direction
  histogram entropy, temporal change of the flow field), standardised, and an L2-regularised logistic
  regression (scikit-learn) fitted on the training folds' windows with their clip's label.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .violence_clips import StreamScorer, StreamWindows


def new_frame_mask(w: StreamWindows) -> np.ndarray:
    """(W, T) True where a window's frame lies in media time no earlier window covered."""
    n_win, n_frames = w.frames.shape[:2]
    times = w.t0[:, None] + np.arange(n_frames)[None, :] / w.fps
    prev_t1 = np.r_[-np.inf, w.t1[:-1]]
    return np.asarray(times >= prev_t1[:, None] - 1e-6)


def motion_energy(w: StreamWindows) -> np.ndarray:
    """Non-learned baseline: mean |grey frame difference| (0..1) over each window's new frames."""
    grey = w.frames.astype(np.float32).mean(axis=-1) / 255.0  # (W, T, H, W)
    diff = np.abs(np.diff(grey, axis=1)).mean(axis=(2, 3))  # (W, T-1): pair (k-1, k)
    new = new_frame_mask(w)[:, 1:]
    scores = np.zeros(len(diff))
    for i in range(len(diff)):
        pick = diff[i][new[i]] if new[i].any() else diff[i]
        scores[i] = float(pick.mean()) if pick.size else 0.0
    return scores


FLOW_FEATURES = 16


def flow_statistics(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) BGR window → (16,) Farneback flow statistics."""
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_BGR2GRAY) for f in frames]
    mags, angs = [], []
    for a, b in zip(grey[:-1], grey[1:], strict=True):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        m, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
        mags.append(m)
        angs.append(ang)
    mag, ang = np.stack(mags), np.stack(angs)
    per_pair = mag.mean(axis=(1, 2))
    bins = np.minimum((ang / (np.pi / 4)).astype(int), 7)
    hist = np.bincount(bins.ravel(), weights=mag.ravel(), minlength=8)[:8]
    hist = hist / (hist.sum() + 1e-9)
    entropy = -(hist * np.log(hist + 1e-9)).sum()
    change = float(np.abs(np.diff(mag, axis=0)).mean()) if len(mag) > 1 else 0.0
    p50, p90, p99 = np.percentile(mag, [50, 90, 99])
    return np.array([per_pair.mean(), per_pair.std(), per_pair.max(), mag.std(), p50, p90, p99,
                     (mag > 0.5).mean(), (mag > 1.0).mean(), (mag > 3.0).mean(), entropy, hist.max(), change,
                     np.log1p(per_pair.mean()), np.log1p(p99), per_pair[-len(per_pair) // 2 :].mean()])


def window_flow_statistics(w: StreamWindows) -> np.ndarray:
    """(W, 16) flow statistics of every window of a stream."""
    return np.stack([flow_statistics(f) for f in w.frames])


class FlowRegression:
    """Logistic regression on flow statistics, fitted on windows labelled with their clip's label."""

    def __init__(self, c: float = 0.1):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    def fit(self, features: Sequence[np.ndarray], labels: Sequence[int]) -> FlowRegression:
        x = np.concatenate(list(features))
        y = np.concatenate([np.full(len(f), lab) for f, lab in zip(features, labels, strict=True)])
        self.model.fit(x, y)
        return self

    def scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(features)[:, 1])

    def scorer(self) -> StreamScorer:
        return lambda w: self.scores(window_flow_statistics(w))
