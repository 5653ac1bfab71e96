"""Recipe of the built-in caption models (CoNeTTE-style, small): an audio-visual encoder and a
transformer decoder, exported as two ONNX graphs.

- ``captions_encoder.onnx``: raw BGR frames ``video`` (B, 10, 64, 64, 3) uint8 (5 s at 2 fps) and raw
  mono ``audio`` (B, 80000) float32 (5 s at 16 kHz) → ``memory`` (B, 34, 128): 32 audio frame
  embeddings (log-mel inside the graph, export-safe Conv1d STFT; a 4-block CNN, pooled over frequency)
  and 2 visual tokens (a per-pixel colour CNN pooled over space and time), each with a modality
  embedding; and ``tags`` (B, 7), sigmoid probabilities of bell, drum, engine, siren, voice, bangs and
  highlight (an auxiliary head, like CoNeTTE's encoder doubling as a tagger).
- ``captions_decoder_step.onnx``: ``tokens`` (B, 24) int64 — BOS, the words so far, PAD — and
  ``memory`` → ``logits`` (B, V) of the next word after the last non-PAD position. Two pre-norm
  transformer decoder layers (4 heads, dim 128, causal self-attention with an explicit constant mask,
  cross-attention to the memory). The word vocabulary and the special tokens are in its metadata;
  beam search runs in numpy (``avstream.plugins.caption_decoding``).

Training (``train``): teacher-forced cross-entropy on the window captions of procedural scenes
(``avstream.engine.synthetic``, seeds < 1,000,000) plus 0.5 x BCE on the tags; 5 s windows every 0.5 s
of 20 s scenes, whose log-mel and 2 fps frames (resized like the window node resizes) are rendered once
and cached. A window's caption is ``eval_captions.window_caption`` (the protocol's main reference). With
probability 0.15 the frames are black and the caption loses its visual tail (" while ... silently"), so
the model also captions audio alone (node param ``source: audio``). Seeded and resumable (a checkpoint
every 100 steps in the cache folder).
"""

from __future__ import annotations

import hashlib
import json
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

from avstream.engine.inference.decoder_contract import DECODER_TASK, Vocabulary

from ..caption_scenes import references, truth_events, window_caption
from ..logmel import LogMel
from .checkpoints import load_training, save_training

SAMPLE_RATE, WINDOW_S = 16000, 5.0
SAMPLES = int(SAMPLE_RATE * WINDOW_S)
FPS, FRAMES, SIZE = 2.0, 10, 64
N_MELS, MEL_HOP, MEL_FFT = 64, 320, 400
MEL_FRAMES = 1 + (SAMPLES - MEL_FFT) // MEL_HOP  # 249
DIM, HEADS, LAYERS, FF = 128, 4, 2, 256
AUDIO_TOKENS, VIDEO_TOKENS = 32, 2
LENGTH, MAX_TOKENS, MIN_TOKENS = 24, 20, 3
TAGS = ("bell", "drum", "engine", "siren", "voice", "bangs", "highlight")
SCENE_SECONDS = 20.0
HOP_S = 0.5  # training windows start every 0.5 s (the 2 fps frame grid; 25 mel frames)
STARTS = int((SCENE_SECONDS - WINDOW_S) / HOP_S) + 1  # 31 windows per scene
SCENE_MEL = 1 + (int(SCENE_SECONDS * SAMPLE_RATE) - MEL_FFT) // MEL_HOP
TRAIN_SEEDS = (0, 800)  # scene seeds [a, b); all < 1,000,000 (the evaluation seeds are above)
VAL_SEEDS = (500_000, 500_040)
P_BLACK = 0.15
ENCODER_FILE, DECODER_FILE = "captions_encoder.onnx", "captions_decoder_step.onnx"
PAD, BOS, EOS = 0, 1, 2


