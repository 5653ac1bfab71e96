"""Lower-precision variants of an avstream model: INT8 static quantisation and FP16 conversion.

- ``calibration_feeds(model, uri)`` builds real model inputs: the media of ``uri`` (a clip, a stream,
  ``sample://``, ``synthetic://``) goes through the engine's reader and the window node configured from
  the model's contract, exactly as in a pipeline, and each window is fitted by the runtime's Runner.
- ``quantize_int8`` runs ONNX Runtime's static quantisation calibrated on those feeds. ``qoperator``
  (integer operators) is the fast format for ONNX Runtime on CPU/edge; ``qdq`` (symmetric
  Quantize/Dequantize pairs) is what TensorRT builds INT8 engines from. Weights are 7-bit
  (``reduce_range``): on x86 CPUs with AVX2 but no VNNI, ORT's u8 x s8 kernels (vpmaddubsw) add pairs
  of products in int16, and 255 x 127 x 2 saturates it while 255 x 64 x 2 does not; with full 8-bit
  weights the same model agrees with its float model on a VNNI CPU and not on an AVX2 one. The log-mel
  front end (the first Conv on raw audio and the Log after it) stays in float: a uint8 grid over raw
  samples in [-1, 1] erases quiet sounds, and a log after a quantised power amplifies the error. So do
  the output heads (the last weight operator before each graph output): their error lands on the
  scores unfiltered, and they are a tiny share of the compute.
- ``convert_fp16`` keeps inputs/outputs as in the contract (uint8 frames, float32 audio/outputs).
- ``compare`` runs both models on the same real feeds: per-output max abs difference, correlation,
  and CPU latency of each (the speed-up), and names the CPU features it ran with.

The variant keeps the ``avstream`` contract with ``precision`` and a ``version`` suffix (``1+int8``),
so results name the model variant that made them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.engine.inference.contract import METADATA_KEY, read_contract
from avstream.engine.items import AudioChunk, AVWindow, VideoFrame

from .cpu_features import CpuFeatures, cpu_features

Progress = Callable[[str], None]


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError("quantisation needs onnx: pip install 'avstream[export]'") from None
    return onnx


# ---------------------------------------------------------------------------------------------
# calibration data: real windows
# ---------------------------------------------------------------------------------------------
def calibration_windows(model: Path, uri: str, count: int = 64, progress: Progress | None = None) -> list[AVWindow]:
    """Up to ``count`` windows of ``uri`` as the pipeline's window node would cut them for ``model``."""
    from avstream.engine.capture.fit import FrameFitter
    from avstream.engine.capture.schemes import open_reader
    from avstream.engine.items import MediaFit
    from avstream.engine.node import NodeContext
    from avstream.plugins.window import AVWindowNode, WindowParams

    contract = read_contract(model)
    req = contract.window_requirement()
    ctx = NodeContext("calibrate", ("calib",), Path.cwd(), threading.Event(), logging.getLogger("avstream.calibrate"),
                      window=req)
    node = AVWindowNode(ctx, WindowParams())
    out: list[AVWindow] = []
    # the frames the pipeline's source makes for this model: its size, on its frame grid
    fitter = FrameFitter([MediaFit(req.width, req.height, req.fps)]) if contract.video is not None else None
    reader = open_reader(uri, stream="calib", video=contract.video is not None, audio=contract.audio is not None,
                         sample_rate=req.sample_rate or 16000, fitter=fitter)
    with reader:
        node.process(reader.info)
        for item in reader.read():
            if isinstance(item, (VideoFrame, AudioChunk)):
                out += [w for w in node.process(item) if isinstance(w, AVWindow)]
                if isinstance(item, VideoFrame):
                    item.release()
            if len(out) >= count:
                break
        else:
            out += [w for w in node.on_eos("calib") if isinstance(w, AVWindow)]
    if not out:
        raise ModelError(f"--calibrate {uri}: no complete {req.seconds:g} s window in this input")
    if progress:
        progress(f"calibration: {len(out[:count])} windows of {req.seconds:g} s from {uri}")
    return out[:count]


