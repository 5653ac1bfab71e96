"""Zero-shot task models from a user's own CLIP and CLAP folders, end to end and offline: tiny random
``CLIPModel``/``ClapModel`` folders, ``avstream export zero-shot --task ...`` through the real CLI into
the local models folder, then the shipped ``zeroshot-*`` pipelines run by name with the task's own
node, their results read from the PUB socket."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port, invoke_cli, run_cli

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")
pytest.importorskip("zmq")

from tests.exporters.pipeline_results import Message, run_and_receive  # noqa: E402
from tests.exporters.tiny_checkpoints import make_clap, make_tiny_clip  # noqa: E402

pytestmark = pytest.mark.timeout(300)

SYNTHETIC = "synthetic://scene?seed=5&duration=4"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    (root / "clip").mkdir()
    (root / "clap").mkdir()
    return {"clip": make_tiny_clip(root / "clip"), "clap": make_clap(root / "clap")}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def export(models_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = run_cli("export", "zero-shot", "--frames", "2", "--fps", "2", *args, timeout=240,
                env={"AVSTREAM_MODELS": str(models_dir)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reference outputs max abs" in r.stdout, r.stdout
    return r


def run_pipeline(name: str, models_dir: Path, kind: str, *extra: str) -> list[Message]:
    """The built-in pipeline ``name`` on a synthetic scene, as fast as it decodes; its ``kind`` results."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    got, err = run_and_receive([name, "--input", SYNTHETIC, "--quiet", "--publish", endpoint,
                                "--set", "streams.cam0.realtime=false",
                                "--set", "outputs.publish.wait_for_subscribers=1", *extra],
                               endpoint, kind, env={"AVSTREAM_MODELS": str(models_dir)})
    assert got, err
    return got


def test_violence_from_clip_frames_and_clap_audio(encoders: dict[str, Path], models_dir: Path) -> None:
    from avstream.engine.inference.contract import read_model

    r = export(models_dir, "--task", "violence", "--encoder", str(encoders["clip"]), "--encoder", str(encoders["clap"]))
    assert "models:zeroshot-violence" in r.stdout
    contract, header = read_model(models_dir / "zeroshot-violence.onnx")
    assert contract.task == "violence" and contract.ref == "zeroshot-violence@1"
    assert [o.name for o in header.outputs] == ["score", "audio_score", "visual_score", "video_probabilities",
                                                "audio_probabilities"]
    assert [i.name for i in header.inputs] == ["video", "audio"]
    assert contract.video is not None and contract.audio is not None
    assert contract.window_seconds == pytest.approx(1.0) and contract.audio.sample_rate == 16000
    meta = contract.raw["zero_shot"]
    assert meta["positive"] == ["fighting", "shouting", "gunshot", "screaming", "glass breaking"]
    assert [e["modality"] for e in meta["encoders"]] == ["video", "audio"]
    assert "silence" in contract.raw["outputs"]["audio_probabilities"]["labels"]  # the audio section's labels

    got = run_pipeline("zeroshot-violence", models_dir, "violence")
    assert [h["t0"] for h, _ in got] == [0.0, 1.0, 2.0, 3.0]
    for h, _ in got:
        assert h["model"] == "zeroshot-violence@1" and h["stream"] == "cam0"
        assert 0.0 <= h["audio_score"] <= 1.0 and 0.0 <= h["visual_score"] <= 1.0
        assert h["score"] == pytest.approx(max(h["audio_score"], h["visual_score"]), abs=1e-6)  # fusion: max
        assert isinstance(h["alert"], bool)
    # the node fuses otherwise on request: the mean of the two
    mean = run_pipeline("zeroshot-violence", models_dir, "violence", "--set", "nodes.violence.params.fusion=mean")
    for h, _ in mean:
        assert h["score"] == pytest.approx(0.5 * (h["audio_score"] + h["visual_score"]), abs=1e-6)


def test_highlight_mixes_the_prompt_score_with_the_rolling_score(encoders: dict[str, Path], models_dir: Path) -> None:
    from avstream.engine.inference.contract import read_model

    export(models_dir, "--task", "highlight", "--encoder", str(encoders["clip"]))
    contract, _ = read_model(models_dir / "zeroshot-highlight.onnx")
    assert contract.task == "highlight" and list(contract.outputs) == ["activation", "prompt_score",
                                                                       "video_probabilities"]
    got = run_pipeline("zeroshot-highlight", models_dir, "highlight")
    assert len(got) == 4
    for h, _ in got:
        p, rolling = h["prompt_score"], h["rolling_score"]
        assert 0.0 < p < 1.0 and 0.0 <= rolling <= 1.0
        assert h["score"] == pytest.approx(0.5 * p + 0.5 * rolling, abs=1e-9)
        assert h["activation"] == pytest.approx(np.log(p / (1 - p)), abs=1e-4)  # the log-odds of the prompt score


