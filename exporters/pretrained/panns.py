"""PANNs ``Cnn14`` (Kong et al. 2020, audioset_tagging_cnn) from a local checkpoint: an audio tagger
exported with its log-mel front end inside the graph.

The module mirrors the published ``models.Cnn14`` layer for layer and name for name, so the official
``Cnn14_mAP=0.431.pth`` (``{"model": state_dict, ...}``) loads strictly. Channel widths, the hidden
size and the class count are read from the checkpoint's shapes: a narrower variant (same layers,
fewer channels) loads too. Sample rate, window, hop, mel bins and mel range are arguments with the
CNN14 defaults; the STFT and mel weights stored in the checkpoint are checked against them.

The engine feeds ``(B, N)`` float32 mono samples at the contract's ``sample_rate`` (the model's own,
32 kHz for CNN14): the engine's audio decoder resamples every source to it, so the graph does not
resample. The graph outputs ``probabilities``: one independent sigmoid per label (multi-label).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avstream.engine.errors import ModelError
from avstream.exporters.export import ExportReport, ParityError, export_onnx
from avstream.exporters.pretrained.panns_frontend import (
    LogmelFilterBank,
    Spectrogram,
    check_frontend,
    reference_logmel,
)

TASK = "audio_tags"
CNN14_WIDTHS = (64, 128, 256, 512, 1024, 2048)
CNN14_HIDDEN = 2048
AUDIOSET_CLASSES = 527
POOLS = 5  # conv blocks 1-5 halve time and frequency; block 6 does not pool
# ONNX (float32 DFT-as-conv) vs the float64 numpy front end + the torch body, on the probabilities
# (measured on random-weight Cnn14s over the probe signals: 2.6e-6 full width, 4e-5 narrow)
REFERENCE_ATOL = 1e-3
LABEL_COLUMNS = ("index", "mid", "display_name")


@dataclass(frozen=True)
class FrontEnd:
    """The front-end settings of a PANNs checkpoint (CNN14 defaults: 32 kHz, 1024/320, 64 mels 50-14000 Hz)."""

    sample_rate: int = 32000
    window_size: int = 1024
    hop_size: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0

    def as_dict(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "window_size": self.window_size, "hop_size": self.hop_size,
                "mel_bins": self.mel_bins, "fmin": self.fmin, "fmax": self.fmax, "window": "hann",
                "center": True, "pad_mode": "reflect", "power": 2.0, "mel": "slaney", "ref": 1.0,
                "amin": 1e-10, "top_db": None}


class ConvBlock(nn.Module):
    """conv 3x3 - BN - ReLU, twice, then 2x2 average pooling (none for the last block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: bool) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return nn.functional.avg_pool2d(x, kernel_size=2) if pool else x


