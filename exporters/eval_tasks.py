"""Benchmark of the localization and highlight models on held-out synthetic scenes.

    avstream eval localization [--model M] [--clips N] [--no-random] [--json PATH]
    avstream eval highlight [--model M] [--clips N] [--no-random] [--no-prior] [--json PATH]

The protocol is fixed here, before any model is trained, and is not changed to suit a model:

- Data: procedural scenes of ``avstream.engine.synthetic`` (generator ``GENERATOR``), 640x360 at
  25 fps, 16 kHz, seeds >= 1,000,000 (training uses seeds below). Localization: ``LOC_SEEDS``,
  ``LOC_SECONDS`` each; highlight: ``HIGH_SEEDS``, ``HIGH_SECONDS`` each.
- Windows are built like the runtime builds them: the synthetic reader feeds the window node
  (``avstream/av_window@v1``) configured from each method's window requirement, and ONNX models run
  through ``engine.inference.Runner``.
- Localization (EZ-VSL protocol): one test frame per window, the window's last frame; its heatmap
  is upsampled (bilinear) to 224x224 and compared with the ground-truth box of the sounding object
  at that frame (``engine.metrics.ciou``, adaptive threshold); cIoU@0.5 and AUC by
  ``engine.metrics.ciou_summary``. Only windows ending at t1 >= ``LOC_MIN_T1`` count, so that every
  method is scored at the same times whatever its window length.
- Highlight: a window is a highlight window when at least ``HIGHLIGHT_SHARE`` of it lies inside the
  scene's highlight events. Scores are the causal per-stream scores of the runtime
  (``plugins.encoders.RollingScore``, the highlight node's default horizon). Per clip: average
  precision (``engine.metrics.average_precision``) and precision of the top-5 windows; both averaged
  over clips (mAP, P@5).
- Highlight scoring v2 (added after the first models, reported next to protocol 1, which stays as
  committed): the highlight node now starts its rolling statistics from a prior of the activation
  (median, spread, counted as ``PRIOR_WINDOWS`` windows). For a like-for-like comparison every
  method's prior is measured here the same way, without labels, on ``CALIB_SEEDS`` (training range);
  the learned model is also scored with the prior in its contract, exactly as the node does.
- Baselines (not learned): highlight = log(audio RMS x mean absolute frame difference) of the
  window; localization = per-cell Pearson correlation between the audio envelope and the pixel
  motion energy over the last 2 s at 12.5 fps. The untrained network of each recipe (random weights,
  ``torch.manual_seed(0)``) runs in the same evaluation.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from avstream.engine.capture.schemes import open_reader
from avstream.engine.cli_common import examples, reports_errors
from avstream.engine.errors import AvstreamError, ModelError
from avstream.engine.items import AVWindow
from avstream.engine.node import NodeContext, WindowRequirement
from avstream.engine.synthetic.scene import GENERATOR_VERSION
from avstream.exporters.metrics import average_precision, box_mask, ciou, ciou_summary, precision_at_k
from avstream.plugins.encoders import HighlightParams, RollingScore, activation_prior
from avstream.plugins.window import AVWindowNode, WindowParams

# --- the fixed protocol ---------------------------------------------------------------------------
PROTOCOL_VERSION = "1"
GENERATOR = "1.0"
SCENE_WIDTH, SCENE_HEIGHT, SCENE_FPS, SCENE_RATE = 640, 360, 25.0, 16000
LOC_SEEDS = tuple(range(1_000_000, 1_000_048))
LOC_SECONDS = 10.0
LOC_MIN_T1 = 2.0
HEAT_SIZE = 224  # heatmaps are upsampled to HEAT_SIZE x HEAT_SIZE, boxes rasterised on the same grid
HIGH_SEEDS = tuple(range(1_000_100, 1_000_140))
HIGH_SECONDS = 30.0
HIGHLIGHT_SHARE = 0.5
TOP_K = 5
CALIB_SEEDS = tuple(range(700_000, 700_008))  # scoring v2: label-free activation priors (training range)
PRIOR_WINDOWS = 30.0
TARGETS = {"localization": {"ciou@0.5": 0.6, "auc": 0.5}, "highlight": {"mAP": 0.85}}

# window of the non-learned localization baseline: 2 s of 12.5 fps frames (every 2nd frame at 25 fps)
LOC_BASELINE_WINDOW = WindowRequirement(seconds=2.0, hop=0.5, fps=12.5, frames=25, height=112, width=112,
                                        sample_rate=16000, audio_samples=32000, source="baseline")
# windows of the non-learned highlight baseline (the highlight model's window: 2 s, hop 1 s, 4 fps)
HIGH_BASELINE_WINDOW = WindowRequirement(seconds=2.0, hop=1.0, fps=4.0, frames=8, height=112, width=112,
                                         sample_rate=16000, audio_samples=32000, source="baseline")


def scene_uri(seed: int, seconds: float) -> str:
    return (f"synthetic://scene?seed={seed}&duration={seconds:g}&width={SCENE_WIDTH}&height={SCENE_HEIGHT}"
            f"&fps={SCENE_FPS:g}&rate={SCENE_RATE}")


# --- windows as the runtime builds them -----------------------------------------------------------
def build_windows(seed: int, seconds: float, reqs: dict[str, WindowRequirement]
                  ) -> tuple[dict[str, Any], dict[str, list[AVWindow]]]:
    """One pass of the synthetic reader through one window node per requirement.

    Returns the scene's ground truth and, per requirement name, its complete windows (the padded
    partial window at the end of the clip is dropped).
    """
    reader = open_reader(scene_uri(seed, seconds), stream="eval", sample_rate=SCENE_RATE)
    if reader.truth is None or reader.truth.get("generator_version") != GENERATOR:
        raise AvstreamError(f"evaluation protocol {PROTOCOL_VERSION} is defined on generator {GENERATOR}, "
                            f"this one is {GENERATOR_VERSION}")
    truth: dict[str, Any] = reader.truth
    nodes = {}
    for name, req in reqs.items():
        ctx = NodeContext(node_id=f"window:{name}", streams=("eval",), base_dir=Path("."),
                          stop_event=threading.Event(), logger=logging.getLogger("avstream.eval"), window=req)
        nodes[name] = AVWindowNode(ctx, WindowParams())
    out: dict[str, list[AVWindow]] = {name: [] for name in reqs}
    with reader:  # one pass, item by item: a whole clip of full-size frames would not fit in memory
        for media in itertools.chain([reader.info], reader.read()):
            for name, node in nodes.items():
                out[name] += [w for w in node.process(media) if isinstance(w, AVWindow)]
    for name, node in nodes.items():
        out[name] += [w for w in node.on_eos("eval") if isinstance(w, AVWindow)]
        out[name] = [w for w in out[name] if w.t1 <= seconds + 1e-6]
    return truth, out


def last_frame_index(window: AVWindow, req: WindowRequirement, native_fps: float = SCENE_FPS) -> int:
    """Index (at ``native_fps``) of the window's last frame, picked as the window node picks it.

    The node keeps the first native frame at or after each point of its absolute ``req.fps`` grid,
    then gives each window grid point ``t0 + k / fps`` the first kept frame at or after it inside
    the window (the last one inside when none is later).
    """
    kept: list[int] = []
    next_keep = 0.0
    k = 0
    while k / native_fps < window.t1:
        t = k / native_fps
        if t + 1e-6 >= next_keep:
            kept.append(k)
            next_keep = (math.floor(t * req.fps + 1e-6) + 1) / req.fps
        k += 1
    inside = [i for i in kept if window.t0 - 1e-6 <= i / native_fps < window.t1 - 1e-6]
    want = window.t0 + (req.frames - 1) / req.fps
    later = [i for i in inside if i / native_fps >= want - 1e-6]
    return later[0] if later else inside[-1]


# --- localization ---------------------------------------------------------------------------------
def heatmap_ciou(heatmap: np.ndarray, box: Sequence[float]) -> float:
    """cIoU of a (h, w) heatmap over the whole frame vs a normalised [x0, y0, x1, y1] box."""
    heat = np.asarray(heatmap, dtype=np.float32)
    up = cv2.resize(heat, (HEAT_SIZE, HEAT_SIZE), interpolation=cv2.INTER_LINEAR)
    return ciou(up, box_mask(box, HEAT_SIZE, HEAT_SIZE))


def motion_correlation_heatmap(frames: np.ndarray, audio: np.ndarray, grid: int = 28) -> np.ndarray:
    """Non-learned localization: per cell, Pearson correlation of pixel motion energy and the audio
    envelope over the window (both per frame interval), negative values clipped to 0.

    ``frames`` (T, H, W, 3) uint8 BGR, ``audio`` (N,) covering the same time span.
    """
    gray = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (grid, grid), interpolation=cv2.INTER_AREA)
                     for f in frames]).astype(np.float32)
    motion = np.abs(np.diff(gray, axis=0))  # (T-1, g, g): change into frame k
    t = len(frames)
    edges = np.linspace(0, len(audio), t + 1).astype(int)
    rms = np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:],
                                                                                        strict=True)])
    env = rms[1:]  # the interval ending at frame k, aligned with the change into frame k
    m = motion - motion.mean(axis=0)
    e = (env - env.mean())[:, None, None]
    denom = np.sqrt((m ** 2).sum(axis=0) * (e ** 2).sum()) + 1e-9
    return np.clip((m * e).sum(axis=0) / denom, 0.0, None).astype(np.float32)


# --- highlight ------------------------------------------------------------------------------------
def highlight_labels(windows: Sequence[AVWindow], events: Sequence[dict[str, Any]],
                     share: float = HIGHLIGHT_SHARE) -> np.ndarray:
    """1 for windows with at least ``share`` of their length inside highlight events."""
    spans = [(e["t0"], e["t1"]) for e in events if e["kind"] == "highlight"]
    out = np.zeros(len(windows), np.int64)
    for i, w in enumerate(windows):
        inside = sum(max(0.0, min(w.t1, b) - max(w.t0, a)) for a, b in spans)
        out[i] = int(inside >= share * (w.t1 - w.t0) - 1e-9)
    return out


def causal_scores(activations: Sequence[float], t1s: Sequence[float],
                  horizon_s: float = HighlightParams.model_fields["horizon_s"].default,
                  prior: tuple[float, float, float] | None = None) -> np.ndarray:
    """The highlight node's scores: each window's activation normalised against the stream's past
    (and the activation ``prior`` (median, scale, windows), when given)."""
    roll = RollingScore(horizon_s, prior=prior)
    return np.array([roll.update(float(t), float(a)) for t, a in zip(t1s, activations, strict=True)])


def energy_motion_activation(frames: np.ndarray, audio: np.ndarray) -> float:
    """Non-learned highlight activation: log(audio RMS x mean absolute frame difference)."""
    rms = float(np.sqrt(np.mean(np.asarray(audio, np.float64) ** 2)))
    f = np.asarray(frames, np.float32)
    motion = float(np.abs(np.diff(f, axis=0)).mean()) if len(f) > 1 else 0.0
    return math.log(rms + 1e-4) + math.log(motion + 1e-3)


def clip_highlight_metrics(labels: np.ndarray, scores: np.ndarray, k: int = TOP_K) -> tuple[float, float]:
    """(AP, precision of the top-k windows) of one clip; nan when it has no highlight window."""
    if labels.sum() == 0:
        return float("nan"), float("nan")
    return average_precision(labels, scores), precision_at_k(labels, scores, k)


# --- methods --------------------------------------------------------------------------------------
@dataclass
class Method:
    """Something scored on windows: ``fn(windows) -> one output per window`` on windows of ``window``."""

    name: str
    window: WindowRequirement
    fn: Callable[[list[AVWindow]], list[Any]]
    info: dict[str, Any] = field(default_factory=dict)
    prior: tuple[float, float, float] | None = None  # the activation prior of the model's contract


def model_method(name: str, path: str | Path, output: str) -> Method:
    """A method running an ONNX model's ``output`` (a contract key) through the runtime's Runner."""
    from avstream.engine.inference.contract import resolve_model
    from avstream.engine.inference.runners import Runner, measure_latency

    resolved = resolve_model(str(path), Path.cwd())
    runner = Runner.open(resolved, providers=("cpu",), threads=1)
    if output not in runner.contract.outputs:
        raise ModelError(f"{resolved}: {runner.contract.ref} has no {output!r} output "
                         f"(outputs: {', '.join(runner.contract.outputs)})")
    graph_name = runner.contract.outputs[output].name

    def fn(windows: list[AVWindow]) -> list[Any]:
        return [o[graph_name] for o in runner.run_windows(windows)]

    info = {"model": runner.contract.ref, "file": str(resolved), "size_kb": round(resolved.stat().st_size / 1e3, 1),
            "latency_ms": round(measure_latency(resolved, runs=30, threads=1), 2)}
    prior = activation_prior(runner.contract) if output == "activation" else None
    return Method(name, runner.contract.window_requirement(), fn, info, prior)


def random_weights_model(recipe: str, out_dir: Path) -> Path:
    """The recipe's untrained network (``torch.manual_seed(0)``) exported to ``out_dir``; needs torch."""
    import importlib

    from .export import export_onnx, import_torch

    torch = import_torch()
    try:
        mod = importlib.import_module(f"avstream.exporters.recipes.{recipe}")
    except ImportError as exc:
        raise ModelError(f"no recipe {recipe!r} for the random-weights model: {exc}") from None
    path = out_dir / f"{recipe}_random.onnx"
    torch.manual_seed(0)
    model = mod.build_model().eval()
    export_onnx(model, None, mod.CONTRACT, path, progress=lambda s: None)
    return path


