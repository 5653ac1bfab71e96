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
from avstream.exporters.violence_baselines import (
    FlowRegression,
    motion_energy,
    window_flow_statistics,
)
from avstream.exporters.violence_calibration import OFF_RATIO, best_accuracy_threshold, operating_points
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
from avstream.exporters.violence_continuous import ContinuousFigures, evaluate, join, pooled

SYNTH_SEED0 = 1_000_000  # held-out synthetic seeds start here; training uses seeds below
ON_THRESHOLD = 0.5  # the violence node's default on-threshold: learned alerts are measured at it
TARGETS = {"clip_ap": 0.88, "accuracy": 0.80, "frame_ap": 0.9, "ap_over_flow": 0.05}
HOLD_S, HOP_S = 2.0, 0.5  # the violence node's default hold and the model's hop


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


def _nested_thresholds(labels: np.ndarray, scores: np.ndarray, fold_ix: Sequence[np.ndarray],
                       pick: Callable[[np.ndarray, np.ndarray], float]) -> np.ndarray:
    """Each test clip's threshold chosen on the out-of-fold scores of the clips outside its fold."""
    thr = np.zeros(len(labels))
    for test in fold_ix:
        others = np.setdiff1d(np.arange(len(labels)), test)
        thr[test] = pick(labels[others], scores[others])
    return thr


def cross_validate(data: Sequence[ClipData], learner: Learner | None, folds: int = 5, seed: int = 0,
                   progress: Callable[[str], None] = print, rounds: int = 1000, hold_s: float = HOLD_S,
                   continuous: bool = True) -> dict[str, Any]:
    """Out-of-fold clip scores of each method and audio condition, their figures, and the
    continuous-footage figures (the fold's clips joined back to back).

    Methods: ``motion`` and ``flow`` (baselines; their thresholds fitted on the training folds), and,
    with a ``learner``, ``learned`` and ``random`` (same network, initial weights), whose on-thresholds
    are the ``accuracy`` operating point chosen on the other folds' out-of-fold scores, as the released
    model's are chosen on all of them. Returns ``{"rows": {(method, audio): {"clip_ap", "accuracy",
    "false_alarm_share"}}, "continuous": {(method, audio): ContinuousFigures}, "operating_points": ...,
    "scores", "thresholds", "folds", ...}``.
    """
    labels = np.array([d.clip.label for d in data])
    groups = np.array([d.clip.group for d in data])
    fold_ix = grouped_folds(groups, labels, folds, seed)
    conditions: dict[str, Callable[[StreamWindows], StreamWindows]] = {"recorded": lambda w: w,
                                                                       "silenced": StreamWindows.silenced}
    scores: dict[tuple[str, str], np.ndarray] = {}
    thresholds: dict[tuple[str, str], np.ndarray] = {}
    fold_scorers: dict[str, list[StreamScorer]] = {"motion": [motion_energy] * len(fold_ix), "flow": []}
    motion = np.array([float(motion_energy(d.windows).max()) for d in data])
    t0 = time.perf_counter()
    flow_feats = [window_flow_statistics(d.windows) for d in data]
    progress(f"optical-flow statistics of {len(data)} clips in {time.perf_counter() - t0:.0f} s")
    flow = np.zeros(len(data))
    thr_motion, thr_flow = np.zeros(len(data)), np.zeros(len(data))
    for test in fold_ix:
        train = np.setdiff1d(np.arange(len(data)), test)
        thr_motion[test] = fit_threshold(labels[train], motion[train])
        reg = FlowRegression().fit([flow_feats[i] for i in train], labels[train].tolist())
        fold_scorers["flow"].append(reg.scorer())
        flow[test] = [reg.scores(flow_feats[i]).max() for i in test]
        thr_flow[test] = fit_threshold(labels[train], np.array([reg.scores(flow_feats[i]).max() for i in train]))
    for cond in conditions:  # video only: audio does not change them
        scores[("motion", cond)], thresholds[("motion", cond)] = motion, thr_motion
        scores[("flow", cond)], thresholds[("flow", cond)] = flow, thr_flow
    if learner is not None:
        fold_scorers["learned"], fold_scorers["random"] = [], []
        for method in ("learned", "random"):
            for cond in conditions:
                scores[(method, cond)] = np.zeros(len(data))
        for f, test in enumerate(fold_ix):
            train = np.setdiff1d(np.arange(len(data)), test)
            t0 = time.perf_counter()
            progress(f"fold {f + 1}/{folds}: training on {len(train)} clips, testing on {len(test)} "
                     f"({len(np.unique(groups[test]))} groups)")
            scorers = {"learned": learner.fit([data[i] for i in train], seed + f, progress),
                       "random": learner.untrained(seed + f)}
            for method, scorer in scorers.items():
                fold_scorers[method].append(scorer)
                for cond, change in conditions.items():
                    for i in test:
                        scores[(method, cond)][i] = clip_score(scorer, change(data[i].windows))
            progress(f"fold {f + 1}/{folds} done in {time.perf_counter() - t0:.0f} s")
        for method in ("learned", "random"):
            for cond in conditions:
                thresholds[(method, cond)] = _nested_thresholds(labels, scores[(method, cond)], fold_ix,
                                                                best_accuracy_threshold)
    rows = {key: clip_figures(labels, s, thresholds[key], groups, rounds) for key, s in scores.items()}
    for key, row in rows.items():
        alerts = scores[key] >= thresholds[key]

        def calm_alerting(i: np.ndarray, alerts: np.ndarray = alerts) -> float:
            calm = labels[i] == 0
            return float(alerts[i][calm].mean()) if calm.any() else 0.0

        row["false_alarm_share"] = with_ci(calm_alerting, len(labels), groups, rounds)
    out: dict[str, Any] = {"rows": rows, "scores": scores, "thresholds": thresholds, "folds": fold_ix,
                           "labels": labels, "groups": groups, "hold_s": hold_s}
    if learner is not None:
        out["operating_points"] = {cond: operating_points(labels, scores[("learned", cond)]) for cond in conditions}
    if continuous:
        out["continuous"] = continuous_figures(data, fold_ix, fold_scorers, thresholds, conditions, seed, hold_s)
    return out