class Cnn14(nn.Module):
    """(B, N) samples → (B, classes) sigmoid probabilities; ``body`` takes the (B, 1, frames, mels) log-mel.

    Inference only: the published model's SpecAugment and dropout act in training alone.
    """

    def __init__(self, front: FrontEnd = FrontEnd(), widths: tuple[int, ...] = CNN14_WIDTHS,
                 hidden: int = CNN14_HIDDEN, classes: int = AUDIOSET_CLASSES) -> None:
        super().__init__()
        self.front = front
        self.spectrogram_extractor = Spectrogram(front.window_size, front.hop_size)
        self.logmel_extractor = LogmelFilterBank(front.window_size // 2 + 1, front.mel_bins)
        self.bn0 = nn.BatchNorm2d(front.mel_bins)
        self.blocks = len(widths)
        for i, (cin, cout) in enumerate(zip((1, *widths[:-1]), widths, strict=True), start=1):
            self.add_module(f"conv_block{i}", ConvBlock(cin, cout))
        self.fc1 = nn.Linear(widths[-1], hidden)
        self.fc_audioset = nn.Linear(hidden, classes)

    def body(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)  # bn0 normalises each mel bin
        for i in range(1, self.blocks + 1):
            x = getattr(self, f"conv_block{i}")(x, pool=i < self.blocks)
        x = x.mean(dim=3)  # over frequency
        x = torch.amax(x, dim=2) + x.mean(dim=2)  # max + mean over time
        x = torch.relu(self.fc1(x))
        return torch.sigmoid(self.fc_audioset(x))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.body(self.logmel_extractor(self.spectrogram_extractor(audio)))


def expected_keys() -> set[str]:
    """The state_dict keys of the published Cnn14 (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return set(Cnn14().state_dict())


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip()
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:  # e.g. a training checkpoint that also pickled numpy state next to the weights
            raise ModelError(f"{path}: holds Python objects besides tensors ({unsafe.group(1)}), which a weights-only "
                             "load refuses; from a copy you trust, save just the weights: torch.save(torch.load(f, "
                             "weights_only=False)['model'], 'Cnn14_weights.pth')") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ModelError(f"{path}: cannot read it as a PyTorch checkpoint (weights only): {first}") from None
    for wrapper in ("model", "state_dict"):  # PANNs saves {"model": ..., "iteration": ...}
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a Cnn14 state_dict or {{'model': state_dict}}, got "
                         f"{type(obj).__name__}{' with non-tensor values' if isinstance(obj, dict) else ''}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from a DataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_keys(state: dict[str, torch.Tensor], path: Path) -> None:
    want = expected_keys()
    for key in want - set(state):  # older BatchNorm checkpoints lack the counter; eval never reads it
        bn = key.removesuffix(".num_batches_tracked")
        if bn != key and f"{bn}.running_var" in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        def few(keys: list[str]) -> str:
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            return f"{len(keys)} key{'s' if len(keys) > 1 else ''} ({', '.join(keys[:4])}{more})"
        parts = [f"missing {few(missing)}"] if missing else []
        parts += [f"unexpected {few(unexpected)}"] if unexpected else []
        raise ModelError(f"{path}: not a PANNs Cnn14 checkpoint: {'; '.join(parts)}")


def _shapes(state: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], int, int]:
    widths = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, len(CNN14_WIDTHS) + 1))
    return widths, int(state["fc1.weight"].shape[0]), int(state["fc_audioset.weight"].shape[0])


@dataclass
class Tagger:
    """An imported audio tagger, ready to export (the tagging counterpart of ``Tower``)."""

    name: str
    module: Cnn14
    reference: Callable[[dict[str, np.ndarray]], np.ndarray]  # engine inputs -> (B, classes), float64 front end
    inputs: dict[str, Any]  # avstream metadata "inputs" (SPEC §5)
    classes: int
    source: str
    extra: dict[str, Any] = field(default_factory=dict)


def load_cnn14(path: Path, *, seconds: float = 10.0, front: FrontEnd = FrontEnd()) -> Tagger:
    """The Cnn14 of checkpoint ``path`` for windows of ``seconds``; ModelError for another architecture,
    settings its front-end weights contradict, or a window too short for the five poolings."""
    path = Path(path)
    state = _read_state(path)
    _check_keys(state, path)
    check_frontend(state, str(path), sample_rate=front.sample_rate, window_size=front.window_size,
                   mel_bins=front.mel_bins, fmin=front.fmin, fmax=front.fmax)
    samples = int(round(seconds * front.sample_rate)) if math.isfinite(seconds) else 0
    frames = 1 + samples // front.hop_size
    if frames < 2 ** POOLS or samples <= front.window_size // 2:
        raise ModelError(f"a window of {seconds:g} s gives {max(frames, 0)} frames; Cnn14 pools time by "
                         f"{2 ** POOLS}: use at least {(2 ** POOLS - 1) * front.hop_size / front.sample_rate:g} s")
    widths, hidden, classes = _shapes(state)
    with torch.device("meta"):  # the checkpoint's tensors become the parameters (assign): no copy, no init
        module = Cnn14(front, widths, hidden, classes)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        raise ModelError(f"{path}: the Cnn14 layers do not fit together: {' '.join(lines[1:3])}") from None
    module.eval()
    mel_w = module.logmel_extractor.melW.detach().double().numpy()

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        logmel = reference_logmel(inputs["audio"], mel_w, n_fft=front.window_size, hop=front.hop_size)
        with torch.no_grad():
            out = module.body(torch.from_numpy(logmel.astype(np.float32)).unsqueeze(1))
        return np.asarray(out.numpy(), dtype=np.float32)

    full = widths == CNN14_WIDTHS and hidden == CNN14_HIDDEN
    return Tagger(
        name=f"PANNs Cnn14{'' if full else ' (narrow)'} from {path.name}",
        module=module,
        reference=reference,
        inputs={"audio": {"name": "audio", "sample_rate": front.sample_rate, "seconds": float(seconds)}},
        classes=classes,
        source=str(path),
        extra={"architecture": "Cnn14", "widths": list(widths), "hidden": hidden, "front_end": front.as_dict()},
    )


@dataclass(frozen=True)
class LabelSet:
    names: list[str]
    mids: list[str]
    source: str


def read_labels(path: Path) -> LabelSet:
    """An AudioSet ``class_labels_indices.csv``-style file: header ``index,mid,display_name``, one row per
    class, indices 0..C-1 each once (in any order)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the labels file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: the labels file is not UTF-8 text") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise ModelError(f"{path}: not a valid CSV file: {exc}") from None
    if not rows or tuple(c.strip() for c in rows[0]) != LABEL_COLUMNS:
        raise ModelError(f"{path}: expected the header {','.join(LABEL_COLUMNS)} (AudioSet class_labels_indices.csv)")
    by_index: dict[int, tuple[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 3:
            raise ModelError(f"{path}:{line}: expected 3 columns (index,mid,display_name), got {len(row)}")
        index, mid, name = (c.strip() for c in row)
        if not index.isdigit():
            raise ModelError(f"{path}:{line}: index {index!r} is not a non-negative integer")
        if not name:
            raise ModelError(f"{path}:{line}: empty display_name")
        if int(index) in by_index:
            raise ModelError(f"{path}:{line}: index {index} appears twice")
        by_index[int(index)] = (mid, name)
    if not by_index:
        raise ModelError(f"{path}: no label rows after the header")
    gaps = sorted(set(range(len(by_index))) - set(by_index))
    if gaps:
        raise ModelError(f"{path}: indices must be 0..{len(by_index) - 1}; missing {gaps[:5]}")
    ordered = [by_index[i] for i in range(len(by_index))]
    return LabelSet(names=[n for _, n in ordered], mids=[m for m, _ in ordered], source=str(path))


def contract_for(tagger: Tagger, labels: LabelSet | None, model_id: str, version: str) -> dict[str, Any]:
    if labels is not None and len(labels.names) != tagger.classes:
        raise ModelError(f"{labels.source}: {len(labels.names)} labels, but the checkpoint has {tagger.classes} "
                         "classes")
    names = labels.names if labels else [f"class_{i}" for i in range(tagger.classes)]
    facts: dict[str, Any] = {**tagger.extra, "source": tagger.source, "classes": tagger.classes}
    if labels:
        facts["labels_source"], facts["mids"] = labels.source, labels.mids
    else:
        facts["labels_note"] = ("the checkpoint holds no class names: labels are class_<index>; export with "
                                "--labels class_labels_indices.csv for the AudioSet names")
    return {
        "schema": 1, "id": model_id, "version": version, "task": TASK,
        "description": f"audio tagger: {tagger.name}, {tagger.classes} classes, multi-label",
        "inputs": tagger.inputs,
        "outputs": {"probabilities": {"name": "probabilities",
                                      "meaning": "independent sigmoid probability per label (multi-label: "
                                                 "they do not sum to 1); the order is 'labels'"}},
        "labels": names,
        "multi_label": True,
        "preprocessing": "inside the graph: reflect-padded STFT (Hann) as conv1d, power, Slaney mel, "
                         "10*log10(max(x, 1e-10))",
        "audio_tags": facts,
    }


def probe_signals(samples: int, rate: int) -> dict[str, np.ndarray]:
    """Deterministic real-ish windows for parity: a harmonic tone in noise, a chirp, bursts, silence."""
    t = np.arange(samples) / rate
    rng = np.random.default_rng(7)
    tone = sum(0.3 / k * np.sin(2 * np.pi * 440 * k * t) for k in (1, 2, 3)) + 0.03 * rng.normal(size=samples)
    top = 0.45 * rate
    # a sweep over a -70 dBFS noise floor, as recorded: a pure digital sweep leaves bins near the 1e-10
    # floor, where float32 round-off of the DFT (not the export) moves the dB values by up to 0.06 dB
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + (top - 100) * t ** 2 / (2 * t[-1] + 1e-9)))
    chirp = chirp + 3e-4 * rng.normal(size=samples)
    bursts = np.where((t % 0.5) < 0.1, np.clip(rng.normal(0, 0.5, size=samples), -1, 1), 0.0)
    out = {"tone+noise": tone, "chirp": chirp, "bursts": bursts, "silence": np.zeros(samples)}
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


@dataclass
class TaggerExport:
    report: ExportReport
    reference_max_abs: float  # ONNX vs the float64 front end + torch body, on the probabilities
    labels_named: bool


def export_audio_tagger(tagger: Tagger, labels: LabelSet | None, out: Path, *, model_id: str = "panns-cnn14",
                        version: str = "1", opset: int = 17, atol: float = 1e-4, rtol: float = 1e-3,
                        reference_atol: float = REFERENCE_ATOL,
                        progress: Callable[[str], None] = print) -> TaggerExport:
    """Export ``tagger.module`` with the SPEC §5 metadata; parity ONNX vs the torch module (``atol`` /
    ``rtol``, random and real-ish windows) and ONNX vs ``tagger.reference`` (``reference_atol``)."""
    contract = contract_for(tagger, labels, model_id, version)
    samples = int(round(tagger.inputs["audio"]["seconds"] * tagger.inputs["audio"]["sample_rate"]))
    probes = probe_signals(samples, int(tagger.inputs["audio"]["sample_rate"]))
    batch = {"audio": np.stack(list(probes.values()))}
    report = export_onnx(tagger.module, {"audio": batch["audio"][:1]}, contract, Path(out), opset=opset,
                         real_inputs=[batch], atol=atol, rtol=rtol, progress=progress)
    from avstream.engine.inference.runners import import_onnxruntime

    progress("parity check: ONNX Runtime vs the float64 log-mel + PyTorch Cnn14 ...")
    sess = import_onnxruntime().InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["probabilities"], batch)
    worst = float(np.abs(got.astype(np.float64) - tagger.reference(batch)).max())
    if worst > reference_atol:
        failed = Path(out).with_suffix(".failed.onnx")
        Path(out).replace(failed)
        raise ParityError(f"{out}: probabilities differ from the reference front end + PyTorch by {worst:.3e} "
                          f"(atol {reference_atol:g}); model kept as {failed}")
    progress(f"  reference probabilities max abs {worst:.3e}  ok (atol {reference_atol:g})")
    if labels is None:
        progress(f"note: no --labels: the {tagger.classes} labels are class_0..class_{tagger.classes - 1} "
                 "(the checkpoint holds no names; pass AudioSet's class_labels_indices.csv)")
    return TaggerExport(report, worst, labels is not None)
