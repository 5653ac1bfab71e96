"""A user's own CLIP folder to a zero-shot ONNX classifier, end to end and offline: a tiny randomly
initialised ``CLIPModel`` saved with ``save_pretrained``, ``load_clip`` against the library's own
processor, ``avstream export zero-shot`` through the real CLI, and the exported model run by the
generic encoder node in a pipeline whose PUB socket we read."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import free_port, invoke_cli, run_cli
from tests.exporters.pipeline_results import run_and_receive
from tests.exporters.tiny_checkpoints import make_tiny_clip

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
zmq = pytest.importorskip("zmq")
pytestmark = pytest.mark.timeout(180)

@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def test_the_tower_matches_the_library_and_exports(clip_folder: Path, tmp_path: Path) -> None:
    from avstream.engine.inference.runners import import_onnxruntime
    from avstream.exporters.export import export_onnx
    from avstream.exporters.pretrained.clip import load_clip

    tower = load_clip(clip_folder, frames=2, fps=2.0)
    video = tower.inputs["video"]
    # frames at 16:9 with the processor's shortest edge as height: the graph only crops
    assert (video["height"], video["width"], video["pixel_format"]) == (30, 53, "bgr24")
    assert tower.dim == 16 and tower.logit_scale == pytest.approx(np.exp(2.6592), rel=1e-3)
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 2, 30, 53, 3), dtype=np.uint8)
    ours = tower.module(torch.from_numpy(frames)).detach().numpy()
    want = tower.reference({"video": frames})
    assert ours.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - want).max() < 1e-5
    # a frame whose colours are swapped gives another embedding: the BGR -> RGB flip is not a no-op
    swapped = tower.reference({"video": np.ascontiguousarray(frames[..., ::-1])})
    assert np.abs(swapped - want).max() > 1e-3

    contract = {"schema": 1, "id": "tinyclip", "version": "1", "task": "embedding", "inputs": tower.inputs,
                "outputs": {"embedding": {"name": "embedding", "meaning": "CLIP image embedding"}}}
    export_onnx(tower.module, None, contract, tmp_path / "tower.onnx", progress=lambda _: None)
    sess = import_onnxruntime().InferenceSession(str(tmp_path / "tower.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["embedding"], {"video": frames})
    assert np.abs(got - want).max() < 1e-5  # ONNX vs CLIPImageProcessor + get_image_features

    texts = tower.embed_texts(["a dog", "a cat", "a dog"])
    assert texts.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(texts[0], texts[2], atol=1e-6)


def test_zero_shot_export_runs_in_a_pipeline(clip_folder: Path, tmp_path: Path) -> None:
    from avstream.engine.inference.contract import read_model

    (tmp_path / "labels.yaml").write_text("a dog: [a photo of a dog, a dog]\na cat: [a photo of a cat]\n"
                                          "a car: a photo of a car\n")
    r = run_cli("export", "zero-shot", "--encoder", str(clip_folder), "--prompts", "labels.yaml",
                "--out", "zs.onnx", "--frames", "2", "--fps", "2", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reference outputs max abs" in r.stdout and "wrote zs.onnx" in r.stdout
    contract, onnx_header = read_model(tmp_path / "zs.onnx")
    assert [o.name for o in onnx_header.outputs] == ["probabilities"]
    assert contract.task == "zero_shot" and contract.ref == "zeroshot-labels@1"
    assert contract.labels == ("a dog", "a cat", "a car")
    assert list(contract.outputs) == ["probabilities"]
    assert contract.video is not None and (contract.video.height, contract.video.width) == (30, 53)

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    (tmp_path / "p.yaml").write_text(f"""
version: 1
name: zero-shot
streams:
  cam: {{uri: "synthetic://scene?seed=3&duration=3", realtime: false}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam]}}
  labels: {{type: avstream/onnx_encoder@v1, inputs: [window], params: {{model: zs.onnx, threads: 1}}}}
outputs:
  publish: {{endpoint: "{endpoint}", wait_for_subscribers: 1}}
""")
    got, err = run_and_receive(["p.yaml", "--quiet"], endpoint, "zero_shot", cwd=tmp_path)
    assert [h["t0"] for h, _ in got] == [0.0, 1.0, 2.0], err
    for header, (probs,) in got:
        assert header["model"] == "zeroshot-labels@1" and header["stream"] == "cam"
        assert header["payloads"][0]["name"] == "probabilities" and probs.shape == (3,)
        assert np.all(probs >= 0) and abs(float(probs.sum()) - 1.0) < 1e-5


@pytest.mark.parametrize("make, args, message", [
    (lambda d: None, ["--prompts", "violence"], "no such file or folder"),
    (lambda d: d.write_text("x"), ["--prompts", "violence"], "not a folder"),
    (lambda d: d.mkdir(), ["--prompts", "violence"], "no config.json"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "bert"}')), ["--prompts", "violence"],
     "model_type 'bert' is not supported"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{not json")), ["--prompts", "violence"],
     "cannot read it as JSON"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "clip"}')), ["--prompts", "nope.yaml"],
     "nope.yaml: cannot read the prompts file"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "clip"}'),
                (d / "bad.yaml").write_text("42\n")), ["--prompts", "{d}/bad.yaml"],
     "bad.yaml: expected a mapping of label -> list of prompt texts"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "clip"}'),
                (d / "one.yaml").write_text("dog: [a dog]\n")), ["--prompts", "{d}/one.yaml"],
     "one.yaml: needs at least two labels"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "clip"}'),
                (d / "bad.yaml").write_text("dog: [a dog\n")), ["--prompts", "{d}/bad.yaml"],
     "bad.yaml: not valid YAML"),
])
def test_user_mistakes_exit_2_with_one_clear_line(tmp_path: Path, make: Any, args: list[str], message: str) -> None:
    folder = tmp_path / "enc"
    make(folder)
    args = [a.replace("{d}", str(folder)) for a in args]
    r = invoke_cli("export", "zero-shot", "--encoder", str(folder), *args, "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_a_clap_folder_without_clap_support_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "clap"}')
    monkeypatch.setitem(sys.modules, "avstream.exporters.pretrained.clap", None)  # import fails
    r = invoke_cli("export", "zero-shot", "--encoder", str(tmp_path), "--prompts", "sound_events",
                   "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2 and "CLAP support is not installed" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["violence", "highlight", "sound_events"])
def test_the_shipped_prompt_sets_load(name: str) -> None:
    from avstream.exporters.pretrained.zeroshot import load_prompts

    prompts = load_prompts(name)
    assert len(prompts.labels) >= 2 and all(prompts.labels.values())


def test_old_export_invocations_still_work() -> None:
    r = invoke_cli("export", "--help")
    assert r.exit_code == 0 and "--recipe" in r.output and "zero-shot" in r.output
    r = invoke_cli("export")
    assert r.exit_code == 2 and "give exactly one of --recipe" in r.output + r.stderr
    r = invoke_cli("export", "--module", "x:y")
    assert r.exit_code == 2 and "--module needs --contract" in r.stderr
