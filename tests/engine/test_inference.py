"""ONNX Runtime sessions: provider fallback on this CPU-only machine, batched runs, window fitting."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.engine.inference.runners import (
    Runner,
    create_session,
    import_onnxruntime,
    require_onnxruntime,
    select_providers,
)
from avstream.engine.items import AVWindow

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from avstream.exporters.testing import tiny_model  # noqa: E402


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "tiny.onnx")


def test_select_providers_pure() -> None:
    chosen, skipped = select_providers(["tensorrt", "cuda", "cpu"], ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert [s[0] for s in skipped] == ["tensorrt", "cuda"]
    assert all("not available" in r and "avstream[gpu]" in r for _, r in skipped)
    chosen, skipped = select_providers(["cuda", "CPUExecutionProvider", "cpu"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert chosen == ["CUDAExecutionProvider", "CPUExecutionProvider"] and not skipped


def test_fallback_to_cpu_is_logged(model: Path, caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="avstream.inference"):
        session = create_session(model, providers=["tensorrt", "cuda", "cpu"], threads=1, node_id="enc")
    assert session.get_providers() == ["CPUExecutionProvider"]
    (record,) = [r for r in caplog.records if "fallback" in r.getMessage()]  # one line for the model
    assert record.getMessage().startswith("execution provider fallback: tensorrt, cuda for enc (tiny.onnx): "
                                          "not in this onnxruntime build")
    assert "running on CPUExecutionProvider" in record.getMessage() and "avstream[gpu]" in record.getMessage()
    assert record.provider_fallback["node"] == "enc"  # type: ignore[attr-defined]  # what a worker hands on


def test_no_usable_provider(model: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(MissingDependencyError, match="add 'cpu'"):
        create_session(model, providers=["cuda"])
    with pytest.raises(ModelError, match="unknown execution provider 'tpu'"):
        create_session(model, providers=["tpu", "cpu"])


def test_onnxruntime_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'avstream\[cpu\]'"):
        import_onnxruntime()


def test_preflight_checks_the_runtime_without_loading_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    require_onnxruntime()  # installed here
    assert "onnxruntime" not in sys.modules  # checked, not imported: the supervisor never maps it
    shadow = tmp_path / "onnxruntime"  # a folder of that name is not a runtime
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match=r"no native runtime in .*pip install 'avstream\[cpu\]'"):
        require_onnxruntime()


def test_corrupt_model_is_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        create_session(bad, providers=["cpu"])


def test_run_batched(model: Path) -> None:
    runner = Runner.open(model, providers=["cpu"], threads=1)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 4, 4, 6, 3), dtype=np.uint8)
    audio = rng.normal(size=(3, 160)).astype(np.float32)
    out = runner.run(video, audio)
    assert out["activation"].shape == (3,) and out["frame_mean"].shape == (3, 4)
    expect = video.reshape(3, -1).astype(np.float64).mean(1) + audio.mean(1)
    np.testing.assert_allclose(out["activation"], expect, rtol=1e-4)
    silent = runner.run(video, None)  # missing audio: silence
    np.testing.assert_allclose(silent["activation"], video.reshape(3, -1).mean(1), rtol=1e-4)
    with pytest.raises(ValueError, match="takes"):
        runner.run(video[:, :2], audio)
    with pytest.raises(ValueError, match="needs video or audio"):
        runner.run(None, None)


def test_run_windows_matches_single_runs(model: Path) -> None:
    runner = Runner.open(model, providers=["cpu"], threads=1)
    rng = np.random.default_rng(1)
    windows = [
        AVWindow("a", 0.0, 2.0, 10.0, rng.integers(0, 256, (4, 4, 6, 3), dtype=np.uint8),
                 rng.normal(size=160).astype(np.float32), 2.0, 80),
        AVWindow("b", 5.0, 7.0, 11.0, rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8), None, 2.0, 80),
        AVWindow("c", 1.0, 3.0, 12.0, rng.integers(0, 256, (4, 4, 6, 3), dtype=np.uint8),
                 rng.normal(size=320).astype(np.float32), 2.0, 80),
    ]
    batched = runner.run_windows(windows)
    single = [runner.run_windows([w])[0] for w in windows]
    for b, s in zip(batched, single, strict=True):
        assert b["activation"].shape == () and b["frame_mean"].shape == (4,)
        np.testing.assert_allclose(b["activation"], s["activation"], rtol=1e-5)
    # short video: the first frame repeats in front, newest frame last
    fm = batched[1]["frame_mean"]
    assert fm[0] == fm[1] == fm[2]
    short = runner.prepare_audio(np.ones(100, np.float32))
    assert short is not None and short.tolist()[:60] == [0.0] * 60


def test_windows_that_do_not_fit_the_model_are_an_error(model: Path) -> None:
    """The window node delivers the model's size and rate; the runner checks, it does not resize."""
    runner = Runner.open(model, providers=["cpu"], threads=1, node_id="score")
    big = AVWindow("cam9", 1.0, 3.0, 12.0, np.zeros((4, 8, 12, 3), np.uint8), None, 2.0, 80)
    with pytest.raises(ModelError, match=r"score: .*takes frames of 6x4 BGR, a window of stream 'cam9' has frames "
                                         r"of shape \[8, 12, 3\]"):
        runner.run_windows([big])
    fast = AVWindow("cam9", 1.0, 3.0, 12.0, None, np.zeros(320, np.float32), 0.0, 160)
    with pytest.raises(ModelError, match="takes audio at 80 Hz, a window of stream 'cam9' has 160 Hz"):
        runner.run_windows([fast])


def test_prepare_rgb_and_audio(tmp_path: Path) -> None:
    from avstream.exporters.testing import contract_variant

    path = tiny_model(tmp_path / "rgb.onnx", contract_variant(inputs__video__pixel_format="rgb24"))
    runner = Runner.open(path, providers=["cpu"])
    video = np.zeros((1, 4, 4, 6, 3), np.uint8)
    video[..., 0] = 255  # blue in BGR
    assert runner.run(video, None)["activation"][0] == pytest.approx(85.0)
    audio = runner.prepare_audio(np.ones(320, np.float32), sample_rate=80)
    assert audio is not None and audio.shape == (160,) and np.allclose(audio, 1.0)  # the newest 2 s kept
