"""Item <-> multipart message encoding for the data plane.

Frame 0 is a JSON header naming the item type and its scalar fields; numpy arrays follow as raw
frames (described in ``header["arrays"]``), sent with ``copy=False``. Video frames whose writer has a
shared-memory ring travel as a descriptor only (``header["shm"]``). On a socket that several edges
share, ``header["to"]`` lists the reader indices of the edges that take the item (absent: all);
a receiver parses a message once (:func:`parse`) and builds each edge its own item.

Decoding trusts nothing it receives: a message whose frames, JSON, field types, array dtypes or
shapes do not match what :func:`encode` makes raises :class:`WireError` (and only that), so a
receiver drops it and counts it (:class:`Rejects`) instead of crashing or reading out of bounds.
"""

from __future__ import annotations

import json
import logging
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

import numpy as np

from avstream.engine.items import (
    AudioChunk,
    AVWindow,
    EndOfStream,
    Event,
    Item,
    PreviewFrame,
    Result,
    StreamInfo,
    VideoFrame,
)

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (StreamInfo, VideoFrame, AudioChunk, AVWindow, Result, Event, EndOfStream,
                          PreviewFrame)
}
_LOCAL_FIELDS = ("release_hook", "fitted", "native")  # meaningful in the producing process only
_ARRAY_FIELDS = {"VideoFrame": ("image",), "AudioChunk": ("samples",), "AVWindow": ("frames", "audio")}
# what each array field may be: (dtype kinds, number of dimensions)
_ARRAY_RULES = {"image": ("u", 3), "samples": ("f", 1), "frames": ("u", 4), "audio": ("f", 1)}
_BYTES_FIELDS = {"PreviewFrame": ("jpeg",)}
MAX_HEADER_BYTES = 1 << 22  # a header is a few hundred bytes; anything near this is not ours
MAX_NDIM = 8
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: never object, void or structured dtypes
log = logging.getLogger("avstream.wire")


class WireError(ValueError):
    """A received message that is not a well-formed item message."""


