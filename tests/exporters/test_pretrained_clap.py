"""CLAP importer: a tiny random ClapModel folder → in-graph log-mel, ONNX export, parity with transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from avstream.exporters.export import ExportError, export_onnx  # noqa: E402
from avstream.exporters.pretrained.clap import load_clap  # noqa: E402
from tests.exporters.tiny_checkpoints import CLAP_RATE as RATE  # noqa: E402
from tests.exporters.tiny_checkpoints import make_clap  # noqa: E402

SECONDS = 1.0
# dB: the graph's float32 DFT-as-conv vs the extractor's float64 rfft (measured: ~1e-5 dB)
FRONTEND_ATOL_DB = 1e-3
EMBED_ATOL = 1e-5  # unit-norm embeddings of dimension 16, ONNX Runtime vs transformers (measured: ~1e-7)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clap(tmp_path_factory.mktemp("clap"))


def signals(n: int) -> dict[str, np.ndarray]:
    t = np.arange(n) / RATE
    rng = np.random.default_rng(3)
    tone = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=n)
    onset = np.zeros(n)
    onset[n // 2:] = np.clip(rng.normal(0, 0.9, size=n - n // 2), -1, 1)
    return {"tone+noise": tone, "silence": np.zeros(n), "loud onset": onset}


def test_frontend_matches_the_extractor(clap_dir: Path) -> None:
    tower = load_clap(clap_dir, seconds=SECONDS)
    extractor = transformers.ClapFeatureExtractor.from_pretrained(str(clap_dir))
    n = int(SECONDS * RATE)
    for label, x in signals(n).items():
        want = extractor(x, sampling_rate=RATE, return_tensors="np")["input_features"][0, 0]
        with torch.no_grad():
            got = tower.module.frontend(torch.from_numpy(x[None].astype(np.float32)))[0].numpy()
        assert got.shape == want.shape, label
        err = float(np.abs(got - want).max())
        assert err < FRONTEND_ATOL_DB, f"{label}: log-mel differs by {err:.3e} dB"


@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_short_windows_are_padded_like_the_extractor(tmp_path: Path, padding: str) -> None:
    folder = make_clap(tmp_path, padding=padding, max_length_s=1)
    tower = load_clap(folder, seconds=0.3)
    extractor = transformers.ClapFeatureExtractor.from_pretrained(str(folder))
    x = signals(int(0.3 * RATE))["tone+noise"]
    want = extractor(x, sampling_rate=RATE, return_tensors="np")["input_features"][0, 0]
    with torch.no_grad():
        got = tower.module.frontend(torch.from_numpy(x[None].astype(np.float32)))[0].numpy()
    assert float(np.abs(got - want).max()) < FRONTEND_ATOL_DB
    if padding == "repeatpad":  # the tiling exports too (one padding mode is enough for the graph's ops)
        path = tmp_path / "short.onnx"
        export_onnx(tower.module, {"audio": x[None].astype(np.float32)}, contract_for(tower), path,
                    progress=lambda _: None)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        emb = sess.run(["embedding"], {"audio": x[None].astype(np.float32)})[0]
        ref = tower.reference({"audio": x[None].astype(np.float32)})
        assert float(np.abs(emb - ref).max()) < EMBED_ATOL


def contract_for(tower: Any) -> dict[str, Any]:
    return {
        "schema": 1, "id": "clap-tiny", "version": "1", "task": "embedding",
        "inputs": {"audio": {"name": "audio", **tower.inputs["audio"]}},
        "outputs": {"embedding": {"name": "embedding", "meaning": "L2-normalised CLAP audio embedding"}},
    }


def test_onnx_export_matches_transformers(clap_dir: Path, tmp_path: Path) -> None:
    tower = load_clap(clap_dir, seconds=SECONDS)
    assert tower.inputs == {"audio": {"sample_rate": RATE, "seconds": SECONDS}}
    assert tower.dim == 16 and tower.modality == "audio"
    assert tower.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)
    n = int(SECONDS * RATE)
    batch = np.stack(list(signals(n).values())).astype(np.float32)
    path = tmp_path / "clap.onnx"
    export_onnx(tower.module, {"audio": batch[:1]}, contract_for(tower), path,
                real_inputs=[{"audio": batch}], progress=lambda _: None)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["embedding"], {"audio": batch})[0]
    want = tower.reference({"audio": batch})
    assert got.shape == want.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    for label, g, w in zip(signals(n), got, want, strict=True):
        err = float(np.abs(g - w).max())
        assert err < EMBED_ATOL, f"{label}: ONNX Runtime vs transformers differ by {err:.3e}"


def test_text_embeddings_are_normalised_and_distinct(clap_dir: Path) -> None:
    tower = load_clap(clap_dir, seconds=SECONDS)
    emb = tower.embed_texts(["a dog barks", "the sound of rain", "car horn"])
    assert emb.shape == (3, tower.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert np.all(sims[~np.eye(3, dtype=bool)] < 0.9999)


def test_bad_folders_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ExportError, match=str(missing)):
        load_clap(missing)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ExportError, match=r"other.*'clip', not 'clap'"):
        load_clap(other)


def test_fusion_is_refused(tmp_path: Path) -> None:
    folder = make_clap(tmp_path / "fusion", truncation="fusion")
    with pytest.raises(ExportError, match=r"fusion.*truncation='fusion'"):
        load_clap(folder, seconds=SECONDS)


def test_fused_checkpoint_is_refused(tmp_path: Path) -> None:
    folder = make_clap(tmp_path / "fused", fusion=True)
    with pytest.raises(ExportError, match=r"fused.*enable_fusion=true"):
        load_clap(folder, seconds=SECONDS)


def test_window_longer_than_max_length_is_refused(clap_dir: Path) -> None:
    with pytest.raises(ExportError, match="max_length_s"):
        load_clap(clap_dir, seconds=2 * SECONDS)