def continuous_figures(data: Sequence[ClipData], fold_ix: Sequence[np.ndarray],
                       fold_scorers: dict[str, list[StreamScorer]], thresholds: dict[tuple[str, str], np.ndarray],
                       conditions: dict[str, Callable[[StreamWindows], StreamWindows]], seed: int,
                       hold_s: float) -> dict[tuple[str, str], ContinuousFigures]:
    """Each fold's test clips joined in a seeded random order, scored by that fold's scorers, and the
    node's hysteresis at that fold's thresholds; figures pooled over folds."""
    labels = [d.clip.label for d in data]
    per: dict[tuple[str, str], list[ContinuousFigures]] = {}
    hop_frames = max(1, int(round(HOP_S * data[0].windows.fps)))
    for f, test in enumerate(fold_ix):
        order = np.random.default_rng(seed + 1000 + f).permutation(len(test))
        stream = join([data[i].windows for i in test], [labels[i] for i in test], order.tolist(), hop_frames)
        for method, scorers in fold_scorers.items():
            for cond, change in conditions.items():
                if method in ("motion", "flow") and cond == "silenced":
                    continue  # video only: the recorded figures hold for both
                on = float(thresholds[(method, cond)][test][0])
                s = np.asarray(scorers[f](change(stream.windows)), dtype=np.float64).reshape(-1)
                per.setdefault((method, cond), []).append(evaluate(stream, s, on, on * OFF_RATIO, hold_s, HOP_S))
    return {key: pooled(figs) for key, figs in per.items()}


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
                     "95% CI: bootstrap over groups; accuracy and false alarms at each method's own thresholds "
                     "(learned/random: the accuracy operating point chosen on the other folds)")
        lines.append(f"{'method':<10} {'audio':<9} {'clip AP':<24} {'alert accuracy':<24} {'calm clips alerting':<24}")
        for (method, cond), row in cv["rows"].items():
            lines.append(f"{method:<10} {cond:<9} {row['clip_ap']!s:<24} {row['accuracy']!s:<24} "
                         f"{row['false_alarm_share']!s:<24}")
    if cv is not None and cv.get("continuous"):
        lines.append(f"continuous footage (each fold's clips joined back to back; node hysteresis, hold_s "
                     f"{cv['hold_s']:g}):")
        lines.append(f"{'method':<10} {'audio':<9} {'accuracy':>8} {'fights':>7} {'calm+alert':>10} "
                     f"{'bleed>hold':>10} {'max bleed':>9} {'FA/hour':>8} {'inside AP':>9}")
        for (method, cond), c in cv["continuous"].items():
            lines.append(f"{method:<10} {cond:<9} {c.accuracy:>8.3f} {c.fight_detected:>7.3f} {c.calm_with_alert:>10.3f} "
                         f"{c.bleed_over_hold:>10.3f} {c.max_bleed_s:>8.1f}s {c.false_alarms_per_hour:>8.1f} "
                         f"{c.inside_ap:>9.3f}")
    if cv is not None and cv.get("operating_points"):
        for cond, points in cv["operating_points"].items():
            for name, pt in points.items():
                lines.append(f"operating point {name} ({cond}): on {pt['on_threshold']:.4f} off {pt['off_threshold']:.4f}"
                             f" — clip accuracy {pt['clip_accuracy']:.3f}, calm clips alerting "
                             f"{pt['clip_false_alarm_share']:.3f}, fights alerting {pt['detected_share']:.3f}")
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
        flow = cv["rows"].get(("flow", "recorded"))
        for cond in ("recorded", "silenced"):
            row = cv["rows"].get(("learned", cond))
            if row is None:
                continue
            for key in ("clip_ap", "accuracy"):
                v = row[key].value
                out.append(f"learned/{cond} {key} {v:.3f} vs target {TARGETS[key]:g}: "
                           f"{'met' if v >= TARGETS[key] else 'NOT met'}")
            if flow is not None:
                gain = row["clip_ap"].value - flow["clip_ap"].value
                out.append(f"learned/{cond} clip AP over the optical-flow baseline {gain:+.3f} vs target "
                           f"+{TARGETS['ap_over_flow']:g}: {'met' if gain >= TARGETS['ap_over_flow'] else 'NOT met'}")
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
        if cv.get("continuous"):
            out["continuous"] = {f"{m}/{c}": {**vars(f), "false_alarms_per_hour": f.false_alarms_per_hour}
                                 for (m, c), f in cv["continuous"].items()}
        if cv.get("operating_points"):
            out["operating_points"] = cv["operating_points"]
        out["oof_scores"] = {f"{m}/{c}": [round(float(x), 6) for x in v] for (m, c), v in cv["scores"].items()}
        out["labels"] = [int(x) for x in cv["labels"]]
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
        if learner is not None and folds == 5:  # what `avstream export --recipe violence` would compute
            path = recipe.operating_points_path(cache_dir, recipe.STEPS, seed, len(data))
            recipe.save_operating_points(cv["operating_points"]["recorded"], path, len(data))
            say(f"operating points for the released model written to {path}")
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
