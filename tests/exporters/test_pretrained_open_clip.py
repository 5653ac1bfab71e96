"""A user's own open_clip checkpoint to zero-shot task models, end to end and offline.

open_clip imports torchvision, whose only x86-64 wheels installable beside this suite's CPU torch
are built for another torch; so open_clip lives in a second interpreter, ``$AVSTREAM_OPENCLIP_PYTHON``
(scripts/test.sh builds it as .venv-openclip with ``pip install -e .[openclip]``). That interpreter
builds tiny random open_clip models (``tiny_open_clip.py``), checks the tower's parity and runs
``avstream export zero-shot`` exactly as a user with the extra would; the exported ONNX models then
run in the shipped pipelines under this suite's interpreter, which has no open_clip and no torchvision,
and their results are read from the PUB socket."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, invoke_cli

pytest.importorskip("onnxruntime")
pytest.importorskip("zmq")

from tests.exporters.pipeline_results import Message, run_and_receive  # noqa: E402

pytestmark = pytest.mark.timeout(300)

BUILDER = Path(__file__).with_name("tiny_open_clip.py")
REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = "synthetic://scene?seed=5&duration=4"


@pytest.fixture(scope="module")
def open_clip_python() -> str:
    python = os.environ.get("AVSTREAM_OPENCLIP_PYTHON")
    if not python:
        pytest.skip("AVSTREAM_OPENCLIP_PYTHON is not set (scripts/test.sh sets it to .venv-openclip/bin/python)")
    assert Path(python).is_file(), f"AVSTREAM_OPENCLIP_PYTHON={python}: no such interpreter"
    return python


@pytest.fixture(scope="module")
def checkpoints(open_clip_python: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("open-clip")
    for layout in ("hub", "squash", "bare"):
        r = subprocess.run([open_clip_python, str(BUILDER), layout, str(root / layout)], capture_output=True,
                           text=True, timeout=240, cwd=REPO)
        assert r.returncode == 0, r.stderr
    return {"hub": root / "hub", "squash": root / "squash", "bare": root / "bare" / "tiny.pt",
            "bare_config": root / "bare" / "tiny.json"}


def open_clip_cli(python: str, *args: str, models: Path | None = None,
                  timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``avstream ARGS`` in the interpreter that has open_clip."""
    env = dict(os.environ, **({"AVSTREAM_MODELS": str(models)} if models else {}))
    return subprocess.run([python, "-m", "avstream.engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def run_pipeline(name: str, models_dir: Path, kind: str) -> list[Message]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    got, err = run_and_receive([name, "--input", SYNTHETIC, "--quiet", "--publish", endpoint,
                                "--set", "streams.cam0.realtime=false",
                                "--set", "outputs.publish.wait_for_subscribers=1"],
                               endpoint, kind, env={"AVSTREAM_MODELS": str(models_dir)})
    assert got, err
    return got


