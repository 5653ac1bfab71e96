"""Real runs for the report tests: ``avstream run`` of the built-in pipelines on ``synthetic://`` scenes
and on a video made by ffmpeg, each JSONL made once per test session."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, run_cli

FFMPEG = shutil.which("ffmpeg")
FAST = ["--set", "streams.cam0.realtime=false", "--quiet"]
# A video whose colour tells the time: red 0-4 s, green 4-8 s, blue 8-12 s (with a tone for the audio models)
SEGMENTS = [("red", (255, 0, 0)), ("green", (0, 128, 0)), ("blue", (0, 0, 255))]
SEGMENT_S = 4.0


@dataclass(frozen=True)
class RunFiles:
    jsonl: Path
    status: Path | None = None
    video: Path | None = None


def run_pipeline(pipeline: str, *args: str, timeout: float = 120) -> None:
    res = run_cli("run", pipeline, "--publish", f"tcp://127.0.0.1:{free_port()}", *args, timeout=timeout)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def monitor_run(tmp_path_factory: pytest.TempPathFactory) -> RunFiles:
    """All four kinds, a violence segment (so an alert and its events) and the run's status file."""
    folder = tmp_path_factory.mktemp("monitor")
    jsonl, status = folder / "run.jsonl", folder / "status.jsonl"
    run_pipeline("monitor", "--input", "synthetic://scene?seed=5&duration=20&violence=1", *FAST,
                 "--jsonl", str(jsonl), "--status-json", str(status))
    return RunFiles(jsonl, status)


@pytest.fixture(scope="session")
def two_stream_run(tmp_path_factory: pytest.TempPathFactory) -> RunFiles:
    """Two streams served by the same nodes, highlight and violence only."""
    folder = tmp_path_factory.mktemp("two")
    pipeline = folder / "two.yaml"
    pipeline.write_text(textwrap.dedent("""\
        version: 1
        name: two
        streams:
          north: {uri: "synthetic://scene?seed=2&duration=10", realtime: false}
          south: {uri: "synthetic://scene?seed=4&duration=10&violence=1", realtime: false}
        nodes:
          w_highlight: {type: avstream/av_window@v1, inputs: [north, south]}
          highlight: {type: avstream/highlight@v1, inputs: [w_highlight], params: {model: builtin:highlight}}
          w_violence: {type: avstream/av_window@v1, inputs: [north, south]}
          violence: {type: avstream/violence@v1, inputs: [w_violence], params: {model: builtin:violence}}
        outputs:
          jsonl: {path: two.jsonl}
        """))
    run_pipeline(str(pipeline), "--quiet")
    return RunFiles(folder / "two.jsonl")


@pytest.fixture(scope="session")
def video_run(tmp_path_factory: pytest.TempPathFactory) -> RunFiles:
    """The highlight pipeline on an MP4 encoded by ffmpeg whose colour changes every 4 s."""
    if FFMPEG is None:
        pytest.skip("the FFmpeg CLI is not installed; scripts/test.sh installs it")
    folder = tmp_path_factory.mktemp("video")
    video = folder / "colours.mp4"
    inputs: list[str] = []
    for name, _rgb in SEGMENTS:
        inputs += ["-f", "lavfi", "-i", f"color=c={name}:s=320x240:r=25:d={SEGMENT_S}"]
    inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={SEGMENT_S * len(SEGMENTS)}"]
    subprocess.run([FFMPEG, "-v", "error", "-y", *inputs, "-filter_complex", "[0][1][2]concat=n=3:v=1:a=0[v]",
                    "-map", "[v]", "-map", "3", "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(video)], check=True, timeout=60)
    jsonl = folder / "run.jsonl"
    run_pipeline("highlight", "--input", str(video), *FAST, "--jsonl", str(jsonl))
    return RunFiles(jsonl, video=video)
