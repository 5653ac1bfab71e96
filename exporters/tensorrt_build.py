"""TensorRT builds: ``avstream export --format tensorrt`` and ``avstream export --build-engines PIPELINE``.

``build_from_model`` turns an avstream ONNX model into a native engine file with a sidecar (key,
contract, source ONNX) and also puts it in the engine cache, so a pipeline that names the ONNX file with
``backend: tensorrt`` finds it. The optimisation profile covers batch 1..``max_batch`` (the encoder's
cross-stream batch). FP16 needs nothing else; INT8 is built from a Q/DQ model, made here first from
real calibration windows when the model is not quantised yet.

``build_pipeline_engines`` pre-builds every engine a pipeline will need on this GPU (like Savant's
``build_module_engines``): native engines for nodes with ``backend: tensorrt`` and the ORT TensorRT
execution provider's engines for nodes whose providers list ``tensorrt``, each in the folder of its
key, so the first run starts on TensorRT at once instead of building while serving.

Everything here needs an NVIDIA GPU with TensorRT (or onnxruntime-gpu); without them the commands
stop with a message naming what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from avstream.engine.errors import AvstreamError, MissingDependencyError, ModelError
from avstream.engine.inference.contract import read_contract
from avstream.engine.inference.tensorrt import (
    ENGINE_SUFFIXES,
    EngineCache,
    EngineKey,
    TensorRTBackend,
    build_engine,
    engine_sidecar,
    file_sha256,
    native_key,
    write_engine_file,
)

Progress = Callable[[str], None]


def has_qdq(model: Path) -> bool:
    """Whether the ONNX graph holds QuantizeLinear nodes (explicit INT8 quantisation)."""
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(model), load_external_data=False).graph.node)


def build_from_model(model: Path, out: Path | None, precision: str, max_batch: int, calibrate: Sequence[str],
                     windows: int, engine_cache: str | None, say: Progress) -> Path:
    """``model`` → a native engine at ``out`` (default ``<stem>.<precision>.engine``), checked against ORT."""
    contract = read_contract(model)
    out = out or model.with_name(f"{model.stem}.{precision}.engine")
    native_key(model, precision, max_batch)  # no TensorRT or GPU here: stop before any other work
    src = model
    if precision == "int8" and not has_qdq(model):
        if not calibrate:
            raise ModelError("an INT8 engine needs calibration windows: add --calibrate URI (a clip or stream "
                             "like the ones the model will see)")
        from .quantize import calibration_feeds, quantize_int8

        feeds = [f for uri in calibrate for f in calibration_feeds(model, uri, windows, say)]
        src = quantize_int8(model, out.with_name(f"{out.stem}.qdq.onnx"), feeds, fmt="qdq", progress=say)
        say(f"Q/DQ model for TensorRT written to {src}")
    key = native_key(src, precision, max_batch)
    data = build_engine(src, precision, max_batch, progress=say)
    write_engine_file(out, data, key, contract, src)
    cached = EngineCache(engine_cache).store(key, src.stem, data, {"onnx": str(src.resolve())})
    say(f"wrote {out} ({len(data) / 1e6:.1f} MB) and cached it as {cached}")
    check_engine(out, src, max_batch, say)
    return out


def check_engine(engine: Path, onnx_path: Path, max_batch: int, say: Progress) -> None:
    """Engine vs ONNX Runtime (CPU) on random inputs at batch 1 and max_batch; latency of each batch."""
    from avstream.engine.inference.runners import OrtBackend, create_session

    ref = OrtBackend(create_session(onnx_path, providers=["cpu"], warm_up=False))
    trt = TensorRTBackend(engine)
    rng = np.random.default_rng(0)
    for batch in sorted({1, max_batch}):
        feed = {}
        for name, shape, dtype in ref.input_shapes():
            dims = [batch if i == 0 or not isinstance(d, int) else d for i, d in enumerate(shape)]
            feed[name] = (rng.integers(0, 256, dims) if np.dtype(dtype) == np.uint8 else rng.normal(0, 0.2, dims)).astype(dtype)
        want, got = ref.run(feed), trt.run(feed)
        trt.run(feed)
        t = time.perf_counter()
        for _ in range(20):
            trt.run(feed)
        ms = (time.perf_counter() - t) / 20 * 1e3
        worst = max(float(np.abs(got[n].astype(np.float64) - want[n]).max()) for n in want)
        say(f"batch {batch}: {ms:.2f} ms per call, max abs difference to ONNX Runtime CPU {worst:.3e}")


# ---------------------------------------------------------------------------------------------
# all engines of a pipeline
# ---------------------------------------------------------------------------------------------
def _native(node_id: str, path: Path, p: Any, engine_cache: str | None, say: Progress) -> str:
    precision, max_batch, src = p.precision, p.max_batch, path
    if path.suffix in ENGINE_SUFFIXES:
        meta = engine_sidecar(path)
        have = EngineKey.from_dict(meta.get("key"))
        if have is None or not meta.get("onnx"):
            raise ModelError(f"{path}: sidecar lacks the key or the source ONNX; rebuild with --format tensorrt")
        src = (path.parent / str(meta["onnx"])) if not Path(str(meta["onnx"])).is_absolute() else Path(str(meta["onnx"]))
        precision, max_batch = have.precision, have.max_batch
        here = native_key(src if src.is_file() else path, precision, max_batch, p.device_id)
        here = EngineKey(have.onnx_sha256, here.gpu, here.compute_capability, here.trt_version, precision, max_batch)
        if EngineCache().validate(path, here) is None:
            return f"{path.name} fits this GPU and TensorRT"
        if not src.is_file() or file_sha256(src) != have.onnx_sha256:
            raise ModelError(f"{path}: built for another machine and its source ONNX {src} is missing or changed")
    key = native_key(src, precision, max_batch, p.device_id)
    t0 = time.perf_counter()
    engine, built = EngineCache(p.engine_cache or engine_cache).get_or_build(
        key, src.stem, lambda: build_engine(src, precision, max_batch, progress=say), {"onnx": str(src.resolve())})
    return f"native engine {engine.name} " + (f"built in {time.perf_counter() - t0:.0f} s" if built else "already cached")


def _ort_trt(node_id: str, path: Path, p: Any, engine_cache: str | None, say: Progress) -> str:
    from avstream.engine.inference.runners import TRT_EP, OrtBackend, create_session, import_onnxruntime, warm
    from avstream.engine.inference.tensorrt import cache_has_engine, ort_trt_cache_dir

    ort = import_onnxruntime()
    available = list(ort.get_available_providers())
    if TRT_EP not in available:
        raise MissingDependencyError(f"the TensorRT execution provider is not in this onnxruntime build (it has: "
                                     f"{', '.join(available)}): pip install 'avstream[gpu]' on the GPU machine")
    folder = ort_trt_cache_dir(path, p.precision, p.max_batch, p.engine_cache or engine_cache, p.device_id)
    if cache_has_engine(folder):
        return f"TensorRT execution provider engines already cached in {folder}"
    t0 = time.perf_counter()
    session = create_session(path, providers=["tensorrt"], node_id=node_id, precision=p.precision,
                             trt_cache_dir=folder, max_batch=p.max_batch, device_id=p.device_id, warm_up=False)
    warm(OrtBackend(session, device_id=p.device_id), (1, p.max_batch))  # the profile's engines build on first run
    if not cache_has_engine(folder):
        raise ModelError(f"onnxruntime wrote no TensorRT engine to {folder} (did TensorRT take the graph?)")
    return f"TensorRT execution provider engines built in {time.perf_counter() - t0:.0f} s into {folder}"


def build_pipeline_engines(pipeline: str, engine_cache: str | None, say: Progress) -> int:
    """Build (or confirm cached) every TensorRT engine of ``pipeline``'s model nodes; exit code."""
    from avstream.engine.inference.contract import resolve_model
    from avstream.engine.inference.runners import TRT_EP, provider_name
    from avstream.engine.runtime.config import load_pipeline
    from avstream.engine.runtime.registry import load_registry
    from avstream.plugins.encoders import ModelNode, ModelParams

    spec = load_pipeline(pipeline)
    registry = load_registry()
    jobs = []
    for node in spec.nodes.values():
        cls = registry.get(node.type_id)
        if isinstance(cls, type) and issubclass(cls, ModelNode):
            params = cast(ModelParams, cls.Params.model_validate(node.params))  # a ModelNode's Params
            jobs.append((node.id, resolve_model(params.model, Path(spec.base_dir)), params))
    if not jobs:
        say(f"{pipeline}: no model nodes, nothing to build")
        return 0
    failed = 0
    for node_id, path, p in jobs:
        native = p.backend == "tensorrt" or path.suffix in ENGINE_SUFFIXES
        via_ep = any(provider_name(x) == TRT_EP for x in p.providers)
        if not native and not via_ep:
            say(f"{node_id}: {path.name}: providers {p.providers} do not use TensorRT, nothing to build")
            continue
        what = "native TensorRT" if native else "TensorRT execution provider"
        say(f"{node_id}: {path.name} ({what}, {p.precision}, batch 1..{p.max_batch}) ...")
        try:
            done = (_native if native else _ort_trt)(node_id, path, p, engine_cache, say)
        except AvstreamError as exc:
            failed += 1
            say(f"{node_id}: cannot build: {exc}")
            continue
        say(f"{node_id}: {done}")
    say(f"{len(jobs) - failed} of {len(jobs)} model node(s) ready" + (f", {failed} failed" if failed else ""))
    return 2 if failed else 0
