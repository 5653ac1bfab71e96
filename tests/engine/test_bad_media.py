"""A corpus of bad media, made here with the FFmpeg CLI and byte edits, each run through a real pipeline.

Every file gets either a clean refusal (exit 1 or 2, a one-line error naming the file, no traceback) or
correct results (t0 < t1, both finite, each kind's windows in media-time order), and leaves nothing
behind: no process, no /dev/shm ring folder, no ipc socket file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, free_port, make_h264_clip

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the FFmpeg CLI")

RUN_TIMEOUT_S = 90


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def _video(path: Path, size: str = "320x240", rate: int = 25, seconds: float = 3, codec: str = "libx264",
           extra: tuple[str, ...] = ()) -> Path:
    """``seconds`` of test pattern with a tone (the container follows the file name)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-f", "lavfi",
           "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{seconds:g}", "-c:v", codec, "-pix_fmt", "yuv420p",
           *extra, str(path))
    return path


# --- the corpus ---------------------------------------------------------------------------------
def truncated_mp4(tmp: Path) -> Path:
    """Cut mid-packet; the index (moov) is at the end, so it is gone too."""
    data = make_h264_clip(tmp / "full.mp4", seconds=3).read_bytes()
    out = tmp / "truncated.mp4"
    out.write_bytes(data[: len(data) * 3 // 5 + 7])
    return out


def truncated_faststart_mp4(tmp: Path) -> Path:
    """Cut mid-packet with the index first: the packets it lists past the cut are missing."""
    _video(tmp / "full.mp4", extra=("-c:a", "aac", "-movflags", "+faststart"))
    data = (tmp / "full.mp4").read_bytes()
    out = tmp / "truncated_faststart.mp4"
    out.write_bytes(data[: len(data) * 3 // 5 + 7])
    return out


def truncated_ts(tmp: Path) -> Path:
    data = _video(tmp / "full.ts").read_bytes()
    out = tmp / "truncated.ts"
    out.write_bytes(data[: len(data) // 2 + 101])  # not on a 188-byte packet boundary
    return out


def garbage_head_mp4(tmp: Path) -> Path:
    data = make_h264_clip(tmp / "full.mp4", seconds=3).read_bytes()
    out = tmp / "garbage_head.mp4"
    out.write_bytes(os.urandom(4096) + data)
    return out


def garbage_head_ts(tmp: Path) -> Path:
    out = tmp / "garbage_head.ts"
    out.write_bytes(os.urandom(5000) + _video(tmp / "full.ts").read_bytes())
    return out


def wav_named_mp4(tmp: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "3", "-f", "wav",
           str(tmp / "really_a_wav.mp4"))
    return tmp / "really_a_wav.mp4"


def random_bytes_mp4(tmp: Path) -> Path:
    out = tmp / "noise.mp4"
    out.write_bytes(os.urandom(200_000))
    return out


def huge_dimensions_in_container(tmp: Path) -> Path:
    """The mp4 sample entry claims 16384x16384 (the bitstream says 320x240)."""
    data = bytearray(make_h264_clip(tmp / "full.mp4", seconds=3).read_bytes())
    at = data.index(b"avc1")
    data[at + 28 : at + 32] = struct.pack(">HH", 16384, 16384)
    tkhd = data.index(b"tkhd")
    data[tkhd + 80 : tkhd + 88] = struct.pack(">II", 16384 << 16, 16384 << 16)
    out = tmp / "huge_claim.mp4"
    out.write_bytes(bytes(data))
    return out


def huge_dimensions_y4m(tmp: Path) -> Path:
    """A raw video header of 16384x16384 (384 MiB a frame) with a few bytes of frame data."""
    out = tmp / "huge.y4m"
    out.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 Ip A1:1 C420jpeg\n" + b"FRAME\n" + os.urandom(65536))
    return out


def one_by_one(tmp: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10", "-vf", "scale=1:1", "-t", "3", "-c:v", "ffv1",
           str(tmp / "one_by_one.mkv"))
    return tmp / "one_by_one.mkv"


def zero_length_audio(tmp: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "anullsrc=sample_rate=16000", "-t", "0", str(tmp / "zero_length.wav"))
    return tmp / "zero_length.wav"


def video_with_empty_audio(tmp: Path) -> Path:
    """A video track and an audio track that holds no samples."""
    _video(tmp / "v.mkv", extra=("-an",))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=sample_rate=48000", "-t", "0", str(tmp / "a.wav"))
    ffmpeg("-i", str(tmp / "v.mkv"), "-i", str(tmp / "a.wav"), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
           "-c:a", "pcm_s16le", str(tmp / "empty_audio.mkv"))
    return tmp / "empty_audio.mkv"


def zero_fps_avi(tmp: Path) -> Path:
    """The AVI headers say 0 fps (microseconds per frame, rate and scale all 0)."""
    data = bytearray(_video(tmp / "full.avi", codec="mpeg4").read_bytes())
    avih = data.index(b"avih")
    data[avih + 8 : avih + 12] = struct.pack("<I", 0)
    strh = data.index(b"strh")
    data[strh + 28 : strh + 36] = struct.pack("<II", 0, 0)
    out = tmp / "zero_fps.avi"
    out.write_bytes(bytes(data))
    return out


def no_timestamps_h264(tmp: Path) -> Path:
    """A raw H.264 elementary stream: no container, no timestamps."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-f", "h264", str(tmp / "raw.h264"))
    return tmp / "raw.h264"


def same_timestamp_mkv(tmp: Path) -> Path:
    """Every frame at time 0."""
    _video(tmp / "full.mkv", extra=("-an",))
    ffmpeg("-i", str(tmp / "full.mkv"), "-c", "copy", "-bsf:v", "setts=ts=0", str(tmp / "same_ts.mkv"))
    return tmp / "same_ts.mkv"


def _segments(tmp: Path, out_name: str, specs: list[tuple[str, tuple[str, ...]]]) -> Path:
    """MPEG-TS segments made apart and joined byte for byte, as a recorder appending would."""
    out = tmp / out_name
    with out.open("wb") as f:
        for i, (size, extra) in enumerate(specs):
            seg = _video(tmp / f"seg{i}.ts", size=size, seconds=2, extra=extra)
            f.write(seg.read_bytes())
    return out


def timestamps_jump_forward(tmp: Path) -> Path:
    return _segments(tmp, "jump_forward.ts", [("320x240", ()), ("320x240", ("-output_ts_offset", "5000"))])


def timestamps_jump_backward(tmp: Path) -> Path:
    return _segments(tmp, "jump_backward.ts", [("320x240", ("-output_ts_offset", "600")), ("320x240", ())])


def timestamps_step_back(tmp: Path) -> Path:
    """Back by 7 s: too little for FFmpeg to read it as a 33-bit wrap, unlike the 600 s above."""
    return _segments(tmp, "step_back.ts", [("320x240", ("-output_ts_offset", "10")), ("320x240", ("-output_ts_offset", "5"))])


def resolution_change(tmp: Path) -> Path:
    return _segments(tmp, "resolution_change.ts", [("320x240", ()), ("640x360", ("-output_ts_offset", "2"))])


def codec_change(tmp: Path) -> Path:
    return _segments(tmp, "codec_change.ts", [("320x240", ()), ("320x240", ("-c:v", "mpeg2video",
                                                                            "-output_ts_offset", "2"))])


def many_channels_high_rate(tmp: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=1000:sample_rate=192000", "-t", "3", "-ac", "8", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "pcm_s24le", str(tmp / "8ch_192k.mkv"))
    return tmp / "8ch_192k.mkv"


def empty_file(tmp: Path) -> Path:
    (tmp / "empty.mp4").write_bytes(b"")
    return tmp / "empty.mp4"


def directory(tmp: Path) -> Path:
    (tmp / "folder.mp4").mkdir()
    return tmp / "folder.mp4"


CORPUS: dict[str, Callable[[Path], Path]] = {f.__name__: f for f in [
    truncated_mp4, truncated_faststart_mp4, truncated_ts, garbage_head_mp4, garbage_head_ts, wav_named_mp4,
    random_bytes_mp4, huge_dimensions_in_container, huge_dimensions_y4m, one_by_one, zero_length_audio,
    video_with_empty_audio, zero_fps_avi, no_timestamps_h264, same_timestamp_mkv, timestamps_jump_forward,
    timestamps_jump_backward, timestamps_step_back, resolution_change, codec_change, many_channels_high_rate, empty_file, directory,
]}


# What each file must give: "refused" (a clean error), "results" (windows, sane), "either", or
# "warned" (no window can be made, and a warning says why).
REFUSED = {"truncated_mp4", "zero_length_audio", "empty_file", "directory", "huge_dimensions_y4m"}
EITHER = {"garbage_head_mp4", "random_bytes_mp4"}  # whether FFmpeg finds a stream in there depends on its version
WARNED = {"same_timestamp_mkv"}
# warnings that must be shown (the run goes on)
WARNINGS = {"timestamps_jump_forward": "video timestamps jump forward from",
            "timestamps_step_back": "video timestamps jump back from",
            "truncated_faststart_mp4": "of a stated 3.00 s (truncated?)"}
# (case, fewest windows): the segments on both sides of a discontinuity or a change give windows
AT_LEAST = {"timestamps_jump_forward": 5, "timestamps_jump_backward": 5, "resolution_change": 4, "codec_change": 4}


# --- running one -----------------------------------------------------------------------------------
def _ours(marker: str) -> list[psutil.Process]:
    """Processes started by the run (they inherit its environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("AVSTREAM_BAD_MEDIA_RUN") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _rings_of(pid: int, started_ms: int) -> list[Path]:
    """The ring folders of the run: ``avstream-<pid hex><start ms mod 0xFFFFFF, hex>`` (the supervisor's id)."""
    found = []
    for path in Path("/dev/shm").glob(f"avstream-{pid:x}*"):
        try:
            at_ms = int(path.name[len(f"avstream-{pid:x}") :], 16)
        except ValueError:
            continue
        if 0 <= (at_ms - started_ms % 0xFFFFFF) % 0xFFFFFF <= RUN_TIMEOUT_S * 1000:
            found.append(path)
    return found


def _check_results(lines: list[str]) -> dict[str, int]:
    """Windows per kind, each checked: finite, t0 < t1, in media-time order per stream and kind."""
    per_kind: dict[str, int] = {}
    last_t0: dict[tuple[str, str], float] = {}
    for line in lines:
        r = json.loads(line)  # a torn line would fail here
        t0, t1 = r["t0"], r["t1"]
        assert math.isfinite(t0) and math.isfinite(t1) and 0 <= t0 < t1, r
        key = (r["stream"], r["kind"])
        assert t0 >= last_t0.get(key, -1.0), f"windows out of media-time order: {r}"
        last_t0[key] = t0
        per_kind[r["kind"]] = per_kind.get(r["kind"], 0) + 1
    return per_kind


# the cases that reach the models, again through the monitor pipeline: four models, windows of
# several lengths and hops, captions
MONITOR_CASES = ["truncated_faststart_mp4", "wav_named_mp4", "one_by_one", "timestamps_jump_forward",
                 "resolution_change", "codec_change", "many_channels_high_rate"]


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_media_is_refused_cleanly_or_gives_sane_results(tmp_path: Path, case: str) -> None:
    _run(tmp_path, case, "highlight")


@pytest.mark.parametrize("case", MONITOR_CASES)
def test_bad_media_through_the_monitor_pipeline(tmp_path: Path, case: str) -> None:
    _run(tmp_path, case, "monitor")


def _run(tmp_path: Path, case: str, pipeline: str) -> None:
    media = CORPUS[case](tmp_path)
    run_tmp = tmp_path / "run_tmp"
    run_tmp.mkdir()
    marker = uuid.uuid4().hex
    out = tmp_path / "results.jsonl"
    env = {**os.environ, "AVSTREAM_BAD_MEDIA_RUN": marker, "TMPDIR": str(run_tmp)}
    started_ms = int(time.time() * 1000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "avstream.engine.cli", "run", pipeline, "--input", str(media), "--quiet",
         "--set", "streams.cam0.realtime=false", "--publish", f"tcp://127.0.0.1:{free_port()}", "--jsonl", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for child in _ours(marker):
            child.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"{case}: the run hung for {RUN_TIMEOUT_S} s\n{stderr[-3000:]}")
    said = stdout + stderr
    assert "Traceback" not in said, said[-4000:]
    expected = "refused" if case in REFUSED else "either" if case in EITHER else "warned" if case in WARNED else "results"
    if expected == "refused":
        assert proc.returncode != 0, f"{case}: expected a refusal\n{said[-3000:]}"
    if proc.returncode == 0:
        assert expected != "refused"
        lines = [line for line in (out.read_text().splitlines() if out.exists() else []) if '"kind": "event"' not in line]
        per_kind = _check_results(lines)
        if expected == "warned":
            assert not per_kind and "warning" in stderr and media.name in stderr, stderr[-3000:]
        elif expected == "results":
            assert per_kind.get("highlight", 0) >= AT_LEAST.get(case, 1), f"{case}: {per_kind}\n{said[-3000:]}"
            if case in WARNINGS:
                assert WARNINGS[case] in stderr and media.name in stderr, stderr[-3000:]
                assert stderr.count(WARNINGS[case]) == 1, f"told more than once:\n{stderr[-3000:]}"
            # a few seconds of media at hops of 0.5 s or more (a gap filled with windows would be thousands)
            assert max(per_kind.values()) <= 25, f"{case}: {per_kind}"
    else:
        assert expected in ("refused", "either"), f"{case}: expected results\n{said[-3000:]}"
        assert proc.returncode in (1, 2), said[-3000:]
        errors = [line for line in stderr.splitlines() if "error" in line.lower()]
        assert errors, stderr[-3000:]
        assert media.name in errors[0], stderr[-3000:]
        if case == "huge_dimensions_y4m":  # FFmpeg's own reason, not the bare error code
            assert "Picture size 16384x16384 is invalid" in errors[0], errors[0]
        reason = errors[0].split(": ", 1)[-1]
        assert said.count(reason) == 1, f"the error is shown more than once:\n{said[-3000:]}"

    # nothing left behind
    deadline = time.monotonic() + 10
    while _ours(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ours(marker), [p.cmdline() for p in _ours(marker)]
    assert not _rings_of(proc.pid, started_ms), "a shared-memory ring folder is left"
    left = [p for p in run_tmp.rglob("*") if p.is_socket() or p.name.startswith("avs-")]
    assert not left, f"left in the run's temporary folder: {left}"
