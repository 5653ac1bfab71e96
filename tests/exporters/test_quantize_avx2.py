"""INT8 agreement on a CPU with AVX2 but no VNNI, where ORT's u8 x s8 kernels saturate at int16.

The model is quantised here; the comparison runs in this venv's Python under ``qemu-x86_64 -cpu Haswell``
(user-mode emulation of an AVX2-only CPU), whose MLAS picks the AVX2 kernels. A probe first shows the
emulated kernel really saturates, so the agreement check cannot pass vacuously."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.inference.contract import resolve_model
from avstream.exporters.cpu_features import CpuFeatures, cpu_features, proc_cpuinfo_flags
from avstream.exporters.int8_agreement import holds

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from avstream.exporters.quantize import calibration_windows, head_nodes, quantize_int8, window_feeds  # noqa: E402

QEMU = shutil.which("qemu-x86_64")
# Haswell: AVX2 + FMA, no AVX-512, no VNNI; the features TCG cannot emulate are turned off (no warnings)
HASWELL = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm"
HIGHLIGHT = resolve_model("builtin:highlight", Path.cwd())

# what runs emulated: numpy and onnxruntime only (importing onnx under emulation alone takes ~15 s)
EMULATED = r"""
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from avstream.exporters.cpu_features import cpu_features

work, ref = Path(sys.argv[1]), sys.argv[2]
def run(path, feeds):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {o.name: np.concatenate([np.ravel(s.run([o.name], f)[0]) for f in feeds]) for o in s.get_outputs()}
probe = int(run(work / "probe.onnx", [{"a": np.full((1, 64), 255, np.uint8)}])["y"][0])
data = np.load(work / "feeds.npz")
feeds = [{"video": data[f"video{k}"], "audio": data[f"audio{k}"]} for k in range(int(data["n"]))]
a, b = run(ref, feeds), run(work / "int8.onnx", feeds)
np.savez(work / "emulated.npz", **b)
print(json.dumps({"probe": probe, "cpu": cpu_features().as_dict(), "line": cpu_features().line(),
                  "corr": {n: float(np.corrcoef(a[n], b[n])[0, 1]) for n in a}}))
