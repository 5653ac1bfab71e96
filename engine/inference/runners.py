"""ONNX Runtime sessions, execution backends and the model runner.

onnxruntime is an optional dependency (extras ``avstream[cpu]`` / ``avstream[gpu]``: its CPU and GPU
builds cannot share an environment), so it is imported lazily with a message naming the extra.

- Execution providers are chosen per node from a preference list (``tensorrt, cuda, cpu`` by
  default); the ones this build lacks are skipped, reported as one ``provider_fallback`` log record
  per model (a run's supervisor folds them into one line for the whole run). Intra-op threads and spinning
  come from the node's share of the cores (``engine/inference/threads.py``). On a GPU provider inputs and outputs go
  through ONNX Runtime's IO binding. Every backend is warmed up before the node reports ready.
- A backend (``OrtBackend`` here, the native ``TensorRTBackend`` in ``engine/inference/tensorrt.py``) maps a
  feed to outputs. ``Runner`` holds one and can swap it for another that was built in the background
  (a TensorRT engine builds for minutes; meanwhile the node serves with CUDA or CPU).
- ``Runner.run`` takes batched inputs (B, ...) so that windows of several streams share one call;
  ``Runner.prepare_*`` fit one ``AVWindow`` to the model; ``Runner.run_windows`` stacks, runs, splits.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.engine.inference.contract import ModelContract, contract_from_dict, read_contract
from avstream.engine.inference.threads import thread_plan
from avstream.engine.items import AVWindow

log = logging.getLogger("avstream.inference")

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
TRT_EP, CUDA_EP, CPU_EP = PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]
GPU_PROVIDERS = (TRT_EP, CUDA_EP, PROVIDERS["rocm"])
PRECISIONS = ("fp32", "fp16", "int8")
_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float16)": np.float16,
    "tensor(double)": np.float64, "tensor(bool)": np.bool_,
}


def _runtime_missing(why: str) -> MissingDependencyError:
    return MissingDependencyError(f"onnxruntime is not installed ({why}); install an inference runtime: "
                                  "pip install 'avstream[cpu]' (or 'avstream[gpu]' on an NVIDIA machine)")


def import_onnxruntime() -> Any:
    """The onnxruntime module, or MissingDependencyError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise _runtime_missing(str(exc)) from None
    return onnxruntime


def require_onnxruntime() -> None:
    """MissingDependencyError naming the extra when onnxruntime is not installed, without importing it:
    ``avstream run`` checks before it starts, and only the processes that run a model load the runtime
    (~10 MB of memory per process that maps it, the supervisor included)."""
    if "onnxruntime" in sys.modules:
        if sys.modules["onnxruntime"] is None:
            raise _runtime_missing("No module named 'onnxruntime'")
        return
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError) as exc:
        raise _runtime_missing(str(exc)) from None
    if spec is None:
        raise _runtime_missing("No module named 'onnxruntime'")
    # an installed runtime has its native extension next to the package (not just a folder of that name)
    folders = list(spec.submodule_search_locations or [])
    if not any(any(Path(f, "capi").glob("onnxruntime_pybind11_state*")) for f in folders):
        raise _runtime_missing(f"no native runtime in {', '.join(folders) or spec.origin}")


def provider_name(name: str) -> str:
    """Short provider name (``cuda``) → ORT name (``CUDAExecutionProvider``); ORT names pass through."""
    key = name.strip().lower()
    if key in PROVIDERS:
        return PROVIDERS[key]
    if name.endswith("ExecutionProvider"):
        return name
    raise ModelError(f"unknown execution provider {name!r} (known: {', '.join(PROVIDERS)})")


