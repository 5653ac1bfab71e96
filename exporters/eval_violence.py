"""Evaluation protocol of the violence detector (written and tested before any model was trained).

Real footage (``shared/data/fight-surveillance``, development part): clip-level AP and alert
accuracy, estimated by cross-validation over folds of whole source-video groups (``groups.csv``), so
no source video is on both sides of a split. Every clip is cut into AV windows exactly as a pipeline
does it (``engine.capture.open_reader`` → the ``avstream/av_window@v1`` node with the model's window
requirement); a clip's score is the highest window score, and the clip *alerts* when that score
reaches the node's on-threshold (SPEC §4: the alert turns on in the first window whose score passes
it). Each method is measured twice: audio as recorded, and audio replaced by silence for every clip
(silence and missing audio leak the label in this data set, see its README).

Methods: the learned model (trained on the training folds only), the same network with random
weights, and a non-learned motion-energy baseline (mean absolute frame difference of the window's new
frames; its alert threshold is fitted on the training folds, as it has no calibrated scale).

Synthetic scenes (seeds >= 1,000,000, never used for training): frame-level AP, each frame scored by
the first window that covers it (a window's score covers the media time it adds to the stream), as
MACIL-SD repeats each snippet score over its frames.

95% confidence intervals: percentile bootstrap over source-video groups (scenes for the synthetic
figure), ``engine.metrics.bootstrap_ci``.

    avstream eval violence [--folds 5] [--onnx models/violence.onnx] [--json out.json]

The model side comes from ``exporters/recipes/violence.py``: ``window_requirement()`` (the windows the
model takes) and ``Learner(progress=...)`` with ``fit(clips, seed, progress)`` and ``untrained(seed)``
(see :class:`Learner`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np

from avstream.engine.cli_common import examples, reports_errors
from avstream.engine.errors import AvstreamError
from avstream.engine.node import WindowRequirement
from avstream.exporters.metrics import accuracy, average_precision, bootstrap_ci
from avstream.exporters.violence_clips import (
    DEFAULT_DATA,
    Clip,
    ClipData,
    StreamScorer,
    StreamWindows,
    load_clip_windows,
    load_clips,
    windows_of,
)

SYNTH_SEED0 = 1_000_000  # held-out synthetic seeds start here; training uses seeds below
ON_THRESHOLD = 0.5  # the violence node's default on-threshold: learned alerts are measured at it
TARGETS = {"clip_ap": 0.85, "accuracy": 0.75, "frame_ap": 0.9}


class Learner(Protocol):
    """What the protocol needs from a trainable model (the recipe implements it)."""

    def fit(self, clips: Sequence[ClipData], seed: int, progress: Callable[[str], None]) -> StreamScorer:
        """Train on these clips only; return the trained model's scorer."""
        ...

    def untrained(self, seed: int) -> StreamScorer:
        """The same network with random (initial) weights."""
        ...


