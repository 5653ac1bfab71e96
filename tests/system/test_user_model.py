"""A model from the user's own Python module, end to end: ``avstream export --module`` (parity check),
then a real ``avstream run`` with three synthetic streams into one batched generic encoder node;
plus the export errors a user meets (bad checkpoint, unsupported operator, shape mismatch)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(180)

MODULE = '''
import torch
from torch import nn


class Loudness(nn.Module):
    """Video (B, 8, 64, 64, 3) uint8 + audio (B, 32000) float32 -> loudness (B,), embedding (B, 8)."""

    def __init__(self):
        super().__init__()
        self.video = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU())
        self.mix = nn.Linear(8 + 1, 8)

    def forward(self, video, audio):
        b, t = video.shape[0], video.shape[1]
        x = video.float().permute(0, 1, 4, 2, 3).reshape(b * t, 3, 64, 64) / 255.0
        v = self.video(x).mean(dim=(2, 3)).reshape(b, t, 8).mean(dim=1)
        rms = audio.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-8).sqrt()
        loud = 20.0 * torch.log10(rms).squeeze(1)
        return loud, torch.tanh(self.mix(torch.cat([v, rms], dim=1)))


class WrongSize(Loudness):
    def forward(self, video, audio):
        return super().forward(video[:, :, :32, :32], audio)


class Eig(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Head()

    def forward(self, video, audio):
        return self.head(audio)


class Head(nn.Module):
    def forward(self, audio):
        m = audio[:, :16].reshape(-1, 4, 4)
        return torch.linalg.eigvalsh(m @ m.transpose(1, 2)).sum(dim=1), audio[:, :8]


def factory():
    torch.manual_seed(0)
    return Loudness()


def wrong_size():
    return WrongSize()


def eig():
    return Eig()
'''

CONTRACT = {
    "schema": 1, "id": "usermodel", "version": "1", "task": "loudness",
    "description": "a user's own model: loudness in dBFS and an 8-d AV embedding",
    "inputs": {"video": {"name": "video", "fps": 4.0, "frames": 8, "height": 64, "width": 64},
               "audio": {"name": "audio", "sample_rate": 16000, "seconds": 2.0}},
    "window": {"seconds": 2.0, "hop": 1.0},
    "outputs": {"loudness": {"name": "loudness", "meaning": "RMS level of the window in dBFS"},
                "embedding": {"name": "embedding", "meaning": "8-d audio-visual embedding"}},
}

PIPELINE = """
version: 1
name: user-model
streams:
  s0: {uri: "synthetic://scene?seed=1&duration=5", realtime: true}
  s1: {uri: "synthetic://scene?seed=2&duration=5", realtime: true}
  s2: {uri: "synthetic://scene?seed=3&duration=5", realtime: true}
nodes:
  window: {type: avstream/av_window@v1, inputs: [s0, s1, s2]}
  enc:    {type: avstream/onnx_encoder@v1, inputs: [window],
           params: {model: usermodel.onnx, max_batch: 3, max_wait_ms: 300, threads: 1}}
outputs:
  publish: {endpoint: "ENDPOINT"}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "usermod.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "contract.json").write_text(json.dumps(CONTRACT))
    return tmp_path


@pytest.mark.slow
def test_user_module_exports_and_runs_batched_across_three_streams(project: Path) -> None:
    r = run_cli("export", "--module", "usermod:factory", "--contract", "contract.json", "--out", "usermodel.onnx",
                cwd=project, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"random\s+loudness .* ok", r.stdout) and "wrote" in r.stdout
    r = run_cli("models", "inspect", str(project / "usermodel.onnx"), "--runs", "0", cwd=project)
    assert r.returncode == 0 and "usermodel@1  (task: loudness)" in r.stdout
    (project / "p.yaml").write_text(PIPELINE.replace("ENDPOINT", f"tcp://127.0.0.1:{free_port()}"))
    assert run_cli("validate", "p.yaml", cwd=project).returncode == 0
    jsonl = project / "out.jsonl"
    r = run_cli("run", "p.yaml", "--jsonl", str(jsonl), cwd=project, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    for s in ("s0", "s1", "s2"):
        mine = [m for m in lines if m["stream"] == s]
        assert [m["t0"] for m in mine] == [0.0, 1.0, 2.0, 3.0, 4.0], (s, [m["t0"] for m in mine])
        assert [m["seq"] for m in mine] == list(range(5))
        for m in mine:
            assert m["kind"] == "loudness" and m["model"] == "usermodel@1"
            assert -120.0 < m["loudness"] < 10.0
            (emb,) = m["payloads"]
            assert emb["name"] == "embedding" and emb["shape"] == [8] and len(emb["data"]) == 8
    # the three streams shared model calls: fewer calls than windows
    calls = re.search(r"enc: (\d+) windows in (\d+) model calls", r.stdout + r.stderr)  # the node's log line
    assert calls, r.stdout + r.stderr
    assert int(calls.group(1)) == 15 and int(calls.group(2)) < 15


@pytest.mark.slow
def test_export_errors_name_the_problem(project: Path) -> None:
    run = lambda *a: run_cli("export", "--contract", "contract.json", "--out", "m.onnx", *a, cwd=project, timeout=90)  # noqa: E731
    (project / "junk.pt").write_bytes(b"\x00not a checkpoint")
    r = run("--module", "usermod:factory", "--checkpoint", "junk.pt")
    assert r.returncode == 2 and "--checkpoint junk.pt: cannot read it as a PyTorch checkpoint" in r.stderr
    import torch

    torch.save({"video.0.weight": torch.zeros(1)}, project / "other.pt")
    r = run("--module", "usermod:factory", "--checkpoint", "other.pt")
    assert r.returncode == 2 and "does not fit the module" in r.stderr
    r = run("--module", "usermod:wrong_size")
    assert r.returncode == 2 and "fails on the contract's inputs (video (1, 8, 64, 64, 3) uint8" in r.stderr
    r = run("--module", "usermod:eig")
    assert r.returncode == 2
    assert "unsupported operator aten::linalg_eigvalsh at opset 17 in module 'head' (usermod.Head) at usermod.py" in r.stderr
    r = run("--module", "usermod:nothing")
    assert r.returncode == 2 and "has no callable 'nothing'" in r.stderr and "Traceback" not in r.stderr
