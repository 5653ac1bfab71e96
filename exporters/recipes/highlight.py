"""Recipe of the built-in ``highlight`` model: unsupervised highlight activation on the shared AV encoder.

The graph takes 2 s windows — raw BGR frames ``video`` (B, 8, 64, 64, 3) uint8 at 4 fps and raw mono
``audio`` (B, 32000) float32 at 16 kHz — and outputs ``video_embedding`` (B, 64) (the sounding
object's visual embedding, pooled by the localization map), ``audio_embedding`` (B, 64) (both
L2-normalised) and ``activation`` (B,), RASL's "representation activation" of the window:

    activation = (log(mean_t,cells |g_t - g_t-1|) / s_change + log(max_t |o_t|) / s_object - m) / s

- ``g_t``: the visual embedding grid of frame t (16x16 cells): how fast the representation changes;
- ``o_t``: the sounding object's representation in frame t, the cells weighted by the softmax (τ 0.1)
  of their cosine similarity with the window's audio (the localization map): how strongly it is
  activated (the sounding object pulses brighter and larger when it is more active);
- ``s_change``, ``s_object``: each term's typical spread within a scene, measured on unlabelled
  training scenes, so both count alike; ``m``, ``s``: median and robust spread of the sum over those
  scenes, so the activation is standardised (its prior in the contract is median 0, scale 1).

No highlight labels are used: the encoder is the shared contrastive one (``avencoder``, trained with
k-point sampling: two windows of each scene in a batch), the scales come from unlabelled scenes. The
highlight node turns the activation into a causal score per stream: a rolling robust z-score whose
statistics start from the contract's ``prior`` (worth ``windows`` windows) and follow the stream's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import avencoder as av

FRAMES, WINDOW_S, HOP_S = 8, 2.0, 1.0
SIZE = 64  # the encoder is fully convolutional; at 64x64 eight frames cost what three do at 112x112
SAMPLES = int(WINDOW_S * av.SAMPLE_RATE)
EMBED = av.EMBED
ATTENTION_TAU = 0.1
PRIOR_WINDOWS = 30  # weight of the prior in the node's rolling statistics, in windows

CONTRACT: dict[str, Any] = {
    "schema": 1,
    "id": "highlight",
    "version": "2",
    "task": "highlight",
    "description": "Unsupervised highlight activation (RASL-style) on the shared audio-visual contrastive "
    "encoder: representation change over time plus the activation of the sounding object's representation.",
    "inputs": {
        "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                  "fps": av.FPS, "frames": FRAMES, "height": SIZE, "width": SIZE},
        "audio": {"name": "audio", "dtype": "float32", "sample_rate": av.SAMPLE_RATE, "seconds": WINDOW_S,
                  "samples": SAMPLES},
    },
    "window": {"seconds": WINDOW_S, "hop": HOP_S},
    "outputs": {
        "video_embedding": {"name": "video_embedding", "meaning": "L2-normalised 64-d visual embedding of the "
                            "sounding object (cells pooled by the audio-visual similarity map)"},
        "audio_embedding": {"name": "audio_embedding", "meaning": "L2-normalised 64-d audio embedding"},
        "activation": {"name": "activation", "meaning": "representation activation (unnormalised); higher = "
                       "more salient; normalise per stream over time",
                       "prior": {"median": 0.0, "scale": 1.0, "windows": PRIOR_WINDOWS}},
    },
    "labels": [],
    "preprocessing": "raw BGR frames and raw mono samples; log-mel and normalisation are inside the graph",
}


class HighlightNet(nn.Module):
    """The shared encoder over the window's frames, with the activation head (no trained weights of its own)."""

    act_scale: torch.Tensor  # buffers, registered in __init__
    act_shift: torch.Tensor

    def __init__(self, encoder: av.AVEncoder | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else av.AVEncoder()
        # weights of the two terms (change, object) and the shift that standardise the activation;
        # measured on unlabelled scenes after training (calibrate), neutral before
        self.register_buffer("act_scale", torch.tensor([1.0, 1.0]))
        self.register_buffer("act_shift", torch.tensor(0.0))

    def terms(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(log representation change, log object activation, object embedding, audio embedding)."""
        b, t = video.shape[0], video.shape[1]
        grid = self.encoder.frames(video.flatten(0, 1))  # (B*T, D, h, w)
        grid = grid.reshape(b, t, grid.shape[1], -1)  # (B, T, D, cells)
        halves = audio.reshape(b * 2, -1)  # the encoder was trained on 1 s of audio
        emb = self.encoder.audio(halves).reshape(b, 2, -1).mean(dim=1)
        za = F.normalize(emb, dim=1)
        sim = torch.einsum("btdn,bd->btn", F.normalize(grid, dim=2), za)
        weights = torch.softmax(sim / ATTENTION_TAU, dim=2)
        obj = torch.einsum("btdn,btn->btd", grid, weights)  # (B, T, D)
        change = (grid[:, 1:] - grid[:, :-1]).norm(dim=2).mean(dim=(1, 2))
        strength = obj.norm(dim=2).amax(dim=1)
        return torch.log(change + 1e-6), torch.log(strength + 1e-6), obj.mean(dim=1), za

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        change, strength, obj, za = self.terms(video, audio)
        activation = self.act_scale[0] * change + self.act_scale[1] * strength - self.act_shift
        return F.normalize(obj, dim=1), za, activation


def build_model() -> HighlightNet:
    """The untrained highlight network (random encoder weights, unit term scales)."""
    return HighlightNet()


def info_nce(zv: torch.Tensor, za: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch similarity matrix (CLIP), temperature = 1 / exp(logit_scale)."""
    return av.symmetric_info_nce(logit_scale.clamp(max=math.log(100.0)).exp() * zv @ za.t())


# --------------------------------------------------------------------------------------------------
def scene_windows(pool: av.ClipPool, s: int, hop_frames: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 2 s windows of scene s at a 1 s hop: frames (area-resized to SIZE), audio, share of highlight frames."""
    ks = range(0, pool.num_frames - FRAMES + 1, hop_frames)
    small = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in pool.frames[s]])
    frames = np.stack([small[k : k + FRAMES] for k in ks])
    audio = np.stack([pool.audio_span(s, k / av.FPS, WINDOW_S) for k in ks])
    share = np.array([pool.highlight[s, k : k + FRAMES].mean() for k in ks])
    return frames, audio, share


@torch.no_grad()
def scene_terms(model: HighlightNet, pool: av.ClipPool, scenes: range) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per scene, the two activation terms of all its windows."""
    model.eval()
    out = []
    for s in scenes:
        frames, audio, _ = scene_windows(pool, s)
        change, strength, _, _ = model.terms(torch.from_numpy(frames), torch.from_numpy(audio))
        out.append((change.numpy(), strength.numpy()))
    return out


def calibrate(model: HighlightNet, pool: av.ClipPool, max_scenes: int = 60) -> dict[str, float]:
    """Label-free: weight each term by 1 / its mean within-scene spread, then standardise the sum by its
    median and robust spread (1.4826 MAD) over the scenes, so the contract's prior (0, 1) holds."""
    terms = scene_terms(model, pool, range(min(max_scenes, len(pool.seeds))))
    spread = [float(np.mean([np.std(t[i]) for t in terms])) for i in (0, 1)]
    weights = [1.0 / max(s, 1e-6) for s in spread]
    acts = np.concatenate([weights[0] * c + weights[1] * o for c, o in terms])
    median = float(np.median(acts))
    scale = max(1.4826 * float(np.median(np.abs(acts - median))), 1e-6)
    model.act_scale.copy_(torch.tensor([w / scale for w in weights]))
    model.act_shift.copy_(torch.tensor(median / scale))
    return {"spread_change": spread[0], "spread_object": spread[1], "median": median, "scale": scale}


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@torch.no_grad()
def scene_auc(model: HighlightNet, pool: av.ClipPool) -> float:
    """Mean per-scene ROC AUC of the raw activation vs. windows >= 50 % inside highlights (reported only)."""
    model.eval()
    aucs = []
    for s in range(len(pool.seeds)):
        frames, audio, share = scene_windows(pool, s)
        act = model(torch.from_numpy(frames), torch.from_numpy(audio))[2].numpy()
        auc = _auc(act, share >= 0.5)
        if not math.isnan(auc):
            aucs.append(auc)
    return float(np.mean(aucs)) if aucs else float("nan")


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    prior: dict[str, float]
    val_auc: float
    test_auc: float
    encoder_val: dict[str, float]
    log: list[str] = field(default_factory=list)


TRAIN_SEEDS = (0, 300)  # scene seeds [a, b); all < 1,000,000 (evaluation seeds are above)
VAL_SEEDS = (500_000, 500_024)
TEST_SEEDS = (900_000, 900_032)


def train(
    steps: int = 1500,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    batch: int = 64,
    progress: Callable[[str], None] = print,
    seed_ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = (TRAIN_SEEDS, VAL_SEEDS, TEST_SEEDS),
) -> tuple[HighlightNet, TrainStats]:
    """Train (or load from the cache) the shared encoder, then measure the term scales and the prior.

    ``seed_ranges``: scene seeds [a, b) for training, validation and a reported test split.
    """
    train_seeds, val_seeds, test_seeds = seed_ranges
    cache = Path(cache_dir) if cache_dir is not None else av.DEFAULT_CACHE
    cfg = av.EncoderConfig(steps=steps, seed=seed, batch=batch, train_seeds=train_seeds, val_seeds=val_seeds)
    t0 = time.perf_counter()
    encoder, est = av.train_encoder(cfg, cache, progress)
    model = HighlightNet(encoder)
    pool = av.render_pool(list(range(*train_seeds)), cfg.scene_seconds, cache, progress)
    prior = calibrate(model, pool)
    val = av.render_pool(list(range(*val_seeds)), cfg.scene_seconds, cache, progress)
    test = av.render_pool(list(range(*test_seeds)), cfg.scene_seconds, cache, progress)
    stats = TrainStats(est.steps_done, time.perf_counter() - t0, est.final_loss, prior, scene_auc(model, val),
                       scene_auc(model, test), est.val, est.log)
    progress(f"within-scene spread: change {prior['spread_change']:.3f}, object {prior['spread_object']:.3f}; "
             f"sum median {prior['median']:.3f} scale {prior['scale']:.3f}; per-scene highlight AUC val "
             f"{stats.val_auc:.3f}, test {stats.test_auc:.3f} (reported only)")
    model.eval()
    return model, stats


def real_inputs(n: int = 2) -> list[dict[str, np.ndarray]]:
    """A few real windows (validation-range scenes) for the export parity check."""
    pool = av.render_pool([500_000 + i for i in range(n)], 4.0)
    out = []
    for s in range(n):
        frames, audio, _ = scene_windows(pool, s)
        out.append({"video": frames[:2], "audio": audio[:2]})
    return out
