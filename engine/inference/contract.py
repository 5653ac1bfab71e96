"""Self-describing models (SPEC §5): the ``avstream`` metadata contract, model lookup, ``avstream models``.

An avstream model is an ONNX file whose ``metadata_props`` hold the key ``"avstream"`` with a JSON
object describing its inputs, window and outputs. The engine configures windowing from it, so a
pipeline that feeds a model the wrong input fails at validation.

Reading the contract needs neither ``onnx`` nor ``onnxruntime``: the few top-level protobuf fields we
need (metadata, opsets, graph inputs/outputs) are parsed here directly, so ``avstream validate`` works
on a machine without an inference runtime.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from avstream.engine.errors import ModelError
from avstream.engine.inference.onnx_header import OnnxHeader, read_onnx_header
from avstream.engine.node import WindowRequirement

METADATA_KEY = "avstream"
SCHEMA_VERSION = 1
BUILTIN_PREFIX = "builtin:"
BUILTIN_PACKAGE = "avstream.models"
VIDEO_LAYOUTS = ("NTHWC",)
PIXEL_FORMATS = ("bgr24", "rgb24")
VIDEO_DTYPES = ("uint8", "float32")
AUDIO_DTYPES = ("float32",)


# ---------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInput:
    """The video input: raw frames (B, T, H, W, 3); any normalisation is inside the graph."""

    name: str
    fps: float
    frames: int
    height: int
    width: int
    layout: str = "NTHWC"
    dtype: str = "uint8"
    pixel_format: str = "bgr24"


@dataclass(frozen=True)
class AudioInput:
    """The audio input: raw mono samples (B, N) in [-1, 1]; log-mel is inside the graph."""

    name: str
    sample_rate: int
    samples: int
    seconds: float
    dtype: str = "float32"


@dataclass(frozen=True)
class OutputSpec:
    """One graph output and what it means."""

    name: str
    meaning: str = ""


@dataclass(frozen=True)
class ModelContract:
    """The parsed and validated ``avstream`` metadata of one model."""

    id: str
    version: str
    task: str
    window_seconds: float
    window_hop: float
    video: VideoInput | None
    audio: AudioInput | None
    outputs: dict[str, OutputSpec]
    description: str = ""
    labels: tuple[str, ...] = ()
    preprocessing: str = ""
    schema: int = SCHEMA_VERSION
    source: str = ""  # file the contract came from, for messages
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """The ``model`` field of results: ``id@version``."""
        return f"{self.id}@{self.version}"

    def window_requirement(self) -> WindowRequirement:
        """The AV window this model needs, for configuring the window node."""
        v, a = self.video, self.audio
        return WindowRequirement(
            seconds=self.window_seconds,
            hop=self.window_hop,
            fps=v.fps if v else 0.0,
            frames=v.frames if v else 0,
            height=v.height if v else 0,
            width=v.width if v else 0,
            sample_rate=a.sample_rate if a else 0,
            audio_samples=a.samples if a else 0,
            source=self.ref,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored under the ``avstream`` metadata key."""
        return dict(self.raw)

    def inputs_summary(self) -> str:
        parts = []
        if self.video:
            v = self.video
            parts.append(f"video {v.frames}x{v.height}x{v.width}x3 {v.pixel_format} @{v.fps:g}fps")
        if self.audio:
            parts.append(f"audio {self.audio.samples} @{self.audio.sample_rate}Hz")
        return ", ".join(parts)