def window_feeds(model: Path, windows: Sequence[AVWindow]) -> list[dict[str, np.ndarray]]:
    """One batch-1 graph feed per window, fitted exactly as the runtime fits windows."""
    from avstream.engine.inference.runners import Runner

    runner = Runner.open(model, providers=("cpu",), threads=1)
    feeds = []
    for w in windows:
        v, a = runner.prepare_video(w.frames), runner.prepare_audio(w.audio, w.sample_rate)
        feeds.append(runner.feed(None if v is None else v[None], None if a is None else a[None]))
    return feeds


def calibration_feeds(model: Path, uri: str, count: int = 64, progress: Progress | None = None) -> list[dict[str, np.ndarray]]:
    return window_feeds(model, calibration_windows(model, uri, count, progress))


# ---------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------
def _variant_metadata(src_model: Any, precision: str, details: dict[str, Any]) -> dict[str, Any] | None:
    props = {p.key: p.value for p in src_model.metadata_props}
    if METADATA_KEY not in props:
        return None
    meta = json.loads(props[METADATA_KEY])
    base = str(meta.get("version", "1")).split("+")[0]
    meta["version"] = f"{base}+{precision}"
    meta["precision"] = precision
    meta["quantization" if precision == "int8" else "conversion"] = details
    return meta


def _write_with_metadata(model: Any, dst: Path, meta: dict[str, Any] | None, others: dict[str, str]) -> None:
    onnx = _onnx()
    del model.metadata_props[:]
    for key, value in others.items():
        if key != METADATA_KEY:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))


def front_end_nodes(model: Any) -> list[str]:
    """Names of the log-mel front end: the first Conv fed (through shape ops) by a raw audio input and
    everything from it up to and including the first Log after it."""
    graph = model.graph
    contract = json.loads({p.key: p.value for p in model.metadata_props}.get(METADATA_KEY, "{}") or "{}")
    audio = ((contract.get("inputs") or {}).get("audio") or {}).get("name")
    if not audio:
        return []
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # breadth-first from the audio input, through shape-only ops, to the first Conv
    frontier, seen, chosen = [audio], set(), []
    passthrough = {"Unsqueeze", "Reshape", "Pad", "Slice", "Cast", "Mul", "Div", "Sub", "Add", "Transpose"}
    while frontier:
        name = frontier.pop(0)
        for n in consumers.get(name, []):
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.op_type == "Conv":
                chosen.append(n)
            elif n.op_type in passthrough:
                frontier += list(n.output)
    names = []
    for conv in chosen:  # from the Conv to the first Log
        stack, visited = [conv], set()
        while stack:
            n = stack.pop()
            if n.name in visited:
                continue
            visited.add(n.name)
            names.append(n.name)
            if n.op_type == "Log":
                continue
            for out in n.output:
                stack += consumers.get(out, [])
            if len(visited) > 40:  # no Log nearby: not a log-mel front end
                return [c.name for c in chosen]
    return sorted(set(names))


def head_nodes(model: Any, op_types: Sequence[str] = ("Conv", "MatMul", "Gemm")) -> list[str]:
    """The output heads: on each path back from a graph output, the first ``op_types`` node with a
    constant weight (what comes after it, such as a sigmoid or a norm, stays in float anyway)."""
    graph = model.graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    heads, seen, stack = set(), set(), [o.name for o in graph.output]
    while stack:
        n = producer.get(stack.pop())
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in op_types and len(n.input) > 1 and n.input[1] in consts:
            heads.add(n.name)
        else:
            stack += [i for i in n.input if i and i not in consts]
    return sorted(heads)


# ---------------------------------------------------------------------------------------------
# INT8 and FP16
# ---------------------------------------------------------------------------------------------
# The weight-heavy operators: they hold the compute (and the speed-up); element-wise ops, norms, logs
# and the output heads stay in float, which keeps scores close to the float model.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# 7-bit weights: no int16 saturation in ORT's AVX2 (non-VNNI) u8 x s8 kernels. Measured (docs/models.md):
# worst output correlation 0.57-0.98 → >= 0.997 on AVX2, and no loss on VNNI CPUs (with float heads).
REDUCE_RANGE = True


