"""A dependency-free reader of an ONNX file's header: opsets, inputs, outputs, metadata."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from avstream.engine.errors import ModelError

_ELEM_TYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type and shape (ints, or str for symbolic dims)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass
class OnnxHeader:
    """What ``read_onnx_header`` finds in a model file."""

    metadata: dict[str, str]
    opsets: dict[str, int]
    ir_version: int
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, int | memoryview]]:
    """Top-level (field number, value) pairs of one protobuf message."""
    out: list[tuple[int, int | memoryview]] = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((num, value))
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("truncated field")
            out.append((num, buf[pos : pos + size]))
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _text(v: int | memoryview) -> str:
    return bytes(v).decode("utf-8", "replace") if isinstance(v, memoryview) else ""


def _value_info(buf: memoryview) -> TensorInfo:
    name, dtype, shape = "", "?", []
    for num, v in _fields(buf):
        if num == 1:
            name = _text(v)
        elif num == 2 and isinstance(v, memoryview):
            for tnum, tv in _fields(v):
                if tnum != 1 or not isinstance(tv, memoryview):
                    continue  # only tensor types
                for fnum, fv in _fields(tv):
                    if fnum == 1 and isinstance(fv, int):
                        dtype = _ELEM_TYPES.get(fv, str(fv))
                    elif fnum == 2 and isinstance(fv, memoryview):
                        for dnum, dv in _fields(fv):
                            if dnum != 1 or not isinstance(dv, memoryview):
                                continue
                            dim: int | str = "?"
                            for xnum, xv in _fields(dv):
                                dim = xv if xnum == 1 and isinstance(xv, int) else _text(xv) if xnum == 2 else dim
                            shape.append(dim)
    return TensorInfo(name, dtype, tuple(shape))


def read_onnx_header(path: str | os.PathLike[str]) -> OnnxHeader:
    """Metadata, opsets and graph inputs/outputs of an ONNX file; ModelError when unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    return parse_onnx_header(data, str(path))


def parse_onnx_header(raw: bytes, path: str) -> OnnxHeader:
    """``read_onnx_header`` of a file's bytes; ModelError (naming ``path``) when they are no ONNX model."""
    data = memoryview(raw)
    try:
        meta: dict[str, str] = {}
        opsets: dict[str, int] = {}
        ir_version, producer = 0, ""
        inputs: list[TensorInfo] = []
        outputs: list[TensorInfo] = []
        for num, v in _fields(data):
            if num == 1 and isinstance(v, int):
                ir_version = v
            elif num == 2:
                producer = _text(v)
            elif num == 8 and isinstance(v, memoryview):
                kv = dict(_fields(v))
                opsets[_text(kv.get(1, memoryview(b"")))] = int(kv[2]) if isinstance(kv.get(2), int) else 0
            elif num == 14 and isinstance(v, memoryview):
                kv = dict(_fields(v))
                meta[_text(kv.get(1, memoryview(b"")))] = _text(kv.get(2, memoryview(b"")))
            elif num == 7 and isinstance(v, memoryview):
                initializers: set[str] = set()
                graph_inputs: list[TensorInfo] = []
                for gnum, gv in _fields(v):
                    if not isinstance(gv, memoryview):
                        continue
                    if gnum == 5:  # old IR versions list initializers among the inputs
                        initializers.update(_text(x) for n, x in _fields(gv) if n == 8)
                    elif gnum == 11:
                        graph_inputs.append(_value_info(gv))
                    elif gnum == 12:
                        outputs.append(_value_info(gv))
                inputs = [t for t in graph_inputs if t.name not in initializers]
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{path}: not an ONNX model (protobuf parse failed: {exc})") from None
    if ir_version == 0 or not opsets:
        raise ModelError(f"{path}: not an ONNX model (no IR version or opset)")
    return OnnxHeader(meta, opsets, ir_version, producer, inputs, outputs)



