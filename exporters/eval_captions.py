"""Caption evaluation on held-out synthetic scenes: learned model vs non-learned baselines vs random weights.

    avstream eval captions [--model builtin:captions] [--beam 3] [--random] [--scenes N] [--json out.json]

The protocol (fixed before any caption model was trained; do not change it to suit a model):

- scenes: ``SceneConfig(seed, duration=20)`` of generator ``PROTOCOL_GENERATOR`` (640x360, 25 fps,
  16 kHz, objects/events as the seed decides) for ``EVAL_SEEDS`` = 1,000,000 ... 1,000,099; training
  uses seeds < 1,000,000 only;
- windows: ``WINDOW_S`` = 5 s every ``HOP_S`` = 2.5 s (7 per scene, 700 in all), built like the window
  node builds them: audio at the captioner's rate, frames on its frame grid (the first frame at or after
  each grid point), resized with ``cv2.INTER_AREA`` to its frame size;
- sound events of a window (the truth): the scene's sounding class (bell, drum, engine, siren, voice)
  plus ``bangs`` when a violence event overlaps the window by >= ``MIN_OVERLAP_S`` = 1 s;
- events a caption mentions: its words (``metrics.tokenize``) mapped through ``SYNONYMS`` (the
  generator's own words for a voice are "speaks" / "shouts"), kept if in ``EVENT_WORDS``;
- caption event-word F1 = ``metrics.event_word_f1`` (micro F1 over all windows), with a 95 % bootstrap
  interval resampling whole scenes; BLEU-4 = ``metrics.bleu4`` (corpus BLEU) against the texts of all
  ground-truth caption segments overlapping the window by >= 1 s (at least the one overlapping most).

Captioners: ``MostFrequentCaption`` (the most frequent training-window caption), ``AudioRulesCaption``
(hand-set rules on energy dynamics, spectral centroid, low-frequency share, onset rate and peak level),
and the learned ONNX model (plus the same network with random weights, ``--random``) through the same
runtime code as the ``avstream/captions@v1`` node.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import click
import numpy as np

from avstream.engine.cli_common import examples, reports_errors
from avstream.engine.items import AVWindow
from avstream.engine.node import WindowRequirement
from avstream.exporters.caption_scenes import (
    EVAL_SEEDS,
    HOP_S,
    SCENE_SECONDS,
    TRAIN_SEED_LIMIT,
    WINDOW_S,
    Scores,
    references,
    scene_windows,
    score,
    truth_events,
    window_caption,
    window_starts,
)

TARGET_F1 = 0.8


# --------------------------------------------------------------------------------------------------
# captioners
class Captioner(Protocol):
    name: str

    @property
    def requirement(self) -> WindowRequirement: ...

    def caption(self, windows: Sequence[AVWindow]) -> list[str]: ...


AUDIO_ONLY = WindowRequirement(seconds=WINDOW_S, hop=HOP_S, sample_rate=16000, audio_samples=int(WINDOW_S * 16000))


class MostFrequentCaption:
    """Always the most frequent window caption of the training scenes (seeds < 1,000,000)."""

    name = "most frequent caption"

    def __init__(self, train_seeds: Sequence[int] = range(0, 1000)):
        from avstream.engine.synthetic.scene import SceneConfig, generate_truth

        counts: Counter[str] = Counter()
        for seed in train_seeds:
            if seed >= TRAIN_SEED_LIMIT:
                raise ValueError(f"training seed {seed} is in the held-out range (>= {TRAIN_SEED_LIMIT})")
            truth = generate_truth(SceneConfig(seed=int(seed), duration=SCENE_SECONDS))
            for t0 in window_starts():
                counts[window_caption(truth, t0, t0 + WINDOW_S)] += 1
        self.text, self.count = counts.most_common(1)[0]

    @property
    def requirement(self) -> WindowRequirement:
        return AUDIO_ONLY

    def caption(self, windows: Sequence[AVWindow]) -> list[str]:
        return [self.text for _ in windows]


# hand-set rules on features whose ranges were read off training scenes (seeds < 1,000,000)
_CALM = {"bell": "a yellow bell rings", "drum": "a red drum beats", "engine": "a blue engine hums",
         "siren": "a magenta siren wails", "voice": "a green figure speaks"}


def audio_features(samples: np.ndarray, rate: int) -> dict[str, float]:
    """Window features for the rules: peak, dynamics, centroid, low-frequency share, onset rate.

    Frames (20 ms) holding an impulsive bang (peak > 0.7) are left out of the spectral and dynamics
    features, so a violent window still shows its sounding source.
    """
    hop = max(1, rate // 50)
    n = len(samples) // hop
    frames = samples[: n * hop].reshape(n, hop).astype(np.float64)
    peak = float(np.abs(samples).max()) if len(samples) else 0.0
    keep = np.abs(frames).max(axis=1) <= 0.7
    if keep.sum() < n // 4:
        keep = np.ones(n, bool)
    rms = np.sqrt((frames**2).mean(axis=1)) + 1e-6
    spec = np.abs(np.fft.rfft(frames[keep] * np.hanning(hop), axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1.0 / rate)
    total = spec.sum() + 1e-12
    level = 20 * np.log10(rms[keep])
    rise = np.diff(level, n=1, prepend=level[:1])
    onsets = np.sum((rise > 6.0) & (np.r_[0.0, rise[:-1]] <= 6.0))
    return {
        "peak": peak,
        "dynamics": float(np.percentile(rms[keep], 90) / np.percentile(rms[keep], 10)),
        "centroid": float((spec * freqs).sum() / total),
        "low_share": float(spec[:, freqs < 300].sum() / total),
        "onset_rate": float(onsets / (len(samples) / rate)),
    }


def rule_caption(f: dict[str, float]) -> str:
    """Sound class and bangs from the features, worded like the generator's captions."""
    if f["dynamics"] < 4.0:  # continuous sound: engine (low hum) or siren (a sweeping tone)
        cls = "engine" if f["low_share"] > 0.15 or f["centroid"] < 700 else "siren"
    elif f["centroid"] > 1900 and f["low_share"] > 0.2:
        cls = "drum"  # broadband bursts with a low thump
    elif f["onset_rate"] > 2.4:
        cls = "voice"  # syllables come faster than bell strikes
    else:
        cls = "bell"
    if f["peak"] > 0.7:
        return f"objects shake violently amid loud bangs while {_CALM[cls]}"
    return _CALM[cls]