def _tracks(w: AVWindow) -> tuple[np.ndarray, np.ndarray]:
    """Frames and audio of a baseline window (its requirement asks for both)."""
    assert w.frames is not None and w.audio is not None
    return w.frames, w.audio


def localization_baseline() -> Method:
    return Method("baseline (motion x audio correlation)", LOC_BASELINE_WINDOW,
                  lambda ws: [motion_correlation_heatmap(*_tracks(w)) for w in ws])


def highlight_baseline() -> Method:
    return Method("baseline (audio energy x motion)", HIGH_BASELINE_WINDOW,
                  lambda ws: [energy_motion_activation(*_tracks(w)) for w in ws])


# --- the two benchmarks ---------------------------------------------------------------------------
def evaluate_localization(methods: Sequence[Method], seeds: Sequence[int] = LOC_SEEDS,
                          seconds: float = LOC_SECONDS, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """cIoU@0.5 and AUC per method (also on the scenes with silent distractors)."""
    cious: dict[str, list[float]] = {m.name: [] for m in methods}
    multi: dict[str, list[float]] = {m.name: [] for m in methods}
    t_start = time.perf_counter()
    for n, seed in enumerate(seeds):
        truth, wins = build_windows(seed, seconds, {m.name: m.window for m in methods})
        s = truth["sounding_object"]
        for m in methods:
            ws = [w for w in wins[m.name] if w.t1 >= LOC_MIN_T1 - 1e-6]
            for w, heat in zip(ws, m.fn(ws), strict=True):
                k = min(last_frame_index(w, m.window), truth["num_frames"] - 1)
                value = heatmap_ciou(np.asarray(heat, np.float32), truth["frames"][k]["boxes"][s])
                cious[m.name].append(value)
                if len(truth["objects"]) > 1:
                    multi[m.name].append(value)
        if (n + 1) % 8 == 0 or n + 1 == len(seeds):
            progress(f"localization: {n + 1}/{len(seeds)} clips ({time.perf_counter() - t_start:.0f} s)")
    out: dict[str, Any] = {}
    for m in methods:
        at05, auc = ciou_summary(cious[m.name])
        at05_m, auc_m = ciou_summary(multi[m.name]) if multi[m.name] else (float("nan"), float("nan"))
        out[m.name] = {"ciou@0.5": at05, "auc": auc, "mean_ciou": float(np.mean(cious[m.name])),
                       "frames": len(cious[m.name]), "ciou@0.5 (distractors)": at05_m,
                       "auc (distractors)": auc_m, "frames (distractors)": len(multi[m.name]), **m.info}
    return out


def _activations(m: Method, windows: list[AVWindow]) -> list[float]:
    return [float(np.asarray(a).reshape(-1)[0]) for a in m.fn(windows)]


def calibrate_priors(methods: Sequence[Method], seeds: Sequence[int] = CALIB_SEEDS, seconds: float = HIGH_SECONDS
                     ) -> dict[str, tuple[float, float, float]]:
    """Scoring v2: each method's activation prior (median, 1.4826 MAD, PRIOR_WINDOWS), no labels used."""
    acts: dict[str, list[float]] = {m.name: [] for m in methods}
    for seed in seeds:
        _, wins = build_windows(seed, seconds, {m.name: m.window for m in methods})
        for m in methods:
            acts[m.name] += _activations(m, wins[m.name])
    out = {}
    for name, values in acts.items():
        v = np.asarray(values)
        med = float(np.median(v))
        out[name] = (med, max(1.4826 * float(np.median(np.abs(v - med))), 1e-6), PRIOR_WINDOWS)
    return out


def evaluate_highlight(methods: Sequence[Method], seeds: Sequence[int] = HIGH_SEEDS,
                       seconds: float = HIGH_SECONDS, progress: Callable[[str], None] = print,
                       priors: dict[str, tuple[float, float, float]] | None = None) -> dict[str, Any]:
    """Per-clip AP and top-5 precision of the causal scores, averaged (also split by violence).

    Protocol 1 scoring (``mAP``, ``P@5``): rolling statistics only. With ``priors`` (scoring v2) also
    ``mAP (prior)``, ``P@5 (prior)``, and for a model whose contract has a prior ``mAP (contract prior)``.
    """
    scorings: dict[str, dict[str, tuple[float, float, float] | None]] = {"": {m.name: None for m in methods}}
    if priors is not None:
        scorings[" (prior)"] = {m.name: priors[m.name] for m in methods}
        scorings[" (contract prior)"] = {m.name: m.prior for m in methods if m.prior is not None}
    per: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
    t_start = time.perf_counter()
    for n, seed in enumerate(seeds):
        truth, wins = build_windows(seed, seconds, {m.name: m.window for m in methods})
        violent = any(e["kind"] == "violence" for e in truth["events"])
        for m in methods:
            ws = wins[m.name]
            acts = _activations(m, ws)
            labels = highlight_labels(ws, truth["events"])
            for suffix, prs in scorings.items():
                if m.name not in prs:
                    continue
                scores = causal_scores(acts, [w.t1 for w in ws], prior=prs[m.name])
                ap, p5 = clip_highlight_metrics(labels, scores)
                if not math.isnan(ap):
                    per.setdefault((m.name, suffix), []).append((ap, p5, violent))
        if (n + 1) % 8 == 0 or n + 1 == len(seeds):
            progress(f"highlight: {n + 1}/{len(seeds)} clips ({time.perf_counter() - t_start:.0f} s)")
    out: dict[str, Any] = {}
    for m in methods:
        row: dict[str, Any] = {}
        for suffix in scorings:
            rows = per.get((m.name, suffix))
            if not rows:
                continue
            aps = np.array([r[0] for r in rows])
            p5s = np.array([r[1] for r in rows])
            vi = np.array([r[2] for r in rows], bool)
            row.update({f"mAP{suffix}": float(aps.mean()), f"P@5{suffix}": float(p5s.mean())})
            if suffix == "":
                row.update({"clips": len(rows),
                            "mAP (violence clips)": float(aps[vi].mean()) if vi.any() else float("nan"),
                            "mAP (other clips)": float(aps[~vi].mean()) if (~vi).any() else float("nan")})
        if priors is not None:
            row["prior"] = [round(x, 4) for x in priors[m.name]]
        out[m.name] = {**row, **m.info}
    return out


# --- report and command line ----------------------------------------------------------------------
def format_table(task: str, results: dict[str, Any]) -> list[str]:
    """Plain-text table of one task: one row per method, target check on the first (learned) one."""
    targets = TARGETS[task]
    keys = ["ciou@0.5", "auc", "mean_ciou", "ciou@0.5 (distractors)", "frames"] if task == "localization" else \
        ["mAP", "P@5", "mAP (violence clips)", "mAP (other clips)", "mAP (prior)", "P@5 (prior)",
         "mAP (contract prior)"]
    keys = [k for k in keys if any(k in r for r in results.values())]
    lines = [f"{task}  (targets: {', '.join(f'{k} >= {v:g}' for k, v in targets.items())})",
             f"  {'method':<40}" + "".join(f"{k:>24}" for k in keys) + f"{'latency ms':>12}{'size kB':>10}"]
    for name, r in results.items():
        cells = "".join(f"{r[k]:>24.3f}" if isinstance(r.get(k), float) else f"{r.get(k, '-'):>24}" for k in keys)
        lat = f"{r['latency_ms']:>12.2f}" if "latency_ms" in r else f"{'-':>12}"
        size = f"{r['size_kb']:>10.0f}" if "size_kb" in r else f"{'-':>10}"
        lines.append(f"  {name:<40}{cells}{lat}{size}")
    first = next(iter(results.values()))
    checks = [(k, v) for k, v in targets.items()] + [(k + s, v) for k, v in targets.items()
                                                     for s in (" (prior)", " (contract prior)") if k + s in first]
    verdict = ", ".join(f"{k} {first[k]:.3f} {'>=' if first[k] >= v else '<'} {v:g} "
                        f"({'met' if first[k] >= v else 'NOT met'})" for k, v in checks)
    lines.append(f"  {next(iter(results))}: {verdict}")
    return lines


def _say(msg: str) -> None:
    print(f"[eval] {msg}", flush=True)


def _task_command(task: str, summary: str, example: str) -> click.Command:
    """``avstream eval localization`` and ``avstream eval highlight``: the same options, one task each."""

    @click.command(task, help=f"{summary}\n\nThe learned model, the same network with random weights and a "
                   "baseline, on the task's held-out synthetic scenes (protocol fixed before training).",
                   epilog=examples(example))
    @click.option("--model", default=f"builtin:{task}", show_default=True, help="the model: a path or builtin:NAME")
    @click.option("--clips", type=int, default=0, help="use only the first N evaluation seeds (smoke runs; the "
                  "protocol's figures need all)")
    @click.option("--seconds", type=float, default=0.0, help="clip length override (smoke runs only)")
    @click.option("--no-random", is_flag=True, help="skip the random-weights model (no torch needed)")
    @click.option("--no-prior", is_flag=True, help="highlight: protocol 1 scoring only (no scoring v2)")
    @click.option("--cache-dir", default=".cache/eval", show_default=True,
                  help="where the random-weights model is written")
    @click.option("--json", "json_path", metavar="PATH", help="also write all figures to this JSON file")
    @reports_errors("avstream eval")
    def command(model: str, clips: int, seconds: float, no_random: bool, no_prior: bool, cache_dir: str,
                json_path: str | None) -> int:
        return _run(task, model, clips=clips, seconds=seconds, random_weights=not no_random,
                    prior=not no_prior, cache_dir=Path(cache_dir), json_path=json_path)

    return command


localization_command = _task_command("localization", "Sound-source localization: cIoU@0.5 and AUC.",
                                     "avstream eval localization --clips 8 --no-random")
highlight_command = _task_command("highlight", "Highlight detection: mAP and P@5.",
                                  "avstream eval highlight --model my_highlight.onnx --json highlight.json")


def _run(task: str, model: str, clips: int, seconds: float, random_weights: bool, prior: bool, cache_dir: Path,
         json_path: str | None) -> int:
    if GENERATOR_VERSION != GENERATOR:
        raise AvstreamError(f"evaluation protocol {PROTOCOL_VERSION} is defined on generator {GENERATOR}, "
                            f"this one is {GENERATOR_VERSION}")
    report: dict[str, Any] = {"protocol": PROTOCOL_VERSION, "generator": GENERATOR}
    output = "heatmap" if task == "localization" else "activation"
    methods = [model_method("learned", model, output)]
    if random_weights:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _say(f"{task}: exporting the untrained network (random weights) ...")
        rand = model_method("random weights", random_weights_model(task, cache_dir), output)
        rand.prior = None  # the recipe's contract prior describes the trained network
        methods.append(rand)
    methods.append(localization_baseline() if task == "localization" else highlight_baseline())
    seeds = LOC_SEEDS if task == "localization" else HIGH_SEEDS
    seeds = seeds[:clips] if clips > 0 else seeds
    seconds = seconds or (LOC_SECONDS if task == "localization" else HIGH_SECONDS)
    _say(f"{task}: {len(seeds)} clips of {seconds:g} s (seeds {seeds[0]}..{seeds[-1]}), "
         f"methods: {', '.join(m.name for m in methods)}")
    if task == "localization":
        results = evaluate_localization(methods, seeds, seconds, progress=_say)
    else:
        priors = None
        if prior:
            _say(f"highlight scoring v2: activation priors of every method on {len(CALIB_SEEDS)} unlabelled "
                 f"training-range scenes (seeds {CALIB_SEEDS[0]}..{CALIB_SEEDS[-1]})")
            priors = calibrate_priors(methods, CALIB_SEEDS[:clips] if clips > 0 else CALIB_SEEDS, seconds)
        results = evaluate_highlight(methods, seeds, seconds, progress=_say, priors=priors)
    report[task] = {"seeds": [seeds[0], seeds[-1]], "seconds": seconds, "results": results}
    print("\n".join([*format_table(task, results), ""]))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
        _say(f"figures written to {json_path}")
    return 0
