"""Recipe of the built-in ``localization`` model: where in the frame the sound comes from (EZ-VSL style).

The graph takes 1 s windows — raw BGR frames ``video`` (B, 4, 112, 112, 3) uint8 at 4 fps (the newest
frame is localized) and raw mono ``audio`` (B, 16000) float32 at 16 kHz — and outputs

- ``heatmap`` (B, 28, 28): cosine similarity between the audio embedding and the visual embedding of
  each cell of the newest frame (cell (i, j) covers rows 4i..4i+3, columns 4j..4j+3 of the 112x112
  frame, i.e. the same share of the original frame);
- ``score`` (B,) in [0, 1]: how clearly the audio has a source in the frame, a logistic of the peak
  similarity calibrated without labels (true audio-frame pairs vs. pairs with another scene's audio).

The encoder is the shared audio-visual contrastive encoder (``avencoder``), trained with EZ-VSL's
multiple-instance contrastive alignment. No boxes are used for training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import avencoder as av

FRAMES, WINDOW_S, HOP_S = 4, 1.0, 0.5
SAMPLES = int(WINDOW_S * av.SAMPLE_RATE)
GRID = av.SIZE // 4

CONTRACT: dict[str, Any] = {
    "schema": 1,
    "id": "localization",
    "version": "1",
    "task": "localization",
    "description": "Sound-source localization: cosine similarity between the audio of the last second and "
    "each cell of the newest frame (EZ-VSL-style multiple-instance contrastive training).",
    "inputs": {
        "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                  "fps": av.FPS, "frames": FRAMES, "height": av.SIZE, "width": av.SIZE},
        "audio": {"name": "audio", "dtype": "float32", "sample_rate": av.SAMPLE_RATE, "seconds": WINDOW_S,
                  "samples": SAMPLES},
    },
    "window": {"seconds": WINDOW_S, "hop": HOP_S},
    "outputs": {
        "heatmap": {"name": "heatmap", "meaning": f"({GRID}, {GRID}) cosine similarity of the audio with each "
                    "cell of the newest frame; the grid spans the whole frame (row = y, column = x)"},
        "score": {"name": "score", "meaning": "in [0, 1]: how clearly the sound has a visible source "
                  "(logistic of the peak similarity)"},
    },
    "labels": [],
    "preprocessing": "raw BGR frames and raw mono samples; log-mel and normalisation are inside the graph",
}


class LocalizationNet(nn.Module):
    """The shared encoder applied to the newest frame and the window's audio."""

    calib: torch.Tensor  # buffer, registered in __init__

    def __init__(self, encoder: av.AVEncoder | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else av.AVEncoder()
        # score = sigmoid(gain * (peak - bias)); calibrated after training, neutral before
        self.register_buffer("calib", torch.tensor([0.5, 6.0]))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = self.encoder.heatmap(video[:, -1], audio)
        peak = heat.flatten(1).amax(dim=1)
        return heat, torch.sigmoid(self.calib[1] * (peak - self.calib[0]))


def build_model() -> LocalizationNet:
    """The untrained localization network."""
    return LocalizationNet()


@torch.no_grad()
def calibrate(model: LocalizationNet, pool: av.ClipPool, rng: np.random.Generator) -> tuple[float, float]:
    """Label-free score calibration: peak similarity of true pairs vs. pairs with another scene's audio.

    bias = midpoint of the two medians, gain such that the medians map to about 0.95 / 0.05.
    """
    model.eval()
    pos, neg = [], []
    for _ in range(4):
        frames, audio = av.sample_pairs(pool, rng, 64, WINDOW_S)
        grid = model.encoder.frames(frames[:, -1])
        emb = model.encoder.audio(audio)
        sim = av.mil_logits(grid, emb, torch.tensor(0.0)).numpy()
        pos += list(np.diag(sim))
        neg += list(sim[~np.eye(len(sim), dtype=bool)])
    p, n = float(np.median(pos)), float(np.median(neg))
    bias = (p + n) / 2
    gain = 2 * 2.944 / max(p - n, 1e-3)  # logit(0.95) = 2.944
    model.calib.copy_(torch.tensor([bias, gain]))
    return bias, gain


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    val: dict[str, float]
    calibration: tuple[float, float]
    config: dict[str, Any]
    log: list[str] = field(default_factory=list)


def train(steps: int = 1500, seed: int = 0, cache_dir: str | Path | None = None, batch: int = 64,
          progress: Callable[[str], None] = print, seed_ranges: tuple[tuple[int, int], tuple[int, int]] | None = None
          ) -> tuple[LocalizationNet, TrainStats]:
    """Train (or load from the cache) the shared encoder, then calibrate the score.

    ``seed_ranges``: scene seeds [a, b) for training and validation (all < 1,000,000).
    """
    cfg = av.EncoderConfig(steps=steps, seed=seed, batch=batch)
    if seed_ranges is not None:
        cfg.train_seeds, cfg.val_seeds = seed_ranges
    t0 = time.perf_counter()
    encoder, est = av.train_encoder(cfg, cache_dir if cache_dir is not None else av.DEFAULT_CACHE, progress)
    model = LocalizationNet(encoder)
    pool = av.render_pool(list(range(*cfg.train_seeds)), cfg.scene_seconds,
                          Path(cache_dir) if cache_dir is not None else av.DEFAULT_CACHE, progress)
    bias, gain = calibrate(model, pool, np.random.default_rng(seed + 1))
    progress(f"validation: cIoU@0.5 {est.val['ciou@0.5']:.3f}, AUC {est.val['auc']:.3f}, audio→frame "
             f"retrieval top-1 {est.val['retrieval_top1']:.2f} (chance {est.val['chance']:.2f}); "
             f"score = sigmoid({gain:.1f} (peak - {bias:.3f}))")
    model.eval()
    return model, TrainStats(est.steps_done, time.perf_counter() - t0, est.final_loss, est.val, (bias, gain),
                             est.config, est.log)


def real_inputs(n: int = 2) -> list[dict[str, np.ndarray]]:
    """A few real windows (validation-range scenes) for the export parity check."""
    pool = av.render_pool([500_000 + i for i in range(n)], 4.0)
    out = []
    for s in range(n):
        video = np.stack([pool.frames[s, k : k + FRAMES] for k in (0, 4, 8)])
        audio = np.stack([pool.audio_span(s, k / av.FPS, WINDOW_S) for k in (0, 4, 8)])
        out.append({"video": video, "audio": audio})
    return out