def encoder_contract(decoder_file: str = DECODER_FILE) -> dict[str, Any]:
    """The encoder's ``avstream`` metadata; ``decoder`` names its decoder step (next to it)."""
    return {
        "schema": 1,
        "id": "captions",
        "version": "1",
        "task": "caption_encoder",
        "description": "Audio-visual caption encoder (log-mel CNN frames + 2 visual colour tokens); "
        "its memory feeds the decoder step named under 'decoder'; tags is an auxiliary event tagger.",
        "inputs": {
            "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                      "fps": FPS, "frames": FRAMES, "height": SIZE, "width": SIZE},
            "audio": {"name": "audio", "dtype": "float32", "sample_rate": SAMPLE_RATE, "seconds": WINDOW_S,
                      "samples": SAMPLES},
        },
        "window": {"seconds": WINDOW_S, "hop": 2.5},
        "outputs": {
            "memory": {"name": "memory", "meaning": f"(B, {AUDIO_TOKENS + VIDEO_TOKENS}, {DIM}) decoder memory: "
                       f"{AUDIO_TOKENS} audio frame embeddings then {VIDEO_TOKENS} visual tokens"},
            "tags": {"name": "tags", "meaning": "sigmoid probabilities of the labels (auxiliary tagger)"},
        },
        "labels": list(TAGS),
        "decoder": decoder_file,
        "sources": ["av", "audio"],
        "preprocessing": "raw BGR frames and raw mono samples; log-mel and normalisation are inside the graph",
    }


def decoder_metadata(vocab: Vocabulary, encoder_ref: str = "captions@1") -> dict[str, Any]:
    """The decoder step's ``avstream`` metadata (read by ``avstream.engine.inference.contract.read_decoder_spec``)."""
    return {
        "schema": 1,
        "id": "captions_decoder",
        "version": "1",
        "task": DECODER_TASK,
        "description": "One step of the caption decoder: next-word logits after the last non-PAD token.",
        "encoder": encoder_ref,
        "inputs": {"tokens": {"name": "tokens", "dtype": "int64", "length": LENGTH,
                              "meaning": "BOS, the words so far, then PAD up to the length"},
                   "memory": {"name": "memory", "dtype": "float32", "dim": DIM, "tokens": AUDIO_TOKENS + VIDEO_TOKENS}},
        "outputs": {"logits": {"name": "logits", "meaning": "(B, V) next-token logits over the vocabulary"}},
        "vocabulary": vocab.to_json(),
        "max_tokens": MAX_TOKENS,
        "min_tokens": MIN_TOKENS,
    }


