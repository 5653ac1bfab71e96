"""The shared audio-visual contrastive encoder of the localization and highlight models.

- ``FrameEncoder``: a small fully convolutional frame CNN, raw BGR uint8 (N, H, W, 3) → a grid of
  visual embeddings (N, D, H/4, W/4) (28x28 cells for 112x112 frames), kept spatial for localization.
- ``AudioEncoder``: log-mel (inside the graph: ``exporters.logmel``, a Conv1d Fourier basis) → CNN →
  global max + mean pooling → (B, D).
- Training (``train_encoder``): EZ-VSL's multiple-instance contrastive alignment on naturally paired
  audio and frames of procedural scenes — the score of a (frame, audio) pair is the maximum over the
  frame's cells of the cosine similarity, and a symmetric InfoNCE (CLIP/CLAP/VATT, RASL's symmetric
  module) over the batch makes each frame prefer its own audio and each audio its own frame.
  No labels: boxes and events of the validation scenes are only *reported* during training.

Data are windows of ``avstream.engine.synthetic`` scenes rendered like the runtime sees them
(640x360, area-resized to 112x112), seeds < 1,000,000, cached on disk; training is seeded and
resumable from the checkpoint in the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..logmel import LogMel
from .checkpoints import load_training, save_training

SAMPLE_RATE = 16000
FPS = 4.0  # frame rate of the training pools (and of the models' windows)
SIZE = 112
EMBED = 64
SCENE_W, SCENE_H = 640, 360  # rendered like the demo inputs, then squashed to SIZE x SIZE
DEFAULT_CACHE = Path(".cache/avencoder")


def _cbr(cin: int, cout: int, k: int, s: int = 1, pad: int | None = None) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=s, padding=k // 2 if pad is None else pad, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FrameEncoder(nn.Module):
    """BGR uint8 frames (N, H, W, 3) → visual embedding grid (N, EMBED, H/4, W/4), unnormalised."""

    def __init__(self) -> None:
        super().__init__()
        # patchify stem (2x2 stride 2, twice): cell (i, j) is exactly pixels 4i..4i+3, 4j..4j+3, and the
        # symmetric 3x3 layers after it keep each cell's receptive field centred on the cell, so the
        # heatmap is not shifted against the frame; stride 4 keeps a 28x28 grid for ~10-25 px objects
        self.body = nn.Sequential(_cbr(3, 16, 2, 2, pad=0), _cbr(16, 32, 2, 2, pad=0),
                                  _cbr(32, 32, 3), _cbr(32, 32, 3), _cbr(32, 32, 3))
        self.head = nn.Conv2d(32, EMBED, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float().permute(0, 3, 1, 2) / 255.0 - 0.5
        return self.head(self.body(x))


class AudioEncoder(nn.Module):
    """Mono samples (B, N) at 16 kHz → audio embedding (B, EMBED), unnormalised."""

    def __init__(self) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, n_fft=400, hop=160, n_mels=64, f_min=50.0, f_max=7600.0)
        self.body = nn.Sequential(_cbr(1, 16, 3, 2), _cbr(16, 32, 3, 2), _cbr(32, 64, 3, 2), _cbr(64, 64, 3))
        self.head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(inplace=True), nn.Linear(128, EMBED))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = (self.logmel(audio) + 6.0) / 4.0  # fixed affine, no per-clip normalisation: loudness stays
        f = self.body(mel.unsqueeze(1))
        return self.head(torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1))


class AVEncoder(nn.Module):
    """Both towers and the contrastive temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = FrameEncoder()
        self.audio = AudioEncoder()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def heatmap(self, frame: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each visual cell with the audio: (B, H, W, 3) + (B, N) → (B, h, w)."""
        v = F.normalize(self.frames(frame), dim=1)
        a = F.normalize(self.audio(audio), dim=1)
        return torch.einsum("bdhw,bd->bhw", v, a)


def mil_logits(grid: torch.Tensor, audio: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """(B_v, B_a) logits: max over each frame's cells of cos(cell, audio), times the learned scale."""
    v = F.normalize(grid, dim=1)
    a = F.normalize(audio, dim=1)
    sim = torch.einsum("bdhw,cd->bchw", v, a).flatten(2).amax(dim=2)
    return logit_scale.clamp(max=math.log(100.0)).exp() * sim


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: cross-entropy over rows and over columns, the diagonal being the true pairs."""
    target = torch.arange(len(logits))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


# --------------------------------------------------------------------------------------------------
# data: whole scenes at the models' frame rate
@dataclass
class ClipPool:
    """Scenes rendered at FPS: frames (S, F, SIZE, SIZE, 3) uint8, audio (S, N) float32, and the truth
    per frame (box of the sounding object, highlight / violence flags) for reporting only."""

    seeds: np.ndarray
    frames: np.ndarray
    audio: np.ndarray
    boxes: np.ndarray  # (S, F, 4) normalised box of the sounding object
    highlight: np.ndarray  # (S, F) 1 inside a highlight event
    violence: np.ndarray  # (S, F)
    objects: np.ndarray  # (S,) number of objects

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])

    def audio_span(self, s: int, t0: float, seconds: float) -> np.ndarray:
        a0 = int(round(t0 * SAMPLE_RATE))
        return self.audio[s, a0 : a0 + int(round(seconds * SAMPLE_RATE))]


def render_pool(seeds: list[int], seconds: float, cache_dir: Path | None = None,
                progress: Callable[[str], None] = print) -> ClipPool:
    """Render (or load from ``cache_dir``) the scenes of ``seeds``, each ``seconds`` long."""
    from avstream.engine.synthetic.scene import GENERATOR_VERSION, SceneConfig, generate_truth, scene_for

    if any(s >= 1_000_000 for s in seeds):
        raise ValueError("seeds >= 1,000,000 are held out for evaluation")
    key = hashlib.sha1(json.dumps([GENERATOR_VERSION, seeds, seconds, FPS, SIZE, SCENE_W, SCENE_H]).encode())
    path = cache_dir / f"pool_{seeds[0]}_{len(seeds)}_{key.hexdigest()[:10]}.npz" if cache_dir else None
    if path is not None and path.exists():
        z = np.load(path)
        return ClipPool(z["seeds"], z["frames"], z["audio"], z["boxes"], z["highlight"], z["violence"], z["objects"])
    n_frames = int(round(seconds * FPS))
    frames = np.zeros((len(seeds), n_frames, SIZE, SIZE, 3), np.uint8)
    audio = np.zeros((len(seeds), int(round(seconds * SAMPLE_RATE))), np.float32)
    boxes = np.zeros((len(seeds), n_frames, 4), np.float32)
    high = np.zeros((len(seeds), n_frames), np.uint8)
    viol = np.zeros((len(seeds), n_frames), np.uint8)
    objects = np.zeros(len(seeds), np.int64)
    t_start = time.perf_counter()
    for i, seed in enumerate(seeds):
        cfg = SceneConfig(seed=int(seed), duration=seconds, fps=FPS, width=SCENE_W, height=SCENE_H,
                          sample_rate=SAMPLE_RATE)
        truth = generate_truth(cfg)
        scene = scene_for(cfg, truth)
        s = truth["sounding_object"]
        objects[i] = len(truth["objects"])
        for k in range(n_frames):
            frames[i, k] = cv2.resize(scene.frame(k), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            boxes[i, k] = truth["frames"][k]["boxes"][s]
        audio[i] = scene.audio(0, audio.shape[1])
        t = np.arange(n_frames) / FPS
        for e in truth["events"]:
            (high if e["kind"] == "highlight" else viol)[i][(t >= e["t0"]) & (t < e["t1"])] = 1
        if (i + 1) % 50 == 0:
            progress(f"rendered {i + 1}/{len(seeds)} scenes ({time.perf_counter() - t_start:.0f} s)")
    pool = ClipPool(np.asarray(seeds), frames, audio, boxes, high, viol, objects)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **asdict(pool))
    return pool


def sample_pairs(pool: ClipPool, rng: np.random.Generator, batch: int, audio_s: float, frames: int = 1,
                 points: int = 1, min_gap_s: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Naturally paired (frames, audio) windows: ``points`` windows from each of ``batch / points``
    distinct scenes; the frames are the last ``frames`` of the window's frame grid, the audio the
    window's ``audio_s`` seconds.

    With ``points`` > 1 (RASL's k-point sampling) windows of one scene, at least ``min_gap_s`` apart,
    are each other's negatives: telling them apart needs what changes over time (how active the
    sounding object is), not only which object sounds. Augmentation: horizontal flip of the frames
    (localization is flip-equivariant), audio gain.
    """
    n_scenes = min(batch // points, len(pool.seeds))
    scenes = rng.choice(len(pool.seeds), size=n_scenes, replace=False)
    win_frames = int(round(audio_s * FPS))
    gap = int(round(min_gap_s * FPS))
    vids, auds = [], []
    for s in scenes:
        starts: list[int] = []
        for _ in range(points):
            for _attempt in range(20):  # short scenes may have no start far enough: then take the last draw
                k0 = int(rng.integers(0, pool.num_frames - win_frames + 1))
                if all(abs(k0 - k) >= gap for k in starts):
                    break
            starts.append(k0)
        for k0 in starts:
            v = pool.frames[s, k0 + win_frames - frames : k0 + win_frames]
            if rng.random() < 0.5:
                v = v[:, :, ::-1]
            vids.append(v)
            auds.append(pool.audio_span(int(s), k0 / FPS, audio_s) * np.float32(rng.uniform(0.5, 1.5)))
    return torch.from_numpy(np.ascontiguousarray(np.stack(vids))), torch.from_numpy(np.stack(auds))


# --------------------------------------------------------------------------------------------------
# validation (numbers reported while training; the benchmark is exporters/eval_tasks.py)
@torch.no_grad()
def validate(model: AVEncoder, pool: ClipPool, audio_s: float) -> dict[str, float]:
    """Localization cIoU@0.5 (last frame of 1 s windows every 1 s) and audio→frame retrieval top-1."""
    from avstream.exporters.metrics import box_mask, ciou, ciou_summary

    model.eval()
    win = int(round(audio_s * FPS))
    cious, va, aa = [], [], []
    for s in range(len(pool.seeds)):
        ks = list(range(0, pool.num_frames - win + 1, int(FPS)))
        frames = torch.from_numpy(np.stack([pool.frames[s, k + win - 1] for k in ks]))
        audio = torch.from_numpy(np.stack([pool.audio_span(s, k / FPS, audio_s) for k in ks]))
        grid = model.frames(frames)
        emb = model.audio(audio)
        heat = torch.einsum("bdhw,bd->bhw", F.normalize(grid, dim=1), F.normalize(emb, dim=1)).numpy()
        for h, k in zip(heat, ks, strict=True):
            up = cv2.resize(h.astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR)
            cious.append(ciou(up, box_mask(pool.boxes[s, k + win - 1], 224, 224)))
        va.append(grid[:1])
        aa.append(emb[:1])
    at05, auc = ciou_summary(cious)
    logits = mil_logits(torch.cat(va), torch.cat(aa), torch.tensor(0.0))
    retrieval = float((logits.argmax(dim=0) == torch.arange(len(logits))).float().mean())
    model.train()
    return {"ciou@0.5": at05, "auc": auc, "retrieval_top1": retrieval, "chance": 1.0 / len(logits)}


# --------------------------------------------------------------------------------------------------
# training
@dataclass
class EncoderConfig:
    """Everything that defines a training run (its hash names the checkpoint)."""

    steps: int = 1500
    seed: int = 0
    batch: int = 64
    lr: float = 3e-3
    audio_s: float = 1.0
    train_seeds: tuple[int, int] = (0, 300)
    val_seeds: tuple[int, int] = (500_000, 500_024)
    scene_seconds: float = 12.0
    points: int = 2  # windows per scene in a batch (k-point sampling)
    arch: str = "2"  # bump when the network changes: old checkpoints must not be resumed

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class EncoderStats:
    config: dict[str, Any]
    steps_done: int
    seconds: float
    final_loss: float
    val: dict[str, float]
    log: list[str] = field(default_factory=list)


def train_encoder(cfg: EncoderConfig, cache_dir: str | Path | None = None,
                  progress: Callable[[str], None] = print, checkpoint_every: int = 100,
                  stop_at: int | None = None) -> tuple[AVEncoder, EncoderStats]:
    """Train (or resume, or load a finished run of the same config from ``cache_dir``).

    One thread (the machine is shared); seeded; checkpoints every ``checkpoint_every`` steps.
    ``stop_at``: leave after that step (checkpoint written) — a later call resumes where it stopped.
    """
    if max(cfg.train_seeds[1], cfg.val_seeds[1]) > 1_000_000:
        raise ValueError("training and validation seeds must be < 1,000,000 (held-out evaluation seeds above)")
    torch.set_num_threads(1)
    cache = Path(cache_dir) if cache_dir is not None else None
    ckpt = cache / f"avencoder_{cfg.key()}.pt" if cache is not None else None
    torch.manual_seed(cfg.seed)
    model = AVEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, cfg.steps), pct_start=0.1)
    rng = np.random.default_rng(cfg.seed)
    step, elapsed, loss_avg, log = 0, 0.0, float("nan"), []
    state = load_training(ckpt, model, opt, sched, rng)
    if state is not None:
        assert ckpt is not None  # a state is only read from a checkpoint file
        step, elapsed, loss_avg, log = state["step"], state["elapsed"], state["loss"], state["log"]
        progress(f"resuming {ckpt.name} at step {step}/{cfg.steps}")
    t_start = time.perf_counter() - elapsed
    n_train = cfg.train_seeds[1] - cfg.train_seeds[0]
    progress(f"scenes: {n_train} for training ({cfg.scene_seconds:g} s each), "
             f"{cfg.val_seeds[1] - cfg.val_seeds[0]} for validation")
    pool = render_pool(list(range(*cfg.train_seeds)), cfg.scene_seconds, cache, progress)
    val = render_pool(list(range(*cfg.val_seeds)), cfg.scene_seconds, cache, progress)

    def save() -> None:
        if ckpt is None:
            return
        save_training(ckpt, model, opt, sched, rng, step=step, elapsed=time.perf_counter() - t_start,
                      loss=loss_avg, log=log)

    model.train()
    while step < min(cfg.steps, stop_at if stop_at is not None else cfg.steps):
        frames, audio = sample_pairs(pool, rng, cfg.batch, cfg.audio_s, points=cfg.points)
        logits = mil_logits(model.frames(frames[:, -1]), model.audio(audio), model.logit_scale)
        loss = symmetric_info_nce(logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 100 == 0 or step == cfg.steps:
            line = (f"step {step}/{cfg.steps}  loss {loss_avg:.3f}  temperature "
                    f"{1 / model.logit_scale.exp().item():.3f}  {time.perf_counter() - t_start:.0f} s")
            if step % 500 == 0 or step == cfg.steps:
                v = validate(model, val, cfg.audio_s)
                line += (f"  val cIoU@0.5 {v['ciou@0.5']:.3f} AUC {v['auc']:.3f} "
                         f"retrieval {v['retrieval_top1']:.2f}")
            progress(line)
            log.append(line)
        if step % checkpoint_every == 0 or step == cfg.steps or step == stop_at:
            save()
    v = validate(model, val, cfg.audio_s)
    model.eval()
    stats = EncoderStats(asdict(cfg), step, time.perf_counter() - t_start, loss_avg, v, log)
    return model, stats
