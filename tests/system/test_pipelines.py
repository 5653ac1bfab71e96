"""Every built-in pipeline runs on any input given with --input, as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.timeout(180)

EXPECTED = {
    "highlight": {"highlight"},
    "violence": {"violence"},
    "localization": {"localization"},
    "captions": {"caption"},
    "monitor": {"highlight", "violence", "localization", "caption"},
}


def kinds_of(stdout: str) -> set[str]:
    return {json.loads(line)["kind"] for line in stdout.splitlines()} - {"event"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_pipeline_on_a_synthetic_input(name: str, port: int) -> None:
    res = run_cli("run", name, "--input", "synthetic://scene?seed=1000777&duration=7", "--set",
                  "streams.cam0.realtime=false", "--jsonl", "-", "--quiet", "--publish", f"tcp://127.0.0.1:{port}",
                  timeout=150)
    assert res.returncode == 0, res.stderr
    assert kinds_of(res.stdout) == EXPECTED[name]
    assert "Traceback" not in res.stderr


def test_monitor_on_a_file_with_audio(tmp_path: Path, port: int) -> None:
    from avstream.engine.synthetic.scene import SceneConfig, write_scene

    clip = tmp_path / "clip.mp4"
    write_scene(SceneConfig(seed=1000778, duration=6, width=320, height=180), str(clip))
    res = run_cli("run", "monitor", "--input", str(clip), "--set", "streams.cam0.realtime=false", "--jsonl", "-",
                  "--quiet", "--publish", f"tcp://127.0.0.1:{port}", timeout=150)
    assert res.returncode == 0, res.stderr
    assert kinds_of(res.stdout) == EXPECTED["monitor"]


def test_monitor_without_devices_names_both() -> None:
    res = run_cli("run", "monitor", "--duration", "2", "--quiet", "--publish", "tcp://127.0.0.1:0",
                  "--set", "streams.cam0.video=v4l2:///dev/video97", "--set", "streams.cam0.audio=mic://no-such-mic-xyz")
    assert res.returncode == 1
    assert "/dev/video97" in res.stderr and "no-such-mic-xyz" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_without_an_inference_runtime_names_the_extra(tmp_path: Path) -> None:
    # A folder that shadows onnxruntime with a module that fails to import, as if it were not installed.
    shadow = tmp_path / "onnxruntime"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    res = run_cli("run", "highlight", "--duration", "1", "--quiet", env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 2
    assert "pip install 'avstream[cpu]'" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")
def test_monitor_windows_get_their_models_frames_without_resizing(tmp_path: Path, port: int) -> None:
    """Four windows of three sizes and four rates on one file source with 48 kHz stereo audio: the source
    makes each size once, no window resizes or resamples, every model gets its shapes (the runner
    would fail on any other)."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi",
                    "-i", "sine=frequency=300:sample_rate=48000", "-t", "6", "-ac", "2", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)], check=True, timeout=60)
    status = tmp_path / "status.jsonl"
    res = run_cli("run", "monitor", "--input", str(clip), "--set", "streams.cam0.realtime=false", "--jsonl", "-",
                  "--quiet", "--publish", f"tcp://127.0.0.1:{port}", "--status-json", str(status), timeout=150)
    assert res.returncode == 0, res.stderr
    assert kinds_of(res.stdout) == EXPECTED["monitor"]
    assert "resizing" not in res.stderr and "resampling" not in res.stderr
    final = json.loads(status.read_text().splitlines()[-1])
    nodes = {n["id"]: n for n in final["nodes"]}
    assert nodes["cam0"]["extra"]["frames_made"] == {"112x112": 48, "64x64": 24}  # 6 s at 8 and at 4 fps
    frames_in = {}
    for name in ("w_highlight", "w_violence", "w_localization", "w_captions"):
        counters = nodes[name]["counters"]
        assert "resized" not in counters and "resampled" not in counters, (name, counters)
        frames_in[name] = nodes[name]["items_in"]
    # each window is sent only its own grid's frames (plus the same audio and stream markers)
    audio_and_markers = frames_in["w_violence"] - 48
    assert {k: v - audio_and_markers for k, v in frames_in.items()} == {
        "w_highlight": 24, "w_violence": 48, "w_localization": 24, "w_captions": 12}