def encode(item: Item, shm_desc: dict[str, Any] | None = None, to: list[int] | None = None) -> list[Any]:
    """Multipart frames for ``item``; ``shm_desc`` replaces a video frame's pixels; ``to`` names the
    edges (by reader index) that take it when several share a socket (default: all of them)."""
    name = type(item).__name__
    header: dict[str, Any] = {"type": name}
    buffers: list[Any] = []
    arrays: list[dict[str, Any]] = []
    array_fields = _ARRAY_FIELDS.get(name, ())
    for f in fields(item):
        if f.name in _LOCAL_FIELDS:
            continue
        value = getattr(item, f.name)
        if f.name in array_fields:
            if value is None or (shm_desc is not None and f.name == "image"):
                continue
            arr = np.ascontiguousarray(value)
            arrays.append({"field": f.name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
            buffers.append(arr)
        elif f.name == "jpeg":  # bytes travel as a frame of their own, never inside the JSON
            arrays.append({"bytes": f.name})
            buffers.append(value)
        elif f.name == "payloads":
            for key, arr in value.items():
                arr = np.ascontiguousarray(arr)
                arrays.append({"payload": key, "dtype": arr.dtype.str, "shape": list(arr.shape)})
                buffers.append(arr)
        else:
            header[f.name] = value
    if shm_desc is not None:
        header["shm"] = shm_desc
    if to is not None:
        header["to"] = to
    header["arrays"] = arrays
    return [json.dumps(header).encode(), *buffers]


Attach = Callable[[dict[str, Any]], tuple[np.ndarray, Callable[[], None]] | None]


@dataclass
class Message:
    """A received message, parsed once; ``item()`` builds a new item from it for each edge that takes it."""

    cls: type[Any]
    fields: dict[str, Any]
    shm: dict[str, Any] | None
    to: list[int] | None  # reader indices of the edges that take it; None: every edge of the socket

    def item(self, attach: Attach | None = None) -> Item | None:
        """The item (its own object: nodes on one socket never share one). None for a shared-memory
        frame whose slot was reclaimed. Raises WireError for a descriptor the ring reader refuses."""
        values = dict(self.fields)
        if self.shm is not None:
            if attach is None:
                raise WireError("shared-memory frame received on an edge without a ring reader")
            got = attach(self.shm)
            if got is None:
                return None
            values["image"], values["release_hook"] = got
        return self.cls(**values)


class Rejects:
    """Malformed messages dropped on one socket: counted, and logged the first time only."""

    def __init__(self, where: str):
        self.where = where
        self.count = 0

    def note(self, exc: Exception) -> None:
        self.count += 1
        if self.count == 1:
            log.warning("dropped a message on %s that is malformed or not from a node of this run: %s "
                        "(further ones are counted, not logged)",
                        self.where, exc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _checker(tp: Any) -> Callable[[Any], bool]:
    """Whether a JSON value fits a field annotation of the item dataclasses: built once per field,
    since every message on the data plane goes through it."""
    if tp is Any:
        return lambda value: True
    if tp is float:
        return _is_finite_number
    if tp is int:
        return _is_int
    if tp in (str, bool):
        return lambda value: isinstance(value, tp)
    if tp is type(None):
        return lambda value: value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_checker(arg) for arg in typing.get_args(tp)]
        return lambda value: any(check(value) for check in options)
    if origin is dict or tp is dict:
        return lambda value: isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return lambda value: False


@dataclass(frozen=True)
class _Schema:
    checks: dict[str, Callable[[Any], bool]]  # scalar field -> whether a value fits it
    required: frozenset[str]
    scalars: frozenset[str]


def _schema(cls: type[Any]) -> _Schema:
    hints = typing.get_type_hints(cls)
    own = [f for f in fields(cls) if f.name not in _LOCAL_FIELDS]
    required = frozenset(f.name for f in own if f.default is MISSING and f.default_factory is MISSING)
    skip = set(_ARRAY_FIELDS.get(cls.__name__, ())) | set(_BYTES_FIELDS.get(cls.__name__, ())) | {"payloads"}
    scalars = frozenset(f.name for f in own if f.name not in skip)
    return _Schema({name: _checker(hints[name]) for name in scalars}, required, scalars)


_SCHEMAS = {name: _schema(cls) for name, cls in _TYPES.items()}


def _dtype(spec: dict[str, Any]) -> np.dtype[Any]:
    raw = spec.get("dtype")
    if not isinstance(raw, str) or len(raw) > 8:
        raise WireError(f"bad dtype {raw!r}")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise WireError(f"bad dtype {raw!r}") from exc
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"dtype {raw!r} is not a plain numeric type")
    return dtype


def check_shape(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_NDIM or not all(_is_int(d) and 0 <= d < 1 << 40 for d in raw):
        raise WireError(f"bad shape {raw!r}")
    return tuple(raw)


def array_of(spec: dict[str, Any], buf: Any) -> np.ndarray:
    """The array a ``{"dtype", "shape"}`` description says ``buf`` holds; WireError when it does not."""
    dtype = _dtype(spec)
    shape = check_shape(spec.get("shape"))
    view = memoryview(buf)
    if math.prod(shape) * dtype.itemsize != view.nbytes:
        raise WireError(f"shape {list(shape)} of {dtype.str} does not match a {view.nbytes}-byte frame")
    return np.frombuffer(view, dtype=dtype).reshape(shape)


def _header(frame: Any) -> dict[str, Any]:
    raw = memoryview(frame)
    if raw.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header of {raw.nbytes} bytes")
    try:
        header = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    return header


def parse(frames: list[Any]) -> Message:
    """The message in ``frames``; raises WireError (only) when it is not one :func:`encode` makes."""
    if not isinstance(frames, list) or not frames:
        raise WireError("no frames")
    try:
        header = _header(frames[0])
    except TypeError as exc:
        raise WireError(f"frame is not bytes: {exc}") from exc
    name = header.pop("type", None)
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise WireError(f"unknown item type {name!r}")
    arrays = header.pop("arrays", None)
    shm = header.pop("shm", None)
    to = header.pop("to", None)
    if not isinstance(arrays, list) or len(arrays) != len(frames) - 1:
        raise WireError(f"{len(frames) - 1} data frames for array specs {arrays!r}")
    if shm is not None and (cls is not VideoFrame or not isinstance(shm, dict)):
        raise WireError("a shared-memory descriptor on something other than a video frame")
    if to is not None and not (isinstance(to, list) and all(_is_int(r) and 0 <= r < 1 << 16 for r in to)):
        raise WireError(f"bad reader list {to!r}")
    schema = _SCHEMAS[cls.__name__]
    for key, value in header.items():
        if key not in schema.scalars:
            raise WireError(f"{cls.__name__} has no field {key!r}")
        if not schema.checks[key](value):
            raise WireError(f"{cls.__name__}.{key} = {value!r:.80} has the wrong type")
    payloads: dict[str, np.ndarray] = {}
    array_fields = _ARRAY_FIELDS.get(cls.__name__, ())
    try:
        for spec, buf in zip(arrays, frames[1:], strict=True):
            if not isinstance(spec, dict):
                raise WireError(f"bad array spec {spec!r}")
            if "bytes" in spec:
                if spec["bytes"] not in _BYTES_FIELDS.get(cls.__name__, ()):
                    raise WireError(f"bad bytes field {spec['bytes']!r}")
                header[spec["bytes"]] = bytes(memoryview(buf))
            elif "payload" in spec and cls is Result and isinstance(spec["payload"], str):
                payloads[spec["payload"]] = array_of(spec, buf)
            elif spec.get("field") in array_fields and spec["field"] not in header:
                arr = array_of(spec, buf)
                kinds, ndim = _ARRAY_RULES[spec["field"]]
                if arr.dtype.kind not in kinds or arr.ndim != ndim:
                    raise WireError(f"{spec['field']} of dtype {arr.dtype.str} and {arr.ndim} dimensions")
                header[spec["field"]] = arr
            else:
                raise WireError(f"bad array spec {spec!r:.80}")
    except TypeError as exc:  # a frame that is not a buffer
        raise WireError(f"frame is not bytes: {exc}") from exc
    if cls is Result:
        header["payloads"] = payloads
    for field_name in array_fields:
        header.setdefault(field_name, None)
    missing = schema.required - header.keys() - ({"image"} if shm is not None else set())
    if missing or (cls is VideoFrame and header.get("image") is None and shm is None):
        raise WireError(f"{cls.__name__} without {sorted(missing) or ['image']}")
    if cls is VideoFrame and shm is not None and header.get("image") is not None:
        raise WireError("a video frame with both pixels and a shared-memory descriptor")
    if cls is VideoFrame and shm is not None:
        header.pop("image", None)
    return Message(cls, header, shm, to)


def decode(frames: list[Any], attach: Attach | None = None) -> Item | None:
    """Rebuild an item. Returns None for a shared-memory frame whose slot was reclaimed; raises
    WireError (only) for a malformed message."""
    return parse(frames).item(attach)