"""


def saturation_probe(path: Path) -> Path:
    """64 products of 255 x 127: exact with int32 accumulation, 32 x 32767 where pair sums saturate at int16."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
                          [numpy_helper.from_array(np.full((64, 1), 127, np.int8), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_cpuinfo_flags_and_fallback(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert proc_cpuinfo_flags(info) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert proc_cpuinfo_flags(tmp_path / "missing") is None
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n")
    assert proc_cpuinfo_flags(arm) == {"fp", "asimd", "asimddp", "i8mm"}
    missing = cpu_features(tmp_path / "missing")  # falls back to this process's CPUID (numpy)
    assert missing.source.startswith(("CPUID", "unknown")) and missing.machine
    here = cpu_features()
    assert "INT8 dot product" in here.line() and here.source
    assert "saturate" in CpuFeatures("x86_64", ("avx2",), "t").int8_dot
    assert "VNNI" in CpuFeatures("x86_64", ("avx2", "avx_vnni"), "t").int8_dot


def test_output_heads_are_found() -> None:
    assert head_nodes(onnx.load(str(HIGHLIGHT))) == ["/audio/head/head.2/Gemm", "/frames/head/Conv"]
    violence = resolve_model("builtin:violence", Path.cwd())
    assert head_nodes(onnx.load(str(violence))) == ["/head_a/MatMul", "/head_v/MatMul"]


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU on an x86-64 host")
def test_int8_agrees_on_an_avx2_cpu_without_vnni(tmp_path: Path) -> None:
    ws = calibration_windows(HIGHLIGHT, "synthetic://scene?seed=31&duration=14", count=8)
    calib, held = window_feeds(HIGHLIGHT, ws[0::2]), window_feeds(HIGHLIGHT, ws[1::2])
    quantize_int8(HIGHLIGHT, tmp_path / "int8.onnx", calib)
    saturation_probe(tmp_path / "probe.onnx")
    arrays: dict[str, Any] = {f"{k}{i}": f[k] for i, f in enumerate(held) for k in ("video", "audio")}
    arrays["n"] = len(held)
    np.savez(tmp_path / "feeds.npz", **arrays)
    r = subprocess.run([str(QEMU), "-cpu", HASWELL, sys.executable, "-c", EMULATED, str(tmp_path), str(HIGHLIGHT)],
                       capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["probe"] == 32 * 32767, got  # the emulated CPU runs the saturating AVX2 kernel
    assert "avx2" in got["cpu"]["flags"] and "avx512_vnni" not in got["cpu"]["flags"], got["cpu"]
    assert "saturate" in got["cpu"]["int8_dot"] and "AVX2 without VNNI" in got["line"]
    assert got["corr"].keys() == {"video_embedding", "audio_embedding", "activation"}
    assert all(c >= 0.99 for c in got["corr"].values()), got["corr"]
    # no saturation left: the emulated AVX2 CPU computes what this CPU computes, so task metrics carry over
    import onnxruntime as ort

    here = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    emulated = np.load(tmp_path / "emulated.npz")
    for out in here.get_outputs():
        native = np.concatenate([np.ravel(here.run([out.name], f)[0]) for f in held])
        assert np.allclose(native, emulated[out.name], rtol=0, atol=1e-5), out.name


# the shipped INT8 built-ins (pipelines/edge.yaml), each run natively and under emulation on held-out windows
SHIPPED = {"highlight_int8": "highlight", "localization_int8": "localization",
           "captions_int8_encoder": "captions_encoder"}
EMULATED_SHIPPED = r"""
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from avstream.exporters.int8_agreement import agreement

work, pairs = Path(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for name, (int8, fp32) in pairs.items():
    data = np.load(work / f"{name}.npz")
    feeds = [{k: data[f"{k}{i}"] for k in ("video", "audio")} for i in range(int(data["n"]))]
    res = {}
    for tag, path in (("int8", int8), ("fp32", fp32)):
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        res[tag] = {o.name: np.concatenate([np.ravel(s.run([o.name], f)[0]) for f in feeds]) for o in s.get_outputs()}
    np.savez(work / f"{name}.emulated.npz", **res["int8"])
    out[name] = {o: agreement(res["fp32"][o], res["int8"][o]) for o in res["fp32"]}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
@pytest.mark.skipif(platform.machine() != "x86_64", reason="emulates an x86-64 CPU on an x86-64 host")
def test_shipped_int8_models_agree_on_an_avx2_cpu_without_vnni(tmp_path: Path) -> None:
    import onnxruntime as ort

    pairs = {}
    for name, fp32_name in SHIPPED.items():
        int8, fp32 = resolve_model(f"builtin:{name}", Path.cwd()), resolve_model(f"builtin:{fp32_name}", Path.cwd())
        held = window_feeds(int8, calibration_windows(int8, "synthetic://scene?seed=1000901&duration=12", count=6))
        arrays: dict[str, Any] = {f"{k}{i}": f[k] for i, f in enumerate(held) for k in ("video", "audio")}
        np.savez(tmp_path / f"{name}.npz", n=len(held), **arrays)
        pairs[name] = (str(int8), str(fp32))
    r = subprocess.run([str(QEMU), "-cpu", HASWELL, sys.executable, "-c", EMULATED_SHIPPED, str(tmp_path),
                        json.dumps(pairs)], capture_output=True, text=True, timeout=380)
    assert r.returncode == 0, r.stderr[-3000:]
    corr = json.loads(r.stdout.strip().splitlines()[-1])
    for name, outputs in corr.items():
        for out, measured in outputs.items():  # the bounds of models/int8.md (exporters/int8_agreement.py)
            assert holds(out, measured), (name, out, measured)
        # and the emulated AVX2 CPU computes what this CPU computes
        data = np.load(tmp_path / f"{name}.npz")
        feeds = [{k: data[f"{k}{i}"] for k in ("video", "audio")} for i in range(int(data["n"]))]
        here = ort.InferenceSession(pairs[name][0], providers=["CPUExecutionProvider"])
        emulated = np.load(tmp_path / f"{name}.emulated.npz")
        for out in here.get_outputs():
            native = np.concatenate([np.ravel(here.run([out.name], f)[0]) for f in feeds])
            assert np.allclose(native, emulated[out.name], rtol=0, atol=1e-4), (name, out.name)
    print(json.dumps(corr))
