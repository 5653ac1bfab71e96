"""ONNX Runtime sessions and the model runner.

onnxruntime is an optional dependency (extras ``avstream[cpu]`` / ``avstream[gpu]``: its CPU and GPU
builds cannot share an environment), so it is imported lazily with a message naming the extra.

``Runner.run`` takes batched inputs (B, ...) so that windows of several streams can share one call;
``Runner.prepare`` turns one ``AVWindow`` into per-window arrays the model accepts (padding, silence,
black frames), and ``Runner.run_windows`` stacks, runs and splits per window.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingDependencyError, ModelError
from .items import AVWindow
from .models import ModelContract, read_contract

log = logging.getLogger("avstream.inference")

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float16)": np.float16,
    "tensor(double)": np.float64, "tensor(bool)": np.bool_,
}


def import_onnxruntime() -> Any:
    """The onnxruntime module, or MissingDependencyError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError(
            f"onnxruntime is not installed ({exc}); install an inference runtime: "
            "pip install 'avstream[cpu]' (or 'avstream[gpu]' on an NVIDIA machine)"
        ) from None
    return onnxruntime


def provider_name(name: str) -> str:
    """Short provider name (``cuda``) → ORT name (``CUDAExecutionProvider``); ORT names pass through."""
    key = name.strip().lower()
    if key in PROVIDERS:
        return PROVIDERS[key]
    if name.endswith("ExecutionProvider"):
        return name
    raise ModelError(f"unknown execution provider {name!r} (known: {', '.join(PROVIDERS)})")