def test_captions_retrieved_from_the_bank(encoders: dict[str, Path], models_dir: Path) -> None:
    from avstream.engine.inference.contract import read_model
    from avstream.exporters.pretrained.prompts import load_prompts

    export(models_dir, "--task", "captions", "--encoder", str(encoders["clap"]), "--seconds", "1")
    contract, header = read_model(models_dir / "zeroshot-captions.onnx")
    bank = list(load_prompts("captions").labels)
    assert contract.task == "captions" and list(contract.labels) == bank
    assert [o.name for o in header.outputs] == ["caption_scores"] and contract.video is None
    got = run_pipeline("zeroshot-captions", models_dir, "caption", "--set", "nodes.caption.params.every_s=1")
    assert [h["t0"] for h, _ in got] == [0.0, 1.0, 2.0, 3.0]
    for h, _ in got:
        assert h["text"] in bank and h["source"] == "audio" and 0.0 < h["confidence"] <= 1.0


def test_a_missing_model_names_the_export_command(tmp_path: Path) -> None:
    r = run_cli("validate", "zeroshot-violence", env={"AVSTREAM_MODELS": str(tmp_path)})
    assert r.returncode == 2
    assert "models:zeroshot-violence" in r.stderr and "avstream export zero-shot" in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--task", "captions", "--encoder", "{clip}", "--encoder", "{clap}"], "task captions takes one encoder"),
    (["--task", "violence", "--encoder", "{clip}", "--encoder", "{clip}"], "at most one video encoder"),
    (["--task", "violence", "--encoder", "{clip}", "--prompts", "sound_events"], "needs 'positive:' labels"),
    (["--task", "captions", "--encoder", "{clap}", "--prompts", "violence"], "needs a caption bank"),
    (["--encoder", "{clip}"], "--prompts is required with --task zero_shot"),
    (["--task", "violence", "--encoder", "{clip}", "--encoder", "{clap}", "--seconds", "3"],
     "differs from the video window"),
])
def test_task_mistakes_exit_2_with_one_clear_line(encoders: dict[str, Path], tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    args = [a.format(**{k: str(v) for k, v in encoders.items()}) for a in args]
    r = invoke_cli("export", "zero-shot", *args, "--frames", "2", "--fps", "2", "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("text, message", [
    ("positive: [fight]\nvideo: {fight: [a fight], calm: [calm]}\naudio: {bang: [a bang], quiet: [quiet]}\n",
     "not in the 'audio' section"),
    ("positive: [a, b]\nany: {a: [x], b: [y]}\n", "every label is positive"),
    ("captions: [just one]\n", "1 distinct texts"),
    ("captions: [a, b]\npositive: [a]\n", "a caption bank has only 'captions:'"),
])
def test_bad_prompt_sections_are_located(tmp_path: Path, text: str, message: str) -> None:
    from avstream.engine.errors import ModelError
    from avstream.exporters.pretrained.prompts import load_prompts

    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ModelError, match=message) as err:
        load_prompts(tmp_path / "p.yaml")
    assert str(tmp_path / "p.yaml") in str(err.value)


def test_localization_from_clip_patches_and_a_projected_clap_embedding(encoders: dict[str, Path], models_dir: Path,
                                                                       tmp_path: Path) -> None:
    from avstream.engine.inference.contract import read_model

    projection = tmp_path / "clap_to_clip.npy"
    np.save(projection, np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32))
    export(models_dir, "--task", "localization", "--encoder", str(encoders["clip"]), "--encoder", str(encoders["clap"]),
           "--projection", str(projection))
    contract, header = read_model(models_dir / "zeroshot-localization.onnx")
    assert contract.task == "localization" and [o.name for o in header.outputs] == ["heatmap", "score"]
    # the whole frame, not the centre crop: 30 px high (5 patches of 6), 16:9 wide rounded to patches (54 = 9)
    assert contract.video is not None and (contract.video.height, contract.video.width) == (30, 54)
    assert contract.raw["localization"]["grid"] == [5, 9]
    got = run_pipeline("zeroshot-localization", models_dir, "localization")
    assert len(got) == 4
    for h, (heatmap,) in got:
        assert heatmap.shape == (5, 9) and 0.0 <= h["score"] <= 1.0
        assert all(0.0 <= c <= 1.0 for c in h["peak"])


@pytest.mark.parametrize("args, message", [
    (["--encoder", "{clip}", "--encoder", "{clap}"], "needs --projection FILE.npy"),
    (["--encoder", "{clip}"], "takes two encoders"),
    (["--encoder", "{clip}", "--encoder", "{clap}", "--projection", "{clip}/config.json"], "cannot read the projection"),
])
def test_localization_mistakes(encoders: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.format(**{k: str(v) for k, v in encoders.items()}) for a in args]
    r = invoke_cli("export", "zero-shot", "--task", "localization", *args, "--frames", "2", "--fps", "2",
                   "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
