"""Operating points of the violence detector, chosen on out-of-fold clip scores (grouped CV).

Two points, both stored in the model's metadata under ``operating_points`` and read by the violence
node (``on_threshold``/``off_threshold`` default to the point named by its ``operating_point`` param):

- ``accuracy``: the on-threshold with the best alert accuracy over the clips;
- ``low_false_alarm``: the lowest on-threshold at which at most ``rate`` of the non-violent clips
  alert (a stated false-alarm rate per clip; the model card turns it into alerts per hour of calm
  footage from the continuous-footage evaluation).

The off-threshold keeps the node's former ratio (0.35 / 0.5): the alert needs a clear drop to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import accuracy

OFF_RATIO = 0.7
LOW_FALSE_ALARM_RATE = 0.05


def best_accuracy_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (score >= it alerts) with the best accuracy: midpoints between sorted scores
    (ties: the highest such threshold, fewer alarms)."""
    s = np.unique(scores)
    cands = np.r_[s[0] - 1e-3, (s[:-1] + s[1:]) / 2, s[-1] + 1e-3]
    accs = np.array([accuracy(labels, (scores >= c).astype(int)) for c in cands])
    best = np.flatnonzero(accs == accs.max())
    return float(np.clip(cands[best[-1]], 0.0, 1.0))


def false_alarm_threshold(labels: np.ndarray, scores: np.ndarray, rate: float = LOW_FALSE_ALARM_RATE) -> float:
    """The lowest threshold at which at most ``rate`` of the label-0 clips score at or above it."""
    calm = np.sort(np.asarray(scores)[np.asarray(labels) == 0])[::-1]
    if len(calm) == 0:
        raise ValueError("no non-violent clip to calibrate a false-alarm rate on")
    allowed = int(np.floor(rate * len(calm)))  # clips that may alert
    if allowed >= len(calm):
        return 0.0
    above = calm[allowed]  # the highest calm score that must stay under the threshold
    nxt = calm[allowed - 1] if allowed > 0 else min(1.0, above + 0.02)
    return float(np.clip((above + nxt) / 2 if nxt > above else above + 1e-4, 0.0, 1.0))


def false_alarm_share(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    calm = np.asarray(scores)[np.asarray(labels) == 0]
    return float((calm >= threshold).mean()) if len(calm) else 0.0


def operating_points(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
                     rate: float = LOW_FALSE_ALARM_RATE) -> dict[str, dict[str, Any]]:
    """Both operating points with what they give on these (out-of-fold) scores."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    points = {}
    for name, thr in (("accuracy", best_accuracy_threshold(y, s)), ("low_false_alarm", false_alarm_threshold(y, s, rate))):
        points[name] = {"on_threshold": round(thr, 4), "off_threshold": round(thr * OFF_RATIO, 4),
                        "clip_accuracy": round(accuracy(y, (s >= thr).astype(int)), 4),
                        "clip_false_alarm_share": round(false_alarm_share(y, s, thr), 4),
                        "detected_share": round(float((s[y == 1] >= thr).mean()) if (y == 1).any() else 0.0, 4)}
    points["low_false_alarm"]["target_false_alarm_share"] = rate
    return points
