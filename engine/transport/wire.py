"""Item <-> multipart message encoding for the data plane.

Frame 0 is a JSON header naming the item type and its scalar fields; numpy arrays follow as raw
frames (described in ``header["arrays"]``), sent with ``copy=False``. Video frames whose writer has a
shared-memory ring travel as a descriptor only (``header["shm"]``). On a socket that several edges
share, ``header["to"]`` lists the reader indices of the edges that take the item (absent: all);
a receiver parses a message once (:func:`parse`) and builds each edge its own item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
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
        frame whose slot was reclaimed."""
        values = dict(self.fields)
        if self.shm is not None:
            if attach is None:
                raise ValueError("shared-memory frame received on an edge without a ring reader")
            got = attach(self.shm)
            if got is None:
                return None
            values["image"], values["release_hook"] = got
        return self.cls(**values)


def parse(frames: list[Any]) -> Message:
    header = json.loads(bytes(frames[0]))
    cls = _TYPES[header.pop("type")]
    arrays = header.pop("arrays")
    shm = header.pop("shm", None)
    to = header.pop("to", None)
    payloads: dict[str, np.ndarray] = {}
    for spec, buf in zip(arrays, frames[1:], strict=True):
        if "bytes" in spec:
            header[spec["bytes"]] = bytes(buf)
            continue
        arr = np.frombuffer(memoryview(buf), dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        if "payload" in spec:
            payloads[spec["payload"]] = arr
        else:
            header[spec["field"]] = arr
    if cls is Result:
        header["payloads"] = payloads
    for name in _ARRAY_FIELDS.get(cls.__name__, ()):
        header.setdefault(name, None)
    return Message(cls, header, shm, to)


def decode(frames: list[Any], attach: Attach | None = None) -> Item | None:
    """Rebuild an item. Returns None for a shared-memory frame whose slot was reclaimed."""
    return parse(frames).item(attach)