@pytest.mark.parametrize("layout", ["hub", "squash", "bare"])
def test_the_tower_matches_open_clip_in_torch_and_onnx(open_clip_python: str, checkpoints: dict[str, Path],
                                                       layout: str) -> None:
    arch = [str(checkpoints["bare_config"])] if layout == "bare" else []
    r = subprocess.run([open_clip_python, str(BUILDER), "parity", str(checkpoints[layout]), *arch],
                       capture_output=True, text=True, timeout=240, cwd=REPO)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    # shortest-edge models get 16:9 frames of the model's height (the graph only crops); squash ones their size
    assert (got["height"], got["width"]) == ((30, 30) if layout == "squash" else (30, 53))
    assert got["dim"] == 16 and got["logit_scale"] == pytest.approx(20.0, rel=1e-5)  # the checkpoint's, not the init's
    if layout == "bare":  # no preprocessing config: open_clip's OpenAI defaults
        assert got["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    else:  # the folder's own normalisation is the one baked in
        assert got["mean"] == pytest.approx([0.5, 0.4, 0.3]) and got["std"] == pytest.approx([0.2, 0.25, 0.3])
    assert got["torch_vs_open_clip"] < 1e-5 and got["onnx_vs_open_clip"] < 1e-5
    assert got["norms"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert got["colour_swap_changes"] > 1e-3  # the BGR -> RGB flip is not a no-op
    assert got["text_norms"] == pytest.approx([1.0] * 3, abs=1e-5) and got["same_text_same_vector"] < 1e-6


def test_violence_from_a_hub_folder(open_clip_python: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from avstream.engine.inference.contract import read_model

    r = open_clip_cli(open_clip_python, "export", "zero-shot", "--task", "violence", "--encoder",
                      str(checkpoints["hub"]), "--frames", "2", "--fps", "2", models=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reference outputs max abs" in r.stdout and "models:zeroshot-violence" in r.stdout, r.stdout
    contract, header = read_model(tmp_path / "zeroshot-violence.onnx")
    assert contract.task == "violence" and [i.name for i in header.inputs] == ["video"]
    assert contract.video is not None and (contract.video.height, contract.video.width) == (30, 53)
    assert contract.raw["zero_shot"]["encoders"][0]["name"] == "hub (open_clip image)"

    got = run_pipeline("zeroshot-violence", tmp_path, "violence")
    assert [h["t0"] for h, _ in got] == [0.0, 1.0, 2.0, 3.0]
    for h, _ in got:
        assert h["model"] == "zeroshot-violence@1" and h["stream"] == "cam0"
        assert h["audio_score"] == 0.0 and 0.0 < h["visual_score"] < 1.0  # no audio encoder: the frames decide
        assert h["score"] == pytest.approx(h["visual_score"], abs=1e-6)


def test_highlight_from_a_bare_checkpoint_and_its_config(open_clip_python: str, checkpoints: dict[str, Path],
                                                         tmp_path: Path) -> None:
    r = open_clip_cli(open_clip_python, "export", "zero-shot", "--task", "highlight", "--encoder",
                      str(checkpoints["bare"]), "--arch", str(checkpoints["bare_config"]), "--frames", "2", "--fps",
                      "2", models=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    got = run_pipeline("zeroshot-highlight", tmp_path, "highlight")
    assert len(got) == 4
    for h, _ in got:
        p, rolling = h["prompt_score"], h["rolling_score"]
        assert 0.0 < p < 1.0 and 0.0 <= rolling <= 1.0
        assert h["score"] == pytest.approx(0.5 * p + 0.5 * rolling, abs=1e-9)


def test_models_pull_of_an_open_clip_repository(open_clip_python: str, checkpoints: dict[str, Path],
                                                tmp_path: Path) -> None:
    """A Hub repository with only open_clip files (no transformers config.json), pulled by hf:// from a
    local server in the Hub's layout: fetched, checked, exported to violence and highlight, cached."""
    pytest.importorskip("huggingface_hub")
    from avstream.engine.inference.contract import read_model
    from tests.exporters.hub_server import HubServer, Repo
    from tests.exporters.test_models_pull import pull

    commit = hashlib.sha1(b"tiny-open-clip", usedforsecurity=False).hexdigest()
    (tmp_path / "registry.yaml").write_text("{}\n")
    with HubServer({"test/tiny-open-clip": Repo(checkpoints["hub"], commit)}) as hub:
        r = pull(f"hf://test/tiny-open-clip@{commit}", tmp_path, hub.endpoint, python=open_clip_python)
        assert r.returncode == 0, r.stdout + r.stderr
        folder = tmp_path / "models" / "checkpoints" / f"test--tiny-open-clip@{commit}"
        assert {p.name for p in folder.iterdir()} == {"open_clip_config.json", "open_clip_model.safetensors",
                                                       "avstream-checkpoint.json"}
        assert "reported by the Hub" in r.stdout
        for task in ("violence", "highlight"):
            contract, _ = read_model(tmp_path / "models" / f"test--tiny-open-clip-{task}.onnx")
            assert contract.task == task and contract.video is not None and contract.audio is None
        assert "avstream run zeroshot-violence --input URI --set nodes.violence.params.model=" in r.stdout
        before = len(hub.requests)
        again = pull(f"hf://test/tiny-open-clip@{commit}", tmp_path, hub.endpoint, python=open_clip_python)
        assert again.returncode == 0 and "cached" in again.stdout, again.stdout + again.stderr
        assert len(hub.requests) == before  # no request at all the second time


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, message", [
    ("no arch", "a bare open_clip checkpoint needs --arch NAME"),
    ("unknown arch", "--arch 'ViT-Q-99': not an open_clip architecture"),
    ("arch not a model config", "not an open_clip model config"),
    ("arch of another size", "cannot load the open_clip model"),
    ("no weights", "has open_clip_config.json but no weights"),
    ("arch with a folder", "--arch is for a bare checkpoint file"),
    ("letterbox", "resize_mode 'longest'"),
    ("localization", "--task localization needs the patch tokens of a Hugging Face CLIP folder"),
])
def test_user_mistakes_exit_2_with_one_clear_line(open_clip_python: str, checkpoints: dict[str, Path], tmp_path: Path,
                                                  case: str, message: str) -> None:
    hub, bare = checkpoints["hub"], checkpoints["bare"]
    config = json.loads(checkpoints["bare_config"].read_text())
    args = {
        "no arch": ["--encoder", str(bare)],
        "unknown arch": ["--encoder", str(bare), "--arch", "ViT-Q-99"],
        "arch not a model config": ["--encoder", str(bare), "--arch", str(_write(tmp_path / "x.json", '{"a": 1}'))],
        "arch of another size": ["--encoder", str(bare), "--arch", str(_write(
            tmp_path / "wide.json", json.dumps({**config, "embed_dim": 24})))],
        "no weights": ["--encoder", str(_empty_hub(tmp_path / "empty", hub))],
        "arch with a folder": ["--encoder", str(hub), "--arch", "ViT-B-32"],
        "letterbox": ["--encoder", str(_letterbox_hub(tmp_path / "lb", hub))],
        "localization": ["--encoder", str(hub), "--encoder", str(hub), "--task", "localization", "--projection",
                         "identity"],
    }[case]
    if "--task" not in args:
        args += ["--prompts", "violence"]
    r = open_clip_cli(open_clip_python, "export", "zero-shot", *args, "--out", str(tmp_path / "x.onnx"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()


def _empty_hub(folder: Path, hub: Path) -> Path:
    folder.mkdir()
    (folder / "open_clip_config.json").write_text((hub / "open_clip_config.json").read_text())
    return folder


def _letterbox_hub(folder: Path, hub: Path) -> Path:
    folder.mkdir()
    config = json.loads((hub / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["resize_mode"] = "longest"
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_model.safetensors").symlink_to(hub / "open_clip_model.safetensors")
    return folder


def test_without_the_extra_it_names_it(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    try:
        import open_clip  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this interpreter has open_clip")
    r = invoke_cli("export", "zero-shot", "--encoder", str(checkpoints["hub"]), "--prompts", "violence",
                   "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2, r.output
    assert "pip install 'avstream[openclip]'" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_arch_without_an_open_clip_encoder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    r = invoke_cli("export", "zero-shot", "--encoder", str(tmp_path), "--arch", "ViT-B-32", "--prompts", "violence",
                   "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2 and "no --encoder is one" in r.stderr, r.stderr
