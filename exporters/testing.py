"""Tiny self-describing ONNX models for tests (ours and plugin authors'); needs the ``onnx`` package.

``tiny_model(path)`` writes a graph with video (B, 4, 4, 6, 3) uint8 and audio (B, 160) float32 inputs
(2 s windows at 2 fps / 80 Hz) and outputs ``activation`` (B,) = mean(video) + mean(audio) and
``frame_mean`` (B, 4), with the contract ``TINY_CONTRACT`` (or the one given) in its metadata.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

TINY_CONTRACT: dict[str, Any] = {
    "schema": 1, "id": "tiny", "version": "1", "task": "tinytask", "description": "test model",
    "inputs": {
        "video": {"name": "video", "layout": "NTHWC", "dtype": "uint8", "pixel_format": "bgr24",
                  "fps": 2.0, "frames": 4, "height": 4, "width": 6},
        "audio": {"name": "audio", "dtype": "float32", "sample_rate": 80, "seconds": 2.0, "samples": 160},
    },
    "window": {"seconds": 2.0, "hop": 1.0},
    "outputs": {"activation": {"name": "activation", "meaning": "mean pixel + mean sample"},
                "frame_mean": {"name": "frame_mean", "meaning": "per-frame mean"}},
    "labels": [], "preprocessing": "none",
}


def contract_variant(**changes: Any) -> dict[str, Any]:
    """A copy of TINY_CONTRACT with ``a__b__c=value`` changes (value None deletes the key)."""
    c = copy.deepcopy(TINY_CONTRACT)
    for dotted, value in changes.items():
        node = c
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return c


def tiny_model(path: str | Path, meta: Any = TINY_CONTRACT, video: bool = True, audio: bool = True) -> Path:
    """Write the tiny model; ``meta`` None writes no metadata, a str writes it verbatim."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inputs, outputs, terms = [], [], [], []
    if video:
        inputs.append(helper.make_tensor_value_info("video", TensorProto.UINT8, ["B", 4, 4, 6, 3]))
        nodes += [helper.make_node("Cast", ["video"], ["vf"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMean", ["vf"], ["frame_mean"], axes=[2, 3, 4], keepdims=0),
                  helper.make_node("ReduceMean", ["frame_mean"], ["vm"], axes=[1], keepdims=0)]
        outputs.append(helper.make_tensor_value_info("frame_mean", TensorProto.FLOAT, ["B", 4]))
        terms.append("vm")
    if audio:
        inputs.append(helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", 160]))
        nodes.append(helper.make_node("ReduceMean", ["audio"], ["am"], axes=[1], keepdims=0))
        terms.append("am")
    nodes.append(helper.make_node("Add" if len(terms) == 2 else "Identity", terms, ["activation"]))
    outputs.append(helper.make_tensor_value_info("activation", TensorProto.FLOAT, ["B"]))
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is not None:
        helper.set_model_props(model, {"avstream": meta if isinstance(meta, str) else json.dumps(meta)})
    path = Path(path)
    onnx.save(model, str(path))
    return path