def select_providers(wanted: Sequence[str], available: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The wanted providers this ORT build has, in order, and (name, reason) for the skipped ones."""
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    gpu_build = "CUDAExecutionProvider" in available
    for name in wanted:
        ort_name = provider_name(name)
        if ort_name in chosen:
            continue
        if ort_name in available:
            chosen.append(ort_name)
            continue
        hint = ""
        if ort_name in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and not gpu_build:
            hint = "; this is a CPU-only onnxruntime build, install 'avstream[gpu]' for CUDA/TensorRT"
        skipped.append((name, f"{ort_name} is not available in this onnxruntime build "
                              f"(available: {', '.join(available)}){hint}"))
    return chosen, skipped


def _feed_shape(shape: Sequence[Any], batch: int) -> list[int]:
    return [batch if i == 0 or not isinstance(d, int) or d <= 0 else d for i, d in enumerate(shape)]


def create_session(
    path: str | os.PathLike[str],
    *,
    providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
    threads: int = 0,
    node_id: str = "",
) -> Any:
    """An ORT InferenceSession on the first available providers of ``providers``, warmed up once.

    Providers missing from this build are skipped with a logged reason; ``threads`` sets the intra-op
    thread count (0: ORT's default, one per core).
    """
    ort = import_onnxruntime()
    who = f"{node_id}: " if node_id else ""
    available = list(ort.get_available_providers())
    chosen, skipped = select_providers(list(providers), available)
    for name, reason in skipped:
        log.info("%sskipping execution provider %r: %s", who, name, reason)
    if not chosen:
        raise MissingDependencyError(
            f"{who}none of the execution providers {list(providers)} is available "
            f"(this onnxruntime has: {', '.join(available)}); add 'cpu' to providers or install "
            "'avstream[gpu]'"
        )
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1  # one graph at a time per node; parallelism is within ops
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle pool threads would spin between windows (one a second): burn no CPU waiting
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # ORT's own warnings go to stderr unformatted; we log what matters
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
        raise ModelError(f"{who}{path}: onnxruntime cannot load the model: {exc}") from None
    active = session.get_providers()
    for name in chosen:
        if name not in active:  # e.g. TensorRT listed but its libraries missing at load time
            log.warning("%sexecution provider %s did not initialise; running on %s", who, name, ", ".join(active))
    log.info("%s%s: running on %s (threads: %s)", who, Path(path).name, ", ".join(active), threads or "default")
    feed: dict[str, np.ndarray] = {
        i.name: np.zeros(_feed_shape(i.shape, 1), dtype=_ORT_DTYPES.get(i.type, np.float32))
        for i in session.get_inputs()
    }
    session.run(None, feed)  # warm-up: first run allocates and (for TensorRT) builds engines
    return session


class Runner:
    """A session with its contract: batched ``run``, plus per-window preparation for the nodes."""

    def __init__(self, session: Any, contract: ModelContract, node_id: str = ""):
        self.session = session
        self.contract = contract
        self.node_id = node_id
        graph_inputs = {i.name: i for i in session.get_inputs()}
        for spec in (contract.video, contract.audio):
            if spec is not None and spec.name not in graph_inputs:
                raise ModelError(f"{contract.source}: graph has no input {spec.name!r}")
        extra = set(graph_inputs) - {s.name for s in (contract.video, contract.audio) if s is not None}
        if extra:
            raise ModelError(f"{contract.source}: graph inputs {sorted(extra)} are not described by the contract")
        self.output_names = [o.name for o in session.get_outputs()]
        self.resized = 0  # windows whose frames had to be resized here (the window node should do it)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
        threads: int = 0,
        node_id: str = "",
    ) -> Runner:
        contract = read_contract(path)
        return cls(create_session(path, providers=providers, threads=threads, node_id=node_id), contract, node_id)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def zero_inputs(self, batch: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Black frames and silence for ``batch`` windows (warm-up, latency figures, tests)."""
        v, a = self.contract.video, self.contract.audio
        video = np.zeros((batch, v.frames, v.height, v.width, 3), np.uint8) if v else None
        audio = np.zeros((batch, a.samples), np.float32) if a else None
        return video, audio

    def run(self, video: np.ndarray | None, audio: np.ndarray | None) -> dict[str, np.ndarray]:
        """Run a batch: video (B, T, H, W, 3) uint8 BGR, audio (B, N) float32 → outputs by name.

        An input the model needs but the caller does not give is fed as black frames / silence.
        """
        c = self.contract
        given = video if video is not None else audio
        if given is None:
            raise ValueError("Runner.run needs video or audio")
        batch = given.shape[0]
        feed: dict[str, np.ndarray] = {}
        if c.video is not None:
            v = c.video
            want = (batch, v.frames, v.height, v.width, 3)
            if video is None:
                video = np.zeros(want, np.uint8)
            if video.shape != want:
                raise ValueError(f"{c.ref}: video batch has shape {video.shape}, the model takes {want}")
            if v.pixel_format == "rgb24":
                video = video[..., ::-1]
            feed[v.name] = np.ascontiguousarray(video, dtype=np.float32 if v.dtype == "float32" else np.uint8)
        if c.audio is not None:
            want_a = (batch, c.audio.samples)
            if audio is None:
                audio = np.zeros(want_a, np.float32)
            if audio.shape != want_a:
                raise ValueError(f"{c.ref}: audio batch has shape {audio.shape}, the model takes {want_a}")
            feed[c.audio.name] = np.ascontiguousarray(audio, dtype=np.float32)
        outs = self.session.run(None, feed)
        return dict(zip(self.output_names, outs, strict=True))

    # --- per-window preparation -------------------------------------------------------------
    def prepare_video(self, frames: np.ndarray | None) -> np.ndarray | None:
        """(T, H, W, 3) frames fitted to the model: last T frames kept, missing ones repeat the first."""
        v = self.contract.video
        if v is None:
            return None
        if frames is None or len(frames) == 0:
            return np.zeros((v.frames, v.height, v.width, 3), np.uint8)
        if len(frames) > v.frames:
            frames = frames[-v.frames :]
        elif len(frames) < v.frames:  # stream start: pad in front so the newest frame stays last
            pad = np.repeat(frames[:1], v.frames - len(frames), axis=0)
            frames = np.concatenate([pad, frames])
        if frames.shape[1:3] != (v.height, v.width):
            # nearest neighbour keeps the runtime free of cv2; the window node normally resizes
            self.resized += 1
            ys = (np.arange(v.height) * frames.shape[1] // v.height).astype(np.intp)
            xs = (np.arange(v.width) * frames.shape[2] // v.width).astype(np.intp)
            frames = frames[:, ys][:, :, xs]
        return np.asarray(frames, dtype=np.uint8)

    def prepare_audio(self, samples: np.ndarray | None, sample_rate: int = 0) -> np.ndarray | None:
        """(N,) samples fitted to the model: resampled if needed, last N kept, silence in front."""
        a = self.contract.audio
        if a is None:
            return None
        if samples is None or len(samples) == 0:
            return np.zeros(a.samples, np.float32)
        samples = np.asarray(samples, np.float32).reshape(-1)
        if sample_rate and sample_rate != a.sample_rate:
            n = int(round(len(samples) * a.sample_rate / sample_rate))
            samples = np.interp(np.arange(n) * (sample_rate / a.sample_rate), np.arange(len(samples)),
                                samples).astype(np.float32)
        if len(samples) > a.samples:
            samples = samples[-a.samples :]
        elif len(samples) < a.samples:
            samples = np.concatenate([np.zeros(a.samples - len(samples), np.float32), samples])
        return samples

    def run_windows(self, windows: Sequence[AVWindow]) -> list[dict[str, np.ndarray]]:
        """Run several windows (any streams) as one batch; per-window outputs without the batch axis."""
        if not windows:
            return []
        videos = [self.prepare_video(w.frames) for w in windows]
        audios = [self.prepare_audio(w.audio, w.sample_rate) for w in windows]
        video = np.stack([v for v in videos if v is not None]) if self.contract.video else None
        audio = np.stack([a for a in audios if a is not None]) if self.contract.audio else None
        outs = self.run(video, audio)
        return [{k: v[i] for k, v in outs.items()} for i in range(len(windows))]