class AudioRulesCaption:
    """Non-learned audio baseline: ``rule_caption(audio_features(window))``."""

    name = "audio rules (energy/centroid)"

    @property
    def requirement(self) -> WindowRequirement:
        return AUDIO_ONLY

    def caption(self, windows: Sequence[AVWindow]) -> list[str]:
        out = []
        for w in windows:
            audio = w.audio if w.audio is not None else np.zeros(AUDIO_ONLY.audio_samples, np.float32)
            out.append(rule_caption(audio_features(audio, w.sample_rate or 16000)))
        return out


# --------------------------------------------------------------------------------------------------
# running the protocol
def evaluate(captioners: Sequence[Captioner], seeds: Sequence[int] = EVAL_SEEDS,
             progress: Callable[[str], None] = print, ci_rounds: int = 1000) -> list[Scores]:
    """Caption every evaluation window with each captioner and score it (same windows for all)."""
    bad = [s for s in seeds if s < TRAIN_SEED_LIMIT]
    if bad:
        raise ValueError(f"evaluation seeds must be >= {TRAIN_SEED_LIMIT} (held out), got {bad[:3]}")
    truths: list[set[str]] = []
    refs: list[list[str]] = []
    groups: list[int] = []
    hyps: dict[str, list[str]] = {c.name: [] for c in captioners}
    spent: dict[str, float] = dict.fromkeys(hyps, 0.0)
    by_req: dict[WindowRequirement, list[Captioner]] = {}
    for c in captioners:
        by_req.setdefault(c.requirement, []).append(c)
    t_start = time.perf_counter()
    for i, seed in enumerate(seeds):
        first = True
        for req, group in by_req.items():
            es = scene_windows(int(seed), req)
            if first:
                for w in es.windows:
                    truths.append(truth_events(es.truth, w.t0, w.t1))
                    refs.append(references(es.truth, w.t0, w.t1))
                    groups.append(i)
                first = False
            for c in group:
                t = time.perf_counter()
                texts = c.caption(es.windows)
                spent[c.name] += time.perf_counter() - t
                if len(texts) != len(es.windows) or not all(texts):
                    raise RuntimeError(f"{c.name}: expected {len(es.windows)} non-empty captions, got {texts!r}")
                hyps[c.name] += texts
        if (i + 1) % 10 == 0 or i + 1 == len(seeds):
            progress(f"scenes {i + 1}/{len(seeds)} ({time.perf_counter() - t_start:.0f} s)")
    out = []
    for c in captioners:
        s = score(c.name, truths, refs, hyps[c.name], groups, ci_rounds=ci_rounds)
        s.seconds_per_caption = spent[c.name] / max(1, len(truths))
        out.append(s)
    return out


