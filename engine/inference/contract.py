"""Self-describing models (SPEC §5): the ``avstream`` metadata contract, model lookup, ``avstream models``.

An avstream model is an ONNX file whose ``metadata_props`` hold the key ``"avstream"`` with a JSON
object describing its inputs, window and outputs. The engine configures windowing from it, so a
pipeline that feeds a model the wrong input fails at validation.

The metadata is read one way: :func:`metadata_from_dict` validates it with the pydantic schema its
``task`` selects (``ModelContract`` for window models, ``DecoderSpec`` for a caption decoder step),
and reports every problem at once with its key path. ``metadata_json_schema()`` is that schema as
JSON Schema.

Reading the contract needs neither ``onnx`` nor ``onnxruntime``: the few top-level protobuf fields we
need (metadata, opsets, graph inputs/outputs) are parsed by ``onnx_header``, so ``avstream validate``
works on a machine without an inference runtime.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from avstream.engine.errors import ModelError
from avstream.engine.inference.decoder_contract import (
    DECODER_TASK,
    DecoderSpec,
    decoder_graph_problems,
)
from avstream.engine.inference.metadata import (
    METADATA_KEY,
    SCHEMA_VERSION,
    ContractError,
    MetadataModel,
    Text,
    TopLevel,
    problem,
    problems_of,
    raise_problems,
)
from avstream.engine.inference.onnx_header import OnnxHeader, read_onnx_header
from avstream.engine.node import WindowRequirement

__all__ = [  # METADATA_KEY, SCHEMA_VERSION, ContractError and DecoderSpec are re-exported from here
    "AUDIO_DTYPES", "BUILTIN_PACKAGE", "BUILTIN_PREFIX", "METADATA_KEY", "PIXEL_FORMATS", "SCHEMA_VERSION",
    "VIDEO_DTYPES", "VIDEO_LAYOUTS", "AudioInput", "ContractError", "DecoderSpec", "ModelContract", "ModelInputs",
    "ModelMetadata", "OutputSpec", "VideoInput", "WindowSpec", "builtin_models", "contract_from_dict",
    "metadata_from_dict", "metadata_json_schema", "parse_metadata_text", "read_contract", "read_decoder_spec",
    "read_metadata", "read_model", "resolve_model",
]

BUILTIN_PREFIX = "builtin:"
MODELS_PREFIX = "models:"  # models:NAME -> NAME.onnx in the local models folder (exports, pulls)
BUILTIN_PACKAGE = "avstream.models"
VIDEO_LAYOUTS = ("NTHWC",)
PIXEL_FORMATS = ("bgr24", "rgb24")
VIDEO_DTYPES = ("uint8", "float32")
AUDIO_DTYPES = ("float32",)
# Sane bounds: metadata is read from files of unknown origin, and the engine allocates its window
# buffers from these numbers, so a corrupt or hostile model must fail validation, not exhaust memory.
MAX_FPS = 1000.0
MAX_FRAMES = 10_000
MAX_SIDE = 16384
MAX_SAMPLE_RATE = 384_000
MAX_WINDOW_S = 3600.0
MAX_WINDOW_BYTES = 4 << 30  # one (T, H, W, 3) video window, or one audio window of float32
MAX_METADATA_CHARS = 16 << 20  # a vocabulary of a million words fits


# ---------------------------------------------------------------------------------------------
# The contract of a window model
# ---------------------------------------------------------------------------------------------
class VideoInput(MetadataModel):
    """The video input: raw frames (B, T, H, W, 3); any normalisation is inside the graph."""

    name: Text = "video"
    layout: Literal["NTHWC"] = "NTHWC"
    dtype: Literal["uint8", "float32"] = "uint8"
    pixel_format: Literal["bgr24", "rgb24"] = "bgr24"
    fps: Annotated[float, Field(gt=0, le=MAX_FPS)]
    frames: Annotated[int, Field(gt=0, le=MAX_FRAMES)]
    height: Annotated[int, Field(gt=0, le=MAX_SIDE)]
    width: Annotated[int, Field(gt=0, le=MAX_SIDE)]

    @model_validator(mode="after")
    def _window_fits_memory(self) -> VideoInput:
        size = self.frames * self.height * self.width * 3 * (4 if self.dtype == "float32" else 1)
        if size > MAX_WINDOW_BYTES:
            raise_problems("video", [problem(("frames",), f"a window of {self.frames}x{self.height}x{self.width}x3 "
                                     f"{self.dtype} is {size / 2**30:.1f} GiB (at most {MAX_WINDOW_BYTES >> 30} GiB)",
                                     self.frames)])
        return self


class AudioInput(MetadataModel):
    """The audio input: raw mono samples (B, N) in [-1, 1]; log-mel is inside the graph."""

    name: Text = "audio"
    dtype: Literal["float32"] = "float32"
    sample_rate: Annotated[int, Field(gt=0, le=MAX_SAMPLE_RATE)]
    seconds: float = Field(gt=0, le=MAX_WINDOW_S, description="window length; derived from samples when absent")
    samples: int = Field(gt=0, le=MAX_WINDOW_BYTES // 4,
                         description="samples per window; derived from seconds when absent")

    @model_validator(mode="before")
    @classmethod
    def _derive_length(cls, data: Any) -> Any:
        """Either of ``seconds`` and ``samples`` may be left out: it follows from the other."""
        if not isinstance(data, dict):
            return data
        rate = _positive(data.get("sample_rate"), integer=True)
        seconds, samples = _positive(data.get("seconds")), _positive(data.get("samples"), integer=True)
        if rate is None:
            return data  # the sample rate's own error is reported
        if "samples" not in data and seconds is not None and seconds * rate < 2**53:  # else its bound reports it
            return {**data, "samples": int(round(seconds * rate))}
        if "seconds" not in data and samples is not None:
            return {**data, "seconds": samples / rate}
        return data

    @model_validator(mode="after")
    def _length_agrees(self) -> AudioInput:
        if abs(self.samples - self.seconds * self.sample_rate) > 1:
            raise_problems("audio", [problem(("samples",), f"{self.samples} does not match seconds*sample_rate = "
                                                           f"{self.seconds * self.sample_rate:g}", self.samples)])
        return self


def _positive(value: Any, integer: bool = False) -> float | None:
    """``value`` as a number when it is a valid positive one, else None (its error comes from the schema)."""
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return None
    if not (math.isfinite(value) and value > 0):
        return None
    return float(value)


class ModelInputs(MetadataModel):
    """``inputs``: the modalities the engine feeds; at least one."""

    video: VideoInput | None = None
    audio: AudioInput | None = None

    @model_validator(mode="after")
    def _some_input(self) -> ModelInputs:
        if self.video is None and self.audio is None:
            raise_problems("inputs", [problem((), "needs at least one of 'video' or 'audio'")])
        if self.video and self.audio and self.video.name == self.audio.name:
            raise_problems("inputs", [problem(("audio", "name"), f"same graph input name as the video "
                                                                 f"({self.video.name!r})", self.audio.name)])
        return self


class OutputSpec(MetadataModel):
    """One graph output and what it means; other keys (e.g. ``prior``) are the model's own."""

    model_config = ConfigDict(extra="allow")

    name: Text
    meaning: str = ""


