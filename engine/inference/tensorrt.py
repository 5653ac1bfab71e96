"""TensorRT: the engine cache, the native runner (``tensorrt`` Python API) and engine builds.

Everything that needs a GPU is behind a guard: ``tensorrt`` is imported lazily (extra
``avstream[tensorrt]``), the CUDA runtime and driver are reached through ``ctypes``, and a machine
without them gets a clear message or a logged fallback to ONNX Runtime.

An engine is only valid for the ONNX file, GPU model, compute capability, TensorRT version,
precision and batch profile it was built for. ``EngineKey`` holds those; each cached engine has a
``.json`` sidecar with its key and the engine bytes' hash, and a file whose sidecar does not match the
key of this machine (stale, foreign or truncated) is rebuilt, never loaded. The ORT TensorRT execution
provider keeps its own engine files: each key gets its own cache folder, so it cannot load a stale one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.engine.inference.contract import ModelContract, contract_from_dict, read_contract

log = logging.getLogger("avstream.tensorrt")

ENGINE_SUFFIXES = (".engine", ".plan")
CACHE_ENV = "AVSTREAM_ENGINE_CACHE"


def default_cache_root() -> Path:
    """``$AVSTREAM_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/avstream/engines`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avstream" / "engines"


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (cached by path, mtime and size: models are hashed once per process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _HASHES:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


# ---------------------------------------------------------------------------------------------
# what this machine is
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.9"
    device_id: int = 0


def gpu_info(device_id: int = 0) -> GpuInfo | None:
    """Name and compute capability of a CUDA device from the driver (libcuda), None without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return None
        dev = ctypes.c_int()
        if cuda.cuDeviceGet(ctypes.byref(dev), device_id) != 0:
            return None
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    except AttributeError:
        return None
    return GpuInfo(name.value.decode(errors="replace"), f"{major.value}.{minor.value}", device_id)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or MissingDependencyError naming the extra."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError(
            f"TensorRT is not installed ({exc}): pip install 'avstream[tensorrt]' on a machine with an NVIDIA GPU"
        ) from None
    return tensorrt


def tensorrt_version() -> str | None:
    try:
        return str(import_tensorrt().__version__)
    except MissingDependencyError:
        return None


# ---------------------------------------------------------------------------------------------
# keys and the cache
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two engines are interchangeable only if their keys are equal."""

    onnx_sha256: str
    gpu: str
    compute_capability: str
    trt_version: str
    precision: str
    max_batch: int
    builder: str = "tensorrt"  # "tensorrt" (native) or "onnxruntime-trt-ep:<ORT version>"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> EngineKey | None:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names <= set(data):
            return None
        try:
            return cls(**{k: data[k] for k in names})
        except TypeError:
            return None

    def differences(self, other: EngineKey) -> list[str]:
        """``field: built for X, this machine needs Y`` for each field that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: built for {theirs[k]!r}, needed {mine[k]!r}" for k in mine if mine[k] != theirs[k]]


class EngineCache:
    """Engine files ``<stem>.<key digest>.engine`` with a ``.json`` sidecar (key + bytes hash)."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root else default_cache_root()

    def path(self, key: EngineKey, stem: str) -> Path:
        return self.root / f"{stem}.{key.digest()}.engine"

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    @staticmethod
    def read_sidecar(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(EngineCache.sidecar(path).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def validate(self, path: Path, key: EngineKey) -> str | None:
        """None when ``path`` is an engine for exactly ``key``; otherwise why it must not be loaded."""
        if not path.is_file():
            return "no engine file"
        meta = self.read_sidecar(path)
        if meta is None:
            return f"no readable sidecar {self.sidecar(path).name} (its key is unknown)"
        have = EngineKey.from_dict(meta.get("key"))
        if have is None:
            return "sidecar has no complete key"
        if have != key:
            return "; ".join(key.differences(have))
        if meta.get("engine_sha256") != file_sha256(path):
            return "engine bytes do not match the sidecar (truncated or replaced)"
        return None

    def lookup(self, key: EngineKey, stem: str) -> Path | None:
        """The valid engine for ``key``, or None (a mismatching file in its place is removed)."""
        path = self.path(key, stem)
        if not path.exists():
            return None
        reason = self.validate(path, key)
        if reason is None:
            return path
        log.warning("engine cache: %s is stale (%s): it will be rebuilt", path.name, reason)
        for p in (path, self.sidecar(path)):
            p.unlink(missing_ok=True)
        return None

    def others(self, key: EngineKey, stem: str) -> list[tuple[Path, str]]:
        """Engines of the same model stem built for other keys, with what differs (for the log)."""
        out = []
        for path in sorted(self.root.glob(f"{stem}.*.engine")):
            if path != self.path(key, stem):
                meta = self.read_sidecar(path) or {}
                have = EngineKey.from_dict(meta.get("key"))
                out.append((path, "; ".join(key.differences(have)) if have else "unknown key"))
        return out

    def store(self, key: EngineKey, stem: str, data: bytes, extra: dict[str, Any] | None = None) -> Path:
        """Write an engine and its sidecar atomically (a crash leaves no half file under the name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key, stem)
        write_atomic(path, data)
        meta = {"key": key.to_dict(), "engine_sha256": file_sha256(path), "created": time.time(), **(extra or {})}
        write_atomic(self.sidecar(path), json.dumps(meta, indent=1).encode())
        return path

    def get_or_build(self, key: EngineKey, stem: str, build: Callable[[], bytes],
                     extra: dict[str, Any] | None = None) -> tuple[Path, bool]:
        """(engine path, built now?): the cached engine for ``key``, or a new one from ``build()``."""
        hit = self.lookup(key, stem)
        if hit is not None:
            return hit, False
        for path, why in self.others(key, stem):
            log.info("engine cache: not using %s (%s)", path.name, why)
        t0 = time.perf_counter()
        data = build()
        path = self.store(key, stem, data, extra)
        log.info("engine cache: built %s in %.1f s", path.name, time.perf_counter() - t0)
        return path, True


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def ort_trt_cache_dir(onnx_path: Path, precision: str, max_batch: int, root: str | os.PathLike[str] | None,
                      device_id: int = 0) -> Path:
    """The ORT TensorRT EP's engine folder for this model on this GPU/TensorRT/precision/profile.

    ORT names its engine files by model and settings but not by GPU or TensorRT version, so each key
    gets its own folder: an engine from another machine or version is never in the folder searched.
    """
    import onnxruntime  # only called where ORT lists the TensorRT provider

    gpu = gpu_info(device_id)
    key = EngineKey(file_sha256(onnx_path), gpu.name if gpu else "unknown", gpu.compute_capability if gpu else "?",
                    tensorrt_version() or "system", precision, max_batch, f"onnxruntime-trt-ep:{onnxruntime.__version__}")
    folder = Path(root).expanduser() if root else default_cache_root()
    folder = folder / "ort-trt" / f"{onnx_path.stem}.{key.digest()}"
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "key.json"
    if not key_file.exists():
        write_atomic(key_file, json.dumps(key.to_dict(), indent=1).encode())
    return folder


def cache_has_engine(folder: Path | None) -> bool:
    return folder is not None and any(folder.glob("*.engine"))


# ---------------------------------------------------------------------------------------------
# CUDA runtime through ctypes (no pycuda / cuda-python / torch needed)
# ---------------------------------------------------------------------------------------------
class CudaRuntime:
    """The few libcudart calls the native runner needs."""

    H2D, D2H = 1, 2

    def __init__(self) -> None:
        self.lib = self._load()

    @staticmethod
    def _load() -> ctypes.CDLL:
        names = [ctypes.util.find_library("cudart") or "", "libcudart.so", "libcudart.so.13", "libcudart.so.12",
                 "libcudart.so.11.0"]
        for base in sys.path:  # pip wheels: nvidia-cuda-runtime, torch's bundled copy
            names += glob.glob(os.path.join(base, "nvidia", "cuda_runtime", "lib", "libcudart.so*"))
            names += glob.glob(os.path.join(base, "torch", "lib", "libcudart*.so*"))
        for name in names:
            if not name:
                continue
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise MissingDependencyError("the CUDA runtime (libcudart) was not found: install the CUDA toolkit "
                                     "or pip install nvidia-cuda-runtime-cu12")

    def check(self, code: int, what: str) -> None:
        if code != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            msg = self.lib.cudaGetErrorString(code)
            raise ModelError(f"CUDA {what} failed: {msg.decode() if msg else code}")

    def set_device(self, device_id: int) -> None:
        self.check(self.lib.cudaSetDevice(device_id), "cudaSetDevice")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))

    def stream(self) -> int:
        s = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(s)), "cudaStreamCreate")
        return int(s.value or 0)

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                            kind, ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def sync(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


# ---------------------------------------------------------------------------------------------
# native runner and builder
# ---------------------------------------------------------------------------------------------
class TensorRTBackend:
    """A deserialised engine with one execution context; device buffers grow with the batch size."""

    def __init__(self, engine: bytes | Path, device_id: int = 0):
        trt = import_tensorrt()
        self.cuda = CudaRuntime()
        self.device_id = device_id
        self.cuda.set_device(device_id)
        data = engine.read_bytes() if isinstance(engine, Path) else engine
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise ModelError(f"TensorRT {trt.__version__} cannot deserialise the engine "
                             "(built by another TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_in[n]]
        self.output_names = [n for n in names if not is_in[n]]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.shapes = {n: list(self.engine.get_tensor_shape(n)) for n in names}
        self.stream = self.cuda.stream()
        self.buffers: dict[str, tuple[int, int]] = {}
        self.name = "tensorrt:native"

    @property
    def providers(self) -> list[str]:
        return ["TensorRT (native)"]

    def input_shapes(self) -> list[tuple[str, list[Any], Any]]:
        return [(n, [d if d >= 0 else "batch" for d in self.shapes[n]], self.dtypes[n].type) for n in self.input_names]

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.cuda.set_device(self.device_id)
        hold = []
        for name in self.input_names:
            x = np.ascontiguousarray(feed[name], dtype=self.dtypes[name])
            hold.append(x)  # keep alive until the stream is synchronised
            self.context.set_input_shape(name, tuple(x.shape))
            ptr = self._buffer(name, x.nbytes)
            self.cuda.copy(ptr, x.ctypes.data, x.nbytes, CudaRuntime.H2D, self.stream)
            self.context.set_tensor_address(name, ptr)
        outs = {}
        for name in self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, out.nbytes))
            outs[name] = out
        if not self.context.execute_async_v3(self.stream):
            raise ModelError("TensorRT execute_async_v3 failed")
        for name, out in outs.items():
            self.cuda.copy(out.ctypes.data, self.buffers[name][0], out.nbytes, CudaRuntime.D2H, self.stream)
        self.cuda.sync(self.stream)
        return outs

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "buffers", {}).values():
            try:
                self.cuda.free(ptr)
            except Exception:  # interpreter shutdown
                pass


def parser_errors(parser: Any) -> list[str]:
    """TensorRT ONNX parser errors as ``unsupported/failed op X at node NAME (#i): description``."""
    out = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        op = e.node_operator() if hasattr(e, "node_operator") else ""
        node = e.node_name() if hasattr(e, "node_name") else ""
        where = f"operator {op or '?'} at node {node or '?'} (#{e.node()})"
        out.append(f"{where}: {e.desc()}")
    return out


def build_engine(onnx_path: Path, precision: str = "fp16", max_batch: int = 16, opt_batch: int = 0,
                 workspace_gb: float = 2.0, progress: Callable[[str], None] | None = None) -> bytes:
    """Build a serialised engine with a batch profile 1..max_batch; ModelError names a bad op/node."""
    trt = import_tensorrt()
    say = progress or (lambda m: log.info("%s", m))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = parser_errors(parser)
        raise ModelError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse the model: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        has_qdq = any(network.get_layer(i).type == trt.LayerType.QUANTIZE for i in range(network.num_layers))
        if not has_qdq:
            raise ModelError(f"{onnx_path}: INT8 TensorRT engines are built from a quantised (Q/DQ) model: run "
                             f"avstream export --quantize int8 --format qdq --calibrate URI --model {onnx_path} first")
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = list(t.shape)
        shapes = [tuple(b if (j == 0 or d < 0) else d for j, d in enumerate(dims))
                  for b in (1, min(max_batch, opt_batch or max_batch), max_batch)]
        profile.set_shape(t.name, *shapes)
    config.add_optimization_profile(profile)
    say(f"building TensorRT {trt.__version__} engine for {onnx_path.name} ({precision}, batch 1..{max_batch}) ...")
    t0 = time.perf_counter()
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    say(f"engine built in {time.perf_counter() - t0:.0f} s")
    return bytes(data)


def native_key(onnx_path: Path, precision: str, max_batch: int, device_id: int = 0) -> EngineKey:
    """This machine's key for a native engine of ``onnx_path``; MissingDependencyError without TensorRT/GPU."""
    version = tensorrt_version()
    if version is None:
        import_tensorrt()  # raises with the message
    gpu = gpu_info(device_id)
    if gpu is None:
        raise MissingDependencyError(f"no CUDA GPU {device_id} found (libcuda missing or no device)")
    return EngineKey(file_sha256(onnx_path), gpu.name, gpu.compute_capability, str(version), precision, max_batch)


# ---------------------------------------------------------------------------------------------
# engine files as models
# ---------------------------------------------------------------------------------------------
def write_engine_file(out: Path, data: bytes, key: EngineKey, contract: ModelContract, onnx_path: Path) -> Path:
    """An engine for ``avstream export --format tensorrt``: ``out`` plus ``out.json`` (key, contract, source)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    try:
        source = os.path.relpath(onnx_path.resolve(), out.resolve().parent)
    except ValueError:  # another drive
        source = str(onnx_path.resolve())
    meta = {"key": key.to_dict(), "engine_sha256": file_sha256(out), "contract": contract.to_dict(),
            "onnx": source, "created": time.time()}
    write_atomic(EngineCache.sidecar(out), json.dumps(meta, indent=1).encode())
    return out


def engine_sidecar(path: Path) -> dict[str, Any]:
    meta = EngineCache.read_sidecar(path)
    if meta is None or not isinstance(meta.get("contract"), dict):
        raise ModelError(f"{path}: a TensorRT engine needs its sidecar {EngineCache.sidecar(path).name} with the "
                         "model contract (written by avstream export --format tensorrt)")
    return meta


def _fallback_providers(providers: Sequence[str]) -> list[str]:
    rest = [p for p in providers if p.lower() != "tensorrt" and p != "TensorrtExecutionProvider"]
    return rest or ["cuda", "cpu"]


def open_native(runner_cls: Any, path: Path, *, providers: Sequence[str], engine_cache: Any, background_build: bool,
                threads: int, node_id: str, cpus: float, device_id: int, precision: str, max_batch: int,
                spin: bool = False) -> Any:
    """A Runner on a native engine: cached/valid → load; else serve with ORT and build in the background."""
    who = f"{node_id}: " if node_id else ""
    ort_opts: dict[str, Any] = dict(threads=threads, node_id=node_id, cpus=cpus, spin=spin, device_id=device_id,
                                    precision=precision, max_batch=max_batch, backend="onnxruntime")
    onnx_path: Path | None = path
    if path.suffix in ENGINE_SUFFIXES:
        meta = engine_sidecar(path)
        contract = contract_from_dict(meta["contract"], str(path))
        have = EngineKey.from_dict(meta.get("key"))
        src = Path(str(meta.get("onnx", "")))
        onnx_path = (path.parent / src) if meta.get("onnx") and not src.is_absolute() else (src if meta.get("onnx") else None)
        if onnx_path is not None and (not onnx_path.is_file() or (have and file_sha256(onnx_path) != have.onnx_sha256)):
            onnx_path = None  # the source moved or changed: it cannot stand in for this engine
        if have is not None:
            precision, max_batch = have.precision, have.max_batch
            ort_opts.update(precision=precision, max_batch=max_batch)
        try:
            key = native_key(onnx_path or path, precision, max_batch, device_id)
            if have is not None:
                key = EngineKey(have.onnx_sha256, key.gpu, key.compute_capability, key.trt_version, precision, max_batch)
            reason = EngineCache().validate(path, key)
        except MissingDependencyError as exc:
            if onnx_path is None:
                raise
            log.warning("%s%s cannot run here (%s): serving %s with onnxruntime", who, path.name, exc, onnx_path.name)
            return runner_cls.open(onnx_path, providers=_fallback_providers(providers), **ort_opts)
        if reason is None:
            runner = runner_cls(TensorRTBackend(path, device_id), contract, node_id, max_batch)
            runner.warm_up()
            return runner
        if onnx_path is None:
            raise ModelError(f"{path}: engine does not fit this machine ({reason}) and its ONNX source is not "
                             "available to rebuild it: rebuild with avstream export --format tensorrt")
        log.warning("%s%s does not fit this machine (%s): rebuilding from %s, not loading it", who, path.name,
                    reason, onnx_path.name)
    else:
        contract = read_contract(path)
    assert onnx_path is not None
    try:
        key = native_key(onnx_path, precision, max_batch, device_id)
    except MissingDependencyError as exc:
        log.warning("%sbackend tensorrt: %s; serving with onnxruntime", who, exc)
        return runner_cls.open(onnx_path, providers=_fallback_providers(providers), **ort_opts)
    cache = EngineCache(engine_cache)
    hit = cache.lookup(key, onnx_path.stem)
    if hit is not None:
        runner = runner_cls(TensorRTBackend(hit, device_id), contract, node_id, max_batch)
        runner.warm_up()
        return runner
    src = onnx_path

    def build() -> TensorRTBackend:
        engine, _ = cache.get_or_build(key, src.stem, lambda: build_engine(src, precision, max_batch),
                                       {"onnx": str(src.resolve())})
        return TensorRTBackend(engine, device_id)

    if not background_build:
        runner = runner_cls(build(), contract, node_id, max_batch)
        runner.warm_up()
        return runner
    runner = runner_cls.open(src, providers=_fallback_providers(providers), **ort_opts)
    log.info("%sbuilding a TensorRT engine for %s in the background; serving with %s meanwhile", who, src.name,
             runner.backend.name)
    runner.build_in_background(build, "native TensorRT engine")
    return runner