def grouped_folds(groups: Sequence[str] | np.ndarray, labels: Sequence[int] | np.ndarray, k: int = 5,
                  seed: int = 0) -> list[np.ndarray]:
    """``k`` test folds (clip indices) of whole groups, about equal in size and in share of positives.

    Groups are shuffled with ``seed``, then placed largest first into the fold with the fewest clips
    (ties: the fold whose positive share the group moves closest to the overall share).
    """
    g = np.asarray(groups)
    y = np.asarray(labels, dtype=np.float64)
    uniq = np.unique(g)
    if k < 2 or k > len(uniq):
        raise ValueError(f"need 2 <= k <= number of groups ({len(uniq)}), got k={k}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(uniq)
    sizes = {u: int((g == u).sum()) for u in shuffled}
    order = sorted(shuffled, key=lambda u: -sizes[u])  # stable: shuffled order among equal sizes
    share = y.mean()
    count = np.zeros(k)
    pos = np.zeros(k)
    members: list[list[str]] = [[] for _ in range(k)]
    for u in order:
        n, p = sizes[u], float(y[g == u].sum())
        least = np.flatnonzero(count == count.min())
        best = min(least, key=lambda f: abs((pos[f] + p) / (count[f] + n) - share))
        members[best].append(u)
        count[best] += n
        pos[best] += p
    return [np.flatnonzero(np.isin(g, m)) for m in members]


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


def clip_score(scorer: StreamScorer, w: StreamWindows) -> float:
    """A clip's score: its highest window score (it alerts iff that reaches the on-threshold)."""
    s = np.asarray(scorer(w), dtype=np.float64).reshape(-1)
    if len(s) != len(w.t0):
        raise ValueError(f"scorer returned {len(s)} scores for {len(w.t0)} windows")
    return float(s.max())


def frame_scores(t1: np.ndarray, window_scores: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Score of each frame time: that of the first window ending after it (the last window's beyond)."""
    idx = np.searchsorted(np.asarray(t1) - 1e-9, np.asarray(times), side="right")
    return np.asarray(window_scores)[np.minimum(idx, len(t1) - 1)]


def fit_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold (score >= it alerts) with the best accuracy: midpoints between sorted scores."""
    s = np.unique(scores)
    cands = np.r_[s[0] - 1.0, (s[:-1] + s[1:]) / 2, s[-1] + 1.0]
    accs = [accuracy(labels, (scores >= c).astype(int)) for c in cands]
    return float(cands[int(np.argmax(accs))])


@dataclass
class Figure:
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def with_ci(stat: Callable[[np.ndarray], float], n: int, groups: np.ndarray, rounds: int = 1000) -> Figure:
    lo, hi = bootstrap_ci(stat, n, groups=groups, rounds=rounds, seed=0)
    return Figure(stat(np.arange(n)), lo, hi)


def clip_figures(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, groups: np.ndarray,
                 rounds: int = 1000) -> dict[str, Figure]:
    """Clip AP and alert accuracy (score >= the clip's fold threshold) with grouped bootstrap CIs."""
    pred = (scores >= thresholds).astype(int)
    return {
        "clip_ap": with_ci(lambda i: average_precision(labels[i], scores[i]), len(labels), groups, rounds),
        "accuracy": with_ci(lambda i: accuracy(labels[i], pred[i]), len(labels), groups, rounds),
    }


def cross_validate(data: Sequence[ClipData], learner: Learner | None, folds: int = 5, seed: int = 0,
                   progress: Callable[[str], None] = print, rounds: int = 1000) -> dict[str, Any]:
    """Out-of-fold clip scores of each method and audio condition, and their figures.

    Returns ``{"rows": {(method, audio): {"clip_ap": Figure, "accuracy": Figure}}, "scores": ...,
    "folds": [...]}``; methods ``learned`` and ``random`` need ``learner``, ``motion`` does not.
    """
    labels = np.array([d.clip.label for d in data])
    groups = np.array([d.clip.group for d in data])
    fold_ix = grouped_folds(groups, labels, folds, seed)
    conditions = {"recorded": lambda w: w, "silenced": StreamWindows.silenced}
    motion = np.array([float(motion_energy(d.windows).max()) for d in data])
    scores: dict[tuple[str, str], np.ndarray] = {}
    thresholds: dict[tuple[str, str], np.ndarray] = {}
    for cond in conditions:
        scores[("motion", cond)] = motion  # video only: audio does not change it
        thr = np.zeros(len(data))
        for test in fold_ix:
            train = np.setdiff1d(np.arange(len(data)), test)
            thr[test] = fit_threshold(labels[train], motion[train])
        thresholds[("motion", cond)] = thr
    if learner is not None:
        for method in ("learned", "random"):
            for cond in conditions:
                scores[(method, cond)] = np.zeros(len(data))
                thresholds[(method, cond)] = np.full(len(data), ON_THRESHOLD)
        for f, test in enumerate(fold_ix):
            train = np.setdiff1d(np.arange(len(data)), test)
            t0 = time.perf_counter()
            progress(f"fold {f + 1}/{folds}: training on {len(train)} clips, testing on {len(test)} "
                     f"({len(np.unique(groups[test]))} groups)")
            scorers = {"learned": learner.fit([data[i] for i in train], seed + f, progress),
                       "random": learner.untrained(seed + f)}
            for method, scorer in scorers.items():
                for cond, change in conditions.items():
                    for i in test:
                        scores[(method, cond)][i] = clip_score(scorer, change(data[i].windows))
            progress(f"fold {f + 1}/{folds} done in {time.perf_counter() - t0:.0f} s")
    rows = {key: clip_figures(labels, s, thresholds[key], groups, rounds) for key, s in scores.items()}
    return {"rows": rows, "scores": scores, "thresholds": thresholds, "folds": fold_ix,
            "labels": labels, "groups": groups}


# --------------------------------------------------------------------------------------------------
# synthetic scenes
@dataclass
class Scene:
    seed: int
    windows: StreamWindows
    times: np.ndarray  # frame times at the model's frame rate
    labels: np.ndarray  # 1 inside a violence event


def synthetic_scenes(req: WindowRequirement, n: int = 24, seed0: int = SYNTH_SEED0, duration: float = 16.0) -> list[Scene]:
    """``n`` held-out scenes as ``sample://demo`` renders them (640x360, 25 fps), every other one with violence."""
    from avstream.engine.capture.schemes import open_reader

    if seed0 < SYNTH_SEED0:
        raise ValueError(f"held-out synthetic seeds start at {SYNTH_SEED0}, got {seed0}")
    scenes = []
    for i in range(n):
        seed = seed0 + i
        uri = f"synthetic://scene?seed={seed}&duration={duration:g}&violence={'true' if i % 2 == 0 else 'false'}"
        w = windows_of(uri, req, stream=f"s{seed}")
        with open_reader(uri, stream="truth") as r:
            truth = r.truth or {}
        times = np.arange(int(round(duration * req.fps))) / req.fps
        lab = np.zeros(len(times), np.int64)
        for e in truth.get("events", []):
            if e["kind"] == "violence":
                lab[(times >= e["t0"]) & (times < e["t1"])] = 1
        scenes.append(Scene(seed, w, times, lab))
    return scenes


def synthetic_frame_ap(scorer: StreamScorer, scenes: Sequence[Scene], rounds: int = 1000) -> Figure:
    """Frame-level AP over all scenes' frames, CI by resampling scenes."""
    labels, scores, groups = [], [], []
    for k, sc in enumerate(scenes):
        s = np.asarray(scorer(sc.windows), dtype=np.float64).reshape(-1)
        scores.append(frame_scores(sc.windows.t1, s, sc.times))
        labels.append(sc.labels)
        groups.append(np.full(len(sc.times), k))
    y, s, g = np.concatenate(labels), np.concatenate(scores), np.concatenate(groups)
    return with_ci(lambda i: average_precision(y[i], s[i]), len(y), g, rounds)


def node_scorer(model: str, type_id: str = "avstream/violence@v1") -> StreamScorer:
    """The released model as a pipeline runs it: the violence node's ``score`` field per window."""
    import logging
    import threading

    from avstream.engine.items import AVWindow, Result
    from avstream.engine.node import NodeContext
    from avstream.engine.runtime.registry import load_registry

    cls = load_registry().get(type_id)

    def score(w: StreamWindows) -> np.ndarray:
        ctx = NodeContext(node_id="violence", streams=("s",), base_dir=Path.cwd(), stop_event=threading.Event(),
                          logger=logging.getLogger("avstream.eval"))
        node = cls(ctx, cls.Params.model_validate({"model": model, "providers": ["cpu"], "threads": 1}))
        node.on_start()
        out = []
        for i in range(len(w.t0)):
            win = AVWindow("s", float(w.t0[i]), float(w.t1[i]), 0.0, w.frames[i], w.audio[i], w.fps, 16000)
            res = [r for r in node.process(win) if isinstance(r, Result)]
            out.append(float(res[0].fields["score"]))
        node.on_stop()
        return np.array(out)

    return score


# --------------------------------------------------------------------------------------------------
# report
def format_table(cv: dict[str, Any] | None, synth: dict[str, Figure] | None, n_clips: int = 0) -> str:
    lines = []
    if cv is not None:
        lines.append(f"real clips, {len(cv['folds'])}-fold cross-validation by source group ({n_clips} clips); "
                     "95% CI: bootstrap over groups")
        lines.append(f"{'method':<10} {'audio':<9} {'clip AP':<24} {'alert accuracy':<24}")
        for (method, cond), row in cv["rows"].items():
            lines.append(f"{method:<10} {cond:<9} {row['clip_ap']!s:<24} {row['accuracy']!s:<24}")
    if synth is not None:
        lines.append("synthetic scenes (held-out seeds >= 1,000,000): frame-level AP, 95% CI over scenes")
        for method, fig in synth.items():
            lines.append(f"{method:<20} {fig}")
    lines.append("targets: " + ", ".join(f"{k} >= {v:g}" for k, v in TARGETS.items()))
    return "\n".join(lines)


def target_lines(cv: dict[str, Any] | None, synth: dict[str, Figure] | None) -> list[str]:
    """Each target against its figure, met or not."""
    out = []
    if cv is not None:
        for cond in ("recorded", "silenced"):
            row = cv["rows"].get(("learned", cond))
            if row is None:
                continue
            for key in ("clip_ap", "accuracy"):
                v = row[key].value
                out.append(f"learned/{cond} {key} {v:.3f} vs target {TARGETS[key]:g}: "
                           f"{'met' if v >= TARGETS[key] else 'NOT met'}")
    if synth is not None and "learned" in synth:
        v = synth["learned"].value
        base = synth.get("motion")
        out.append(f"synthetic frame AP {v:.3f} vs target {TARGETS['frame_ap']:g}: "
                   f"{'met' if v >= TARGETS['frame_ap'] else 'NOT met'}"
                   + (f"; motion baseline {base.value:.3f}" if base else ""))
    return out


def _jsonable(cv: dict[str, Any] | None, synth: dict[str, Figure] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cv is not None:
        out["cv"] = {f"{m}/{c}": {k: vars(f) for k, f in row.items()} for (m, c), row in cv["rows"].items()}
    if synth is not None:
        out["synthetic_frame_ap"] = {k: vars(f) for k, f in synth.items()}
    return out


@click.command("violence", epilog=examples("avstream eval violence --scenes 0 --json cv.json",
                                            "avstream eval violence --no-cv --scenes 24"))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=DEFAULT_DATA,
              help="fight-surveillance development folder  [default: shared/data/fight-surveillance]")
@click.option("--folds", type=int, default=5, show_default=True, help="cross-validation folds (whole source groups)")
@click.option("--seed", type=int, default=0, show_default=True, help="fold assignment and training seed")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=Path(".cache/violence"), show_default=True,
              help="cache of decoded windows")
@click.option("--scenes", "n_scenes", type=int, default=24, show_default=True, help="held-out synthetic scenes (0: skip)")
@click.option("--onnx", default="builtin:violence", show_default=True, help="released model for the synthetic "
              "figure ('': train one on all clips instead)")
@click.option("--no-cv", is_flag=True, help="skip the cross-validation on real clips")
@click.option("--baseline-only", is_flag=True, help="motion baseline only (no training)")
@click.option("--rounds", type=int, default=1000, show_default=True, help="bootstrap rounds")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="also write the figures here")
@reports_errors("avstream eval violence")
def violence_command(data_dir: Path, folds: int, seed: int, cache_dir: Path, n_scenes: int, onnx: str, no_cv: bool,
                     baseline_only: bool, rounds: int, json_path: Path | None) -> int:
    """Violence detection: grouped CV and frame AP.

    Clip-level AP and alert accuracy by cross-validation over whole source-video groups of the real
    clips (audio as recorded and silenced), and frame-level AP on held-out synthetic scenes; the
    learned model next to the same network with random weights and a motion-energy baseline.
    """

    def say(msg: str) -> None:
        print(f"[eval] {msg}", flush=True)

    from .recipes import violence as recipe  # the model's window requirement and learner

    req = recipe.window_requirement()
    learner: Learner | None = None if baseline_only else recipe.Learner(progress=say)
    t_start = time.perf_counter()
    cv = None
    clips: list[Clip] = []
    if not no_cv:
        if not data_dir.is_dir():
            raise AvstreamError(f"{data_dir}: data folder not found")
        clips = load_clips(data_dir)
        data = load_clip_windows(clips, req, cache_dir, say)
        cv = cross_validate(data, learner, folds, seed, say, rounds)
    synth = None
    if n_scenes > 0:
        say(f"rendering {n_scenes} held-out synthetic scenes ...")
        scenes = synthetic_scenes(req, n_scenes)
        synth = {"motion": synthetic_frame_ap(motion_energy, scenes, rounds)}
        if learner is not None:
            if onnx:
                synth["learned"] = synthetic_frame_ap(node_scorer(onnx), scenes, rounds)
            else:
                all_data = load_clip_windows(clips or load_clips(data_dir), req, cache_dir, say)
                synth["learned"] = synthetic_frame_ap(learner.fit(all_data, seed, say), scenes, rounds)
            synth["random"] = synthetic_frame_ap(learner.untrained(seed), scenes, rounds)
    print(format_table(cv, synth, len(clips)))
    for line in target_lines(cv, synth):
        print(line)
    print(f"evaluation took {time.perf_counter() - t_start:.0f} s")
    if json_path is not None:
        json_path.write_text(json.dumps(_jsonable(cv, synth), indent=1))
    return 0