class WindowSpec(MetadataModel):
    """``window``: length and hop in seconds (defaults: the inputs' length, hop = length)."""

    seconds: Annotated[float, Field(gt=0, le=MAX_WINDOW_S)] | None = None
    hop: Annotated[float, Field(gt=0, le=MAX_WINDOW_S)] | None = None


class ModelContract(TopLevel):
    """The parsed and validated ``avstream`` metadata of a window model (any task but a decoder step)."""

    inputs: ModelInputs
    window: WindowSpec | None = None
    outputs: dict[str, OutputSpec]
    labels: Annotated[tuple[str, ...], Field(strict=False)] = ()  # a JSON list
    preprocessing: str = ""
    _source: str = PrivateAttr("")
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("outputs", mode="before")
    @classmethod
    def _output_names(cls, value: Any) -> Any:
        """An output's graph name defaults to its key."""
        if not isinstance(value, dict):
            return value
        if not value:
            raise PydanticCustomError("contract", "needs at least one output")
        return {k: {"name": k, **v} if isinstance(v, dict) else v for k, v in value.items()}

    @model_validator(mode="after")
    def _window_is_filled(self) -> ModelContract:
        v, a, seconds, found = self.video, self.audio, self.window_seconds, []
        if v and abs(v.frames - seconds * v.fps) >= 1.0:
            found.append(problem(("inputs", "video", "frames"), f"{v.frames} frames at {v.fps:g} fps do not fill a "
                                 f"{seconds:g} s window (expected {seconds * v.fps:g})", v.frames))
        if a and abs(a.seconds - seconds) > 1.0 / a.sample_rate + 1e-9:
            found.append(problem(("inputs", "audio", "seconds"), f"{a.seconds:g} s differs from window.seconds "
                                 f"{seconds:g}", a.seconds))
        raise_problems("contract", found)
        return self

    @property
    def video(self) -> VideoInput | None:
        return self.inputs.video

    @property
    def audio(self) -> AudioInput | None:
        return self.inputs.audio

    @property
    def window_seconds(self) -> float:
        if self.window and self.window.seconds:
            return self.window.seconds
        v, a = self.video, self.audio
        return a.seconds if a else (v.frames / v.fps if v else 0.0)

    @property
    def window_hop(self) -> float:
        return self.window.hop if self.window and self.window.hop else self.window_seconds

    @property
    def source(self) -> str:
        """The file the contract came from, for messages."""
        return self._source

    @property
    def raw(self) -> dict[str, Any]:
        """The metadata object as stored, keys the engine does not interpret included."""
        return self._raw

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
        return dict(self._raw)

    def inputs_summary(self) -> str:
        parts = []
        if self.video:
            v = self.video
            parts.append(f"video {v.frames}x{v.height}x{v.width}x3 {v.pixel_format} @{v.fps:g}fps")
        if self.audio:
            parts.append(f"audio {self.audio.samples} @{self.audio.sample_rate}Hz")
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# One reader for every kind of model metadata
# ---------------------------------------------------------------------------------------------
ModelMetadata: TypeAlias = ModelContract | DecoderSpec
_WINDOW = "window_model"