class _Feeds:
    """ONNX Runtime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self.feeds = list(feeds)
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def quantize_int8(src: Path, dst: Path, feeds: Sequence[dict[str, np.ndarray]], *, fmt: str = "qoperator",
                  per_channel: bool = True, keep_front_end: bool = True, keep_heads: bool = True,
                  reduce_range: bool = REDUCE_RANGE, exclude: Sequence[str] = (),
                  op_types: Sequence[str] = QUANTIZED_OPS, progress: Progress | None = None) -> Path:
    """Static INT8 quantisation of ``src`` calibrated on ``feeds`` (real windows); writes ``dst``.
    ``reduce_range`` False gives 8-bit weights: accurate on VNNI CPUs and TensorRT only."""
    onnx = _onnx()
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MissingDependencyError(f"INT8 quantisation needs onnxruntime's quantisation tools ({exc}): "
                                     "pip install 'avstream[export]'") from None
    if fmt not in ("qoperator", "qdq"):
        raise ModelError(f"unknown quantisation format {fmt!r} (qoperator for ONNX Runtime CPU, qdq for TensorRT)")
    if not feeds:
        raise ModelError("INT8 calibration needs at least one input window")
    say = progress or (lambda m: None)
    original = onnx.load(str(src))
    others = {p.key: p.value for p in original.metadata_props}
    front = set(front_end_nodes(original) if keep_front_end else [])
    heads = set(head_nodes(original, op_types) if keep_heads else []) - front
    skip = sorted(set(exclude) | front | heads)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception as exc:  # shape inference may not know a custom op: quantise the model as is
            say(f"pre-processing skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            pre = src
        out = Path(tmp) / "q.onnx"
        tensorrt = fmt == "qdq"
        act, weight_bits = ("s8" if tensorrt else "u8"), 7 if reduce_range else 8
        say(f"INT8 static quantisation ({fmt}, {act} activations x {weight_bits}-bit s8 weights, per-channel "
            f"{per_channel}) on {len(feeds)} windows; kept in float: {len(front)} front-end node(s), "
            f"{len(heads)} output head(s)")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser warns on the root logger for every int64 shape tensor
        try:
            quantize_static(
                str(pre), str(out), _Feeds(feeds),
                quant_format=QuantFormat.QDQ if tensorrt else QuantFormat.QOperator,
                # TensorRT wants symmetric int8 activations; ORT's CPU kernels are fastest with u8 x s8
                # (u8 x u8 weights measured slower, and as saturating on AVX2 in QLinearConv)
                activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                nodes_to_exclude=skip,
                op_types_to_quantize=list(op_types) or None,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": tensorrt, "WeightSymmetric": True},
            )
        except Exception as exc:
            raise ModelError(f"{src}: INT8 quantisation failed: {type(exc).__name__}: {exc}") from None
        finally:
            root.setLevel(level)
        model = onnx.load(str(out))
    details = {"format": fmt, "calibration_windows": len(feeds), "per_channel": per_channel,
               "activations": act, "weight_bits": weight_bits, "float_nodes": len(skip),
               "float_heads": sorted(heads), "source": src.name}
    _write_with_metadata(model, dst, _variant_metadata(original, "int8", details), others)
    return dst


def quantize_decoder_step_int8(src: Path, dst: Path, progress: Progress | None = None) -> Path:
    """Dynamic INT8 of a caption decoder step (weights 7-bit int8, activations quantised per call): it
    runs on token prefixes, not on media windows, so there is nothing to calibrate."""
    onnx = _onnx()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError(f"INT8 quantisation needs onnxruntime's quantisation tools ({exc}): "
                                     "pip install 'avstream[export]'") from None
    original = onnx.load(str(src))
    others = {p.key: p.value for p in original.metadata_props}
    weight_bits = 7 if REDUCE_RANGE else 8
    if progress:
        progress(f"INT8 dynamic quantisation of the decoder step {src.name} ({weight_bits}-bit s8 weights)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.onnx"
        try:
            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE)
        except Exception as exc:
            raise ModelError(f"{src}: INT8 quantisation failed: {type(exc).__name__}: {exc}") from None
        model = onnx.load(str(out))
    details = {"format": "dynamic", "weight_bits": weight_bits, "source": src.name}
    _write_with_metadata(model, dst, _variant_metadata(original, "int8", details), others)
    return dst


def point_at_decoder(model_path: Path, decoder_name: str) -> None:
    """Rewrite an encoder's ``decoder`` metadata key to ``decoder_name`` (a file next to it)."""
    onnx = _onnx()
    model = onnx.load(str(model_path))
    others = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(others[METADATA_KEY])
    meta["decoder"] = decoder_name
    _write_with_metadata(model, model_path, meta, others)


