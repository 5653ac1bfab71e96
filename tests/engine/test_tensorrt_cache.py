"""TensorRT logic that runs without a GPU: engine-cache keys, stale/foreign engine detection and rebuild,
ORT TensorRT cache folders, provider options, thread budget, IO binding, and the serve-while-building
swap with a real (slower) builder in a background thread. GPU paths at the end skip without CUDA."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.errors import ModelError
from avstream.engine.inference.runners import (
    CPU_EP,
    CUDA_EP,
    TRT_EP,
    OrtBackend,
    Runner,
    create_session,
    load_contract,
    profile_shapes,
    provider_options,
)
from avstream.engine.inference.tensorrt import (
    EngineCache,
    EngineKey,
    cache_has_engine,
    file_sha256,
    gpu_info,
    open_native,
    ort_trt_cache_dir,
    write_engine_file,
)
from avstream.engine.inference.threads import cgroup_cpu_quota, thread_plan

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from avstream.exporters.testing import contract_variant, tiny_model  # noqa: E402

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers() and gpu_info() is not None


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "tiny.onnx")


def key_for(path: Path, **changes: object) -> EngineKey:
    base: dict[str, Any] = dict(onnx_sha256=file_sha256(path), gpu="NVIDIA L4", compute_capability="8.9", trt_version="10.3.0",
                precision="fp16", max_batch=16)
    base.update(changes)
    return EngineKey(**base)


def ort_optimised(src: Path, out: Path) -> bytes:
    """A real, slower 'engine build' on CPU: ONNX Runtime's fully optimised graph, serialised."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return out.read_bytes()


def test_key_digest_and_differences(model: Path, tmp_path: Path) -> None:
    k = key_for(model)
    assert k.digest() == key_for(model).digest() and len(k.digest()) == 16
    for change in ({"trt_version": "10.4.0"}, {"gpu": "NVIDIA A100"}, {"compute_capability": "8.0"},
                   {"precision": "int8"}, {"max_batch": 8}):
        other = key_for(model, **change)
        assert other.digest() != k.digest()
        (field,) = change
        assert [d.split(":")[0] for d in k.differences(other)] == [field]
    # a different ONNX file (same name, other weights) is another key
    tiny_model(tmp_path / "tiny2.onnx", contract_variant(version="2"))
    assert key_for(tmp_path / "tiny2.onnx").onnx_sha256 != k.onnx_sha256
    assert EngineKey.from_dict(k.to_dict()) == k and EngineKey.from_dict({"gpu": "x"}) is None


def test_cache_hit_stale_and_truncated_engines_are_rebuilt(model: Path, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    cache = EngineCache(tmp_path / "cache")
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        return ort_optimised(model, tmp_path / f"opt{len(builds)}.onnx")

    key = key_for(model)
    path, built = cache.get_or_build(key, "tiny", build)
    assert built and path.name == f"tiny.{key.digest()}.engine" and cache.validate(path, key) is None
    assert json.loads(cache.sidecar(path).read_text())["key"] == key.to_dict()
    assert cache.get_or_build(key, "tiny", build) == (path, False) and len(builds) == 1
    # the same model on a machine with another TensorRT: a different entry, the old one named in the log
    newer = key_for(model, trt_version="10.4.0")
    with caplog.at_level(logging.INFO, logger="avstream.tensorrt"):
        path2, built = cache.get_or_build(newer, "tiny", build)
    assert built and path2 != path and len(builds) == 2
    assert "trt_version: built for '10.3.0', needed '10.4.0'" in caplog.text
    # a foreign engine copied into place under the right name is detected by its sidecar, removed, rebuilt
    shutil.copy(path, path2)
    shutil.copy(cache.sidecar(path), cache.sidecar(path2))
    assert "trt_version" in (cache.validate(path2, newer) or "")
    assert cache.lookup(newer, "tiny") is None and not path2.exists()
    assert cache.get_or_build(newer, "tiny", build)[1] and len(builds) == 3
    # a truncated engine (crash while copying) does not match the hash in its sidecar
    path2.write_bytes(path2.read_bytes()[:100])
    assert "truncated" in (cache.validate(path2, newer) or "")
    cache.sidecar(path).unlink()
    assert "sidecar" in (cache.validate(path, key) or "")
    # a rebuilt engine is a real model: ONNX Runtime runs the optimised graph
    sess = ort.InferenceSession(str(cache.get_or_build(newer, "tiny", build)[0]), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"video": np.full((1, 4, 4, 6, 3), 7, np.uint8), "audio": np.zeros((1, 160), np.float32)})
    assert out[1][0] == pytest.approx(7.0)


