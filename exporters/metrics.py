"""Evaluation metrics of the four tasks (numpy only), as published methods define them.

Written and tested on hand-made cases before any model is trained; models are measured with these
and the code is not changed to suit a model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from avstream.engine.inference.decoder_contract import tokenize


def average_precision(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Non-interpolated AP (area under the precision-recall curve as in sklearn); nan without positives.

    Tied scores are ranked as one block, so the result does not depend on input order.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    # thresholds at each distinct score
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / positives
    prev_recall = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev_recall) * precision))


def precision_at_k(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, k: int = 5) -> float:
    """Share of positives among the k highest scores (stable order for ties)."""
    y = np.asarray(labels)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")[:k]
    return float(y[order].mean()) if len(order) else float("nan")


def accuracy(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


# --- sound-source localization (EZ-VSL protocol) ---

def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean mask of a normalised [x0, y0, x1, y1] box on an height x width grid."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), bool)
    c0, c1 = int(math.floor(x0 * width)), int(math.ceil(x1 * width))
    r0, r1 = int(math.floor(y0 * height)), int(math.ceil(y1 * height))
    mask[max(r0, 0):min(r1, height), max(c0, 0):min(c1, width)] = True
    return mask


def ciou(heatmap: np.ndarray, gt_mask: np.ndarray, threshold: float | None = None) -> float:
    """cIoU of one heatmap vs the ground-truth mask.

    The heatmap is min-max normalised; without ``threshold`` the adaptive threshold of EZ-VSL is used:
    the top cells whose count equals the ground-truth area (the median-free form used in the
    reference evaluation), so the score measures where the map points, not its scale.
    """
    h = heatmap.astype(np.float64)
    span = h.max() - h.min()
    h = (h - h.min()) / span if span > 0 else np.zeros_like(h)
    if threshold is None:
        area = int(gt_mask.sum())
        if area == 0:
            return 0.0
        cut = np.sort(h.ravel())[::-1][min(area, h.size) - 1]
        pred = h >= cut
    else:
        pred = h > threshold
    inter = np.logical_and(pred, gt_mask).sum()
    union = np.logical_or(pred, gt_mask).sum()
    return float(inter / union) if union else 0.0


def ciou_summary(cious: Sequence[float]) -> tuple[float, float]:
    """(cIoU@0.5 = share of frames with cIoU >= 0.5, AUC of that share over thresholds 0..1)."""
    values = np.asarray(cious, dtype=np.float64)
    thresholds = np.linspace(0.0, 1.0, 21)
    shares = np.array([(values >= t).mean() for t in thresholds])
    # trapezoid rule, written out: numpy renamed trapz -> trapezoid between versions
    auc = float(np.sum((shares[1:] + shares[:-1]) / 2 * np.diff(thresholds)))
    return float((values >= 0.5).mean()), auc


# --- captions ---


def bleu4(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
    """Corpus BLEU-4 (uniform weights, brevity penalty, no smoothing), multiple references each."""
    clipped = [0] * 4
    totals = [0] * 4
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses, strict=True):
        h = tokenize(hyp)
        rs = [tokenize(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1] if rs else 0
        for n in range(1, 5):
            grams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            best: Counter[tuple[str, ...]] = Counter()
            for r in rs:
                best |= Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            clipped[n - 1] += sum(min(c, best[g]) for g, c in grams.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(clipped) == 0:
        return 0.0
    log_p = sum(math.log(c / t) for c, t in zip(clipped, totals, strict=True)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return float(bp * math.exp(log_p))


def event_word_f1(truth_words: Sequence[set[str]], hypotheses: Sequence[str], vocabulary: set[str]) -> float:
    """Micro F1 of the sound-event words (from ``vocabulary``) a caption mentions vs the truth."""
    tp = fp = fn = 0
    for truth, hyp in zip(truth_words, hypotheses, strict=True):
        said = set(tokenize(hyp)) & vocabulary
        tp += len(said & truth)
        fp += len(said - truth)
        fn += len(truth - said)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


# --- uncertainty ---

def bootstrap_ci(values: Callable[[np.ndarray], float], n: int, groups: np.ndarray | None = None,
                 rounds: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of a statistic over ``n`` items, resampling whole groups when given.

    ``values(indices)`` computes the statistic on the items at ``indices``.
    """
    rng = np.random.default_rng(seed)
    stats = []
    if groups is None:
        groups = np.arange(n)
    unique = np.unique(groups)
    members = {g: np.flatnonzero(groups == g) for g in unique}
    for _ in range(rounds):
        pick = rng.choice(unique, size=len(unique), replace=True)
        idx = np.concatenate([members[g] for g in pick])
        v = values(idx)
        if not math.isnan(v):
            stats.append(v)
    lo, hi = np.percentile(stats, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
