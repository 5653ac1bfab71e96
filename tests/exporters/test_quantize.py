"""INT8 / FP16 variants of the built-in highlight model from real windows (engine reader + window node),
their agreement with the float model on held-out windows, and the ``avstream export --model`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.inference.contract import read_contract, resolve_model
from avstream.engine.inference.runners import Runner
from tests.conftest import run_cli

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from avstream.exporters.quantize import (  # noqa: E402
    calibration_windows,
    compare,
    convert_fp16,
    front_end_nodes,
    quantize_int8,
    window_feeds,
)
from avstream.exporters.tensorrt_build import has_qdq  # noqa: E402

HIGHLIGHT = resolve_model("builtin:highlight", Path.cwd())
SCENE = "synthetic://scene?seed=31&duration=14"


@pytest.fixture(scope="module")
def windows() -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    ws = calibration_windows(HIGHLIGHT, SCENE, count=16)
    return window_feeds(HIGHLIGHT, ws[0::2]), window_feeds(HIGHLIGHT, ws[1::2])


def test_calibration_windows_are_the_pipeline_windows() -> None:
    ws = calibration_windows(HIGHLIGHT, SCENE, count=5)
    assert [(w.t0, w.t1) for w in ws] == [(float(k), k + 2.0) for k in range(5)]  # model window 2 s, hop 1 s
    assert all(w.frames is not None and w.frames.shape == (8, 64, 64, 3) for w in ws)
    assert all(w.audio is not None and w.audio.shape == (32000,) and w.sample_rate == 16000 for w in ws)
    feeds = window_feeds(HIGHLIGHT, ws)
    assert feeds[0]["video"].shape == (1, 8, 64, 64, 3) and feeds[0]["video"].dtype == np.uint8
    assert not np.array_equal(feeds[0]["audio"], feeds[3]["audio"])  # real, changing content
    # the whole input when it has fewer windows than asked (the last one padded at the end)
    assert len(calibration_windows(HIGHLIGHT, "synthetic://scene?seed=1&duration=4", count=50)) == 4


def test_front_end_stays_in_float() -> None:
    names = front_end_nodes(onnx.load(str(HIGHLIGHT)))
    assert "/audio/logmel/Conv" in names and "/audio/logmel/Log" in names
    assert not any(n.startswith(("/frames", "/audio/body", "/audio/head")) for n in names)


def test_int8_variants_agree_on_held_out_windows(tmp_path: Path, windows: tuple) -> None:
    calib, held_out = windows
    out = quantize_int8(HIGHLIGHT, tmp_path / "h.int8.onnx", calib)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QLinearConv" in ops or "ConvInteger" in ops
    c = read_contract(out)
    assert (c.ref, c.raw["precision"], c.raw["quantization"]["calibration_windows"]) == ("highlight@2+int8", "int8",
                                                                                   len(calib))
    result = compare(HIGHLIGHT, out, held_out, runs=3)
    assert {d.name for d in result.deltas} == {"video_embedding", "audio_embedding", "activation"}
    for d in result.deltas:
        assert d.corr > 0.99, d
        assert d.max_abs < 0.2 * d.ref_range, d
    assert result.ref_ms > 0 and result.new_ms > 0 and "speed-up" in result.lines()[0]
    # the runtime serves it like any avstream model
    runner = Runner.open(out, providers=["cpu"], threads=1)
    assert runner.run(held_out[0]["video"], held_out[0]["audio"])["activation"].shape == (1,)
    qdq = quantize_int8(HIGHLIGHT, tmp_path / "h.qdq.onnx", calib, fmt="qdq")
    assert has_qdq(qdq) and not has_qdq(HIGHLIGHT)


def test_fp16_keeps_io_types_and_agrees(tmp_path: Path, windows: tuple) -> None:
    out = convert_fp16(HIGHLIGHT, tmp_path / "h.fp16.onnx")
    graph = onnx.load(str(out)).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT]
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}
    assert read_contract(out).ref == "highlight@2+fp16"
    result = compare(HIGHLIGHT, out, windows[1], runs=2)
    assert all(d.max_abs < 5e-3 and d.corr > 0.999 for d in result.deltas), result.deltas


def test_cli_int8_with_report(tmp_path: Path) -> None:
    out = tmp_path / "q.onnx"
    r = run_cli("export", "--model", "builtin:highlight", "--quantize", "int8", "--calibrate", SCENE,
                "--calibration-windows", "6", "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "held-out windows" in r.stdout and "speed-up x" in r.stdout and "corr" in r.stdout
    assert json.loads(onnx.load(str(out)).metadata_props[-1].value)["version"] == "2+int8"


def test_cli_errors(tmp_path: Path) -> None:
    from avstream.exporters.testing import tiny_model

    r = run_cli("export", "--model", "builtin:highlight", "--quantize", "int8")
    assert r.returncode == 2 and "needs --calibrate URI" in r.stderr and "Traceback" not in r.stderr
    plain = tiny_model(tmp_path / "plain.onnx", meta=None)
    r = run_cli("export", "--model", str(plain), "--precision", "fp16")
    assert r.returncode == 2 and "no 'avstream' metadata" in r.stderr
    r = run_cli("export", "--model", "builtin:highlight", "--quantize", "int8", "--calibrate", str(tmp_path / "nope.mp4"))
    assert r.returncode == 2 and "nope.mp4" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("export", "--recipe", "highlight", "--quantize", "int8")
    assert r.returncode == 2 and "export first" in r.stderr


def test_cli_tensorrt_paths_name_what_is_missing() -> None:
    import onnxruntime

    try:
        import tensorrt  # noqa: F401

        have_trt = True
    except ImportError:
        have_trt = False
    if not have_trt:
        r = run_cli("export", "--model", "builtin:highlight", "--format", "tensorrt")
        assert r.returncode == 2 and "TensorRT is not installed" in r.stderr and "avstream[tensorrt]" in r.stderr
    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        r = run_cli("export", "--build-engines", "highlight")
        assert r.returncode == 2, r.stdout
        assert "score: cannot build: the TensorRT execution provider is not in this onnxruntime build" in r.stdout
        assert "0 of 1 model node(s) ready, 1 failed" in r.stdout
