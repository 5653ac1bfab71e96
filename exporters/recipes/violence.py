"""Recipe of the built-in ``violence`` model (v2): causal, motion-aware, audio gated by its presence.

The graph takes one 2 s window — raw BGR frames ``video`` (B, 16, 112, 112, 3) uint8 at 8 fps and raw
mono ``audio`` (B, 32000) float32 at 16 kHz — cut into 4 snippets of 0.5 s (4 frames, 8000 samples).

- *Visual path.* Per snippet, a small CNN sees the snippet's last frame, its 3 grey frame differences
  and the same differences at half resolution (motion at two scales: a punch at 112 px and a scuffle
  of small figures). A causal self-attention layer over snippets with a **one-snippet memory** (a
  snippet attends to itself and the one before) and a feed-forward layer give the visual logit. The
  short memory bounds how long a past event can keep the score up: on continuous footage the alert
  must not outlive a fight by more than the node's ``hold_s``.
- *Audio path.* A log-mel CNN (export-safe Conv1d STFT, ``exporters/logmel.py``) per snippet; it
  attends to the visual path's snippets (same causal band, so the fused score's memory is at most two
  snippets), a head gives the audio logit.
- *Fusion.* ``logit = visual + gate · audio`` where ``gate`` is the snippet's audio presence (0 at
  digital silence or below -60 dBFS, 1 above -50 dBFS). Silence or a missing track therefore gives
  exactly the visual score: audio can help where it exists and cannot change anything where it
  does not (silence leaks the label in the development clips, so it must carry no information).

Outputs: ``score``, ``audio_score`` (gate × audio probability), ``visual_score`` (B,) of the newest
snippet, and the per-snippet ``snippet_scores``, ``snippet_audio_scores``, ``snippet_visual_scores``
(B, 4) that the violence node uses to score each snippet once. Scores are averaged over the frames
and their mirror image.

Training uses weak labels only (multiple-instance learning): a window of a fight clip is labelled 1,
of a no-fight clip 0; the loss is BCE on the mean of the top-k snippet logits (k = 2 of 4), fused and
visual alone (and audio alone on windows that have audio). The procedural scenes are used only as
pre-training (the first ``pretrain`` steps); the rest trains on real clips with surveillance-style
augmentation (``violence_data.py``), half of them with the audio silenced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avstream.engine.node import WindowRequirement
from avstream.plugins.violence import snippet_window_scores

from ..logmel import LogMel
from ..violence_clips import ClipData, StreamScorer, StreamWindows
from .checkpoints import load_training, save_training
from .violence_data import (
    FPS,
    FRAMES,
    SAMPLE_RATE,
    SAMPLES,
    SIZE,
    SNIPPET,
    SNIPPETS,
    SYNTH_TRAIN,
    TOPK,
    Sampler,
    SynthPool,
    render_synth,
)

HOP = 0.5  # one new snippet per window
DIM, HEADS = 64, 4
STEPS, PRETRAIN = 500, 100  # training steps, of which the first on procedural scenes only
EMA_FROM, EMA_DECAY = 0.5, 0.98  # the released weights: their moving average over the second half
MEMORY = 1  # snippets before the current one that a snippet may attend to
GATE_DB = (-60.0, -50.0)  # audio presence ramps from 0 to 1 between these levels (dBFS, snippet RMS)

OUTPUTS = ("score", "audio_score", "visual_score", "snippet_scores", "snippet_audio_scores", "snippet_visual_scores")
CONTRACT: dict[str, Any] = {
    "schema": 1,
    "id": "violence",
    "version": "2",
    "task": "violence",
    "description": "Causal audio-visual violence detector: per-snippet frames + two-scale motion and log-mel "
    "features, one-snippet-memory attention, audio gated by its presence, MIL-trained on clip labels; "
    "scores in [0, 1].",
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
                             sample_rate=SAMPLE_RATE, audio_samples=SAMPLES, source="violence@2")


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


class Block(nn.Module):
    """Pre-norm attention of ``x`` over ``y`` (causal band mask) and a feed-forward layer."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_x, self.norm_y, self.norm_f = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_x(x), self.norm_y(y), mask)
        return x + self.ffn(self.norm_f(x))


def band_mask(n: int, memory: int) -> torch.Tensor:
    """(n, n) additive mask: snippet i sees snippets i-memory..i (large negative, not -inf: exports safely)."""
    i = torch.arange(n)
    allowed = (i[None, :] <= i[:, None]) & (i[None, :] >= i[:, None] - memory)
    return torch.where(allowed, 0.0, -1e4)


