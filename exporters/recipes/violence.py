"""Recipe of the built-in ``violence`` model: MACIL-SD-style audio-visual violence detection, causal.

The graph takes one 2 s window — raw BGR frames ``video`` (B, 16, 112, 112, 3) uint8 at 8 fps and raw
mono ``audio`` (B, 32000) float32 at 16 kHz — cut into 4 snippets of 0.5 s (4 frames, 8000 samples).
Per snippet, a small CNN sees the snippet's last frame and its 3 grey frame differences (motion), and
a log-mel CNN (export-safe Conv1d STFT, ``exporters/logmel.py``) its audio; both are projected to 64-d.
One pre-norm cross-modal attention layer (4 heads, weights shared by both directions, as MACIL-SD)
with a *causal* mask — a snippet sees only itself and earlier snippets — and a shared feed-forward
layer follow; a linear head per modality gives logits whose sum is the snippet's violence logit.

Outputs: ``score``, ``audio_score``, ``visual_score`` (B,) of the newest snippet, and the per-snippet
``snippet_scores``, ``snippet_audio_scores``, ``snippet_visual_scores`` (B, 4) that the violence node
uses to score each snippet once, in the first window that contains it. At inference the scores are the
mean over the frames and their mirror image (test-time flip: in cross-validation it raised alert
accuracy by about 2 points at no cost in AP).

Training uses weak labels only (multiple-instance learning): a window of a fight clip is labelled 1,
of a no-fight clip 0, and the loss is BCE on the mean of the top-k snippet logits (k = 2 of 4), plus
the same on each modality's logits (so ``visual_score``/``audio_score`` mean something alone). Data:
the real development clips given to ``train_model`` (windows made by the pipeline's window node) and
windows of procedural scenes (seeds < 1,000,000; a window is violent when at least k snippets lie in
a violence event, non-violent when none does). Half the windows are trained with their audio
silenced, so that silence — which leaks the label in the real clips — carries no information.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avstream.engine.node import WindowRequirement
from avstream.plugins.violence import snippet_window_scores

from ..logmel import LogMel
from ..violence_clips import ClipData, StreamScorer, StreamWindows
from .checkpoints import load_training, save_training

FPS, FRAMES, SIZE = 8.0, 16, 112
SNIPPET = 4  # frames per snippet: 0.5 s
SNIPPETS = FRAMES // SNIPPET
SAMPLE_RATE, SAMPLES = 16000, 32000
HOP = 0.5  # one new snippet per window
DIM, HEADS, TOPK = 64, 4, 2
SYNTH_TRAIN = (0, 96)  # procedural scene seeds [a, b), all < 1,000,000 (held-out seeds are above)
SYNTH_SECONDS = 16.0

OUTPUTS = ("score", "audio_score", "visual_score", "snippet_scores", "snippet_audio_scores", "snippet_visual_scores")
CONTRACT: dict[str, Any] = {
    "schema": 1,
    "id": "violence",
    "version": "1",
    "task": "violence",
    "description": "MACIL-SD-style violence detector: per-snippet visual (frames + motion) and log-mel "
    "features, causal cross-modal attention, MIL-trained on clip labels; scores in [0, 1].",
    "inputs": {
        "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                  "fps": FPS, "frames": FRAMES, "height": SIZE, "width": SIZE},
        "audio": {"name": "audio", "dtype": "float32", "sample_rate": SAMPLE_RATE, "seconds": 2.0,
                  "samples": SAMPLES},
    },
    "window": {"seconds": 2.0, "hop": HOP},
    "outputs": {
        "score": {"name": "score", "meaning": "violence probability of the newest 0.5 s snippet"},
        "audio_score": {"name": "audio_score", "meaning": "audio head alone, newest snippet"},
        "visual_score": {"name": "visual_score", "meaning": "visual head alone, newest snippet"},
        "snippet_scores": {"name": "snippet_scores", "meaning": "score of each 0.5 s snippet, oldest first"},
        "snippet_audio_scores": {"name": "snippet_audio_scores", "meaning": "audio head per snippet"},
        "snippet_visual_scores": {"name": "snippet_visual_scores", "meaning": "visual head per snippet"},
    },
    "labels": ["violence"],
    "preprocessing": "raw BGR frames and raw mono samples; log-mel, frame differences and normalisation "
    "are inside the graph; a missing audio track is fed as silence",
}


def window_requirement() -> WindowRequirement:
    """The windows the model takes (what the window node makes from its metadata)."""
    return WindowRequirement(seconds=2.0, hop=HOP, fps=FPS, frames=FRAMES, height=SIZE, width=SIZE,
                             sample_rate=SAMPLE_RATE, audio_samples=SAMPLES, source="violence@1")


# --------------------------------------------------------------------------------------------------
# the network
def _conv(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` over keys/values ``y`` with an additive mask."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, s, self.heads, self.dh).transpose(1, 2)

        att = split(self.q(x)) @ split(self.k(y)).transpose(-1, -2) / math.sqrt(self.dh) + mask
        out = (att.softmax(dim=-1) @ split(self.v(y))).transpose(1, 2).reshape(-1, s, self.heads * self.dh)
        return self.o(out)


class ViolenceNet(nn.Module):
    """Snippet encoders, one causal cross-modal attention layer, one head per modality."""

    grey_w: torch.Tensor  # buffers, registered in __init__
    reverse: torch.Tensor
    mask: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, n_fft=400, hop=160, n_mels=64, f_min=60.0, f_max=7800.0)
        self.video_cnn = nn.Sequential(_conv(6, 24, 5, 4), _conv(24, 48, 3, 2), _conv(48, 64, 3, 2))
        self.register_buffer("grey_w", torch.full((3,), 1.0 / 765.0))  # mean of B, G, R, scaled to [0, 1]
        self.video_fc = nn.Linear(128, DIM)
        self.audio_cnn = nn.Sequential(_conv(1, 16, 3, 2), _conv(16, 32, 3, 2), _conv(32, 64, 3, 2))
        self.audio_fc = nn.Linear(128, DIM)
        self.norm_v, self.norm_a, self.norm_f = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn = CrossAttention(DIM, HEADS)
        self.ffn = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        self.drop = nn.Dropout(0.2)
        self.head_v, self.head_a = nn.Linear(DIM, 1), nn.Linear(DIM, 1)
        # causal: snippet i attends to snippets 0..i (large negative, not -inf: exports and softmaxes safely)
        self.register_buffer("reverse", torch.arange(SIZE - 1, -1, -1))
        self.register_buffer("mask", torch.triu(torch.full((SNIPPETS, SNIPPETS), -1e4), diagonal=1))

    def snippet_input(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 16, H, W, 3) uint8 → (B*S, 6, H, W): each snippet's last frame and 3 grey frame differences."""
        x = video.float().permute(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        # grey (mean of B, G, R) reduced over the channel axis once it is not innermost: in ONNX Runtime
        # mean(-1), a MatMul with a vector, channel slices or a 1x1 convolution are several times slower
        grey = (x * self.grey_w.view(3, 1, 1)).sum(dim=2).reshape(-1, SNIPPETS, SNIPPET, SIZE, SIZE)
        diff = (grey[:, :, 1:] - grey[:, :, :-1]) * 4.0  # motion, scaled to the frame's range
        last = x[:, SNIPPET - 1 :: SNIPPET] / 255.0 - 0.5  # (B, S, 3, H, W)
        return torch.cat([last, diff], dim=2).flatten(0, 1)

    def encode_snippets(self, inp: torch.Tensor) -> torch.Tensor:
        """(B*S, 6, H, W) → (B, S, DIM)."""
        f = self.video_cnn(inp)
        f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.video_fc(f).reshape(-1, SNIPPETS, DIM)

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 16, H, W, 3) uint8 → (B, S, DIM)."""
        return self.encode_snippets(self.snippet_input(video))

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 32000) → (B, S, DIM): log-mel CNN per 0.5 s snippet."""
        mel = (self.logmel(audio.reshape(-1, SAMPLES // SNIPPETS)) + 4.0) / 5.0  # fixed affine: keeps loudness
        f = self.audio_cnn(mel.unsqueeze(1))
        f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.audio_fc(f).reshape(-1, SNIPPETS, DIM)

    def logits(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-snippet visual and audio logits (B, S); their sum is the violence logit."""
        return self.fuse(self.video_features(video), self.audio_features(audio))

    def fuse(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal cross-modal attention (shared weights both ways), feed-forward, one head per modality."""
        vn, an = self.norm_v(v), self.norm_a(a)
        v = v + self.attn(vn, an, self.mask)
        a = a + self.attn(an, vn, self.mask)
        v = v + self.ffn(self.norm_f(v))
        a = a + self.ffn(self.norm_f(a))
        return self.head_v(self.drop(v)).squeeze(-1), self.head_a(self.drop(a)).squeeze(-1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scores averaged over the frames and their mirror image (left/right carries no meaning here)."""
        a = self.audio_features(audio)
        inp = self.snippet_input(video)  # mirroring commutes with grey and differences: flip the small input
        v = self.encode_snippets(torch.cat([inp, torch.flip(inp, dims=[3])]))
        lv, la = self.fuse(v, torch.cat([a, a]))
        s, sa, sv = (torch.sigmoid(x).reshape(2, -1, SNIPPETS).mean(dim=0) for x in (lv + la, la, lv))
        return s[:, -1], sa[:, -1], sv[:, -1], s, sa, sv


def build_model(seed: int = 0) -> ViolenceNet:
    """The untrained violence network (seeded initialisation)."""
    torch.manual_seed(seed)
    return ViolenceNet()


# --------------------------------------------------------------------------------------------------
# data
@dataclass
class SynthPool:
    """Procedural scenes on the model's frame grid: frames (S, F, 112, 112, 3), audio (S, N), violence (S, F)."""

    frames: np.ndarray
    audio: np.ndarray
    violence: np.ndarray

    def windows(self) -> list[tuple[int, int, int]]:
        """(scene, first frame, label) of every window with a clear weak label (k violent snippets, or none)."""
        out = []
        for s in range(len(self.frames)):
            for k0 in range(0, self.frames.shape[1] - FRAMES + 1, 2):
                v = self.violence[s, k0 : k0 + FRAMES].reshape(SNIPPETS, SNIPPET)
                violent_snippets = int((v.mean(axis=1) >= 0.5).sum())
                if violent_snippets >= TOPK:
                    out.append((s, k0, 1))
                elif not v.any():
                    out.append((s, k0, 0))
        return out

    def window(self, s: int, k0: int) -> tuple[np.ndarray, np.ndarray]:
        a0 = int(round(k0 / FPS * SAMPLE_RATE))
        return self.frames[s, k0 : k0 + FRAMES], self.audio[s, a0 : a0 + SAMPLES]


def render_synth(seeds: Sequence[int], cache_dir: Path | None = None) -> SynthPool:
    """Scenes as ``sample://demo`` looks (640x360) on the 8 fps grid, resized like the window node; cached."""
    from avstream.engine.synthetic.scene import SceneConfig, generate_truth, render_audio, render_video_frame

    if any(s >= 1_000_000 for s in seeds):
        raise ValueError("training scenes must have seeds < 1,000,000 (the held-out ones are above)")
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"violence_synth_{seeds[0]}_{len(seeds)}_{SIZE}.npz"
        if cache.exists():
            z = np.load(cache)
            return SynthPool(z["frames"], z["audio"], z["violence"])
    n_frames = int(SYNTH_SECONDS * FPS)
    frames = np.zeros((len(seeds), n_frames, SIZE, SIZE, 3), np.uint8)
    audio = np.zeros((len(seeds), int(SYNTH_SECONDS * SAMPLE_RATE)), np.float32)
    viol = np.zeros((len(seeds), n_frames), np.float32)
    t = np.arange(n_frames) / FPS
    for i, seed in enumerate(seeds):
        cfg = SceneConfig(seed=int(seed), duration=SYNTH_SECONDS, fps=FPS, sample_rate=SAMPLE_RATE,
                          violence=bool(seed % 2 == 0))
        truth = generate_truth(cfg)
        for k in range(n_frames):
            frames[i, k] = cv2.resize(render_video_frame(cfg, truth, k), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        audio[i] = render_audio(cfg, truth, 0, audio.shape[1])
        for e in truth["events"]:
            if e["kind"] == "violence":
                viol[i][(t >= e["t0"]) & (t < e["t1"])] = 1.0
    if cache is not None:
        np.savez(cache, frames=frames, audio=audio, violence=viol)
    return SynthPool(frames, audio, viol)


def real_frames(frames: np.ndarray) -> int:
    """Frames of a window before the padding the window node adds at a stream's end (repeats of the last)."""
    n = len(frames)
    while n > 1 and np.array_equal(frames[n - 1], frames[n - 2]):
        n -= 1
    return n


def augment_video(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, random resized crop, brightness/contrast, sometimes time reversal; (T, H, W, 3) uint8."""
    if rng.random() < 0.5:
        v = v[:, :, ::-1]
    if rng.random() < 0.25:
        v = v[::-1]
    scale, aspect = rng.uniform(0.7, 1.0), math.exp(rng.uniform(-0.2, 0.2))
    h = min(SIZE, int(SIZE * scale * math.sqrt(aspect)))
    w = min(SIZE, int(SIZE * scale / math.sqrt(aspect)))
    if h < SIZE or w < SIZE:
        y0, x0 = int(rng.integers(0, SIZE - h + 1)), int(rng.integers(0, SIZE - w + 1))
        crop = np.ascontiguousarray(v[:, y0 : y0 + h, x0 : x0 + w].transpose(1, 2, 0, 3).reshape(h, w, -1))
        v = cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).reshape(SIZE, SIZE, FRAMES, 3).transpose(2, 0, 1, 3)
    c, b = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
    return np.clip(v.astype(np.float32) * c + b + (1 - c) * 110.0, 0, 255).astype(np.uint8)


class Sampler:
    """Balanced batches of real clip windows (augmented) and procedural scene windows."""

    def __init__(self, clips: Sequence[ClipData], synth: SynthPool | None, synth_share: float, silence: float):
        self.clips = clips
        self.items: dict[int, list[tuple[int, int]]] = {0: [], 1: []}  # label -> (clip, window)
        for ci, d in enumerate(clips):
            w = d.windows
            full = [i for i in range(len(w.t0)) if real_frames(w.frames[i]) >= FRAMES // 2]
            for i in full or [0]:
                self.items[d.clip.label].append((ci, i))
        self.synth = synth
        self.synth_items: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
        if synth is not None:
            for s, k0, lab in synth.windows():
                self.synth_items[lab].append((s, k0))
        self.synth_share = synth_share if synth is not None else 0.0
        self.silence = silence

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        vids, auds, labels = [], [], []
        for j in range(size):
            lab = j % 2
            if rng.random() < self.synth_share:
                assert self.synth is not None
                s, k0 = self.synth_items[lab][int(rng.integers(len(self.synth_items[lab])))]
                v, a = self.synth.window(s, k0)
                v = v[:, :, ::-1] if rng.random() < 0.5 else v
            else:
                ci, wi = self.items[lab][int(rng.integers(len(self.items[lab])))]
                w = self.clips[ci].windows
                v, a = augment_video(w.frames[wi], rng), w.audio[wi]
            a = np.clip(a * np.float32(rng.uniform(0.5, 2.0)), -1, 1)
            if rng.random() < self.silence:
                a = np.zeros_like(a)
            vids.append(np.ascontiguousarray(v))
            auds.append(a)
            labels.append(lab)
        return (torch.from_numpy(np.stack(vids)), torch.from_numpy(np.stack(auds).astype(np.float32)),
                torch.tensor(labels, dtype=torch.float32))


# --------------------------------------------------------------------------------------------------
# training
def mil_loss(model: ViolenceNet, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor,
             topk: int = TOPK) -> torch.Tensor:
    """BCE of the top-k mean snippet logit (fused; each modality's head with a smaller weight)."""
    lv, la = model.logits(video, audio)

    def pooled(logit: torch.Tensor) -> torch.Tensor:
        return logit.topk(topk, dim=1).values.mean(dim=1)

    return (F.binary_cross_entropy_with_logits(pooled(lv + la), y)
            + 0.5 * F.binary_cross_entropy_with_logits(pooled(lv), y)
            + 0.25 * F.binary_cross_entropy_with_logits(pooled(la), y))


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    clips: int
    synth_seeds: tuple[int, int]
    log: list[str] = field(default_factory=list)


def train_model(clips: Sequence[ClipData], synth: SynthPool | None, steps: int = 400, seed: int = 0,
                progress: Callable[[str], None] = print, batch: int = 32, lr: float = 2e-3,
                synth_share: float = 0.25, silence: float = 0.5, topk: int = TOPK,
                checkpoint: Path | None = None, device: str = "cpu") -> tuple[ViolenceNet, TrainStats]:
    """Train from weak labels; ``checkpoint`` (if given) is written every 50 steps and resumed from."""
    model = build_model(seed).to(device)
    rng = np.random.default_rng(seed)
    sampler = Sampler(clips, synth, synth_share, silence)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    start, t_start, loss_avg, log = 0, time.perf_counter(), float("nan"), []
    config = (steps, seed, batch, lr, synth_share, silence, len(clips))
    state = load_training(checkpoint, model, opt, sched, rng, config=config)
    if state is not None:
        start, loss_avg = state["step"], state["loss"]
        progress(f"resumed from {checkpoint} at step {start}")
    model.train()
    for step in range(start + 1, steps + 1):
        video, audio, y = (t.to(device) for t in sampler.batch(rng, batch))
        loss = mil_loss(model, video, audio, y, topk)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == steps:
            line = f"step {step}/{steps}  loss {loss_avg:.3f}  {time.perf_counter() - t_start:.0f} s"
            progress(line)
            log.append(line)
            if checkpoint is not None:
                save_training(checkpoint, model, opt, sched, rng, config=config, step=step, loss=loss_avg)
    model.eval().cpu()
    return model, TrainStats(steps, time.perf_counter() - t_start, loss_avg, len(clips), SYNTH_TRAIN, log)


@torch.no_grad()
def snippet_outputs(model: ViolenceNet, frames: np.ndarray, audio: np.ndarray, batch: int = 16) -> tuple[np.ndarray, ...]:
    """(scores, audio_scores, visual_scores), each (W, S), of a stack of windows."""
    model.eval()
    outs = [model(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])),
                  torch.from_numpy(np.ascontiguousarray(audio[i : i + batch], dtype=np.float32)))[3:]
            for i in range(0, len(frames), batch)]
    return tuple(np.concatenate([o[k].numpy() for o in outs]) for k in range(3))


def make_scorer(model: ViolenceNet) -> StreamScorer:
    """Window scores of a stream as the violence node computes them (each snippet scored once)."""

    def score(w: StreamWindows) -> np.ndarray:
        s, sa, sv = snippet_outputs(model, w.frames, w.audio)
        out, prev = np.zeros(len(s)), None
        for i in range(len(s)):
            out[i] = snippet_window_scores(s[i], sa[i], sv[i], float(w.t0[i]), float(w.t1[i]), prev)[0]
            prev = float(w.t1[i])
        return out

    return score


class Learner:
    """The learner the evaluation protocol (``eval_violence``) cross-validates."""

    def __init__(self, progress: Callable[[str], None] = print, steps: int = 300,
                 cache_dir: Path | None = Path(".cache/violence")):
        self.progress, self.steps, self.cache_dir = progress, steps, cache_dir
        self._synth: SynthPool | None = None

    def synth(self) -> SynthPool:
        if self._synth is None:
            self.progress(f"rendering training scenes {SYNTH_TRAIN[0]}..{SYNTH_TRAIN[1] - 1} ...")
            self._synth = render_synth(list(range(*SYNTH_TRAIN)), self.cache_dir)
        return self._synth

    def fit(self, clips: Sequence[ClipData], seed: int, progress: Callable[[str], None]) -> StreamScorer:
        return make_scorer(train_model(clips, self.synth(), self.steps, seed, progress)[0])

    def untrained(self, seed: int) -> StreamScorer:
        return make_scorer(build_model(seed).eval())


# --------------------------------------------------------------------------------------------------
# entry points of ``avstream export --recipe violence``
def load_real(cache_dir: Path | None, progress: Callable[[str], None] = print) -> list[ClipData]:
    """Windows of every development clip (``shared/data/fight-surveillance``), cached."""
    from avstream.engine.errors import ModelError

    from ..violence_clips import DEFAULT_DATA, load_clip_windows, load_clips

    if not (DEFAULT_DATA / "groups.csv").is_file():
        raise ModelError(f"the violence recipe trains on the fight-surveillance clips: {DEFAULT_DATA} not found")
    return load_clip_windows(load_clips(DEFAULT_DATA), window_requirement(), cache_dir, progress)


def train(steps: int = 300, seed: int = 0, cache_dir: str | Path | None = None,
          progress: Callable[[str], None] = print) -> tuple[ViolenceNet, TrainStats]:
    """Train the released model on all development clips + the training scenes (resumable)."""
    cache = Path(cache_dir) if cache_dir is not None else Path(".cache/violence")
    t0 = time.perf_counter()
    clips = load_real(cache, progress)
    progress(f"rendering training scenes {SYNTH_TRAIN[0]}..{SYNTH_TRAIN[1] - 1} (cached) ...")
    synth = render_synth(list(range(*SYNTH_TRAIN)), cache)
    progress(f"data ready in {time.perf_counter() - t0:.0f} s: {len(clips)} clips, {len(synth.frames)} scenes")
    model, stats = train_model(clips, synth, steps, seed, progress, checkpoint=cache / f"violence_ckpt_seed{seed}.pt")
    stats.seconds = time.perf_counter() - t0
    return model, stats


def real_inputs(n: int = 2) -> list[dict[str, np.ndarray]]:
    """Windows of a procedural scene (and of a real clip when the data is there) for the parity check."""
    from ..violence_clips import DEFAULT_DATA, load_clips, windows_of

    req = window_requirement()
    w = windows_of("synthetic://scene?seed=900000&duration=6&violence=true", req)
    out = [{"video": w.frames[:n], "audio": w.audio[:n]}]
    if (DEFAULT_DATA / "groups.csv").is_file():
        r = windows_of(str(load_clips(DEFAULT_DATA)[0].path), req)
        out.append({"video": r.frames[:n], "audio": r.audio[:n]})
    return out
