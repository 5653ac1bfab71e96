"""Item <-> multipart message encoding for the data plane.

Frame 0 is a JSON header naming the item type and its scalar fields; numpy arrays follow as raw
frames (described in ``header["arrays"]``), sent with ``copy=False``. Video frames whose writer has a
shared-memory ring travel as a descriptor only (``header["shm"]``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from avstream.engine.items import (
    AudioChunk,
    AVWindow,
    EndOfStream,
    Event,
    Item,
    Result,
    StreamInfo,
    VideoFrame,
)

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for cls in (StreamInfo, VideoFrame, AudioChunk, AVWindow, Result, Event, EndOfStream)
}
_LOCAL_FIELDS = ("release_hook", "fitted")  # meaningful in the producing process only
_ARRAY_FIELDS = {"VideoFrame": ("image",), "AudioChunk": ("samples",), "AVWindow": ("frames", "audio")}


def encode(item: Item, shm_desc: dict[str, Any] | None = None) -> list[Any]:
    """Multipart frames for ``item``; ``shm_desc`` replaces a video frame's pixels."""
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
        elif f.name == "payloads":
            for key, arr in value.items():
                arr = np.ascontiguousarray(arr)
                arrays.append({"payload": key, "dtype": arr.dtype.str, "shape": list(arr.shape)})
                buffers.append(arr)
        else:
            header[f.name] = value
    if shm_desc is not None:
        header["shm"] = shm_desc
    header["arrays"] = arrays
    return [json.dumps(header).encode(), *buffers]


def decode(
    frames: list[Any],
    attach: Callable[[dict[str, Any]], tuple[np.ndarray, Callable[[], None]] | None] | None = None,
) -> Item | None:
    """Rebuild an item. Returns None for a shared-memory frame whose slot was reclaimed."""
    header = json.loads(bytes(frames[0]))
    cls = _TYPES[header.pop("type")]
    arrays = header.pop("arrays")
    shm = header.pop("shm", None)
    payloads: dict[str, np.ndarray] = {}
    for spec, buf in zip(arrays, frames[1:], strict=True):
        arr = np.frombuffer(memoryview(buf), dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        if "payload" in spec:
            payloads[spec["payload"]] = arr
        else:
            header[spec["field"]] = arr
    if cls is Result:
        header["payloads"] = payloads
    for name in _ARRAY_FIELDS.get(cls.__name__, ()):
        header.setdefault(name, None)
    if shm is not None:
        if attach is None:
            raise ValueError("shared-memory frame received on an edge without a ring reader")
        got = attach(shm)
        if got is None:
            return None
        header["image"], header["release_hook"] = got
    return cls(**header)
