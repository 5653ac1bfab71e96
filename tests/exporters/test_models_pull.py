"""``avstream models pull NAME|hf://...``: checkpoints fetched from a local server in the Hub's layout.

Tiny random CLIP and CLAP folders are served by ``hub_server.HubServer`` on 127.0.0.1; the real CLI
runs in a child process with ``HF_ENDPOINT`` pointing at it and the registry extended through
``$AVSTREAM_MODEL_REGISTRY``. Nothing here reaches the internet: the endpoint is always local and
the Hub client's own cache is a temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.exporters.hub_server import HubServer, Repo, sha256
from tests.exporters.tiny_checkpoints import make_clap, make_tiny_clip

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(300)

CLIP_COMMIT = hashlib.sha1(b"tiny-clip", usedforsecurity=False).hexdigest()
CLAP_COMMIT = hashlib.sha1(b"tiny-clap", usedforsecurity=False).hexdigest()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    clip = make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
    clap = make_clap(tmp_path_factory.mktemp("tiny-clap"), text_positions=256)  # the built-in prompts are long
    repos = {"test/tiny-clip": Repo(clip, CLIP_COMMIT), "test/tiny-clap": Repo(clap, CLAP_COMMIT),
             "test/tiny-clip-bad": Repo(clip, CLIP_COMMIT, corrupt={"model.safetensors"})}
    with HubServer(repos) as server:
        yield server


def registry(path: Path, hub: HubServer, **overrides: str) -> Path:
    """Entries for the tiny repos: config.json and the weights recorded, the other files the Hub's hash."""
    entries = {}
    for name, repo_id, extra in (("tiny-clip", "test/tiny-clip", {"frames": 2, "fps": 2}),
                                 ("tiny-clap", "test/tiny-clap", {"seconds": 1})):
        repo = hub.repos[repo_id]
        files: dict[str, str | None] = {n: None for n in repo.files()}
        for recorded in ("config.json", "model.safetensors"):
            files[recorded] = overrides.get(f"{name}/{recorded}") or sha256((repo.folder / recorded).read_bytes())
        entries[name] = {"repo": repo_id, "revision": repo.commit, "files": files, **extra}
    path.write_text(yaml.safe_dump(entries))
    return path


def pull(source: str, tmp: Path, endpoint: str, *args: str, reg: Path | None = None,
         timeout: float = 240, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
                "HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1", "AVSTREAM_MODELS": str(tmp / "models"),
                "AVSTREAM_MODEL_REGISTRY": str(reg or tmp / "registry.yaml"), "OMP_NUM_THREADS": "1"})
    return subprocess.run([python, "-m", "avstream.engine.cli", "models", "pull", source, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


TASK_OUTPUTS = {"zero_shot": ["probabilities"], "captions": ["caption_scores"],
                "violence": ["score", "audio_score", "visual_score", "{m}_probabilities"],
                "highlight": ["activation", "prompt_score", "{m}_probabilities"]}


def check_models(models: Path, stems: dict[str, str], modality: str) -> None:
    """Each file is a model of its prompt set's task that ONNX Runtime runs, with the set's labels."""
    from avstream.engine.inference.contract import read_model
    from avstream.exporters.pretrained.prompts import load_prompts

    for stem, prompt_set in stems.items():
        path = models / f"{stem}.onnx"
        contract, _ = read_model(path)
        task = prompt_set if prompt_set in ("violence", "highlight", "captions") else "zero_shot"
        assert contract.task == task and contract.ref == f"{stem}@1"
        assert list(contract.labels) == list(load_prompts(prompt_set).for_modality(modality))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == [n.format(m=modality) for n in TASK_OUTPUTS[task]]


def test_a_clip_checkpoint_is_pulled_checked_exported_and_then_cached(hub: HubServer, tmp_path: Path) -> None:
    registry(tmp_path / "registry.yaml", hub)
    r = pull("tiny-clip", tmp_path, hub.endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = tmp_path / "models" / "checkpoints" / f"tiny-clip@{CLIP_COMMIT}"
    served = hub.repos["test/tiny-clip"].files()
    assert {p.name for p in folder.iterdir()} == set(served) | {"avstream-checkpoint.json"}
    assert all((folder / n).read_bytes() == data for n, data in served.items())
    assert not list((tmp_path / "models" / "checkpoints").glob(".*partial"))
    assert "recorded in" in r.stdout and "reported by the Hub" in r.stdout  # both kinds of check ran
    check_models(tmp_path / "models", {"tiny-clip-violence": "violence", "tiny-clip-highlight": "highlight"}, "video")
    assert "avstream run zeroshot-violence --input URI --set nodes.violence.params.model=" in r.stdout
    assert "avstream models inspect" in r.stdout and "avstream export zero-shot --encoder" in r.stdout

    before = len(hub.requests)
    again = pull("tiny-clip", tmp_path, hub.endpoint)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cached" in again.stdout and len(hub.requests) == before  # no request at all the second time


def test_a_clap_checkpoint_gives_violence_caption_and_sound_event_models(hub: HubServer, tmp_path: Path) -> None:
    registry(tmp_path / "registry.yaml", hub)
    r = pull("tiny-clap", tmp_path, hub.endpoint)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "models" / "checkpoints" / f"tiny-clap@{CLAP_COMMIT}" / "avstream-checkpoint.json").is_file()
    check_models(tmp_path / "models", {"tiny-clap-violence": "violence", "tiny-clap-captions": "captions",
                                       "tiny-clap-sound_events": "sound_events"}, "audio")


def test_a_file_that_does_not_match_its_hash_is_refused_and_nothing_kept(hub: HubServer, tmp_path: Path) -> None:
    registry(tmp_path / "registry.yaml", hub)
    r = pull("hf://test/tiny-clip-bad", tmp_path, hub.endpoint)  # no revision: resolved once and printed
    assert f"resolved test/tiny-clip-bad main to {CLIP_COMMIT}" in r.stdout
    assert r.returncode == 2, r.stdout + r.stderr
    assert "model.safetensors: sha256" in r.stderr and "the file was deleted, nothing was kept" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    checkpoints = tmp_path / "models" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())
    assert not list((tmp_path / "models").glob("*.onnx"))


def test_a_recorded_hash_the_hub_contradicts_is_refused_before_downloading(hub: HubServer, tmp_path: Path) -> None:
    registry(tmp_path / "registry.yaml", hub, **{"tiny-clip/model.safetensors": "0" * 64})
    r = pull("tiny-clip", tmp_path, hub.endpoint)
    assert r.returncode == 2 and "differs from the Hub's" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "models" / "checkpoints" / f"tiny-clip@{CLIP_COMMIT}").exists()


def test_an_unreachable_hub_is_one_line_naming_the_local_alternative(tmp_path: Path) -> None:
    registry_file = tmp_path / "registry.yaml"
    registry_file.write_text("{}\n")
    r = pull("clip-vit-b-32", tmp_path, f"http://127.0.0.1:{free_port()}", timeout=60)  # nothing listens
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("avstream models: cannot reach the Hugging Face Hub (")
    assert "avstream export zero-shot --encoder PATH --prompts violence --out" in line
    assert "openai/clip-vit-base-patch32" in line


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "registry.yaml").write_text("{}\n")
    r = pull("clip-vit-b-33", tmp_path, f"http://127.0.0.1:{free_port()}", timeout=60)
    assert r.returncode == 2
    assert "not a known checkpoint" in r.stderr
    assert "clap-htsat-unfused, clip-vit-b-16, clip-vit-b-32" in r.stderr