# --------------------------------------------------------------------------------------------------
# the network
def _block(cin: int, cout: int, stride: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AudioEncoder(nn.Module):
    """Log-mel (B, 64, 249) → CNN → (B, 32, DIM) frame embeddings (~6.4 per second)."""

    def __init__(self) -> None:
        super().__init__()
        self.logmel = LogMel(SAMPLE_RATE, n_fft=MEL_FFT, hop=MEL_HOP, n_mels=N_MELS, f_min=125.0, f_max=7500.0)
        self.norm = nn.BatchNorm2d(1)
        self.cnn = nn.Sequential(_block(1, 16, (2, 2)), _block(16, 32, (2, 2)), _block(32, 64, (2, 2)),
                                 _block(64, 128, (2, 1)))
        self.proj = nn.Linear(256, DIM)
        self.pos = nn.Parameter(torch.zeros(1, AUDIO_TOKENS, DIM))

    def from_mel(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.cnn(self.norm(mel.unsqueeze(1)))  # (B, 128, 4, 32)
        x = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1).transpose(1, 2)
        return self.proj(x) + self.pos

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.from_mel(self.logmel(audio))


class VideoEncoder(nn.Module):
    """Frames (B, T, 64, 64, 3) uint8 → 2 tokens: per-pixel colour features pooled over space and time
    (max, mean) and the temporal spread of each frame's max (what pulses)."""

    def __init__(self) -> None:
        super().__init__()
        # max-pooling keeps a small saturated object's response; colour needs no fine detail
        self.cnn = nn.Sequential(nn.Conv2d(3, 24, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                 nn.Conv2d(24, 48, 1), nn.ReLU(inplace=True), nn.Conv2d(48, 64, 1),
                                 nn.ReLU(inplace=True))
        self.proj = nn.Linear(3 * 64, VIDEO_TOKENS * DIM)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        video = video[:, ::2]  # every other frame (1 per second) is enough for colours and pulsing
        b, t = video.shape[0], video.shape[1]
        x = video.float().permute(0, 1, 4, 2, 3).flatten(0, 1) / 255.0 - 0.5
        f = self.cnn(x).flatten(2)  # (B*T, 64, HW)
        per_frame = f.amax(dim=2).reshape(b, t, -1)
        mean = f.mean(dim=2).reshape(b, t, -1).mean(dim=1)
        spread = (per_frame - per_frame.mean(dim=1, keepdim=True)).abs().mean(dim=1)
        z = torch.cat([per_frame.amax(dim=1), mean, spread], dim=1)
        return self.proj(z).reshape(b, VIDEO_TOKENS, DIM)


class CaptionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio = AudioEncoder()
        self.video = VideoEncoder()
        self.kind = nn.Parameter(torch.zeros(2, DIM))
        self.norm = nn.LayerNorm(DIM)
        self.tags = nn.Linear(2 * DIM, len(TAGS))

    def memory(self, mel: torch.Tensor, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory (B, 34, DIM), tag logits (B, 7)) from log-mel and frames."""
        a = self.audio.from_mel(mel) + self.kind[0]
        v = self.video(video) + self.kind[1]
        mem = self.norm(torch.cat([a, v], dim=1))
        return mem, self.tags(torch.cat([mem.mean(dim=1), mem.amax(dim=1)], dim=1))

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem, tags = self.memory(self.audio.logmel(audio), video)
        return mem, torch.sigmoid(tags)


class Attention(nn.Module):
    """Multi-head attention from plain matmuls (exports the same at any opset)."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, m, dh = x.shape[0], x.shape[1], ctx.shape[1], DIM // HEADS
        q = self.q(x).reshape(b, n, HEADS, dh).transpose(1, 2)
        k = self.k(ctx).reshape(b, m, HEADS, dh).transpose(1, 2)
        v = self.v(ctx).reshape(b, m, HEADS, dh).transpose(1, 2)
        att = q @ k.transpose(2, 3) / math.sqrt(dh)
        if mask is not None:
            att = att + mask
        out = self.drop(att.softmax(dim=-1)) @ v
        return self.o(out.transpose(1, 2).reshape(b, n, DIM))


class DecoderLayer(nn.Module):
    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.self_att, self.cross_att = Attention(dropout), Attention(dropout)
        self.ff = nn.Sequential(nn.Linear(DIM, FF), nn.GELU(), nn.Linear(FF, DIM))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.self_att(h, h, causal))
        x = x + self.drop(self.cross_att(self.ln2(x), mem))
        return x + self.drop(self.ff(self.ln3(x)))


class CaptionDecoder(nn.Module):
    """Token ids (B, LENGTH) + memory → logits at every position (teacher forcing) or the next one."""

    causal: torch.Tensor  # buffer, registered in __init__

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, DIM)
        self.pos = nn.Parameter(torch.zeros(1, LENGTH, DIM))
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.ln = nn.LayerNorm(DIM)
        self.out = nn.Linear(DIM, vocab_size)
        # explicit constant causal mask: built once, never from the input's shape
        mask = torch.triu(torch.full((LENGTH, LENGTH), -1e9), diagonal=1)
        self.register_buffer("causal", mask)
        nn.init.normal_(self.pos, std=0.02)

    def all_logits(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos
        for layer in self.layers:
            x = layer(x, memory, self.causal)
        return self.out(self.ln(x))

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        logits = self.all_logits(tokens, memory)
        # (B, 1): position of the newest token (0 for an all-PAD row, e.g. a runtime's warm-up feed)
        last = ((tokens != PAD).sum(dim=1, keepdim=True) - 1).clamp(min=0)
        index = last.unsqueeze(2).expand(-1, 1, logits.shape[2])
        return torch.gather(logits, 1, index).squeeze(1)


class CaptionNet(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.encoder = CaptionEncoder()
        self.decoder = CaptionDecoder(vocab_size)


def build_model(vocab_size: int, seed: int = 0) -> CaptionNet:
    torch.manual_seed(seed)
    net = CaptionNet(vocab_size)
    nn.init.normal_(net.encoder.audio.pos, std=0.02)
    return net


# --------------------------------------------------------------------------------------------------
# data
def audio_only_caption(text: str) -> str:
    """What a caption says without the picture: the silent objects' tail dropped."""
    head, sep, tail = text.rpartition(" while ")
    return head if sep and tail.endswith("silently") else text


def _truths(seeds: Sequence[int]) -> list[dict[str, Any]]:
    from avstream.engine.synthetic.scene import SceneConfig, generate_truth

    out = []
    for s in seeds:
        if s >= 1_000_000:
            raise ValueError(f"scene seed {s} is held out for evaluation (>= 1,000,000)")
        t = generate_truth(SceneConfig(seed=int(s), duration=SCENE_SECONDS))
        out.append({k: t[k] for k in ("sound_class", "events", "captions")})
    return out


def build_vocabulary(seeds: Sequence[int] = range(*TRAIN_SEEDS)) -> Vocabulary:
    """Words of all training window captions (and their audio-only forms): deterministic."""
    texts = []
    for truth in _truths(seeds):
        for j in range(STARTS):
            t0 = j * HOP_S
            c = window_caption(truth, t0, t0 + WINDOW_S)
            texts += [c, audio_only_caption(c)]
    return Vocabulary.build(texts)


def encode_target(vocab: Vocabulary, text: str) -> np.ndarray:
    """BOS, words, EOS, PAD to LENGTH + 1 (inputs are [:-1], targets [1:])."""
    ids = vocab.encode(text)[:MAX_TOKENS]
    out = np.full(LENGTH + 1, PAD, np.int64)
    out[0], out[1 : 1 + len(ids)], out[1 + len(ids)] = BOS, ids, EOS
    return out


@dataclass
class SceneData:
    """Rendered scenes: log-mel of the whole soundtrack and frames on the 0.5 s grid."""

    seeds: list[int]
    mel: np.ndarray  # (S, 64, SCENE_MEL) float16
    frames: np.ndarray  # (S, 40, 64, 64, 3) uint8
    truths: list[dict[str, Any]]

    def window(self, s: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Log-mel (64, 249) and frames (10, 64, 64, 3) of the window starting at j * 0.5 s."""
        m0 = j * int(HOP_S * SAMPLE_RATE) // MEL_HOP
        return self.mel[s, :, m0 : m0 + MEL_FRAMES], self.frames[s, j : j + FRAMES]


def _render_chunk(seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from avstream.engine.synthetic.scene import SceneConfig, scene_for

    logmel = LogMel(SAMPLE_RATE, n_fft=MEL_FFT, hop=MEL_HOP, n_mels=N_MELS, f_min=125.0, f_max=7500.0)
    n_frames = int(SCENE_SECONDS / HOP_S)
    mel = np.zeros((len(seeds), N_MELS, SCENE_MEL), np.float16)
    frames = np.zeros((len(seeds), n_frames, SIZE, SIZE, 3), np.uint8)
    for i, seed in enumerate(seeds):
        cfg = SceneConfig(seed=int(seed), duration=SCENE_SECONDS)  # 640x360, 25 fps, 16 kHz like the demo
        scene = scene_for(cfg)
        audio = scene.audio(0, cfg.num_samples)
        with torch.no_grad():
            mel[i] = logmel(torch.from_numpy(audio)[None])[0].numpy().astype(np.float16)
        for k in range(n_frames):
            img = scene.frame(round(k * HOP_S * cfg.fps))
            frames[i, k] = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return mel, frames


def render_scenes(seeds: Sequence[int], cache_dir: Path | None = None, progress: Callable[[str], None] = print,
                  chunk: int = 100) -> SceneData:
    """Render (or load from ``cache_dir``, chunk by chunk, so an interrupted render resumes) the scenes."""
    from avstream.engine.synthetic.scene import GENERATOR_VERSION

    seeds = [int(s) for s in seeds]
    mels, frames = [], []
    t0 = time.perf_counter()
    for a in range(0, len(seeds), chunk):
        part = seeds[a : a + chunk]
        key = hashlib.sha1(json.dumps([GENERATOR_VERSION, SIZE, N_MELS, MEL_FFT, MEL_HOP, HOP_S, SCENE_SECONDS,
                                       part]).encode()).hexdigest()[:10]
        path = cache_dir / f"captions_scenes_{part[0]}_{len(part)}_{key}.npz" if cache_dir else None
        if path is not None and path.exists():
            z = np.load(path)
            m, f = z["mel"], z["frames"]
        else:
            m, f = _render_chunk(part)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path.with_suffix(".tmp.npz"), mel=m, frames=f)
                path.with_suffix(".tmp.npz").replace(path)
        mels.append(m)
        frames.append(f)
        progress(f"scenes {a + len(part)}/{len(seeds)} ready ({time.perf_counter() - t0:.0f} s)")
    return SceneData(seeds, np.concatenate(mels), np.concatenate(frames), _truths(seeds))


@dataclass
class Targets:
    full: np.ndarray  # (S, STARTS, LENGTH + 1)
    audio_only: np.ndarray
    tags: np.ndarray  # (S, STARTS, 7)


def make_targets(data: SceneData, vocab: Vocabulary) -> Targets:
    s_n = len(data.seeds)
    full = np.zeros((s_n, STARTS, LENGTH + 1), np.int64)
    aud = np.zeros_like(full)
    tags = np.zeros((s_n, STARTS, len(TAGS)), np.float32)
    for s, truth in enumerate(data.truths):
        for j in range(STARTS):
            t0 = j * HOP_S
            text = window_caption(truth, t0, t0 + WINDOW_S)
            full[s, j], aud[s, j] = encode_target(vocab, text), encode_target(vocab, audio_only_caption(text))
            ev = truth_events(truth, t0, t0 + WINDOW_S)
            hi = sum(max(0.0, min(t0 + WINDOW_S, e["t1"]) - max(t0, e["t0"]))
                     for e in truth["events"] if e["kind"] == "highlight")
            tags[s, j] = [float(t in ev) for t in TAGS[:6]] + [float(hi >= WINDOW_S / 2)]
    return Targets(full, aud, tags)


def sample_batch(data: SceneData, targets: Targets, rng: np.random.Generator, batch: int,
                 augment: bool = True) -> dict[str, torch.Tensor]:
    s_idx = rng.integers(len(data.seeds), size=batch)
    j_idx = rng.integers(STARTS, size=batch)
    mels, vids, toks, tags = [], [], [], []
    for s, j in zip(s_idx, j_idx, strict=True):
        m, v = data.window(int(s), int(j))
        m = m.astype(np.float32)
        black = augment and rng.random() < P_BLACK
        if augment:
            m = m + np.float32(2.0 * math.log(rng.uniform(0.7, 1.3)))  # gain, in the log-power domain
            v = np.zeros_like(v) if black else (v[:, :, ::-1] if rng.random() < 0.5 else v)
        mels.append(m)
        vids.append(np.ascontiguousarray(v))
        toks.append((targets.audio_only if black else targets.full)[s, j])
        tags.append(targets.tags[s, j])
    return {"mel": torch.from_numpy(np.stack(mels)), "video": torch.from_numpy(np.stack(vids)),
            "tokens": torch.from_numpy(np.stack(toks)), "tags": torch.from_numpy(np.stack(tags))}


# --------------------------------------------------------------------------------------------------
# training and evaluation
def losses(net: CaptionNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    mem, tag_logits = net.encoder.memory(batch["mel"], batch["video"])
    tokens = batch["tokens"]
    logits = net.decoder.all_logits(tokens[:, :-1], mem)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD)
    return ce, F.binary_cross_entropy_with_logits(tag_logits, batch["tags"])


@torch.no_grad()
def greedy_batch(net: CaptionNet, mel: torch.Tensor, video: torch.Tensor, vocab: Vocabulary) -> list[str]:
    """Greedy captions of a batch in torch (validation); the runtime decodes in numpy from ONNX."""
    mem, _ = net.encoder.memory(mel, video)
    b = mel.shape[0]
    tokens = torch.full((b, LENGTH), PAD, dtype=torch.long)
    tokens[:, 0] = BOS
    done = torch.zeros(b, dtype=torch.bool)
    for n in range(MAX_TOKENS + 1):
        logits = net.decoder(tokens, mem)
        logits[:, [PAD, BOS, vocab.unk]] = -1e9
        if n < MIN_TOKENS:
            logits[:, EOS] = -1e9
        nxt = logits.argmax(dim=1)
        if n == MAX_TOKENS:
            nxt[:] = EOS
        nxt[done] = PAD
        done |= nxt == EOS
        if n + 1 < LENGTH:
            tokens[:, n + 1] = torch.where(nxt == EOS, torch.full_like(nxt, PAD), nxt)
        if done.all():
            break
    return [vocab.decode(row[1:].tolist()) for row in tokens]


def validate(net: CaptionNet, data: SceneData, vocab: Vocabulary) -> dict[str, float]:
    """The protocol's metrics (greedy) on validation scenes, windows every 2.5 s like the evaluation."""
    from ..caption_scenes import score

    net.eval()
    truths, refs, hyps, groups = [], [], [], []
    js = list(range(0, STARTS, 5))
    for s in range(len(data.seeds)):
        items = [data.window(s, j) for j in js]
        mel = torch.from_numpy(np.stack([m.astype(np.float32) for m, _ in items]))
        vid = torch.from_numpy(np.stack([v for _, v in items]))
        hyps += greedy_batch(net, mel, vid, vocab)
        for j in js:
            t0 = j * HOP_S
            truths.append(truth_events(data.truths[s], t0, t0 + WINDOW_S))
            refs.append(references(data.truths[s], t0, t0 + WINDOW_S))
            groups.append(s)
    net.train()
    sc = score("val", truths, refs, hyps, groups, ci_rounds=0)
    return {"f1": sc.f1, "bleu4": sc.bleu4, "class_accuracy": sc.class_accuracy}


@dataclass
class TrainStats:
    steps: int
    seconds: float
    render_seconds: float
    final_loss: float
    train_seeds: tuple[int, int]
    val_seeds: tuple[int, int]
    val: dict[str, float]
    log: list[str] = field(default_factory=list)


def _config_key(steps: int, seed: int, batch: int, train_seeds: tuple[int, int]) -> str:
    return hashlib.sha1(json.dumps([steps, seed, batch, list(train_seeds), LENGTH, DIM]).encode()).hexdigest()[:10]


def train(
    steps: int = 800,
    seed: int = 0,
    cache_dir: str | Path | None = ".cache/captions",
    batch: int = 32,
    progress: Callable[[str], None] = print,
    train_seeds: tuple[int, int] = TRAIN_SEEDS,
    val_seeds: tuple[int, int] = VAL_SEEDS,
    lr: float = 2e-3,
    threads: int = 1,
    ckpt_every: int = 100,
    stop_after: int | None = None,
    val_every: int = 400,
) -> tuple[CaptionNet, Vocabulary, TrainStats]:
    """Train ``build_model`` on cached scene windows; resumes from the cache folder's checkpoint.

    A checkpoint (model, optimiser, schedule, random states) is written every ``ckpt_every`` steps;
    ``stop_after`` ends the run after that step with a checkpoint (a time-boxed run to resume later).
    """
    torch.set_num_threads(threads)
    cache = Path(cache_dir) if cache_dir is not None else None
    t_start = time.perf_counter()
    progress(f"rendering {train_seeds[1] - train_seeds[0]} training + {val_seeds[1] - val_seeds[0]} validation "
             f"scenes of {SCENE_SECONDS:g} s (cached in {cache}) ...")
    data = render_scenes(range(*train_seeds), cache, progress)
    val = render_scenes(range(*val_seeds), cache, lambda m: None)
    render_s = time.perf_counter() - t_start
    vocab = build_vocabulary(range(*train_seeds))
    targets = make_targets(data, vocab)
    progress(f"data ready in {render_s:.0f} s: {len(data.seeds)} scenes x {STARTS} windows, vocabulary "
             f"{len(vocab)} tokens")
    net = build_model(len(vocab), seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    rng = np.random.default_rng(seed)
    start, loss_avg, log = 1, float("nan"), []
    ckpt = cache / f"captions_ckpt_{_config_key(steps, seed, batch, train_seeds)}.pt" if cache else None
    state = load_training(ckpt, net, opt, sched, rng)
    if state is not None:
        start, loss_avg, log = state["step"] + 1, state["loss"], state["log"]
        progress(f"resuming from {ckpt} at step {start}")
    net.train()
    t_train = time.perf_counter()
    for step in range(start, steps + 1):
        ce, bce = losses(net, sample_batch(data, targets, rng, batch))
        loss = ce + 0.5 * bce
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_avg = loss.item() if math.isnan(loss_avg) else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == steps:
            line = (f"step {step}/{steps}  loss {loss_avg:.3f} (caption {ce.item():.3f}, tags {bce.item():.3f})  "
                    f"{time.perf_counter() - t_train:.0f} s")
            if step % val_every == 0 or step == steps:
                v = validate(net, val, vocab)
                line += f"  val F1 {v['f1']:.3f} BLEU-4 {v['bleu4']:.3f} class acc {v['class_accuracy']:.3f}"
            progress(line)
            log.append(line)
        stop = stop_after is not None and step >= stop_after and step < steps
        if ckpt is not None and step < steps and (step % ckpt_every == 0 or stop):
            save_training(ckpt, net, opt, sched, rng, step=step, loss=loss_avg, log=log)
        if stop:
            progress(f"stopping after step {step} (checkpoint {ckpt}); run again to resume")
            break
    net.eval()
    v = validate(net, val, vocab) if val.seeds else {}
    stats = TrainStats(steps, time.perf_counter() - t_start, render_s, loss_avg, train_seeds, val_seeds, v, log)
    return net, vocab, stats


# --------------------------------------------------------------------------------------------------
# export
def real_windows(n_scenes: int = 1) -> list[dict[str, np.ndarray]]:
    """A few real encoder inputs (validation scenes), built like the window node builds them."""
    from avstream.engine.node import WindowRequirement

    from ..caption_scenes import scene_windows

    req = WindowRequirement(WINDOW_S, 2.5, FPS, FRAMES, SIZE, SIZE, SAMPLE_RATE, SAMPLES)
    out = []
    for s in range(VAL_SEEDS[0], VAL_SEEDS[0] + n_scenes):
        ws = scene_windows(s, req).windows[:4]
        out.append({"video": np.stack([w.frames for w in ws if w.frames is not None]),
                    "audio": np.stack([w.audio for w in ws if w.audio is not None])})
    return out


def decoder_inputs(vocab: Vocabulary, memory: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid token batches (BOS, random words of several lengths, PAD) with the given memory."""
    rng = np.random.default_rng(seed)
    tokens = np.full((len(memory), LENGTH), PAD, np.int64)
    tokens[:, 0] = BOS
    for i in range(len(memory)):
        n = int(rng.integers(0, LENGTH))
        tokens[i, 1 : 1 + n] = rng.integers(4, len(vocab), n)
    return {"tokens": tokens, "memory": memory.astype(np.float32)}


def export_models(net: CaptionNet, vocab: Vocabulary, encoder_path: Path, decoder_path: Path | None = None,
                  opset: int = 17, atol: float = 1e-4, rtol: float = 1e-3, real: bool = True,
                  progress: Callable[[str], None] = print) -> tuple[Any, Any]:
    """Export encoder and decoder step (decoder next to the encoder by default), each parity-checked."""
    from ..export import export_graph, export_onnx

    net = net.eval()
    decoder_path = decoder_path or encoder_path.with_name(
        encoder_path.name.replace("encoder", "decoder_step") if "encoder" in encoder_path.name
        else encoder_path.stem + "_decoder_step.onnx")
    contract = encoder_contract(decoder_path.name if decoder_path.parent == encoder_path.parent
                                else str(decoder_path.resolve()))
    reals = real_windows() if real else []
    enc = export_onnx(net.encoder, None, contract, encoder_path, opset=opset, real_inputs=reals,
                      atol=atol, rtol=rtol, simplify=False, progress=progress)
    with torch.no_grad():
        if reals:
            mem = net.encoder(torch.from_numpy(reals[0]["video"]), torch.from_numpy(reals[0]["audio"]))[0].numpy()
        else:
            mem = np.random.default_rng(0).normal(size=(3, AUDIO_TOKENS + VIDEO_TOKENS, DIM)).astype(np.float32)
    meta = decoder_metadata(vocab, f"{contract['id']}@{contract['version']}")
    dec = export_graph(net.decoder, decoder_inputs(vocab, mem[:2], 1), meta, decoder_path, ["logits"],
                       parity_sets=[("real", decoder_inputs(vocab, mem, 2))], opset=opset, atol=atol, rtol=rtol,
                       progress=progress)
    return enc, dec


def save_checkpoint(net: CaptionNet, vocab: Vocabulary, path: str | Path) -> None:
    torch.save({"state_dict": net.state_dict(), "vocabulary": vocab.to_json()}, str(path))


def load_checkpoint(path: str | Path) -> tuple[CaptionNet, Vocabulary]:
    from avstream.engine.errors import ModelError

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors and plain data: never code
        vocab = Vocabulary.from_json(state["vocabulary"], str(path))
        net = build_model(len(vocab))
        net.load_state_dict(state["state_dict"])
    except Exception as exc:  # a foreign or unsafe file: torch raises many kinds (UnpicklingError, RuntimeError...)
        raise ModelError(f"--checkpoint {path}: not a captions checkpoint ({type(exc).__name__}: {exc})") from None
    return net.eval(), vocab


def random_weights_models(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """The caption network with random weights (the training vocabulary), exported to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    enc, dec = folder / ENCODER_FILE, folder / DECODER_FILE
    if not (enc.exists() and dec.exists()):
        vocab = build_vocabulary()
        export_models(build_model(len(vocab), seed), vocab, enc, dec, real=False, progress=lambda m: None)
    return enc, dec


def export_recipe(args: Any, say: Callable[[str], None]) -> int:
    """``avstream export --recipe captions``: train (or load --checkpoint), export both graphs, report."""
    from avstream.engine.inference.runners import measure_latency

    out = Path(args.out or f"models/{ENCODER_FILE}")
    t0 = time.perf_counter()
    if args.checkpoint:
        net, vocab = load_checkpoint(args.checkpoint)
    else:
        say(f"training recipe 'captions': {args.train_steps} steps, seed {args.seed}")
        net, vocab, stats = train(args.train_steps, args.seed, args.cache_dir or ".cache/captions", progress=say)
        say(f"trained in {stats.seconds:.0f} s (of which {stats.render_seconds:.0f} s data); validation "
            f"(greedy, seeds {VAL_SEEDS[0]}-{VAL_SEEDS[1] - 1}): {stats.val}")
        if args.save_checkpoint:
            save_checkpoint(net, vocab, args.save_checkpoint)
            say(f"checkpoint written to {args.save_checkpoint}")
    enc, dec = export_models(net, vocab, out, opset=args.opset, atol=args.atol, rtol=args.rtol, progress=say)
    ms = measure_latency(out, runs=20, threads=1)
    say(f"done in {time.perf_counter() - t0:.0f} s: {enc.path} {enc.size_bytes / 1e3:.0f} kB + {dec.path} "
        f"{dec.size_bytes / 1e3:.0f} kB; parity max abs {max(enc.max_abs, dec.max_abs):.2e}; encoder CPU "
        f"latency {ms:.2f} ms/window (1 thread, batch 1)")
    return 0
