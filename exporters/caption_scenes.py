"""The caption evaluation protocol: scenes, their windows, ground truth, reference captions and scoring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avstream.engine.inference.decoder_contract import tokenize
from avstream.engine.items import AVWindow
from avstream.engine.node import WindowRequirement
from avstream.exporters.metrics import bleu4, bootstrap_ci, event_word_f1

PROTOCOL_GENERATOR = "1.0"
EVAL_SEEDS = tuple(range(1_000_000, 1_000_100))
SCENE_SECONDS = 20.0
WINDOW_S = 5.0
HOP_S = 2.5
MIN_OVERLAP_S = 1.0
EVENT_WORDS = ("bell", "drum", "engine", "siren", "voice", "bangs")
SYNONYMS = {
    "bells": "bell", "drums": "drum", "engines": "engine", "sirens": "siren",
    "speaks": "voice", "shouts": "voice", "speech": "voice", "voices": "voice", "talks": "voice",
    "bang": "bangs",
}
TRAIN_SEED_LIMIT = 1_000_000


# --------------------------------------------------------------------------------------------------
# protocol: windows, truth, references, scoring
def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def window_starts(duration: float = SCENE_SECONDS, window_s: float = WINDOW_S, hop_s: float = HOP_S) -> list[float]:
    """Start times of the full windows of a scene."""
    n = int(math.floor((duration - window_s) / hop_s + 1e-9)) + 1
    return [round(i * hop_s, 6) for i in range(max(0, n))]


def truth_events(truth: dict[str, Any], t0: float, t1: float) -> set[str]:
    """The sound events of window [t0, t1): the sounding class, plus ``bangs`` for enough violence."""
    events = {str(truth["sound_class"])}
    if any(e["kind"] == "violence" and _overlap(t0, t1, e["t0"], e["t1"]) >= MIN_OVERLAP_S - 1e-9
           for e in truth["events"]):
        events.add("bangs")
    return events


def window_caption(truth: dict[str, Any], t0: float, t1: float) -> str:
    """The one caption of a window: the violence segment's text when the window counts as violent,
    else the text of the segment overlapping the window most (the first of equals)."""
    segs = truth["captions"]
    if "bangs" in truth_events(truth, t0, t1):
        for s in segs:
            if s["kind"] == "violence" and _overlap(t0, t1, s["t0"], s["t1"]) >= MIN_OVERLAP_S - 1e-9:
                return str(s["text"])
    best = max(segs, key=lambda s: _overlap(t0, t1, s["t0"], s["t1"]))
    return str(best["text"])


def references(truth: dict[str, Any], t0: float, t1: float) -> list[str]:
    """BLEU references of a window: distinct texts of the segments overlapping it by >= 1 s."""
    refs: list[str] = []
    for s in truth["captions"]:
        if _overlap(t0, t1, s["t0"], s["t1"]) >= MIN_OVERLAP_S - 1e-9 and s["text"] not in refs:
            refs.append(str(s["text"]))
    main = window_caption(truth, t0, t1)
    return refs if main in refs else [main, *refs]


def normalise_events(text: str) -> str:
    """The caption's words with event synonyms mapped to ``EVENT_WORDS`` (what the F1 reads)."""
    return " ".join(SYNONYMS.get(w, w) for w in tokenize(text))


def mentioned_events(text: str) -> set[str]:
    return set(normalise_events(text).split()) & set(EVENT_WORDS)


@dataclass
class Scores:
    """Metrics of one captioner over the evaluation windows."""

    name: str
    f1: float
    f1_ci: tuple[float, float]
    bleu4: float
    class_accuracy: float  # windows whose caption names exactly the true sounding class among classes
    bangs_precision: float
    bangs_recall: float
    windows: int
    mean_words: float
    seconds_per_caption: float = float("nan")
    examples: list[tuple[str, str]] = field(default_factory=list)  # (hypothesis, main reference)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "examples"}


