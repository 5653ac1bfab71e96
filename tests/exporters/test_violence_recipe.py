"""Smoke test of the violence recipe: a few MIL training steps on a handful of windows, causal
attention with a one-snippet memory, audio gated by its presence, resumable checkpoints, export with
the ONNX Runtime parity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from avstream.engine.inference.contract import read_contract  # noqa: E402
from avstream.exporters.eval_violence import clip_score  # noqa: E402
from avstream.exporters.export import export_onnx  # noqa: E402
from avstream.exporters.recipes import violence as recipe  # noqa: E402
from avstream.exporters.recipes import violence_data  # noqa: E402
from avstream.exporters.violence_clips import Clip, ClipData, windows_of  # noqa: E402


@pytest.fixture(scope="module")
def clips() -> list[ClipData]:
    """Four short procedural 'clips' (two with violence) cut by the pipeline's window node."""
    out = []
    for i in range(4):
        w = windows_of(f"synthetic://scene?seed={10 + i}&duration=3&width=160&height=90&violence={'true' if i % 2 else 'false'}",
                       recipe.window_requirement())
        out.append(ClipData(Clip(f"s{i}", i % 2, f"g{i}", Path(f"s{i}.mp4")), w))
    return out


def test_contract_matches_the_window_requirement(tmp_path: Path) -> None:
    req = recipe.window_requirement()
    assert (req.seconds, req.hop, req.fps, req.frames, req.width, req.sample_rate) == (2.0, 0.5, 8.0, 16, 112, 16000)
    assert set(recipe.CONTRACT["outputs"]) == set(recipe.OUTPUTS)


@pytest.mark.slow
def test_a_few_training_steps_then_export_with_parity(clips: list[ClipData], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    lines: list[str] = []
    model, stats = recipe.train_model(clips, None, steps=3, seed=0, progress=lines.append, batch=4)
    assert stats.steps == 3 and np.isfinite(stats.final_loss) and lines
    scorer = recipe.make_scorer(model)
    s = scorer(clips[0].windows)
    assert s.shape == (len(clips[0].windows.t0),) and ((s >= 0) & (s <= 1)).all()
    assert 0.0 <= clip_score(scorer, clips[1].windows.silenced()) <= 1.0
    path = tmp_path / "violence.onnx"
    real = [{"video": clips[1].windows.frames[:2], "audio": clips[1].windows.audio[:2]}]
    report = export_onnx(model, None, recipe.CONTRACT, path, real_inputs=real, simplify=False, progress=lines.append)
    assert report.parity and all(r.ok for r in report.parity)
    contract = read_contract(path)
    assert contract.ref == "violence@2" and contract.task == "violence"
    assert contract.window_requirement().hop == 0.5
    assert path.stat().st_size < 2_000_000


def test_attention_is_causal() -> None:
    model = recipe.build_model(1).eval()
    rng = np.random.default_rng(0)
    video = torch.from_numpy(rng.integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8))
    audio = torch.from_numpy(rng.normal(0, 0.1, (2, 32000)).astype(np.float32))
    with torch.no_grad():
        base = model(video, audio)
        v2, a2 = video.clone(), audio.clone()
        v2[:, 12:] = 255 - v2[:, 12:]  # the newest snippet's frames and audio change
        a2[:, 24000:] = 0.0
        changed = model(v2, a2)
    for k in (3, 4, 5):  # per-snippet outputs: the three older snippets are unaffected
        torch.testing.assert_close(base[k][:, :3], changed[k][:, :3], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(base[0], changed[0])
    torch.testing.assert_close(base[0], base[3][:, -1])  # score = newest snippet's score


def test_checkpoint_resume(clips: list[ClipData], tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    m1, _ = recipe.train_model(clips, None, steps=3, seed=2, progress=lambda s: None, batch=2, checkpoint=ckpt)
    assert ckpt.exists()  # written every 50 steps and at the last one
    lines: list[str] = []
    m2, _ = recipe.train_model(clips, None, steps=3, seed=2, progress=lines.append, batch=2, checkpoint=ckpt)
    assert any("resumed" in line and "step 3" in line for line in lines)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_helpers() -> None:
    with pytest.raises(ValueError, match="< 1,000,000"):
        violence_data.render_synth([999_999, 1_000_000])
    f = np.zeros((16, 4, 4, 3), np.uint8)
    f[:10] = np.arange(10)[:, None, None, None]
    f[10:] = f[9]
    assert violence_data.real_frames(f) == 10
    rng = np.random.default_rng(0)
    v = rng.integers(0, 256, (16, 112, 112, 3), dtype=np.uint8)
    for seed in range(20):  # every branch of the augmentation (zoom-out, blur, JPEG, held frames) in turn
        out = violence_data.augment_video(v, np.random.default_rng(seed))
        assert out.shape == v.shape and out.dtype == np.uint8
    held = violence_data._hold_frames(v, np.random.default_rng(3))
    assert all(np.array_equal(held[i], v[j]) for i, j in [(0, 0)])


def test_memory_of_one_snippet() -> None:
    """A change in the oldest snippet reaches the visual score of the next snippet only, and the fused
    score (through the audio path, which attends to the visual snippets) of at most the next two: a
    past fight cannot hold the score up for long."""
    model = recipe.build_model(1).eval()
    rng = np.random.default_rng(1)
    video = torch.from_numpy(rng.integers(0, 256, (1, 16, 112, 112, 3), dtype=np.uint8))
    audio = torch.from_numpy(rng.normal(0, 0.1, (1, 32000)).astype(np.float32))
    with torch.no_grad():
        base = model(video, audio)
        v2, a2 = video.clone(), audio.clone()
        v2[:, :4] = 255 - v2[:, :4]
        a2[:, :8000] = 0.5
        changed = model(v2, a2)
    torch.testing.assert_close(base[5][:, 2:], changed[5][:, 2:], atol=1e-5, rtol=1e-4)  # visual
    assert not torch.allclose(base[5][:, 1], changed[5][:, 1])
    for k in (3, 4):  # fused and audio
        torch.testing.assert_close(base[k][:, 3:], changed[k][:, 3:], atol=1e-5, rtol=1e-4)


def test_silence_gives_exactly_the_visual_score() -> None:
    model = recipe.build_model(2).eval()
    rng = np.random.default_rng(2)
    video = torch.from_numpy(rng.integers(0, 256, (2, 16, 112, 112, 3), dtype=np.uint8))
    quiet = torch.zeros(2, 32000)
    faint = torch.from_numpy(rng.normal(0, 1e-4, (2, 32000)).astype(np.float32))  # -80 dBFS: under the gate
    loud = torch.from_numpy(rng.normal(0, 0.1, (2, 32000)).astype(np.float32))
    with torch.no_grad():
        for audio in (quiet, faint):
            out = model(video, audio)
            torch.testing.assert_close(out[3], out[5])  # score == visual score
            assert torch.count_nonzero(out[4]) == 0  # audio score 0
        heard = model(video, loud)
    assert not torch.allclose(heard[3], heard[5])
    gate = recipe.ViolenceNet.audio_gate(torch.cat([quiet, loud]))
    assert gate[:2].max() == 0.0 and gate[2:].min() == 1.0