class _Checker:
    """Collects typed lookups in the metadata dict with messages naming the file and the key."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ModelError:
        return ModelError(f"{self.source}: metadata '{METADATA_KEY}': {key}: {message}")

    def obj(self, d: dict[str, Any], key: str, path: str, required: bool = True) -> dict[str, Any] | None:
        if key not in d or d[key] is None:
            if required:
                raise self.fail(path, "missing")
            return None
        if not isinstance(d[key], dict):
            raise self.fail(path, f"must be an object (got {type(d[key]).__name__})")
        return d[key]

    def string(self, d: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
        value = d.get(key, default)
        if value is None:
            raise self.fail(path, "missing")
        if not isinstance(value, str) or (not value and default is None):
            raise self.fail(path, f"must be a non-empty string (got {value!r})")
        return value

    def number(self, d: dict[str, Any], key: str, path: str, default: float | None = None) -> float:
        value = d.get(key, default)
        if value is None:
            raise self.fail(path, "missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise self.fail(path, f"must be a positive number (got {value!r})")
        return float(value)

    def integer(self, d: dict[str, Any], key: str, path: str, default: int | None = None) -> int:
        value = d.get(key, default)
        if value is None:
            raise self.fail(path, "missing")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(path, f"must be a positive integer (got {value!r})")
        return value

    def choice(self, d: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
        value = d.get(key, allowed[0])
        if value not in allowed:
            raise self.fail(path, f"{value!r} is not supported (allowed: {', '.join(allowed)})")
        return str(value)


def contract_from_dict(data: Any, source: str = "<contract>") -> ModelContract:
    """Validate a metadata object and build the contract; ModelError names the source and the key."""
    c = _Checker(source)
    if not isinstance(data, dict):
        raise ModelError(f"{source}: metadata '{METADATA_KEY}' must be a JSON object")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise c.fail("schema", f"version {schema!r} is not supported (this engine reads {SCHEMA_VERSION})")
    model_id = c.string(data, "id", "id")
    version = str(data.get("version", "")) if isinstance(data.get("version"), (str, int)) else ""
    if not version:
        raise c.fail("version", "missing (a string such as \"1\")")
    task = c.string(data, "task", "task")
    inputs = c.obj(data, "inputs", "inputs")
    assert inputs is not None
    unknown = sorted(set(inputs) - {"video", "audio"})
    if unknown:
        raise c.fail(f"inputs.{unknown[0]}", "unknown input (allowed: video, audio)")

    video = None
    vd = c.obj(inputs, "video", "inputs.video", required=False)
    if vd is not None:
        video = VideoInput(
            name=c.string(vd, "name", "inputs.video.name", "video"),
            fps=c.number(vd, "fps", "inputs.video.fps"),
            frames=c.integer(vd, "frames", "inputs.video.frames"),
            height=c.integer(vd, "height", "inputs.video.height"),
            width=c.integer(vd, "width", "inputs.video.width"),
            layout=c.choice(vd, "layout", "inputs.video.layout", VIDEO_LAYOUTS),
            dtype=c.choice(vd, "dtype", "inputs.video.dtype", VIDEO_DTYPES),
            pixel_format=c.choice(vd, "pixel_format", "inputs.video.pixel_format", PIXEL_FORMATS),
        )
    audio = None
    ad = c.obj(inputs, "audio", "inputs.audio", required=False)
    if ad is not None:
        rate = c.integer(ad, "sample_rate", "inputs.audio.sample_rate")
        if "samples" in ad:
            samples = c.integer(ad, "samples", "inputs.audio.samples")
            seconds = c.number(ad, "seconds", "inputs.audio.seconds", samples / rate)
        else:
            seconds = c.number(ad, "seconds", "inputs.audio.seconds")
            samples = int(round(seconds * rate))
        if abs(samples - seconds * rate) > 1:
            raise c.fail("inputs.audio.samples", f"{samples} does not match seconds*sample_rate = {seconds * rate:g}")
        audio = AudioInput(
            name=c.string(ad, "name", "inputs.audio.name", "audio"),
            sample_rate=rate,
            samples=samples,
            seconds=seconds,
            dtype=c.choice(ad, "dtype", "inputs.audio.dtype", AUDIO_DTYPES),
        )
    if video is None and audio is None:
        raise c.fail("inputs", "needs at least one of 'video' or 'audio'")
    if video and audio and video.name == audio.name:
        raise c.fail("inputs.audio.name", f"same graph input name as the video ({video.name!r})")

    wd = c.obj(data, "window", "window", required=False) or {}
    natural = audio.seconds if audio else (video.frames / video.fps if video else 0.0)
    seconds = c.number(wd, "seconds", "window.seconds", natural)
    hop = c.number(wd, "hop", "window.hop", seconds)
    if video and abs(video.frames - seconds * video.fps) >= 1.0:
        raise c.fail(
            "inputs.video.frames",
            f"{video.frames} frames at {video.fps:g} fps do not fill a {seconds:g} s window "
            f"(expected {seconds * video.fps:g})",
        )
    if audio and abs(audio.seconds - seconds) > 1.0 / audio.sample_rate + 1e-9:
        raise c.fail("inputs.audio.seconds", f"{audio.seconds:g} s differs from window.seconds {seconds:g}")

    od = c.obj(data, "outputs", "outputs")
    assert od is not None
    if not od:
        raise c.fail("outputs", "needs at least one output")
    outputs: dict[str, OutputSpec] = {}
    for key, spec in od.items():
        spec = spec if isinstance(spec, dict) else {}
        name = spec.get("name", key)
        if not isinstance(name, str) or not name:
            raise c.fail(f"outputs.{key}.name", f"must be a non-empty string (got {name!r})")
        meaning = spec.get("meaning", "")
        outputs[key] = OutputSpec(name=name, meaning=str(meaning))
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise c.fail("labels", "must be a list of strings")
    return ModelContract(
        id=model_id,
        version=version,
        task=task,
        window_seconds=seconds,
        window_hop=hop,
        video=video,
        audio=audio,
        outputs=outputs,
        description=str(data.get("description", "")),
        labels=tuple(labels),
        preprocessing=str(data.get("preprocessing", "")),
        schema=SCHEMA_VERSION,
        source=source,
        raw=dict(data),
    )


# ---------------------------------------------------------------------------------------------
# Minimal ONNX protobuf reader (no onnx package needed)
# ---------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, int, int], tuple[ModelContract, OnnxHeader]] = {}


def read_model(path: str | os.PathLike[str]) -> tuple[ModelContract, OnnxHeader]:
    """Contract and header of a model file, checked against each other (cached by path and mtime)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise ModelError(f"{p}: model file not found") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key in _CACHE:
        return _CACHE[key]
    header = read_onnx_header(p)
    text = header.metadata.get(METADATA_KEY)
    if text is None:
        keys = ", ".join(sorted(header.metadata)) or "none"
        raise ModelError(
            f"{p}: no '{METADATA_KEY}' metadata (metadata keys: {keys}); export it with "
            "`avstream export` or add the contract JSON to metadata_props (see docs/models.md)"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{p}: metadata '{METADATA_KEY}' is not valid JSON: {exc}") from None
    contract = contract_from_dict(data, str(p))
    _check_graph(contract, header, str(p))
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = (contract, header)
    return contract, header


def _check_graph(contract: ModelContract, header: OnnxHeader, source: str) -> None:
    """The contract's inputs and outputs must exist in the graph with compatible shapes."""
    graph_in = {t.name: t for t in header.inputs}
    graph_out = {t.name for t in header.outputs}
    want: list[tuple[str, str, tuple[int, ...]]] = []
    if contract.video:
        v = contract.video
        want.append(("inputs.video", v.name, (v.frames, v.height, v.width, 3)))
    if contract.audio:
        want.append(("inputs.audio", contract.audio.name, (contract.audio.samples,)))
    for key, name, dims in want:
        t = graph_in.get(name)
        if t is None:
            raise ModelError(f"{source}: metadata '{METADATA_KEY}': {key}.name: graph has no input {name!r} "
                             f"(graph inputs: {', '.join(graph_in) or 'none'})")
        if len(t.shape) != len(dims) + 1:
            raise ModelError(f"{source}: graph input {name!r} has rank {len(t.shape)}, the contract implies "
                             f"{len(dims) + 1} (batch + {dims})")
        for axis, (got, exp) in enumerate(zip(t.shape[1:], dims, strict=True), start=1):
            if isinstance(got, int) and got != exp:
                raise ModelError(f"{source}: graph input {name!r} axis {axis} is {got}, the contract says {exp}")
    for key, spec in contract.outputs.items():
        if spec.name not in graph_out:
            raise ModelError(f"{source}: metadata '{METADATA_KEY}': outputs.{key}: graph has no output "
                             f"{spec.name!r} (graph outputs: {', '.join(sorted(graph_out))})")


def read_contract(path: str | os.PathLike[str]) -> ModelContract:
    """The validated contract of a model file; ModelError names the file and the bad key."""
    return read_model(path)[0]


# ---------------------------------------------------------------------------------------------
# Finding models
# ---------------------------------------------------------------------------------------------
def builtin_models() -> dict[str, Path]:
    """Built-in model names → files shipped in the ``avstream.models`` package."""
    try:
        root = resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        return {}
    out = {}
    for entry in root.iterdir():
        if entry.name.endswith(".onnx") and entry.is_file():
            out[entry.name[: -len(".onnx")]] = Path(str(entry))
    return dict(sorted(out.items()))


def resolve_model(ref: str, base_dir: Path) -> Path:
    """``builtin:NAME`` → the shipped file; another path resolves against ``base_dir``."""
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX) :]
        known = builtin_models()
        if name not in known:
            names = ", ".join(f"builtin:{n}" for n in known) or "none installed"
            raise ModelError(f"unknown built-in model {ref!r} (available: {names})")
        return known[name]
    path = Path(os.path.expanduser(ref.removeprefix("file://")))
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        names = ", ".join(f"builtin:{n}" for n in builtin_models()) or "none"
        raise ModelError(f"model file {str(path)!r} not found (built-in models: {names})")
    return path