def _kind(data: Any) -> str:
    task = data.get("task") if isinstance(data, dict) else getattr(data, "task", None)
    return DECODER_TASK if task == DECODER_TASK else _WINDOW


_SCHEMAS: dict[str, type[BaseModel]] = {_WINDOW: ModelContract, DECODER_TASK: DecoderSpec}
_METADATA: TypeAdapter[ModelMetadata] = TypeAdapter(
    Annotated[Annotated[ModelContract, Tag(_WINDOW)] | Annotated[DecoderSpec, Tag(DECODER_TASK)],
              Discriminator(_kind)])


def metadata_json_schema() -> dict[str, Any]:
    """JSON Schema of the ``avstream`` metadata object (window models and caption decoder steps)."""
    return _METADATA.json_schema(by_alias=True)


def metadata_from_dict(data: Any, source: str = "<contract>") -> ModelMetadata:
    """Validate a metadata object with the schema of its task; the ModelError lists every problem."""
    if not isinstance(data, dict):
        raise ModelError(f"{source}: metadata '{METADATA_KEY}' must be a JSON object")
    try:
        meta = _METADATA.validate_python(data)
    except ValidationError as exc:
        raise ContractError(source, problems_of(exc, _SCHEMAS[_kind(data)], skip=1)) from None
    meta._source = source
    if isinstance(meta, ModelContract):
        meta._raw = dict(data)
    return meta


def contract_from_dict(data: Any, source: str = "<contract>") -> ModelContract:
    """Validate a window model's metadata and build the contract; ModelError lists every problem."""
    meta = metadata_from_dict(data, source)
    if not isinstance(meta, ModelContract):
        raise _not_a_window_model(meta, source)
    return meta


def _not_a_window_model(spec: DecoderSpec, source: str) -> ModelError:
    encoder = f" {spec.encoder}" if spec.encoder else ""
    return ModelError(f"{source}: metadata '{METADATA_KEY}': task: {spec.task!r} is a caption decoder step, not "
                      f"a window model; it runs inside avstream/captions@v1 with its encoder{encoder}")


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, int, int], tuple[ModelMetadata, OnnxHeader]] = {}


def read_metadata(path: str | os.PathLike[str]) -> tuple[ModelMetadata, OnnxHeader]:
    """Metadata and header of a model file, checked against each other (cached by path and mtime)."""
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
    meta = parse_metadata_text(text, str(p))
    found = _graph_problems(meta, header) if isinstance(meta, ModelContract) else decoder_graph_problems(meta, header)
    if found:
        raise ContractError(str(p), found)
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = (meta, header)
    return meta, header


