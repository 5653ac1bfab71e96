"""A small ONNX → PyTorch evaluator: runs an ONNX graph node by node with torch ops on any device.

It is the torch reference of ``bench/gpu_check.py``: the same network as the ONNX file, executed by
PyTorch's CUDA kernels (cuDNN / cuBLAS) instead of ONNX Runtime's, so a GPU path can be checked against
an independent GPU implementation and against ONNX Runtime on the CPU. It covers the operators of the
built-in models (and common neighbours); an unknown operator raises ``NotImplementedError`` naming it.
Needs only ``onnx``, ``numpy`` and ``torch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from onnx import AttributeProto, GraphProto, ModelProto, numpy_helper

_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
           9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def _attrs(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == AttributeProto.INT:
            out[a.name] = a.i
        elif a.type == AttributeProto.FLOAT:
            out[a.name] = a.f
        elif a.type == AttributeProto.INTS:
            out[a.name] = list(a.ints)
        elif a.type == AttributeProto.FLOATS:
            out[a.name] = list(a.floats)
        elif a.type == AttributeProto.STRING:
            out[a.name] = a.s.decode()
        elif a.type == AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
        elif a.type == AttributeProto.GRAPH:
            out[a.name] = a.g
    return out


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(x) for x in t.reshape(-1).tolist()]


def _axes(node_attrs: dict[str, Any], inputs: list[Any], rank: int) -> list[int] | None:
    axes = node_attrs.get("axes")
    if axes is None and len(inputs) > 1 and inputs[1] is not None:
        axes = _ints(inputs[1])
    return None if axes is None else [a % rank for a in axes]


def _reduce(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def op(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
        x = ins[0]
        axes = _axes(at, ins, x.dim())
        keep = bool(at.get("keepdims", 1))
        if axes is None:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        if not axes:
            return x
        return fn(x, axes, keep)
    return op


def _slice(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = ins[0]
    starts, ends = _ints(ins[1]), _ints(ins[2])
    axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.dim()
    flips = []
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a %= x.dim()
        n = x.shape[a]
        if st > 0:
            s = max(0, min(n, s + n if s < 0 else s))
            e = max(0, min(n, e + n if e < 0 else e))
            index[a] = slice(s, e, st)
        else:  # negative step: flip then slice forward
            s = max(-1, min(n - 1, s + n if s < 0 else s))
            e = max(-1, min(n - 1, e + n if e < 0 else e))
            flips.append(a)
            index[a] = slice(n - 1 - s, n - 1 - e, -st)
    if flips:
        x = torch.flip(x, flips)
    return x[tuple(index)]


def _conv(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = x.dim() - 2
    pads = at.get("pads", [0] * 2 * nd)
    if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError("Conv auto_pad SAME_*")
    stride, dil, groups = at.get("strides", [1] * nd), at.get("dilations", [1] * nd), at.get("group", 1)
    sym = all(pads[i] == pads[i + nd] for i in range(nd))
    if not sym:
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])])
        pads = [0] * 2 * nd
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride, pads[:nd], dil, groups)


def _pool(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = ins[0]
    nd = x.dim() - 2
    k = at["kernel_shape"]
    pads = at.get("pads", [0] * 2 * nd)
    stride = at.get("strides", [1] * nd)
    if any(pads[i] != pads[i + nd] for i in range(nd)):
        x = F.pad(x, [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])], value=-float("inf"))
        pads = [0] * 2 * nd
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return pool(x, k, stride, pads[:nd], at.get("dilations", [1] * nd), bool(at.get("ceil_mode", 0)))


def _gemm(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    a, b = ins[0], ins[1]
    if at.get("transA", 0):
        a = a.t()
    if at.get("transB", 0):
        b = b.t()
    y = at.get("alpha", 1.0) * (a @ b)
    if len(ins) > 2 and ins[2] is not None:
        y = y + at.get("beta", 1.0) * ins[2]
    return y


def _layer_norm(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = ins[0]
    axis = at.get("axis", -1) % x.dim()
    shape = x.shape[axis:]
    return F.layer_norm(x, shape, ins[1] if len(ins) > 1 else None, ins[2] if len(ins) > 2 else None,
                        at.get("epsilon", 1e-5))


def _batch_norm(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, scale, bias, mean, var = ins[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, at.get("epsilon", 1e-5))


def _softmax(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    return torch.softmax(ins[0], dim=at.get("axis", -1))


def _clip(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else at.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else at.get("max")
    x = ins[0]
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


def _reshape(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, shape = ins[0], _ints(ins[1])
    if not at.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _expand(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, shape = ins[0], _ints(ins[1])
    rank = max(x.dim(), len(shape))
    shape = [1] * (rank - len(shape)) + shape
    xs = [1] * (rank - x.dim()) + list(x.shape)
    return x.reshape(xs).expand([max(a, b) if b != 1 or a != 1 else 1 for a, b in zip(xs, shape, strict=True)])


def _unsqueeze(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = ins[0]
    axes = at.get("axes") or _ints(ins[1])
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x = ins[0]
    axes = at.get("axes") or (_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
    if axes is None:
        return x.squeeze()
    for a in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(a)
    return x


def _gather(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, idx = ins[0], ins[1].long()
    axis = at.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1:]))


def _gather_elements(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    x, idx = ins[0], ins[1].long()
    axis = at.get("axis", 0) % x.dim()
    return torch.gather(x, axis, torch.where(idx < 0, idx + x.shape[axis], idx))


def _constant_of_shape(ins: list[Any], at: dict[str, Any], device: torch.device) -> torch.Tensor:
    value = np.array(at.get("value", np.zeros(1, np.float32)))
    return torch.full(_ints(ins[0]), value.reshape(-1)[0].item(), dtype=torch.from_numpy(value).dtype, device=device)


def _binary(fn: Callable[[Any, Any], Any]) -> Callable[..., torch.Tensor]:
    return lambda ins, at: fn(ins[0], ins[1])


def _div(ins: list[Any], at: dict[str, Any]) -> torch.Tensor:
    a, b = ins
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


SIMPLE: dict[str, Callable[..., Any]] = {
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _div,
    "Pow": _binary(torch.pow), "MatMul": _binary(torch.matmul), "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt), "Greater": _binary(torch.gt), "LessOrEqual": _binary(torch.le),
    "GreaterOrEqual": _binary(torch.ge), "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Min": lambda ins, at: torch.stack(torch.broadcast_tensors(*ins)).amin(0),
    "Max": lambda ins, at: torch.stack(torch.broadcast_tensors(*ins)).amax(0),
    "Not": lambda ins, at: torch.logical_not(ins[0]), "Relu": lambda ins, at: torch.relu(ins[0]),
    "Sigmoid": lambda ins, at: torch.sigmoid(ins[0]), "Tanh": lambda ins, at: torch.tanh(ins[0]),
    "Log": lambda ins, at: torch.log(ins[0]), "Exp": lambda ins, at: torch.exp(ins[0]),
    "Sqrt": lambda ins, at: torch.sqrt(ins[0]), "Abs": lambda ins, at: torch.abs(ins[0]),
    "Neg": lambda ins, at: torch.neg(ins[0]), "Erf": lambda ins, at: torch.erf(ins[0]),
    "Floor": lambda ins, at: torch.floor(ins[0]), "Ceil": lambda ins, at: torch.ceil(ins[0]),
    "Reciprocal": lambda ins, at: torch.reciprocal(ins[0]), "Identity": lambda ins, at: ins[0],
    "Dropout": lambda ins, at: ins[0],
    "LeakyRelu": lambda ins, at: F.leaky_relu(ins[0], at.get("alpha", 0.01)),
    "Softplus": lambda ins, at: F.softplus(ins[0]),
    "Gelu": lambda ins, at: F.gelu(ins[0], approximate="tanh" if at.get("approximate") == "tanh" else "none"),
    "Where": lambda ins, at: torch.where(ins[0], ins[1], ins[2]),
    "Transpose": lambda ins, at: ins[0].permute(at.get("perm", list(reversed(range(ins[0].dim()))))),
    "Concat": lambda ins, at: torch.cat([x for x in ins if x is not None and x.numel() or x.dim() > 1],
                                        dim=at["axis"]),
    "Flatten": lambda ins, at: ins[0].reshape(int(np.prod(ins[0].shape[:at.get("axis", 1) % max(1, ins[0].dim())])), -1)
    if at.get("axis", 1) != 0 else ins[0].reshape(1, -1),
    "Cast": lambda ins, at: ins[0].to(_DTYPES[at["to"]]),
    "Softmax": _softmax, "Clip": _clip, "Reshape": _reshape, "Expand": _expand, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Gather": _gather, "GatherElements": _gather_elements, "Slice": _slice,
    "Conv": _conv, "MaxPool": _pool, "Gemm": _gemm, "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "ReduceMean": _reduce(lambda x, a, k: x.mean(dim=a, keepdim=k)),
    "ReduceSum": _reduce(lambda x, a, k: x.sum(dim=a, keepdim=k)),
    "ReduceMax": _reduce(lambda x, a, k: x.amax(dim=a, keepdim=k)),
    "ReduceMin": _reduce(lambda x, a, k: x.amin(dim=a, keepdim=k)),
    "ReduceL2": _reduce(lambda x, a, k: x.pow(2).sum(dim=a, keepdim=k).sqrt()),
    "ReduceProd": _reduce(lambda x, a, k: x.prod(dim=a[0], keepdim=k) if len(a) == 1 else x.prod()),
    "GlobalAveragePool": lambda ins, at: ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True),
    "ArgMax": lambda ins, at: ins[0].argmax(dim=at.get("axis", 0), keepdim=bool(at.get("keepdims", 1))),
    "Einsum": lambda ins, at: torch.einsum(at["equation"], *ins),
    "Tile": lambda ins, at: ins[0].repeat(_ints(ins[1])),
    "CumSum": lambda ins, at: torch.cumsum(ins[0], dim=int(_ints(ins[1])[0])),
}


class TorchGraph:
    """An ONNX model evaluated with torch on ``device``; initializers are moved there once."""

    def __init__(self, model: ModelProto, device: str | torch.device = "cpu"):
        self.model = model
        self.device = torch.device(device)
        self.consts = {t.name: self._tensor(numpy_helper.to_array(t)) for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in self.consts]
        self.output_names = [o.name for o in model.graph.output]

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, copy=True)).to(self.device)

    def __call__(self, feed: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        env: dict[str, Any] = dict(self.consts)
        for name, value in feed.items():
            env[name] = value if isinstance(value, torch.Tensor) else self._tensor(value)
        with torch.no_grad():
            self._run(self.model.graph, env)
        return {n: env[n] for n in self.output_names}

    def _run(self, graph: GraphProto, env: dict[str, Any]) -> None:
        for t in graph.initializer:
            env.setdefault(t.name, self._tensor(numpy_helper.to_array(t)))
        for node in graph.node:
            ins = [env[i] if i else None for i in node.input]
            at = _attrs(node)
            op = node.op_type
            if op == "Constant":
                outs: list[Any] = [self._tensor(np.asarray(at["value"]))] if "value" in at else \
                    [self._tensor(np.asarray(at.get("value_float", at.get("value_int", at.get("value_ints")))))]
            elif op == "Shape":
                shape = list(ins[0].shape)[at.get("start", 0):at.get("end", None)]
                outs = [torch.tensor(shape, dtype=torch.int64, device=self.device)]
            elif op == "ConstantOfShape":
                outs = [_constant_of_shape(ins, at, self.device)]
            elif op == "Range":
                outs = [torch.arange(ins[0].item(), ins[1].item(), ins[2].item(), device=self.device).to(ins[0].dtype)]
            elif op == "If":
                branch = at["then_branch"] if bool(ins[0].reshape(-1)[0]) else at["else_branch"]
                scope = dict(env)
                self._run(branch, scope)
                outs = [scope[o.name] for o in branch.output]
            elif op == "Split":
                axis = at.get("axis", 0)
                sizes = at.get("split") or (_ints(ins[1]) if len(ins) > 1 and ins[1] is not None else None)
                if sizes is None:
                    n = at.get("num_outputs", len(node.output))
                    sizes = [ins[0].shape[axis] // n] * n
                outs = list(torch.split(ins[0], sizes, dim=axis))
            elif op == "TopK":
                v, i = torch.topk(ins[0], int(_ints(ins[1])[0]), dim=at.get("axis", -1),
                                  largest=bool(at.get("largest", 1)), sorted=bool(at.get("sorted", 1)))
                outs = [v, i]
            elif op in SIMPLE:
                outs = [SIMPLE[op](ins, at)]
            else:
                raise NotImplementedError(f"operator {op} (node {node.name or '?'}) is not in the torch evaluator")
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    env[name] = value