def table(scores: Sequence[Scores], seeds: Sequence[int]) -> str:
    """Markdown table of the results, with the target."""
    protocol = tuple(seeds) == EVAL_SEEDS
    lines = [
        f"scenes: {len(seeds)} (seeds {min(seeds)}..{max(seeds)}{'' if protocol else ', a SUBSET: not the protocol'}), "
        f"{scores[0].windows if scores else 0} windows of {WINDOW_S:g} s every {HOP_S:g} s; target F1 >= {TARGET_F1}",
        "",
        "| captioner | event-word F1 (95% CI) | BLEU-4 | class acc. | bangs P / R | words | ms/caption |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(f"| {s.name} | {s.f1:.3f} ({s.f1_ci[0]:.3f}-{s.f1_ci[1]:.3f}) | {s.bleu4:.3f} | "
                     f"{s.class_accuracy:.3f} | {s.bangs_precision:.2f} / {s.bangs_recall:.2f} | "
                     f"{s.mean_words:.1f} | {s.seconds_per_caption * 1e3:.1f} |")
    return "\n".join(lines)


def _learned(model: str, decoder: str, beam: int, source: str, name: str) -> Captioner:
    from avstream.plugins.captions import ModelCaptioner

    return ModelCaptioner.load(model, decoder=decoder, beam=beam, source=source, name=name)


@click.command("captions", epilog=examples("avstream eval captions --greedy --audio-only --random",
                                            "avstream eval captions --model none --scenes 10"))
@click.option("--model", default="builtin:captions", show_default=True, help="caption encoder (path or "
              "builtin:NAME); 'none' evaluates the baselines only")
@click.option("--decoder", default="", help="decoder step model (default: named by the encoder)")
@click.option("--beam", type=int, default=3, show_default=True, help="beam width (1: greedy)")
@click.option("--greedy", is_flag=True, help="also evaluate greedy decoding (beam 1)")
@click.option("--audio-only", is_flag=True, help="also evaluate the model on audio with black frames (source=audio)")
@click.option("--random", "random_weights", is_flag=True, help="also evaluate the same network with random weights "
              "(needs torch)")
@click.option("--scenes", type=int, default=len(EVAL_SEEDS), show_default=True, help="evaluate the first N protocol "
              "scenes only (a quick look; not the protocol)")
@click.option("--json", "json_path", metavar="PATH", default=None, help="write the figures to this JSON file")
@reports_errors("avstream eval captions")
def captions_command(model: str, decoder: str, beam: int, greedy: bool, audio_only: bool, random_weights: bool,
                     scenes: int, json_path: str | None) -> int:
    """Captions: event-word F1 and BLEU-4.

    The learned captioner next to non-learned baselines (the most frequent caption, audio rules) on
    held-out synthetic scenes, through the same runtime code as the captions node.
    """
    seeds = EVAL_SEEDS[: max(1, min(scenes, len(EVAL_SEEDS)))]
    say = lambda m: print(f"[eval] {m}", flush=True)  # noqa: E731
    say("building baselines ...")
    caps: list[Captioner] = [MostFrequentCaption(), AudioRulesCaption()]
    if model != "none":
        caps.append(_learned(model, decoder, beam, "auto", f"learned (beam {beam})"))
        if greedy and beam != 1:
            caps.append(_learned(model, decoder, 1, "auto", "learned (greedy)"))
        if audio_only:
            caps.append(_learned(model, decoder, beam, "audio", f"learned, audio only (beam {beam})"))
        if random_weights:
            from avstream.exporters.recipes.captions import random_weights_models

            enc, dec = random_weights_models(Path(".cache") / "captions_random")
            caps.append(_learned(str(enc), str(dec), beam, "auto", "same network, random weights"))
    results = evaluate(caps, seeds, progress=say)
    print(table(results, seeds))
    for s in results:
        print(f"\n{s.name}: examples (hypothesis  <-  main reference)")
        for h, r in s.examples[:4]:
            print(f"  {h!r}  <-  {r!r}")
    if json_path:
        Path(json_path).write_text(json.dumps({"seeds": [min(seeds), max(seeds)], "scores": [s.row() for s in results]},
                                              indent=1))
    return 0