def parse_metadata_text(text: str, source: str) -> ModelMetadata:
    """The ``avstream`` metadata JSON as stored in a model file, validated; ModelError names ``source``."""
    if len(text) > MAX_METADATA_CHARS:
        raise ModelError(f"{source}: metadata '{METADATA_KEY}' is {len(text)} characters (at most {MAX_METADATA_CHARS})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer of more than 4300 digits
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelError(f"{source}: metadata '{METADATA_KEY}' is not valid JSON: {why}") from None
    return metadata_from_dict(data, source)


def _graph_problems(contract: ModelContract, header: OnnxHeader) -> list[tuple[str, str]]:
    """Where the graph's inputs and outputs disagree with the contract (names, rank, fixed dims)."""
    graph_in = {t.name: t for t in header.inputs}
    graph_out = {t.name for t in header.outputs}
    want: list[tuple[str, str, tuple[int, ...]]] = []
    if contract.video:
        v = contract.video
        want.append(("inputs.video", v.name, (v.frames, v.height, v.width, 3)))
    if contract.audio:
        want.append(("inputs.audio", contract.audio.name, (contract.audio.samples,)))
    found = []
    for key, name, dims in want:
        t = graph_in.get(name)
        if t is None:
            found.append((f"{key}.name", f"graph has no input {name!r} (graph inputs: {', '.join(graph_in) or 'none'})"))
        elif len(t.shape) != len(dims) + 1:
            found.append((key, f"graph input {name!r} has rank {len(t.shape)}, the contract implies "
                               f"{len(dims) + 1} (batch + {dims})"))
        else:
            found += [(key, f"graph input {name!r} axis {axis} is {got}, the contract says {exp}")
                      for axis, (got, exp) in enumerate(zip(t.shape[1:], dims, strict=True), start=1)
                      if isinstance(got, int) and got != exp]
    found += [(f"outputs.{key}", f"graph has no output {spec.name!r} (graph outputs: {', '.join(sorted(graph_out))})")
              for key, spec in contract.outputs.items() if spec.name not in graph_out]
    return found


def read_model(path: str | os.PathLike[str]) -> tuple[ModelContract, OnnxHeader]:
    """Contract and header of a window model file; ModelError names the file and every bad key."""
    meta, header = read_metadata(path)
    if not isinstance(meta, ModelContract):
        raise _not_a_window_model(meta, str(path))
    return meta, header


def read_contract(path: str | os.PathLike[str]) -> ModelContract:
    """The validated contract of a window model file; ModelError names the file and every bad key."""
    return read_model(path)[0]


def read_decoder_spec(path: str | os.PathLike[str]) -> DecoderSpec:
    """The checked metadata of a caption decoder step file (graph inputs/outputs included)."""
    meta, _ = read_metadata(path)
    if not isinstance(meta, DecoderSpec):
        raise ModelError(f"{path}: metadata '{METADATA_KEY}': task: expected {DECODER_TASK!r} for a decoder step "
                         f"(got {meta.task!r}): not a caption decoder step model")
    return meta


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


def default_model_dir() -> Path:
    """The local models folder: $AVSTREAM_MODELS, else ~/.cache/avstream/models. ``models pull`` and
    ``export zero-shot`` write there by default; ``models:NAME`` reads from it."""
    return Path(os.environ.get("AVSTREAM_MODELS") or Path.home() / ".cache" / "avstream" / "models")


def resolve_model(ref: str, base_dir: Path) -> Path:
    """``builtin:NAME`` → the shipped file; ``models:NAME`` → ``NAME.onnx`` in the local models folder;
    another path resolves against ``base_dir``."""
    if ref.startswith(MODELS_PREFIX):
        name = ref[len(MODELS_PREFIX):]
        folder = default_model_dir()
        path = folder / (name if name.endswith(".onnx") else f"{name}.onnx")
        if not name or "/" in name or name.startswith(".") or not path.is_file():
            have = sorted(p.stem for p in folder.glob("*.onnx")) if folder.is_dir() else []
            raise ModelError(f"model {ref!r}: no {path} (models in {folder}: {', '.join(have) or 'none'}; "
                             "write one with  avstream export zero-shot ... or avstream models pull ...)")
        return path
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