def convert_fp16(src: Path, dst: Path, progress: Progress | None = None) -> Path:
    """FP16 weights and activations; graph inputs/outputs keep their types (the contract's)."""
    onnx = _onnx()
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise MissingDependencyError(f"FP16 conversion needs onnxruntime's transformer tools ({exc})") from None
    original = onnx.load(str(src))
    others = {p.key: p.value for p in original.metadata_props}
    if progress:
        progress("FP16 conversion (inputs and outputs keep their types)")
    # Log/ReduceL2 of small values underflow in FP16: keep them (and the ops around them) in float32
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True,
                                     op_block_list=["Log", "ReduceL2", "Pow", "Sqrt", "Exp", "Range"])
    _write_with_metadata(model, dst, _variant_metadata(original, "fp16", {"source": src.name}), others)
    return dst


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------
@dataclass
class OutputDelta:
    name: str
    max_abs: float
    mean_abs: float
    corr: float  # Pearson correlation over all values of all windows (1.0 = same ranking/scale)
    ref_range: float  # max - min of the reference values, to read max_abs against


@dataclass
class Comparison:
    ref_ms: float
    new_ms: float
    windows: int
    deltas: list[OutputDelta] = field(default_factory=list)
    cpu: CpuFeatures = field(default_factory=cpu_features)  # INT8 agreement depends on it (AVX2 vs VNNI)

    @property
    def speedup(self) -> float:
        return self.ref_ms / self.new_ms if self.new_ms > 0 else float("nan")

    def lines(self) -> list[str]:
        out = [f"latency (CPU, 1 thread, batch 1): {self.ref_ms:.2f} ms → {self.new_ms:.2f} ms "
               f"(speed-up x{self.speedup:.2f})", f"measured on {self.cpu.line()}",
               f"output agreement on {self.windows} real windows:"]
        out += [f"  {d.name:<18} max abs {d.max_abs:.3e} (range {d.ref_range:.3g})  mean abs {d.mean_abs:.3e}  "
                f"corr {d.corr:.4f}" for d in self.deltas]
        return out


def cpu_session(path: Path | str, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, quiet: what latency is measured on."""
    from avstream.engine.inference.runners import import_onnxruntime

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def paired_latency(sessions: Sequence[Any], feed: dict[str, np.ndarray] | Sequence[dict[str, np.ndarray]], runs: int,
                   rounds: int = 5) -> list[float]:
    """Milliseconds per run of each session: rounds alternate between them and the best round counts,
    so both see the same machine load (the CPUs here are shared). ``feed``: one for all, or one each."""
    feeds = [feed] * len(sessions) if isinstance(feed, dict) else list(feed)
    for s, f in zip(sessions, feeds, strict=True):
        s.run(None, f)
    best = [float("inf")] * len(sessions)
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            t = time.perf_counter()
            for _ in range(runs):
                s.run(None, feeds[k])
            best[k] = min(best[k], (time.perf_counter() - t) / runs * 1e3)
    return best


def compare(ref: Path, new: Path, feeds: Sequence[dict[str, np.ndarray]], runs: int = 20, threads: int = 1) -> Comparison:
    """Both models on the same feeds: per-output agreement and CPU latency (ORT, ``threads`` threads)."""
    a, b = cpu_session(ref, threads), cpu_session(new, threads)
    names = [o.name for o in a.get_outputs()]
    got_a: dict[str, list[np.ndarray]] = {n: [] for n in names}
    got_b: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for n, x, y in zip(names, a.run(names, feed), b.run(names, feed), strict=True):
            got_a[n].append(np.asarray(x, np.float64).ravel())
            got_b[n].append(np.asarray(y, np.float64).ravel())
    deltas = []
    for n in names:
        x, y = np.concatenate(got_a[n]), np.concatenate(got_b[n])
        diff = np.abs(x - y)
        corr = float(np.corrcoef(x, y)[0, 1]) if x.size > 1 and x.std() > 0 and y.std() > 0 else float("nan")
        deltas.append(OutputDelta(n, float(diff.max()), float(diff.mean()), corr, float(x.max() - x.min())))
    ref_ms, new_ms = paired_latency([a, b], feeds[0], runs)
    return Comparison(ref_ms, new_ms, len(feeds), deltas)
