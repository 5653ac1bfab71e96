"""Exporters: log-mel parity, export with metadata + parity check, ``avstream export`` on a user module."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.errors import MissingDependencyError

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from avstream.engine.inference.contract import read_contract  # noqa: E402
from avstream.engine.inference.runners import Runner  # noqa: E402
from avstream.exporters.export import ParityError, export_onnx, import_torch  # noqa: E402
from avstream.exporters.logmel import LogMel, hann_window  # noqa: E402
from tests.conftest import invoke_cli  # noqa: E402

AUDIO_CONTRACT = {
    "schema": 1, "id": "loud", "version": "2", "task": "loudness",
    "inputs": {"audio": {"name": "audio", "sample_rate": 16000, "seconds": 0.5, "samples": 8000}},
    "window": {"seconds": 0.5, "hop": 0.25},
    "outputs": {"level": {"name": "level", "meaning": "mean log-mel"}, "mel": {"name": "mel"}},
}

USER_MODULE = '''
import torch
from avstream.exporters.logmel import LogMel


class Loudness(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logmel = LogMel(16000, n_fft=400, hop=320, n_mels=16)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, audio):
        mel = self.logmel(audio)
        return self.scale * mel.mean(dim=(1, 2)), mel.mean(dim=2)


class Counter(torch.nn.Module):  # a Python-side counter: traced as a constant, so parity fails
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, audio):
        self.calls += 1
        m = audio.mean(dim=1)
        return m * self.calls, audio[:, :4]


class Rfft(torch.nn.Module):
    def forward(self, audio):
        spec = torch.fft.rfft(audio).abs()
        return spec.mean(dim=1), spec[:, :4]


def factory():
    return Loudness()


def counter():
    return Counter()


def rfft():
    return Rfft()


def not_a_module():
    return 42
'''


def test_logmel_matches_stft_reference() -> None:
    lm = LogMel(16000, n_fft=400, hop=320, n_mels=64)
    audio = torch.from_numpy(np.random.default_rng(0).normal(0, 0.3, (2, 32000)).astype(np.float32))
    with torch.no_grad():
        power = lm.power(audio)
        got = lm(audio)
    ref = torch.stft(audio, 400, 320, window=torch.hann_window(400), center=False, return_complex=True)
    ref_power = ref.abs().pow(2)[:, : lm.n_bins]
    assert power.shape == ref_power.shape == (2, lm.n_bins, lm.frames(32000))
    assert float((power - ref_power).abs().max() / ref_power.abs().max()) < 1e-5
    ref_logmel = torch.log(torch.matmul(ref_power.transpose(1, 2), lm.fb).transpose(1, 2) + lm.eps)
    assert float((got - ref_logmel).abs().max()) < 1e-3
    # numpy reference of one frame
    frame = audio[0, 320 * 5 : 320 * 5 + 400].double().numpy() * hann_window(400)
    np_power = np.abs(np.fft.rfft(frame)) ** 2
    np.testing.assert_allclose(power[0, :, 5].numpy(), np_power[: lm.n_bins], rtol=1e-3, atol=1e-3 * np_power.max())


def test_export_onnx_metadata_and_parity(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "avs_user_mod_a.py").write_text(USER_MODULE)
    import avs_user_mod_a  # type: ignore[import-not-found]  # written above

    lines: list[str] = []
    report = export_onnx(avs_user_mod_a.factory(), None, AUDIO_CONTRACT, tmp_path / "loud.onnx", progress=lines.append)
    assert report.max_abs < 1e-4 and all(r.ok for r in report.parity) and {r.output for r in report.parity} == {"level", "mel"}
    assert any("parity" in line for line in lines)
    c = read_contract(tmp_path / "loud.onnx")
    assert c.ref == "loud@2" and c.video is None and c.window_hop == 0.25
    runner = Runner.open(tmp_path / "loud.onnx", providers=["cpu"])
    out = runner.run(None, np.zeros((3, 8000), np.float32))  # dynamic batch
    assert out["level"].shape == (3,) and out["mel"].shape == (3, 16)


def test_failing_parity_fails_export(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "avs_user_mod_b.py").write_text(USER_MODULE)
    import avs_user_mod_b  # type: ignore[import-not-found]  # written above

    with pytest.raises(ParityError, match="parity check failed: output 'level'"):
        export_onnx(avs_user_mod_b.counter(), None, AUDIO_CONTRACT, tmp_path / "c.onnx", progress=lambda s: None)
    assert not (tmp_path / "c.onnx").exists() and (tmp_path / "c.failed.onnx").exists()


def test_export_command_user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "avs_user_mod_c.py").write_text(USER_MODULE)
    contract = tmp_path / "contract.json"
    contract.write_text(json.dumps(AUDIO_CONTRACT))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    base = ["--contract", str(contract), "--out", str(tmp_path / "m.onnx")]
    res = invoke_cli("export", "--module", "avs_user_mod_c:factory", *base)
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "parity" in out and "wrote" in out and read_contract(tmp_path / "m.onnx").ref == "loud@2"

    import avs_user_mod_c  # type: ignore[import-not-found]  # written above

    torch.save(avs_user_mod_c.factory().state_dict(), tmp_path / "good.pt")
    assert invoke_cli("export", "--module", "avs_user_mod_c:factory", "--checkpoint", str(tmp_path / "good.pt"),
                      *base).exit_code == 0

    def fails(args: list[str], *needles: str) -> None:
        res = invoke_cli("export", *args)
        err = res.stderr
        assert res.exit_code == 2, err
        assert "Traceback" not in err and all(n in err for n in needles), err

    (tmp_path / "bad.pt").write_bytes(b"garbage")
    fails(["--module", "avs_user_mod_c:factory", "--checkpoint", str(tmp_path / "bad.pt"), *base], "bad.pt", "checkpoint")
    torch.save({"other": torch.zeros(1)}, tmp_path / "wrong.pt")
    fails(["--module", "avs_user_mod_c:factory", "--checkpoint", str(tmp_path / "wrong.pt"), *base], "does not fit")
    fails(["--module", "no_such_mod_xyz:factory", *base], "cannot import 'no_such_mod_xyz'")
    fails(["--module", "avs_user_mod_c:nothing", *base], "no callable 'nothing'")
    fails(["--module", "avs_user_mod_c:not_a_module", *base], "not a torch.nn.Module")
    fails(["--module", "avs_user_mod_c:rfft", *base], "unsupported operator aten::fft_rfft")
    fails(["--module", "avs_user_mod_c:counter", *base], "parity check failed")
    contract.write_text(json.dumps({**AUDIO_CONTRACT, "task": ""}))
    fails(["--module", "avs_user_mod_c:factory", *base], "contract.json", "task")
    fails(["--module", "avs_user_mod_c:factory", "--out", "x.onnx"], "--contract")
    assert invoke_cli("export", "--recipe", "nope").exit_code == 2


def test_torch_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'avstream\[export\]'"):
        import_torch()


def test_highlight_recipe_exports(tmp_path: Path) -> None:
    from avstream.exporters.recipes import highlight

    model = highlight.build_model().eval()
    report = export_onnx(model, None, highlight.CONTRACT, tmp_path / "h.onnx", progress=lambda s: None)
    assert report.max_abs < 1e-4 and report.size_bytes < 10e6
    runner = Runner.open(tmp_path / "h.onnx", providers=["cpu"], threads=1)
    video, audio = runner.zero_inputs(2)
    out = runner.run(video, audio)
    assert out["video_embedding"].shape == (2, 64) and out["activation"].shape == (2,)
    np.testing.assert_allclose(np.linalg.norm(out["audio_embedding"], axis=1), 1.0, rtol=1e-4)
    # the frames may be fed as a zero-copy view: the graph reads raw uint8 BGR
    assert read_contract(tmp_path / "h.onnx").to_dict() == highlight.CONTRACT


def test_info_nce_prefers_aligned_pairs() -> None:
    from avstream.exporters.recipes.highlight import info_nce

    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(np.log(1 / 0.07))
    assert info_nce(z, z, scale) < info_nce(z, z.roll(1, dims=0), scale)



@pytest.mark.slow
def test_recipe_trains_a_few_steps(tmp_path: Path) -> None:
    from avstream.exporters.recipes import highlight

    model, stats = highlight.train(steps=3, seed=1, cache_dir=tmp_path, batch=8, progress=lambda s: None,
                                   seed_ranges=((0, 8), (500_000, 500_004), (900_000, 900_004)))
    assert stats.steps == 3 and np.isfinite(stats.final_loss) and 0.0 <= stats.test_auc <= 1.0