def test_engine_file_as_model_without_tensorrt_falls_back_to_its_onnx(model: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    contract = load_contract(model)
    engine = write_engine_file(tmp_path / "out" / "tiny.engine", b"not a real engine", key_for(model), contract, model)
    meta = json.loads(EngineCache.sidecar(engine).read_text())
    assert meta["onnx"] == "../tiny.onnx" and meta["contract"]["id"] == "tiny"
    assert load_contract(engine).ref == "tiny@1"
    with caplog.at_level(logging.WARNING, logger="avstream.tensorrt"):
        runner = Runner.open(engine, providers=["tensorrt", "cpu"], node_id="enc")
    assert runner.backend.name == "onnxruntime:CPUExecutionProvider"
    assert "tiny.engine cannot run here" in caplog.text and "serving tiny.onnx with onnxruntime" in caplog.text
    # the source changed since the engine was built: nothing can stand in for it
    tiny_model(model, contract_variant(version="9"))
    with pytest.raises(Exception, match="TensorRT is not installed"):
        Runner.open(engine, providers=["tensorrt", "cpu"])
    (tmp_path / "bare.plan").write_bytes(b"x")
    with pytest.raises(ModelError, match="needs its sidecar"):
        load_contract(tmp_path / "bare.plan")


def test_native_backend_without_tensorrt_serves_with_onnxruntime(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with caplog.at_level(logging.WARNING, logger="avstream.tensorrt"):
        runner = open_native(Runner, model, providers=["tensorrt", "cuda", "cpu"], engine_cache=None,
                             background_build=True, threads=1, node_id="enc", cpus=0, device_id=0,
                             precision="fp16", max_batch=4)
    assert runner.backend.name.startswith("onnxruntime:") and "backend tensorrt: TensorRT is not installed" in caplog.text


def test_ort_trt_cache_folder_is_per_key(model: Path, tmp_path: Path) -> None:
    a = ort_trt_cache_dir(model, "fp16", 16, tmp_path)
    assert a == ort_trt_cache_dir(model, "fp16", 16, tmp_path) and a.is_dir()
    assert json.loads((a / "key.json").read_text())["builder"].startswith("onnxruntime-trt-ep:")
    assert len({a, ort_trt_cache_dir(model, "fp32", 16, tmp_path), ort_trt_cache_dir(model, "fp16", 4, tmp_path)}) == 3
    tiny_model(model, contract_variant(version="3"))  # new weights/metadata: a new folder, old engines unused
    assert ort_trt_cache_dir(model, "fp16", 16, tmp_path) != a
    assert not cache_has_engine(a)
    (a / "TensorrtExecutionProvider_x.engine").write_bytes(b"e")
    assert cache_has_engine(a)


def test_provider_options_and_profiles() -> None:
    prof = profile_shapes([("video", ["batch", 8, 112, 112, 3]), ("audio", ["batch", 32000])], 16, 4)
    assert prof == ("video:1x8x112x112x3,audio:1x32000", "video:4x8x112x112x3,audio:4x32000",
                    "video:16x8x112x112x3,audio:16x32000")
    trt = provider_options(TRT_EP, device_id=1, precision="fp16", cache_dir=Path("/c"), profile=prof)
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True" and trt["trt_int8_enable"] == "False"
    assert trt["trt_engine_cache_path"] == "/c" and trt["trt_profile_max_shapes"].startswith("video:16x")
    assert provider_options(TRT_EP, precision="int8")["trt_int8_enable"] == "True"
    assert provider_options(CUDA_EP)["cudnn_conv_algo_search"] == "HEURISTIC"
    assert provider_options(CPU_EP) == {}
    with pytest.raises(ModelError, match="unknown precision"):
        provider_options(CPU_EP, precision="fp8")


def test_thread_budget(tmp_path: Path) -> None:
    assert thread_plan(3, 8.0) == (3, 1)
    assert thread_plan(0, 2.5) == (2, 1) and thread_plan(0, 0.5) == (1, 1)
    assert thread_plan(0, 0.0, available=6.0) == (6, 1)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(tmp_path) == 2.0


def test_io_binding_gives_the_same_outputs(model: Path) -> None:
    session = create_session(model, providers=["cpu"], threads=1)
    plain, bound = OrtBackend(session, io_binding=False), OrtBackend(session, io_binding=True)
    assert not OrtBackend(session).io_binding  # on by default only on a GPU provider
    rng = np.random.default_rng(0)
    for batch in (1, 3, 3, 1):  # reused bindings per shape, new data each time
        feed: dict[str, np.ndarray] = {"video": rng.integers(0, 256, (batch, 4, 4, 6, 3), dtype=np.uint8),
                "audio": rng.normal(size=(batch, 160)).astype(np.float32)}
        a, b = plain.run(feed), bound.run(feed)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_serve_while_building_then_swap(model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner.open(model, providers=["cpu"], threads=1, max_batch=4, node_id="enc")
    first = runner.backend
    gate = threading.Event()
    cache = EngineCache(tmp_path / "cache")

    def build() -> OrtBackend:  # the CPU stand-in for a TensorRT build: cache, real optimisation, session
        gate.wait(10)
        engine, _ = cache.get_or_build(key_for(model), "tiny", lambda: ort_optimised(model, tmp_path / "opt.onnx"))
        return OrtBackend(ort.InferenceSession(str(engine), providers=["CPUExecutionProvider"]))

    video = np.full((2, 4, 4, 6, 3), 10, np.uint8)
    audio = np.full((2, 160), 0.5, np.float32)
    with caplog.at_level(logging.INFO, logger="avstream.inference"):
        runner.build_in_background(build, "optimised graph")
        for _ in range(5):  # served by the first backend while the build waits
            out = runner.run(video, audio)
            assert runner.backend is first and out["activation"] == pytest.approx([10.5, 10.5])
        gate.set()
        assert runner.swapped.wait(10) and runner.build_thread is not None
        runner.build_thread.join(5)
    assert runner.backend is not first and runner.build_error is None
    assert runner.run(video, audio)["activation"] == pytest.approx([10.5, 10.5])
    assert "enc: swapped onnxruntime:CPUExecutionProvider → onnxruntime:CPUExecutionProvider (optimised graph built in" in caplog.text


def test_failed_build_keeps_serving(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = Runner.open(model, providers=["cpu"], threads=1)
    first = runner.backend
    bad = model.with_name("wrong.onnx")
    tiny_model(bad, contract_variant(inputs__audio=None), audio=False)  # a graph without the audio input

    def build() -> OrtBackend:
        return OrtBackend(create_session(bad, providers=["cpu"]))

    with caplog.at_level(logging.WARNING, logger="avstream.inference"):
        runner.build_in_background(build, "wrong graph")
        assert runner.build_thread is not None
        runner.build_thread.join(10)
    assert runner.backend is first and not runner.swapped.is_set()
    assert runner.build_error and "audio" in runner.build_error and "staying on" in caplog.text
    assert runner.run(*runner.zero_inputs(1))["activation"].shape == (1,)


# --- on a CUDA machine ----------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device")
def test_cuda_provider_with_io_binding(model: Path) -> None:
    runner = Runner.open(model, providers=["cuda", "cpu"], max_batch=4)
    assert runner.providers[0] == "CUDAExecutionProvider" and getattr(runner.backend, "io_binding", False)
    video, audio = runner.zero_inputs(4)
    assert runner.run(video, audio)["activation"].shape == (4,)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_native_tensorrt_build_and_cache(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    runner = Runner.open(model, backend="tensorrt", precision="fp16", max_batch=4, engine_cache=tmp_path,
                         background_build=False)
    assert runner.backend.name == "tensorrt:native" and list(tmp_path.glob("tiny.*.engine"))
    video = np.full((3, 4, 4, 6, 3), 20, np.uint8)
    assert runner.run(video, np.zeros((3, 160), np.float32))["activation"] == pytest.approx([20.0] * 3, rel=1e-2)