def score(
    name: str,
    truths: Sequence[set[str]],
    refs: Sequence[Sequence[str]],
    hyps: Sequence[str],
    groups: Sequence[int] | None = None,
    ci_rounds: int = 1000,
) -> Scores:
    """The protocol's metrics for hypotheses ``hyps`` against per-window truths and references."""
    vocab = set(EVENT_WORDS)
    norm = [normalise_events(h) for h in hyps]
    f1 = event_word_f1(truths, norm, vocab)
    g = np.asarray(groups if groups is not None else range(len(hyps)))

    def f1_of(idx: np.ndarray) -> float:
        return event_word_f1([truths[i] for i in idx], [norm[i] for i in idx], vocab)

    ci = bootstrap_ci(f1_of, len(hyps), groups=g, rounds=ci_rounds) if len(hyps) > 1 and ci_rounds > 0 else (f1, f1)
    classes = set(EVENT_WORDS) - {"bangs"}
    said = [mentioned_events(h) for h in hyps]
    cls_ok = [(s & classes) == (t & classes) for s, t in zip(said, truths, strict=True)]
    tp = sum(1 for s, t in zip(said, truths, strict=True) if "bangs" in s and "bangs" in t)
    pp = sum(1 for s in said if "bangs" in s)
    ap = sum(1 for t in truths if "bangs" in t)
    return Scores(
        name=name, f1=f1, f1_ci=ci, bleu4=bleu4(refs, hyps),
        class_accuracy=float(np.mean(cls_ok)) if cls_ok else float("nan"),
        bangs_precision=tp / pp if pp else float("nan"), bangs_recall=tp / ap if ap else float("nan"),
        windows=len(hyps), mean_words=float(np.mean([len(tokenize(h)) for h in hyps])) if hyps else 0.0,
        examples=[(h, r[0]) for h, r in list(zip(hyps, refs, strict=True))[:: max(1, len(hyps) // 12)]],
    )


# --------------------------------------------------------------------------------------------------
# windows of evaluation scenes, built like the window node builds them
@dataclass
class EvalScene:
    seed: int
    truth: dict[str, Any]
    windows: list[AVWindow]


def scene_windows(seed: int, req: WindowRequirement, duration: float = SCENE_SECONDS,
                  window_s: float = WINDOW_S, hop_s: float = HOP_S) -> EvalScene:
    """The evaluation windows of one scene for a captioner that needs ``req`` (fps/size/rate)."""
    import cv2

    from avstream.engine.synthetic.scene import GENERATOR_VERSION, SceneConfig, scene_for

    if GENERATOR_VERSION != PROTOCOL_GENERATOR:
        raise RuntimeError(f"the caption protocol is fixed on generator {PROTOCOL_GENERATOR}, this one is "
                           f"{GENERATOR_VERSION}: evaluate with that generator or fix a new protocol")
    cfg = SceneConfig(seed=seed, duration=duration)
    scene = scene_for(cfg)
    rate = req.sample_rate or cfg.sample_rate
    audio = scene.audio(0, round(duration * rate), rate) if req.sample_rate else None
    frames_cache: dict[int, np.ndarray] = {}

    def frame(index: int) -> np.ndarray:
        if index not in frames_cache:
            img = scene.frame(min(index, scene.num_frames - 1))
            if req.width and req.height and (img.shape[1], img.shape[0]) != (req.width, req.height):
                img = cv2.resize(img, (req.width, req.height), interpolation=cv2.INTER_AREA)
            frames_cache[index] = img
        return frames_cache[index]

    windows = []
    for t0 in window_starts(duration, window_s, hop_s):
        t1 = t0 + window_s
        frames = None
        if req.fps and req.frames:
            # the first frame at or after each grid point, as the window node picks them
            idx = [math.ceil((t0 + k / req.fps) * cfg.fps - 1e-6) for k in range(req.frames)]
            frames = np.stack([frame(i) for i in idx])
        samples = None
        if audio is not None:
            n = req.audio_samples or round(window_s * rate)
            a0 = round(t0 * rate)
            samples = np.ascontiguousarray(audio[a0 : a0 + n])
        windows.append(AVWindow("eval", t0, t1, 0.0, frames, samples, req.fps, rate if samples is not None else 0))
    return EvalScene(seed, scene.truth, windows)