class ViolenceNet(nn.Module):
    """Snippet encoders, a causal visual path, an audio path gated by presence; one logit per snippet."""

    grey_w: torch.Tensor  # buffers, registered in __init__
    mask: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, n_fft=400, hop=160, n_mels=64, f_min=60.0, f_max=7800.0)
        self.video_cnn = nn.Sequential(_conv(6, 32, 5, 4), _conv(32, 48, 3, 2), _conv(48, 64, 3, 2))
        self.coarse_cnn = nn.Sequential(_conv(3, 16, 3, 2), _conv(16, 32, 3, 2))  # half-resolution motion
        self.register_buffer("grey_w", torch.full((3,), 1.0 / 765.0))  # mean of B, G, R, scaled to [0, 1]
        self.video_fc = nn.Linear(128 + 64, DIM)
        self.audio_cnn = nn.Sequential(_conv(1, 16, 3, 2), _conv(16, 32, 3, 2), _conv(32, 64, 3, 2))
        self.audio_fc = nn.Linear(128, DIM)
        self.visual_block, self.audio_block = Block(DIM, HEADS), Block(DIM, HEADS)
        self.drop = nn.Dropout(0.2)
        self.head_v, self.head_a = nn.Linear(DIM, 1), nn.Linear(DIM, 1)
        self.register_buffer("mask", band_mask(SNIPPETS, MEMORY))

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
        """(B*S, 6, H, W) → (B, S, DIM): appearance + fine motion, and |motion| at half resolution."""
        f = self.video_cnn(inp)
        coarse = self.coarse_cnn(F.avg_pool2d(inp[:, 3:].abs(), 2))
        f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), coarse.mean(dim=(2, 3)), coarse.amax(dim=(2, 3))], 1)
        return self.video_fc(f).reshape(-1, SNIPPETS, DIM)

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 32000) → (B, S, DIM): log-mel CNN per 0.5 s snippet."""
        mel = (self.logmel(audio.reshape(-1, SAMPLES // SNIPPETS)) + 4.0) / 5.0  # fixed affine: keeps loudness
        f = self.audio_cnn(mel.unsqueeze(1))
        f = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.audio_fc(f).reshape(-1, SNIPPETS, DIM)

    @staticmethod
    def audio_gate(audio: torch.Tensor) -> torch.Tensor:
        """(B, 32000) → (B, S) audio presence in [0, 1]: 0 at silence, 1 at ordinary sound levels."""
        rms = audio.reshape(-1, SNIPPETS, SAMPLES // SNIPPETS).square().mean(dim=-1).add(1e-12).sqrt()
        db = 20.0 * torch.log10(rms)
        return ((db - GATE_DB[0]) / (GATE_DB[1] - GATE_DB[0])).clamp(0.0, 1.0)

    def fuse(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual and audio logits (B, S); the audio path sees the visual snippets, not the reverse."""
        v = self.visual_block(v, v, self.mask)
        a = self.audio_block(a, v, self.mask)
        return self.head_v(self.drop(v)).squeeze(-1), self.head_a(self.drop(a)).squeeze(-1)

    def logits(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-snippet visual and audio logits and the audio gate (B, S); fused = visual + gate · audio."""
        lv, la = self.fuse(self.encode_snippets(self.snippet_input(video)), self.audio_features(audio))
        return lv, la, self.audio_gate(audio)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scores averaged over the frames and their mirror image (left/right carries no meaning here)."""
        a = self.audio_features(audio)
        gate = self.audio_gate(audio)
        inp = self.snippet_input(video)  # mirroring commutes with grey and differences: flip the small input
        v = self.encode_snippets(torch.cat([inp, torch.flip(inp, dims=[3])]))
        lv, la = self.fuse(v, torch.cat([a, a]))
        g2 = torch.cat([gate, gate])
        s, sa, sv = (torch.sigmoid(x).reshape(2, -1, SNIPPETS).mean(dim=0)
                     for x in (lv + g2 * la, la, lv))
        sa = sa * gate
        return s[:, -1], sa[:, -1], sv[:, -1], s, sa, sv


def build_model(seed: int = 0) -> ViolenceNet:
    """The untrained violence network (seeded initialisation)."""
    torch.manual_seed(seed)
    return ViolenceNet()


# --------------------------------------------------------------------------------------------------
# training
def mil_loss(model: ViolenceNet, video: torch.Tensor, audio: torch.Tensor, y: torch.Tensor,
             topk: int = TOPK) -> torch.Tensor:
    """BCE of the top-k mean snippet logit: fused, visual alone, and audio alone where there is audio."""
    lv, la, gate = model.logits(video, audio)

    def pooled(logit: torch.Tensor) -> torch.Tensor:
        return logit.topk(topk, dim=1).values.mean(dim=1)

    loss = (F.binary_cross_entropy_with_logits(pooled(lv + gate * la), y)
            + 0.5 * F.binary_cross_entropy_with_logits(pooled(lv), y))
    heard = gate.mean(dim=1) > 0.5
    if bool(heard.any()):
        loss = loss + 0.25 * F.binary_cross_entropy_with_logits(pooled(la)[heard], y[heard])
    return loss


def update_ema(ema: dict[str, torch.Tensor] | None, model: nn.Module) -> dict[str, torch.Tensor]:
    """Exponential moving average of the weights and BatchNorm statistics (integer buffers: the latest)."""
    current = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if ema is None:
        return current
    for k, v in current.items():
        if v.is_floating_point():
            ema[k].mul_(EMA_DECAY).add_(v, alpha=1.0 - EMA_DECAY)
        else:
            ema[k] = v
    return ema


@dataclass
class TrainStats:
    steps: int
    seconds: float
    final_loss: float
    clips: int
    synth_seeds: tuple[int, int]
    log: list[str] = field(default_factory=list)


def train_model(clips: Sequence[ClipData], synth: SynthPool | None, steps: int = STEPS, seed: int = 0,
                progress: Callable[[str], None] = print, batch: int = 32, lr: float = 2e-3,
                synth_share: float = 0.0, silence: float = 0.5, topk: int = TOPK,
                checkpoint: Path | None = None, device: str = "cpu",
                pretrain: int = PRETRAIN) -> tuple[ViolenceNet, TrainStats]:
    """Train from weak labels: ``pretrain`` steps on procedural scenes only, then real clips (with
    ``synth_share`` of scene windows mixed in); ``checkpoint`` (if given) is written every 50 steps and
    resumed from."""
    model = build_model(seed).to(device)
    rng = np.random.default_rng(seed)
    sampler = Sampler(clips, synth, synth_share, silence)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.15)
    start, t_start, loss_avg, log = 0, time.perf_counter(), float("nan"), []
    config = (steps, seed, batch, lr, synth_share, silence, len(clips), pretrain, EMA_FROM, EMA_DECAY)
    state = load_training(checkpoint, model, opt, sched, rng, config=config)
    ema: dict[str, torch.Tensor] | None = None  # weight average over the last part of training
    if state is not None:
        start, loss_avg, ema = state["step"], state["loss"], state.get("ema")
        progress(f"resumed from {checkpoint} at step {start}")
    ema_from = int(steps * EMA_FROM)
    model.train()
    for step in range(start + 1, steps + 1):
        share = 1.0 if step <= pretrain and synth is not None else None
        video, audio, y = (t.to(device) for t in sampler.batch(rng, batch, share))
        loss = mil_loss(model, video, audio, y, topk)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step >= ema_from:
            ema = update_ema(ema, model)
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == steps:
            line = f"step {step}/{steps}  loss {loss_avg:.3f}  {time.perf_counter() - t_start:.0f} s"
            progress(line)
            log.append(line)
            if checkpoint is not None:
                save_training(checkpoint, model, opt, sched, rng, config=config, step=step, loss=loss_avg,
                              ema=ema)
    if ema is not None:
        model.load_state_dict(ema)
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

    def __init__(self, progress: Callable[[str], None] = print, steps: int = STEPS,
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


def train(steps: int = STEPS, seed: int = 0, cache_dir: str | Path | None = None,
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


def operating_points_path(cache: Path, steps: int, seed: int, n_clips: int) -> Path:
    """Where the grouped CV of this recipe (steps, seed, clips) leaves its operating points."""
    return cache / f"violence_operating_points_v{CONTRACT['version']}_steps{steps}_seed{seed}_clips{n_clips}.json"


def save_operating_points(points: dict[str, Any], path: Path, n_clips: int) -> dict[str, Any]:
    """The operating points as stored in the model's metadata, with how they were chosen; cached at ``path``."""
    import json

    from ..violence_calibration import LOW_FALSE_ALARM_RATE

    out = dict(points)
    out["chosen_by"] = (f"grouped 5-fold cross-validation by source video on {n_clips} development clips, "
                        f"out-of-fold clip scores (audio as recorded); low_false_alarm: at most "
                        f"{LOW_FALSE_ALARM_RATE:.0%} of non-violent clips alert")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


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
