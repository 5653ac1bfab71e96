"""Caption recipe smoke test: a few training steps on two scenes, resume, export of both graphs with
parity, and captions through the runtime (numpy beam search over the exported decoder step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from avstream.engine.inference.contract import read_contract, read_decoder_spec  # noqa: E402
from avstream.exporters.caption_scenes import scene_windows  # noqa: E402
from avstream.exporters.recipes import captions as recipe  # noqa: E402
from avstream.plugins.captions import ModelCaptioner  # noqa: E402

SMALL: dict[str, Any] = {"batch": 4, "train_seeds": (0, 2), "val_seeds": (500_000, 500_001), "threads": 1}


def test_parts_and_targets() -> None:
    assert recipe.audio_only_caption("a red drum beats while a blue rectangle drifts silently") == "a red drum beats"
    violent = "objects shake violently amid loud bangs while a red drum beats"
    assert recipe.audio_only_caption(violent) == violent
    net = recipe.build_model(30)
    video = torch.zeros(2, recipe.FRAMES, recipe.SIZE, recipe.SIZE, 3, dtype=torch.uint8)
    mem, tags = net.encoder(video, torch.zeros(2, recipe.SAMPLES))
    assert mem.shape == (2, recipe.AUDIO_TOKENS + recipe.VIDEO_TOKENS, recipe.DIM) and tags.shape == (2, 7)
    # causal: the logits after position i do not depend on later tokens
    tokens = torch.tensor([[1, 5, 6, 0, 0] + [0] * (recipe.LENGTH - 5), [1, 5, 6, 7, 8] + [0] * (recipe.LENGTH - 5)])
    net.eval()
    full = net.decoder.all_logits(tokens, mem.detach())
    assert torch.allclose(full[0, :3], full[1, :3], atol=1e-5)
    step = net.decoder(tokens, mem.detach())  # the step picks the last non-PAD position
    assert torch.allclose(step[0], full[0, 2]) and torch.allclose(step[1], full[1, 4])


@pytest.mark.slow
def test_train_resume_export_and_caption(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # an interrupted run resumes from its checkpoint and ends where an uninterrupted one does
    recipe.train(steps=4, seed=1, cache_dir=cache, stop_after=2, ckpt_every=2, progress=lambda m: None, **SMALL)
    lines: list[str] = []
    net, vocab, stats = recipe.train(steps=4, seed=1, cache_dir=cache, progress=lines.append, **SMALL)
    assert any("resuming" in line and "step 3" in line for line in lines)
    ref, _, _ = recipe.train(steps=4, seed=1, cache_dir=tmp_path / "other", progress=lambda m: None, **SMALL)
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert set(stats.val) == {"f1", "bleu4", "class_accuracy"}

    enc_path = tmp_path / "models" / "captions_encoder.onnx"
    enc, dec = recipe.export_models(net, vocab, enc_path, progress=lambda m: None)
    assert all(r.ok for r in enc.parity + dec.parity) and {r.inputs for r in dec.parity} == {"example", "real"}
    assert dec.path == tmp_path / "models" / "captions_decoder_step.onnx"
    contract = read_contract(enc_path)
    assert contract.task == "caption_encoder" and contract.raw["decoder"] == "captions_decoder_step.onnx"
    spec = read_decoder_spec(dec.path)
    assert spec.vocab == vocab and spec.length == recipe.LENGTH and spec.encoder == contract.ref
    assert (enc.size_bytes + dec.size_bytes) < 10e6

    cap = ModelCaptioner.load(str(enc_path), beam=3)
    windows = scene_windows(1_000_000, cap.requirement).windows[:2]
    out = cap.caption_windows(windows)
    assert [c.source for c in out] == ["av", "av"]
    assert all(c.text and 0.0 < c.confidence <= 1.0 for c in out)
    assert all(3 <= len(c.text.split()) <= recipe.MAX_TOKENS for c in out)
    # the runtime's memory is the torch encoder's, to float precision
    w = windows[0]
    assert w.frames is not None and w.audio is not None
    with torch.no_grad():
        ref_mem = net.encoder(torch.from_numpy(w.frames[None]), torch.from_numpy(w.audio[None]))[0].numpy()
    np.testing.assert_allclose(cap.memories([w], ["av"]), ref_mem, atol=1e-4)
