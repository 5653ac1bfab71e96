"""Event clips of a live stream: FFmpeg serves H.264 + AAC over TCP on 127.0.0.1 and the record sink
keeps its own connection's packets; the clip is placed by wall time."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from avstream.engine.sinks import SinkContext, build_sinks
from avstream.engine.sinks.clips import ClipSink
from tests.live.servers import Server, ffmpeg_server, rtsp_server, wait_until

pytestmark = pytest.mark.timeout(90)


def probe(path: Path) -> dict[str, dict[str, Any]]:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe (Debian's ffmpeg) is not installed; scripts/test.sh installs it")
    out = subprocess.run([ffprobe, "-v", "error", "-show_entries",
                          "stream=codec_type,codec_name,width,height,pix_fmt,sample_rate,channels:format=duration",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    tracks = {s["codec_type"]: s for s in data["streams"]}
    tracks["format"] = data["format"]
    return tracks


def record_one(sink: ClipSink, fanout: Any, origin: float, n: int) -> float:
    """Once the ring holds 3.5 s of packets, a result and a violence_start now; waits for clip ``n``.
    Returns the event's wall time."""
    ring = sink._recorders["cam0"].ring

    def enough() -> bool:  # the current connection has delivered 3.5 s
        current = ring.span(0.0, 1e18, anchor=time.time())
        return bool(current) and current[0].t < time.time() - 3.5

    wait_until(enough, 30, "3.5 s of packets from the live stream")
    now = time.time()
    fanout.send({"schema_version": 1, "kind": "violence", "stream": "cam0", "seq": n, "wall": now,
                 "t0": now - origin - 2.0, "t1": now - origin, "latency_ms": 0.0, "model": "m@1", "score": 0.9,
                 "alert": True, "payloads": []}, [])
    fanout.send({"schema_version": 1, "kind": "event", "stream": "cam0", "seq": n, "wall": now,
                 "name": "violence_start", "detail": {}, "t0": now - origin, "t1": now - origin, "payloads": []}, [])
    deadline = time.monotonic() + 30
    while sink.clips_written["cam0"] < n:  # results keep coming, as from a pipeline
        assert time.monotonic() < deadline, f"timed out waiting for clip {n} to be written"
        t = time.time()
        fanout.send({"schema_version": 1, "kind": "violence", "stream": "cam0", "seq": n, "wall": t,
                     "t0": t - origin - 2.0, "t1": t - origin, "latency_ms": 0.0, "model": "m@1", "score": 0.9,
                     "alert": True, "payloads": []}, [])
        time.sleep(0.2)
    return now


def check_clip(clip: dict[str, Any], now: float, uri: str) -> None:
    tracks = probe(Path(clip["mp4"]))
    video, audio = tracks["video"], tracks["audio"]
    assert (video["codec_name"], video["width"], video["height"], video["pix_fmt"]) == ("h264", 320, 240, "yuv420p")
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 16000, 1)
    # from the keyframe (every 1 s) at or before 2 s before the event, to 2 s after it
    assert now - 2.0 - 1.0 - 0.3 <= clip["wall_start"] <= now - 2.0 + 0.3
    assert 4.0 - 0.3 <= float(tracks["format"]["duration"]) <= 4.0 + 1.0 + 0.5
    side = json.loads(Path(clip["mp4"]).with_suffix(".json").read_text())
    assert "violence" in [r["kind"] for r in side["results"]] and side["source"] == uri


@pytest.mark.parametrize("kind", ["tcp", "rtsp"])
def test_a_live_stream_clip_has_its_pre_and_post_roll(kind: str, tmp_path: Path, servers: list[Server],
                                                      clip: Path) -> None:
    """FFmpeg over TCP (killed and restarted: recording reconnects) and GStreamer's RTSP server."""
    server, uri = ffmpeg_server("tcp", tmp_path) if kind == "tcp" else rtsp_server(clip, tmp_path)
    servers.append(server.start())
    fanout = build_sinks({"record": {"pre_roll_s": 2.0, "post_roll_s": 2.0}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": uri}}))
    sink = fanout.sinks[0]
    assert isinstance(sink, ClipSink)
    origin = time.time()  # media time 0 of this "pipeline"
    try:
        first = record_one(sink, fanout, origin, 1)
        if kind == "tcp":
            server.kill()
            server.start()
            reader = sink._recorders["cam0"].reader
            wait_until(lambda: reader.connections == 2, 30, "the recording connection to come back")
            second = record_one(sink, fanout, origin, 2)
    finally:
        fanout.close()
    clips = sorted(sink.list_clips(), key=lambda c: c["wall_start"])
    check_clip(clips[0], first, uri)
    if kind == "tcp":
        assert len(clips) == 2
        check_clip(clips[1], second, uri)
