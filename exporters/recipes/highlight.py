"""Recipe of the built-in ``highlight`` model: a small audio-visual encoder trained contrastively.

The graph takes raw BGR frames (B, 8, 112, 112, 3) uint8 (2 s at 4 fps) and raw mono audio
(B, 32000) float32 (2 s at 16 kHz) and outputs ``video_embedding`` (B, 64), ``audio_embedding``
(B, 64), both L2-normalised, and ``activation`` (B,): the RASL-style activation of the learned
representation, ``log |h_v| + w_a log |h_a| + w_c cos(z_v, z_a)``, which the highlight node
normalises per stream over a rolling horizon.

Training: symmetric InfoNCE (CLIP-style, learnable temperature) between the audio and the frames of
the same window, on windows of procedural scenes (``avstream.engine.synthetic``, seeds < 1,000,000).
The activation weights (w_a, w_c) are then chosen on validation scenes by how well the per-scene
normalised activation separates highlight windows from the rest (ROC AUC).
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

from ..logmel import LogMel

FPS, FRAMES, SIZE = 4.0, 8, 112
SAMPLE_RATE, SAMPLES = 16000, 32000
EMBED = 64
HIDDEN = 128
SCENE_SECONDS = 16.0
RENDER_W, RENDER_H = 224, 126  # 16:9 like the demo inputs, squashed to 112x112 as the window node does

CONTRACT: dict[str, Any] = {
    "schema": 1,
    "id": "highlight",
    "version": "1",
    "task": "highlight",
    "description": "Small audio-visual contrastive encoder; its representation activation drives "
    "causal highlight scores (RASL-style), normalised per stream by the highlight node.",
    "inputs": {
        "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                  "fps": FPS, "frames": FRAMES, "height": SIZE, "width": SIZE},
        "audio": {"name": "audio", "dtype": "float32", "sample_rate": SAMPLE_RATE, "seconds": 2.0,
                  "samples": SAMPLES},
    },
    "window": {"seconds": 2.0, "hop": 1.0},
    "outputs": {
        "video_embedding": {"name": "video_embedding", "meaning": "L2-normalised 64-d visual embedding"},
        "audio_embedding": {"name": "audio_embedding", "meaning": "L2-normalised 64-d audio embedding"},
        "activation": {"name": "activation", "meaning": "representation activation (unnormalised); "
                       "higher = more salient; normalise per stream over time"},
    },
    "labels": [],
    "preprocessing": "raw BGR frames and raw mono samples; log-mel and normalisation are inside the graph",
}


def _conv(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=s, padding=k // 2), nn.ReLU(inplace=True))


class HighlightNet(nn.Module):
    """Frame CNN (frames + frame differences) and log-mel CNN, each projected to 64-d."""

    def __init__(self) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, n_fft=400, hop=320, n_mels=64, f_min=125.0, f_max=7500.0)
        self.video_cnn = nn.Sequential(_conv(6, 16, 5, 4), _conv(16, 32, 3, 2), _conv(32, 64, 3, 2))
        self.video_fc = nn.Sequential(nn.Linear(128, HIDDEN), nn.ReLU())
        self.video_proj = nn.Linear(HIDDEN, EMBED)
        self.audio_cnn = nn.Sequential(_conv(1, 16, 3, 2), _conv(16, 32, 3, 2), _conv(32, 64, 3, 2))
        self.audio_fc = nn.Sequential(nn.Linear(128, HIDDEN), nn.ReLU())
        self.audio_proj = nn.Linear(HIDDEN, EMBED)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # activation = log|h_v| + w[0] log|h_a| + w[1] cos(z_v, z_a); w chosen after training
        self.register_buffer("act_w", torch.tensor([0.0, 1.0]))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[0], video.shape[1]
        x = video.float().permute(0, 1, 4, 2, 3) / 255.0  # (B, T, 3, H, W)
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)  # motion
        x = torch.cat([x - 0.5, diff], dim=2).flatten(0, 1)
        f = self.video_cnn(x).mean(dim=(2, 3)).reshape(b, t, -1)
        return self.video_fc(torch.cat([f.mean(dim=1), f.amax(dim=1)], dim=1))

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        mel = (self.logmel(audio) + 6.0) / 4.0  # fixed affine: keeps loudness information
        f = self.audio_cnn(mel.unsqueeze(1))
        return self.audio_fc(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))

    def features(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        hv, ha = self.encode_video(video), self.encode_audio(audio)
        zv, za = F.normalize(self.video_proj(hv), dim=1), F.normalize(self.audio_proj(ha), dim=1)
        return {"hv": hv, "ha": ha, "zv": zv, "za": za}

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.features(video, audio)
        agree = (f["zv"] * f["za"]).sum(dim=1)
        act = torch.log(f["hv"].norm(dim=1) + 1e-4) + self.act_w[0] * torch.log(f["ha"].norm(dim=1) + 1e-4)
        return f["zv"], f["za"], act + self.act_w[1] * agree


def build_model() -> HighlightNet:
    """The untrained highlight network (the factory ``avstream export --module`` would call)."""
    return HighlightNet()


# --------------------------------------------------------------------------------------------------
# data: windows of synthetic scenes
@dataclass
class ScenePool:
    """Whole scenes rendered at the model's rate: frames (S, F, 112, 112, 3), audio (S, N), labels."""

    seeds: list[int]
    frames: np.ndarray
    audio: np.ndarray
    highlight: np.ndarray  # (S, F) 1 where frame time lies in a highlight event
    violence: np.ndarray

    def window(self, s: int, k0: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Window starting at frame k0 of scene s: frames, audio, share of highlight frames."""
        a0 = int(k0 / FPS * SAMPLE_RATE)
        return self.frames[s, k0 : k0 + FRAMES], self.audio[s, a0 : a0 + SAMPLES], float(
            self.highlight[s, k0 : k0 + FRAMES].mean())


def render_pool(seeds: list[int], cache_dir: Path | None = None) -> ScenePool:
    """Render scenes (cached as .npz in ``cache_dir`` when given)."""
    from avstream.engine.synthetic import SceneConfig, generate_truth, render_audio, render_video_frame

    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"highlight_pool_{seeds[0]}_{len(seeds)}_{hash(tuple(seeds)) & 0xFFFFFF:06x}.npz"
        if cache.exists():
            z = np.load(cache)
            return ScenePool(list(z["seeds"]), z["frames"], z["audio"], z["highlight"], z["violence"])
    n_frames = int(SCENE_SECONDS * FPS)
    frames = np.zeros((len(seeds), n_frames, SIZE, SIZE, 3), np.uint8)
    audio = np.zeros((len(seeds), int(SCENE_SECONDS * SAMPLE_RATE)), np.float32)
    high = np.zeros((len(seeds), n_frames), np.float32)
    viol = np.zeros((len(seeds), n_frames), np.float32)
    t = np.arange(n_frames) / FPS
    for i, seed in enumerate(seeds):
        cfg = SceneConfig(seed=int(seed), duration=SCENE_SECONDS, fps=FPS, width=RENDER_W, height=RENDER_H,
                          sample_rate=SAMPLE_RATE)
        truth = generate_truth(cfg)
        for k in range(n_frames):
            img = render_video_frame(cfg, truth, k)
            frames[i, k] = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        audio[i] = render_audio(cfg, truth, 0, audio.shape[1])
        for e in truth["events"]:
            target = high if e["kind"] == "highlight" else viol
            target[i][(t >= e["t0"]) & (t < e["t1"])] = 1.0
    pool = ScenePool(list(seeds), frames, audio, high, viol)
    if cache is not None:
        np.savez(cache, seeds=np.array(seeds), frames=frames, audio=audio, highlight=high, violence=viol)
    return pool


def sample_batch(pool: ScenePool, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One window from each of ``batch`` distinct scenes, with gain and flip augmentation."""
    scenes = rng.choice(len(pool.seeds), size=min(batch, len(pool.seeds)), replace=False)
    n_frames = pool.frames.shape[1]
    vids, auds = [], []
    for s in scenes:
        v, a, _ = pool.window(int(s), int(rng.integers(0, n_frames - FRAMES + 1)))
        if rng.random() < 0.5:
            v = v[:, :, ::-1]
        vids.append(v)
        auds.append(a * np.float32(rng.uniform(0.5, 1.5)))
    return torch.from_numpy(np.ascontiguousarray(np.stack(vids))), torch.from_numpy(np.stack(auds))


def info_nce(zv: torch.Tensor, za: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch similarity matrix (CLIP), temperature = 1 / exp(logit_scale)."""
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * zv @ za.t()
    target = torch.arange(len(zv))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# --------------------------------------------------------------------------------------------------
# evaluation and training
def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def scene_windows(pool: ScenePool, s: int, hop_frames: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows of scene s at a 1 s hop: frames, audio, highlight share."""
    ks = range(0, pool.frames.shape[1] - FRAMES + 1, hop_frames)
    items = [pool.window(s, k) for k in ks]
    return np.stack([i[0] for i in items]), np.stack([i[1] for i in items]), np.array([i[2] for i in items])


@torch.no_grad()
def evaluate(model: HighlightNet, pool: ScenePool) -> dict[str, Any]:
    """Retrieval accuracy and per-scene highlight AUC of several activation weightings."""
    model.eval()
    feats: list[dict[str, np.ndarray]] = []
    labels = []
    for s in range(len(pool.seeds)):
        v, a, lab = scene_windows(pool, s)
        f = model.features(torch.from_numpy(v), torch.from_numpy(a))
        feats.append({k: x.numpy() for k, x in f.items()})
        labels.append(lab >= 0.5)
    zv = np.concatenate([f["zv"][:1] for f in feats])  # first window of each scene: distinct content
    za = np.concatenate([f["za"][:1] for f in feats])
    retrieval = float((np.argmax(zv @ za.T, axis=1) == np.arange(len(zv))).mean())
    aucs: dict[tuple[float, float], float] = {}
    for wa in (0.0, 1.0):
        for wc in (0.0, 1.0, 3.0):
            per_scene = []
            for f, lab in zip(feats, labels, strict=True):
                act = (np.log(np.linalg.norm(f["hv"], axis=1) + 1e-4) + wa * np.log(np.linalg.norm(f["ha"], axis=1) + 1e-4)
                       + wc * (f["zv"] * f["za"]).sum(axis=1))
                auc = _auc(act, lab)
                if not math.isnan(auc):
                    per_scene.append(auc)
            aucs[(wa, wc)] = float(np.mean(per_scene)) if per_scene else float("nan")
    model.train()
    return {"retrieval_top1": retrieval, "chance": 1.0 / len(zv), "auc": aucs}


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    train_seeds: tuple[int, int]
    val_seeds: tuple[int, int]
    test_seeds: tuple[int, int]
    act_weights: tuple[float, float]
    val_auc: float
    test_auc: float
    test_retrieval: float
    retrieval_chance: float
    log: list[str] = field(default_factory=list)


TRAIN_SEEDS = (0, 160)  # scene seeds [a, b); all < 1,000,000 (held-out seeds above)
VAL_SEEDS = (500_000, 500_024)
TEST_SEEDS = (900_000, 900_032)


def train(
    steps: int = 600,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    batch: int = 32,
    progress: Callable[[str], None] = print,
    seed_ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = (TRAIN_SEEDS, VAL_SEEDS, TEST_SEEDS),
) -> tuple[HighlightNet, TrainStats]:
    """Train ``build_model()`` with symmetric InfoNCE on synthetic scene windows; choose activation weights.

    ``seed_ranges``: scene seeds [a, b) for training, validation (activation weights) and test.
    """
    train_seeds, val_seeds, test_seeds = seed_ranges
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cache = Path(cache_dir) if cache_dir is not None else None
    t_start = time.perf_counter()
    progress(f"rendering {train_seeds[1] - train_seeds[0]} training scenes ({SCENE_SECONDS:g} s each) ...")
    pool = render_pool(list(range(*train_seeds)), cache)
    val = render_pool(list(range(*val_seeds)), cache)
    test = render_pool(list(range(*test_seeds)), cache)
    model = build_model()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(1, steps), pct_start=0.1)
    stats_log: list[str] = []
    loss_avg = float("nan")
    for step in range(1, steps + 1):
        video, audio = sample_batch(pool, rng, batch)
        f = model.features(video, audio)
        loss = info_nce(f["zv"], f["za"], model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.9 * loss_avg + 0.1 * loss.item()
        if step % 50 == 0 or step == steps:
            line = (f"step {step}/{steps}  loss {loss_avg:.3f}  temperature "
                    f"{1 / model.logit_scale.exp().item():.3f}  {time.perf_counter() - t_start:.0f} s")
            progress(line)
            stats_log.append(line)
    ev = evaluate(model, val)
    (wa, wc), val_auc = max(ev["auc"].items(), key=lambda kv: kv[1])
    model.act_w.copy_(torch.tensor([wa, wc]))
    te = evaluate(model, test)
    stats = TrainStats(steps, time.perf_counter() - t_start, loss_avg, train_seeds, val_seeds, test_seeds,
                       (wa, wc), val_auc, te["auc"][(wa, wc)], te["retrieval_top1"], te["chance"], stats_log)
    progress(f"activation weights (w_a, w_c) = ({wa:g}, {wc:g}): highlight AUC val {val_auc:.3f}, "
             f"test {stats.test_auc:.3f}; test audio→video retrieval top-1 {stats.test_retrieval:.2f} "
             f"(chance {stats.retrieval_chance:.2f})")
    model.eval()
    return model, stats


def real_inputs(n: int = 2) -> list[dict[str, np.ndarray]]:
    """A few real windows (test scenes) for the export parity check."""
    pool = render_pool(list(range(TEST_SEEDS[0], TEST_SEEDS[0] + n)))
    out = []
    for s in range(n):
        v, a, _ = scene_windows(pool, s)
        out.append({"video": v[:4], "audio": a[:4]})
    return out