def select_providers(wanted: Sequence[str], available: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The wanted providers this ORT build has, in order, and (name, reason) for the skipped ones."""
    chosen: list[str] = []
    skipped: list[tuple[str, str]] = []
    gpu_build = CUDA_EP in available
    for name in wanted:
        ort_name = provider_name(name)
        if ort_name in chosen:
            continue
        if ort_name in available:
            chosen.append(ort_name)
            continue
        hint = ""
        if ort_name in (CUDA_EP, TRT_EP) and not gpu_build:
            hint = "; this is a CPU-only onnxruntime build, install 'avstream[gpu]' for CUDA/TensorRT"
        skipped.append((name, f"{ort_name} is not available in this onnxruntime build "
                              f"(available: {', '.join(available)}){hint}"))
    return chosen, skipped


def fallback_reports(node_id: str, model: str, skipped: Sequence[tuple[str, str]], available: Sequence[str],
                     not_initialised: Sequence[str], active: Sequence[str]) -> list[dict[str, Any]]:
    """What a session fell back from, as JSON-able reports (one per cause) for ``describe_fallbacks``."""
    reports = []
    if skipped:
        names = [name for name, _ in skipped]
        why = f"not in this onnxruntime build, which has {', '.join(available)}"
        if CUDA_EP not in available and any(provider_name(n) in (CUDA_EP, TRT_EP) for n in names):
            why += " (a CPU-only build: install 'avstream[gpu]' for CUDA/TensorRT)"
        reports.append({"node": node_id, "model": model, "providers": names, "why": why, "active": list(active),
                        "level": "info"})
    if not_initialised:
        reports.append({"node": node_id, "model": model, "providers": list(not_initialised), "why": "did not initialise",
                        "active": list(active), "level": "warning"})
    return reports


def describe_fallbacks(reports: Sequence[dict[str, Any]]) -> str:
    """One line for the fallbacks of many sessions: each cause, and what runs instead, said once."""
    groups: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], dict[str, list[str]]]] = {}
    for r in reports:
        by_providers = groups.setdefault((r["why"], tuple(r["active"])), {})
        by_providers.setdefault(tuple(r["providers"]), {}).setdefault(r["node"], []).append(r["model"])
    clauses = []
    for (why, active), by_providers in groups.items():
        wanted = "; ".join(
            f"{', '.join(providers)} for "
            + ", ".join(f"{node} ({', '.join(models)})" if node else ", ".join(models) for node, models in nodes.items())
            for providers, nodes in by_providers.items())
        clauses.append(f"{wanted}: {why}; running on {', '.join(active)}")
    return "execution provider fallback: " + " | ".join(clauses)


# ---------------------------------------------------------------------------------------------
# provider options
# ---------------------------------------------------------------------------------------------
def profile_shapes(inputs: Sequence[tuple[str, Sequence[Any]]], max_batch: int, opt_batch: int = 0) -> tuple[str, str, str]:
    """TensorRT optimisation profile (min, opt, max) in ORT's ``name:1x8x112x112x3,...`` syntax."""
    def spec(batch: int) -> str:
        return ",".join(f"{name}:" + "x".join(str(d) for d in _feed_shape(shape, batch)) for name, shape in inputs)

    max_batch = max(1, max_batch)
    return spec(1), spec(min(max_batch, opt_batch or max_batch)), spec(max_batch)


def provider_options(
    ort_name: str,
    *,
    device_id: int = 0,
    precision: str = "fp32",
    cache_dir: Path | None = None,
    profile: tuple[str, str, str] | None = None,
) -> dict[str, str]:
    """The options ONNX Runtime gets for one provider (all values strings, as ORT wants)."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if ort_name == TRT_EP:
        opts = {"device_id": str(device_id), "trt_max_workspace_size": str(2 << 30),
                "trt_fp16_enable": str(precision in ("fp16", "int8")),
                "trt_int8_enable": str(precision == "int8"),  # explicit Q/DQ models: no calibration table
                "trt_builder_optimization_level": "3"}
        if cache_dir is not None:
            opts.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
                         "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir)})
        if profile is not None:
            opts.update({"trt_profile_min_shapes": profile[0], "trt_profile_opt_shapes": profile[1],
                         "trt_profile_max_shapes": profile[2]})
        return opts
    if ort_name == CUDA_EP:
        # HEURISTIC: EXHAUSTIVE conv search costs seconds per new batch size on a live stream
        return {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC",
                "arena_extend_strategy": "kSameAsRequested", "do_copy_in_default_stream": "True"}
    if ort_name == PROVIDERS["rocm"]:
        return {"device_id": str(device_id)}
    return {}


def _feed_shape(shape: Sequence[Any], batch: int) -> list[int]:
    return [batch if i == 0 or not isinstance(d, int) or d <= 0 else d for i, d in enumerate(shape)]


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------
class Backend(Protocol):
    """Something that runs the graph: a feed of named arrays → outputs by name (host arrays)."""

    name: str
    output_names: list[str]

    @property
    def providers(self) -> list[str]: ...

    def input_shapes(self) -> list[tuple[str, list[Any], Any]]: ...

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtBackend:
    """An ORT session; with ``io_binding`` inputs are copied once into reused device buffers and
    outputs are allocated on the device (on by default when a GPU provider is active)."""

    def __init__(self, session: Any, io_binding: bool | None = None, device_id: int = 0):
        self.session = session
        active = list(session.get_providers())
        on_gpu = active[0] in GPU_PROVIDERS
        self.device = ("cuda" if on_gpu else "cpu")
        self.device_id = device_id
        self.io_binding = on_gpu if io_binding is None else io_binding
        self.name = f"onnxruntime:{active[0]}"
        self.output_names = [o.name for o in session.get_outputs()]
        self._bound: dict[tuple[tuple[str, tuple[int, ...]], ...], tuple[Any, dict[str, Any]]] = {}

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def input_shapes(self) -> list[tuple[str, list[Any], Any]]:
        return [(i.name, list(i.shape), _ORT_DTYPES.get(i.type, np.float32)) for i in self.session.get_inputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.io_binding:
            return dict(zip(self.output_names, self.session.run(None, feed), strict=True))
        ort = import_onnxruntime()
        key = tuple((n, tuple(x.shape)) for n, x in feed.items())
        if key not in self._bound:
            if len(self._bound) > 16:  # a few batch sizes in steady state; don't grow without bound
                self._bound.clear()
            binding = self.session.io_binding()
            values = {n: ort.OrtValue.ortvalue_from_numpy(x, self.device, self.device_id) for n, x in feed.items()}
            for n, v in values.items():
                binding.bind_ortvalue_input(n, v)
            for n in self.output_names:
                binding.bind_output(n, self.device, self.device_id)
            self._bound[key] = (binding, values)
        else:
            binding, values = self._bound[key]
            for n, x in feed.items():
                values[n].update_inplace(np.ascontiguousarray(x))  # host → the same device buffer
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))


def _session_options(ort: Any, threads: int, cpus: float, spin: bool, cpu_only: bool = False) -> Any:
    opts = ort.SessionOptions()
    if cpu_only:
        # The memory pattern keeps each run's planned buffers allocated: 8 MB for the four built-in
        # models of the monitor pipeline in one process, and no measurable speed-up on the CPU.
        opts.enable_mem_pattern = False
    intra, inter = thread_plan(threads, cpus)
    opts.intra_op_num_threads = intra
    opts.inter_op_num_threads = inter
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # spinning pool threads busy-wait on cores a decoder needs: only a node with cores to itself spins
    for pool in ("intra_op", "inter_op"):
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spin else "0")
    opts.log_severity_level = 3  # ORT's own warnings go to stderr unformatted; we log what matters
    return opts


def create_session(
    path: str | os.PathLike[str],
    *,
    providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
    threads: int = 0,
    node_id: str = "",
    cpus: float = 0.0,
    spin: bool = False,
    device_id: int = 0,
    precision: str = "fp32",
    trt_cache_dir: Path | None = None,
    max_batch: int = 1,
    warm_up: bool = True,
) -> Any:
    """An ORT InferenceSession on the first available providers of ``providers``, warmed up once.

    Providers missing from this build are skipped with a logged reason; ``threads``/``cpus`` set the
    intra-op thread count (``thread_plan``), ``spin`` lets idle pool threads busy-wait. TensorRT gets
    an engine cache in ``trt_cache_dir`` and an optimisation profile for batch 1..``max_batch``;
    ``precision`` enables its FP16/INT8 kernels.
    """
    ort = import_onnxruntime()
    who = f"{node_id}: " if node_id else ""
    available = list(ort.get_available_providers())
    chosen, skipped = select_providers(list(providers), available)
    if not chosen:
        raise MissingDependencyError(
            f"{who}none of the execution providers {list(providers)} is available "
            f"(this onnxruntime has: {', '.join(available)}); add 'cpu' to providers or install "
            "'avstream[gpu]'"
        )
    profile = None
    if TRT_EP in chosen:
        from avstream.engine.inference.onnx_header import read_onnx_header

        header = read_onnx_header(path)
        profile = profile_shapes([(t.name, t.shape) for t in header.inputs], max_batch)
    with_opts = [(p, provider_options(p, device_id=device_id, precision=precision, cache_dir=trt_cache_dir,
                                      profile=profile)) for p in chosen]
    options = _session_options(ort, threads, cpus, spin, cpu_only=chosen == [CPU_EP])
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=with_opts)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
        raise ModelError(f"{who}{path}: onnxruntime cannot load the model: {exc}") from None
    active = list(session.get_providers())
    intra, _ = thread_plan(threads, cpus)
    not_initialised = [n for n in chosen if n not in active]  # e.g. TensorRT listed but its libraries missing
    reports = fallback_reports(node_id, Path(path).name, skipped, available, not_initialised, active)
    for report in reports:
        # the record carries the report so that a worker can hand it to the supervisor (one line per run)
        log.log(logging.WARNING if report["level"] == "warning" else logging.INFO, "%s (intra-op threads: %d%s)",
                describe_fallbacks([report]), intra, ", spinning" if spin else "", extra={"provider_fallback": report})
    if not reports:
        log.info("%s%s: running on %s (intra-op threads: %d%s)", who, Path(path).name, ", ".join(active), intra,
                 ", spinning" if spin else "")
    if warm_up:
        warm(OrtBackend(session, io_binding=False), (1,))  # first run allocates (and builds TRT engines)
    return session


def warm(backend: Backend, batches: Sequence[int]) -> float:
    """Run zeros at each batch size once (allocations, kernel choice, TensorRT profiles); seconds taken."""
    t0 = time.perf_counter()
    for batch in sorted(set(max(1, b) for b in batches)):
        backend.run({name: np.zeros(_feed_shape(shape, batch), dtype=dtype)
                     for name, shape, dtype in backend.input_shapes()})
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------
def _is_backend(obj: Any) -> bool:
    return callable(getattr(obj, "run", None)) and callable(getattr(obj, "input_shapes", None))


class Runner:
    """A backend with its contract: batched ``run``, per-window preparation, hot swap of the backend."""

    def __init__(self, session: Any, contract: ModelContract, node_id: str = "", max_batch: int = 1):
        self.backend: Backend = session if _is_backend(session) else OrtBackend(session)
        self.contract = contract
        self.node_id = node_id
        self.max_batch = max(1, max_batch)
        self._check_backend(self.backend)
        self.swapped = threading.Event()  # set when a background build replaced the backend
        self.build_error: str | None = None
        self.build_thread: threading.Thread | None = None

    def _check_backend(self, backend: Backend) -> None:
        graph_inputs = {name for name, _, _ in backend.input_shapes()}
        c = self.contract
        for spec in (c.video, c.audio):
            if spec is not None and spec.name not in graph_inputs:
                raise ModelError(f"{c.source}: graph has no input {spec.name!r}")
        extra = graph_inputs - {s.name for s in (c.video, c.audio) if s is not None}
        if extra:
            raise ModelError(f"{c.source}: graph inputs {sorted(extra)} are not described by the contract")
        lacking = [s.name for s in c.outputs.values() if s.name not in backend.output_names]
        if lacking:
            raise ModelError(f"{c.source}: {backend.name} has no output(s) {lacking} named by the contract")

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
        threads: int = 0,
        node_id: str = "",
        cpus: float = 0.0,
        spin: bool = False,
        precision: str = "fp32",
        max_batch: int = 1,
        device_id: int = 0,
        backend: str = "onnxruntime",
        engine_cache: str | os.PathLike[str] | None = None,
        background_build: bool = True,
    ) -> Runner:
        """Open a model for serving; warmed up at batch 1 and ``max_batch`` before it returns.

        ``backend="tensorrt"`` (or a ``.engine``/``.plan`` file) uses the native TensorRT runner
        (``engine/inference/tensorrt.py``). When TensorRT is wanted and no engine is cached for this model,
        GPU and TensorRT version, the runner serves with the next provider (CUDA or CPU) while the
        engine builds in a background thread, then swaps (``background_build=False``: build first).
        """
        path = Path(path)
        from avstream.engine.inference import (
            tensorrt as trt_mod,  # no GPU import at module level: the helpers are guarded
        )

        opts: dict[str, Any] = dict(threads=threads, node_id=node_id, cpus=cpus, spin=spin, device_id=device_id,
                                    precision=precision, max_batch=max_batch)
        if backend == "tensorrt" or path.suffix in trt_mod.ENGINE_SUFFIXES:
            return trt_mod.open_native(cls, path, providers=providers, engine_cache=engine_cache,
                                       background_build=background_build, **opts)
        if backend != "onnxruntime":
            raise ModelError(f"unknown backend {backend!r} (onnxruntime or tensorrt)")
        contract = read_contract(path)
        ort = import_onnxruntime()
        chosen, _ = select_providers(list(providers), list(ort.get_available_providers()))
        cache_dir = None
        if TRT_EP in chosen:
            cache_dir = trt_mod.ort_trt_cache_dir(path, precision, max_batch, engine_cache, device_id)
            rest = [p for p in chosen if p != TRT_EP]
            if background_build and rest and not trt_mod.cache_has_engine(cache_dir):
                who = f"{node_id}: " if node_id else ""
                log.info("%sno TensorRT engine cached for %s in %s: building it in the background, serving "
                         "with %s meanwhile", who, path.name, cache_dir, ", ".join(rest))
                runner = cls(create_session(path, providers=rest, **opts), contract, node_id, max_batch)
                runner.warm_up()
                runner.build_in_background(
                    lambda: OrtBackend(create_session(path, providers=chosen, trt_cache_dir=cache_dir,
                                                      warm_up=False, **opts), device_id=device_id),
                    "TensorRT execution provider")
                return runner
        session = create_session(path, providers=providers, trt_cache_dir=cache_dir, warm_up=False, **opts)
        runner = cls(OrtBackend(session, device_id=device_id), contract, node_id, max_batch)
        runner.warm_up()
        return runner

    @property
    def providers(self) -> list[str]:
        return list(self.backend.providers)

    @property
    def session(self) -> Any:
        """The ORT session of the current backend (None for a native TensorRT engine)."""
        return getattr(self.backend, "session", None)

    def _name(self) -> str:
        """The node and the model, for an error message."""
        return f"{self.node_id}: {self.contract.source}" if self.node_id else self.contract.source

    def warm_up(self, backend: Backend | None = None) -> float:
        """Warm ``backend`` (default: the current one) at batch 1 and ``max_batch``; seconds taken."""
        return warm(backend or self.backend, (1, self.max_batch))

    def swap(self, backend: Backend, reason: str = "") -> None:
        """Serve with ``backend`` from the next batch on (a batch in flight finishes on the old one)."""
        self._check_backend(backend)
        old = self.backend.name
        self.backend = backend  # one attribute store: runs read it once per batch
        self.swapped.set()
        who = f"{self.node_id}: " if self.node_id else ""
        log.info("%sswapped %s → %s%s", who, old, backend.name, f" ({reason})" if reason else "")

    def build_in_background(self, build: Callable[[], Backend], label: str) -> threading.Thread:
        """Build a backend in a thread, warm it up, then swap; on failure keep serving and log why."""
        who = f"{self.node_id}: " if self.node_id else ""

        def work() -> None:
            t0 = time.perf_counter()
            try:
                backend = build()
                self._check_backend(backend)  # a graph that does not fit the contract never goes live
                self.warm_up(backend)
            except Exception as exc:  # any failure: the current backend keeps serving
                self.build_error = f"{type(exc).__name__}: {exc}"
                log.warning("%sbuilding %s failed, staying on %s: %s", who, label, self.backend.name, self.build_error)
                return
            self.swap(backend, f"{label} built in {time.perf_counter() - t0:.1f} s")

        self.build_thread = threading.Thread(target=work, name=f"build:{self.node_id or 'model'}", daemon=True)
        self.build_thread.start()
        return self.build_thread

    def zero_inputs(self, batch: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Black frames and silence for ``batch`` windows (warm-up, latency figures, tests)."""
        v, a = self.contract.video, self.contract.audio
        video = np.zeros((batch, v.frames, v.height, v.width, 3), np.uint8) if v else None
        audio = np.zeros((batch, a.samples), np.float32) if a else None
        return video, audio

    def feed(self, video: np.ndarray | None, audio: np.ndarray | None) -> dict[str, np.ndarray]:
        """The graph feed for a batch: video (B, T, H, W, 3) uint8 BGR, audio (B, N) float32.

        An input the model needs but the caller does not give is fed as black frames / silence.
        """
        c = self.contract
        given = video if video is not None else audio
        if given is None:
            raise ValueError("Runner.run needs video or audio")
        batch = given.shape[0]
        feed: dict[str, np.ndarray] = {}
        if c.video is not None:
            v = c.video
            want = (batch, v.frames, v.height, v.width, 3)
            if video is None:
                video = np.zeros(want, np.uint8)
            if video.shape != want:
                raise ValueError(f"{c.ref}: video batch has shape {video.shape}, the model takes {want}")
            if v.pixel_format == "rgb24":
                video = video[..., ::-1]
            feed[v.name] = np.ascontiguousarray(video, dtype=np.float32 if v.dtype == "float32" else np.uint8)
        if c.audio is not None:
            want_a = (batch, c.audio.samples)
            if audio is None:
                audio = np.zeros(want_a, np.float32)
            if audio.shape != want_a:
                raise ValueError(f"{c.ref}: audio batch has shape {audio.shape}, the model takes {want_a}")
            feed[c.audio.name] = np.ascontiguousarray(audio, dtype=np.float32)
        return feed

    def run(self, video: np.ndarray | None, audio: np.ndarray | None) -> dict[str, np.ndarray]:
        """Run a batch (see ``feed``) on the current backend → the contract's outputs by graph name."""
        return self.backend.run(self.feed(video, audio))

    # --- per-window preparation -------------------------------------------------------------
    def prepare_video(self, frames: np.ndarray | None, stream: str = "") -> np.ndarray | None:
        """(T, H, W, 3) frames for the model: last T frames kept, missing ones repeat the first.

        Frames of another size are an error, not resized: the window node delivers the model's size
        (the source makes it), so a mismatch means a window producer ignores the model's contract.
        """
        v = self.contract.video
        if v is None:
            return None
        if frames is None or len(frames) == 0:
            return np.zeros((v.frames, v.height, v.width, 3), np.uint8)
        if frames.ndim != 4 or frames.shape[1:] != (v.height, v.width, 3):
            raise ModelError(f"{self._name()}: takes frames of {v.width}x{v.height} BGR, a window"
                             f"{_of(stream)} has frames of shape {list(frames.shape[1:])}: the node making its windows "
                             f"must deliver the model's size (avstream/av_window@v1 does)")
        if len(frames) > v.frames:
            frames = frames[-v.frames :]
        elif len(frames) < v.frames:  # stream start: pad in front so the newest frame stays last
            pad = np.repeat(frames[:1], v.frames - len(frames), axis=0)
            frames = np.concatenate([pad, frames])
        return np.asarray(frames, dtype=np.uint8)

    def prepare_audio(self, samples: np.ndarray | None, sample_rate: int = 0, stream: str = "") -> np.ndarray | None:
        """(N,) samples for the model: last N kept, silence in front. Another rate is an error (see
        ``prepare_video``); ``sample_rate`` 0 means the model's."""
        a = self.contract.audio
        if a is None:
            return None
        if samples is None or len(samples) == 0:
            return np.zeros(a.samples, np.float32)
        if sample_rate and sample_rate != a.sample_rate:
            raise ModelError(f"{self._name()}: takes audio at {a.sample_rate} Hz, a window{_of(stream)} has "
                             f"{sample_rate} Hz: the node making its windows must deliver the model's rate "
                             f"(avstream/av_window@v1 does)")
        samples = np.asarray(samples, np.float32).reshape(-1)
        if len(samples) > a.samples:
            samples = samples[-a.samples :]
        elif len(samples) < a.samples:
            samples = np.concatenate([np.zeros(a.samples - len(samples), np.float32), samples])
        return samples

    def run_windows(self, windows: Sequence[AVWindow]) -> list[dict[str, np.ndarray]]:
        """Run several windows (any streams) as one batch; per-window outputs without the batch axis."""
        if not windows:
            return []
        videos = [self.prepare_video(w.frames, w.stream) for w in windows]
        audios = [self.prepare_audio(w.audio, w.sample_rate, w.stream) for w in windows]
        video = np.stack([v for v in videos if v is not None]) if self.contract.video else None
        audio = np.stack([a for a in audios if a is not None]) if self.contract.audio else None
        outs = self.run(video, audio)
        return [{k: v[i] for k, v in outs.items()} for i in range(len(windows))]


def _of(stream: str) -> str:
    return f" of stream {stream!r}" if stream else ""


def load_contract(path: Path) -> ModelContract:
    """The contract of an ONNX model, or of an engine file (from its sidecar)."""
    from avstream.engine.inference.tensorrt import (  # no GPU import at module level
        ENGINE_SUFFIXES,
        engine_sidecar,
    )

    if path.suffix in ENGINE_SUFFIXES:
        return contract_from_dict(engine_sidecar(path)["contract"], str(path))
    return read_contract(path)


def measure_latency(path: Path, runs: int = 20, threads: int = 1) -> float:
    """Mean milliseconds per batch-1 run on the CPU provider (after the warm-up run)."""
    runner = Runner.open(path, providers=("cpu",), threads=threads)
    video, audio = runner.zero_inputs(1)
    runner.run(video, audio)
    t = time.perf_counter()
    for _ in range(runs):
        runner.run(video, audio)
    return (time.perf_counter() - t) / runs * 1e3
