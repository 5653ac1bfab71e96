"""The benchmarks' real-footage clip: the fight-surveillance clips normalised and joined by FFmpeg."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bench_module

REPO = Path(__file__).resolve().parents[1]


def bench_clips() -> Any:
    return bench_module("clips")


clips = bench_clips()


@pytest.mark.skipif(not clips.REAL_DATA.is_dir() or shutil.which("ffprobe") is None,
                    reason=f"needs the fight-surveillance clips at {clips.REAL_DATA} and FFmpeg")
def test_real_clip_is_720p25_with_48k_stereo(tmp_path: Path) -> None:
    path = clips.real_clip(tmp_path, 5.0)
    assert path is not None and path.parent == tmp_path and not list(tmp_path.glob("*.part.mp4"))
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "stream=codec_name,width,height,r_frame_rate,sample_rate,channels,duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    video, audio = sorted(json.loads(out)["streams"], key=lambda s: s["codec_name"] != "h264")
    assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == ("h264", 1280, 720, "25/1")
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert abs(float(video["duration"]) - 5.0) < 0.05 and abs(float(audio["duration"]) - 5.0) < 0.1
    assert clips.real_clip(tmp_path, 5.0) == path  # cached: made once


def test_clips_alternate_fight_and_no_fight() -> None:
    if not clips.REAL_DATA.is_dir():
        pytest.skip(f"needs the fight-surveillance clips at {clips.REAL_DATA}")
    picked = clips.pick_clips(clips.REAL_DATA, 6.0)
    assert [p.parent.name for p, _, _ in picked][:2] == ["fight", "noFight"]
    assert sum(d for _, d, _ in picked) >= 6.0


def test_missing_data_is_a_clear_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clips, "REAL_DATA", tmp_path / "absent")
    with pytest.raises(SystemExit, match="AVSTREAM_FIGHT_DATA"):
        clips.require_real_clip(tmp_path, 5.0)
