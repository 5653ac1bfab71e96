"""Event clips: real files made with the FFmpeg CLI, recorded by the `record` sink (its own demux-only
reader of the file), each clip checked with ffprobe against its source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from avstream.engine.errors import ConfigError
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.sinks import SinkContext, build_sinks
from avstream.engine.sinks.clips import ClipSink
from tests.conftest import run_cli

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = [pytest.mark.skipif(FFMPEG is None or FFPROBE is None,
                                 reason="the FFmpeg CLI (ffmpeg, ffprobe) is not installed; scripts/test.sh installs it"),
              pytest.mark.timeout(240)]
GOP_S = 2.0
DURATION_S = 16.0


def ffmpeg(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clipmedia")
    mp4, mkv = folder / "h264_aac.mp4", folder / "h264_pcm.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=44100", "-t", str(DURATION_S), "-c:v", "libx264", "-preset", "ultrafast",
           "-profile:v", "high", "-pix_fmt", "yuv420p", "-g", str(int(GOP_S * 25)), "-keyint_min", str(int(GOP_S * 25)),
           "-sc_threshold", "0", "-c:a", "aac", "-ac", "2", str(mp4))
    ffmpeg("-i", str(mp4), "-c:v", "copy", "-c:a", "pcm_s16le", str(mkv))
    ffv1 = folder / "ffv1.mkv"  # a video codec MP4 cannot carry
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "6", "-c:v", "ffv1", str(ffv1))
    return {"mp4": mp4, "mkv": mkv, "ffv1": ffv1}


def probe(path: Path) -> list[dict[str, Any]]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries",
                          "stream=codec_type,codec_name,profile,width,height,pix_fmt,sample_rate,channels:format=duration",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    streams: list[dict[str, Any]] = data["streams"]
    for s in streams:
        s["format_duration"] = float(data["format"]["duration"])
    return streams


def packet_hashes(path: Path, kind: str) -> list[str]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", kind[0], "-show_data_hash", "MD5",
                          "-show_entries", "packet=data_hash", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def track(streams: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((s for s in streams if s["codec_type"] == kind), None)


PARAMS = ("codec_name", "profile", "width", "height", "pix_fmt", "sample_rate", "channels")


def same_codec(clip: dict[str, Any], source: dict[str, Any]) -> None:
    assert {k: clip.get(k) for k in PARAMS} == {k: source.get(k) for k in PARAMS}


class Feed:
    """Drives a sink like a pipeline does: results every 0.5 s of media time, then events."""

    def __init__(self, sink: Any, stream: str = "cam0"):
        self.sink, self.stream, self.seq = sink, stream, 0
        self.next_t1 = 2.0  # the first 2 s window

    def results(self, until: float, start: float | None = None) -> None:
        """Results up to ``until``, from ``start`` (default: where the last call stopped)."""
        t1 = self.next_t1 if start is None else start
        while t1 <= until + 1e-9:
            self.sink.send({"schema_version": 1, "kind": "violence", "stream": self.stream, "seq": self.seq,
                            "wall": time.time(), "t0": t1 - 2.0, "t1": t1, "latency_ms": 10.0, "model": "m@1",
                            "score": 0.2, "alert": False, "payloads": []}, [])
            self.seq += 1
            t1 += 0.5
        self.next_t1 = t1

    def event(self, name: str, t0: float, t1: float | None = None) -> None:
        self.sink.send({"schema_version": 1, "kind": "event", "stream": self.stream, "seq": self.seq,
                        "wall": time.time(), "name": name, "detail": {}, "t0": t0, "t1": t1, "payloads": []}, [])
        self.seq += 1


def make_sink(tmp_path: Path, uri: Path | str, **settings: Any) -> tuple[Any, ClipSink]:
    fanout = build_sinks({"record": settings}, SinkContext("t", tmp_path, tmp_path / "data", {"cam0": {"uri": str(uri)}}))
    sink = fanout.sinks[0]
    assert isinstance(sink, ClipSink)
    return fanout, sink


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def recorded(tmp_path: Path, media: dict[str, Path]) -> Iterator[tuple[Any, ClipSink, Feed]]:
    fanout, sink = make_sink(tmp_path, media["mp4"], pre_roll_s=1.5, post_roll_s=3.0)
    yield fanout, sink, Feed(fanout)
    fanout.close()


def test_a_clip_is_stream_copied_with_pre_and_post_roll(recorded: Any, media: dict[str, Path]) -> None:
    fanout, sink, feed = recorded
    feed.results(until=7.0)
    feed.event("violence_start", 5.0, 5.5)  # wanted span: keyframe at or before 3.5 (3.5 -> 2.0) to 8.5
    feed.results(until=DURATION_S)
    wait_for(lambda: sink.clips_written["cam0"] == 1)
    (clip,) = sink.list_clips()
    mp4 = Path(clip["mp4"])
    assert mp4.parent.parent.name == "cam0" and mp4.parent.parent.parent == sink.dir
    assert mp4.name.startswith("cam0-") and mp4.name.endswith("-violence_start.mp4")
    assert sink.clip_path(clip["id"]) == mp4 and sink.clip_path("../x") is None
    source, out = probe(media["mp4"]), probe(mp4)
    for kind in ("video", "audio"):  # both tracks, with the source's codec parameters
        src_track, out_track = track(source, kind), track(out, kind)
        assert src_track is not None and out_track is not None, kind
        same_codec(out_track, src_track)
    # stream copy: the clip's video packets are a run of the source's, byte for byte
    src_v, out_v = packet_hashes(media["mp4"], "video"), packet_hashes(mp4, "video")
    start = src_v.index(out_v[0])
    assert src_v[start:start + len(out_v)] == out_v
    side = json.loads(mp4.with_suffix(".json").read_text())
    # the span: from the keyframe at or before 3.5 (within one GOP of it) to 8.5
    assert 3.5 - GOP_S - 1e-3 <= side["media_start"] <= 3.5
    assert side["media_end"] >= 8.5 - 0.05
    assert abs(out[0]["format_duration"] - (side["media_end"] - side["media_start"])) < 0.2
    assert side["media_end"] - side["media_start"] <= 5.0 + GOP_S + 0.1
    for key in ("event", "stream", "t0", "t1", "media_start", "media_end", "wall_start", "pre_roll_s", "post_roll_s",
                "results"):
        assert key in side, key
    assert side["event"]["name"] == "violence_start" and side["t0"] == 5.0 and side["t1"] == 5.5
    assert side["pre_roll_s"] == 1.5 and side["post_roll_s"] == 3.0 and side["stream"] == "cam0"
    inside = [r for r in side["results"]]
    assert inside and all(r["t1"] > side["media_start"] and r["t0"] < side["media_end"] for r in inside)
    # every result of the span is there: t1 from 2.0 every 0.5 s, overlapping [start, end)
    expected = [k / 2 for k in range(4, int(DURATION_S * 2) + 1)
                if k / 2 > side["media_start"] and k / 2 - 2.0 < side["media_end"]]
    assert [r["t1"] for r in inside] == expected
    assert clip["duration_s"] == side["duration_s"] and clip["event"] == "violence_start"


def test_overlapping_events_extend_one_clip(recorded: Any) -> None:
    fanout, sink, feed = recorded
    feed.results(until=5.0)
    feed.event("violence_start", 4.0, 4.5)  # pending: 2.5 .. 7.5
    feed.event("violence_start", 6.0, 6.5)  # starts (4.5) inside it: extends to 9.5
    feed.event("violence_end", 4.0, 7.0)  # the end of a configured *_start extends to 10.0
    feed.results(until=DURATION_S)
    wait_for(lambda: sink.clips_written["cam0"] >= 1)
    time.sleep(0.5)
    (clip,) = sink.list_clips()
    side = json.loads(Path(clip["mp4"]).with_suffix(".json").read_text())
    assert [e["name"] for e in side["events"]] == ["violence_start", "violence_start", "violence_end"]
    assert side["media_start"] <= 2.5 and side["media_end"] >= 10.0 - 0.05


def test_events_apart_give_separate_clips(recorded: Any) -> None:
    fanout, sink, feed = recorded
    feed.results(until=4.0)
    feed.event("violence_start", 3.0, 3.5)  # 1.5 .. 6.5
    feed.results(until=9.0)
    feed.event("violence_start", 10.0, 10.5)  # 8.5 .. 13.5: after the first one ended
    feed.event("highlight_start", 11.0)  # not configured: ignored
    feed.results(until=DURATION_S)
    wait_for(lambda: sink.clips_written["cam0"] == 2)
    clips = sink.list_clips(stream="cam0")
    assert len(clips) == 2 and sink.list_clips(stream="other") == []
    spans = sorted(json.loads(Path(c["mp4"]).with_suffix(".json").read_text())["media_start"] for c in clips)
    assert spans[0] <= 1.5 and 8.5 - GOP_S <= spans[1] <= 8.5


def test_pcm_audio_is_left_out_or_transcoded_as_configured(tmp_path: Path, media: dict[str, Path],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    source = probe(media["mkv"])
    src_audio = track(source, "audio")
    assert src_audio is not None and src_audio["codec_name"] == "pcm_s16le"
    for option, audio_codec in ((None, None), ("aac", "aac")):
        folder = tmp_path / str(option)
        fanout, sink = make_sink(folder, media["mkv"], pre_roll_s=1.0, post_roll_s=2.0, transcode_audio=option)
        feed = Feed(fanout)
        feed.results(until=6.0)
        feed.event("violence_start", 4.0)
        feed.results(until=DURATION_S)
        wait_for(lambda s=sink: s.clips_written["cam0"] == 1)
        fanout.close()
        (clip,) = sink.list_clips()
        out = probe(Path(clip["mp4"]))
        video = track(out, "video")
        src_video = track(source, "video")
        assert video is not None and src_video is not None
        same_codec(video, src_video)
        audio = track(out, "audio")
        side = json.loads(Path(clip["mp4"]).with_suffix(".json").read_text())
        if audio_codec is None:
            assert audio is None and "video only" in side["notes"][0]
        else:
            assert audio is not None and audio["codec_name"] == "aac"
            assert audio["sample_rate"] == src_audio["sample_rate"] and audio["channels"] == src_audio["channels"]
            assert "transcoded to aac" in side["notes"][0]
    assert any("pcm_s16le cannot go into MP4" in r.getMessage() for r in caplog.records)


def test_retention_removes_the_oldest_by_age_and_size(recorded: Any) -> None:
    fanout, sink, feed = recorded
    for k, t in enumerate((2.0, 8.0, 14.0)):
        feed.results(until=t + 0.5)
        feed.event("violence_start", t, t)
        feed.results(until=min(t + 5.5, DURATION_S))
        wait_for(lambda n=k + 1: sink.clips_written["cam0"] == n)
    clips = sorted(sink.list_clips(), key=lambda c: c["wall_start"])
    assert len(clips) == 3
    paths = [Path(c["mp4"]) for c in sorted(clips, key=lambda c: c["id"])]
    now = time.time()
    for age, path in zip((3, 2, 1), paths, strict=True):  # hours old, oldest first
        for p in (path, path.with_suffix(".json")):
            os.utime(p, (now - age * 3600, now - age * 3600))
    sizes = [p.stat().st_size + p.with_suffix(".json").stat().st_size for p in paths]
    sink.settings = sink.settings.model_copy(update={"max_total_gb": (sizes[1] + sizes[2] + 100) / 1e9})
    assert sink.enforce_retention() == [paths[0]]  # by size: the oldest goes
    assert not paths[0].with_suffix(".json").exists() and paths[1].exists() and paths[2].exists()
    sink.settings = sink.settings.model_copy(update={"retain_days": 1.5 / 24, "max_total_gb": 20.0})
    assert sink.enforce_retention() == [paths[1]]  # by age: older than 1.5 h
    assert [c["id"] for c in sink.list_clips()] == [paths[2].stem]


def test_the_record_section_is_validated_with_located_errors(tmp_path: Path, media: dict[str, Path]) -> None:
    path = tmp_path / "p.yaml"
    body = textwrap.dedent("""\
        version: 1
        name: rec
        streams:
          cam0: {uri: URI}
        nodes:
          window: {type: avstream/av_window@v1, inputs: [cam0]}
          violence: {type: avstream/violence@v1, inputs: [window]}
        outputs:
          record: {on: [violence_start, stream_down], pre_roll_s: 2, transcode_audio: aac}
        """).replace("URI", str(media["mp4"]))
    path.write_text(body)
    spec = load_pipeline(str(path))
    assert spec.outputs.sinks["record"]["on"] == ["violence_start", "stream_down"]  # YAML's bare `on` key
    path.write_text(body.replace("pre_roll_s: 2", "pre_roll_s: -1, colour: red"))
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(path))
    lines = [str(p) for p in err.value.problems]
    assert any("outputs.record.pre_roll_s" in line and ":9:" in line for line in lines), lines
    assert any("outputs.record.colour: unknown key" in line for line in lines), lines


def test_avstream_run_writes_a_clip_of_its_alert(tmp_path: Path, media: dict[str, Path]) -> None:
    """The violence pipeline on a file, its alert forced on (on_threshold 0): violence_start fires on the
    first window and the run records a clip of the file."""
    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "violence.yaml"
    run = run_cli("run", str(pipeline), "--input", str(media["mp4"]),
                  "--set", "nodes.violence.params.on_threshold=0", "--set", "nodes.violence.params.off_threshold=0",
                  "--set", "streams.cam0.realtime=false", "--set", f"outputs.record.dir={tmp_path / 'clips'}",
                  "--set", "outputs.record.pre_roll_s=1", "--set", "outputs.record.post_roll_s=4",
                  "--jsonl", str(tmp_path / "out.jsonl"), timeout=180)
    assert run.returncode == 0, run.stderr
    clips = list((tmp_path / "clips" / "cam0").glob("*/*.mp4"))
    assert len(clips) == 1, run.stderr
    out = probe(clips[0])
    assert track(out, "video") is not None and track(out, "audio") is not None
    side = json.loads(clips[0].with_suffix(".json").read_text())
    events = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    start = next(e for e in events if e.get("name") == "violence_start")
    assert side["event"]["t0"] == start["t0"] and side["results"]
    assert side["media_end"] >= start["t1"] + 4.0 - 0.05


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs as the clip folder, so the disk really fills (needs root)."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0 or mount is None or umount is None:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root and mount(8)")
    made = subprocess.run([mount, "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode(errors='replace').strip()}")
    yield folder
    subprocess.run([umount, "-l", str(folder)], check=False)


def test_a_full_disk_is_reported_once_and_recording_resumes(tmp_path: Path, media: dict[str, Path], small_disk: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    fanout, sink = make_sink(tmp_path, media["mp4"], pre_roll_s=1.0, post_roll_s=2.0, dir=str(small_disk))
    feed = Feed(fanout)
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave ~60 kB: less than a clip
        f.write(b"\0" * (3 * 1024 * 1024 - 60 * 1024))
    try:
        for k, t in enumerate((3.0, 8.0)):
            feed.results(until=t + 0.5)
            feed.event("violence_start", t, t)
            feed.results(until=t + 4.0)
            wait_for(lambda n=k + 1: sink.clips_failed.get("cam0", 0) == n)
        assert sink.disk_full and sink.clips_written["cam0"] == 0
        full = [r for r in caplog.records if "disk is full" in r.getMessage()]
        assert len(full) == 1  # reported once
        assert not list(small_disk.glob("*/*/*"))  # no partial clip left behind
        filler.unlink()  # space returns
        feed.results(until=13.5)
        feed.event("violence_start", 13.0, 13.0)
        feed.results(until=DURATION_S)
        wait_for(lambda: sink.clips_written["cam0"] == 1)
        assert not sink.disk_full and any("recording resumed" in r.getMessage() for r in caplog.records)
        (clip,) = sink.list_clips()
        assert track(probe(Path(clip["mp4"])), "video") is not None
    finally:
        fanout.close()


def test_the_ring_keeps_whole_gops_within_its_time_and_memory_bounds() -> None:
    from fractions import Fraction

    from avstream.engine.capture.packets import Packet, PacketRing, Segment

    seg = Segment(None, object(), object(), 1)

    def packets(ring: PacketRing, until: float) -> None:
        for k in range(int(until * 10)):  # video at 10 fps, a keyframe every second; audio between
            t = k / 10
            ring.append(Packet("video", t, b"v" * 100, k, k, 1, Fraction(1, 10), k % 10 == 0, seg))
            ring.append(Packet("audio", t + 0.05, b"a" * 10, k, k, 1, Fraction(1, 10), True, seg))

    ring = PacketRing(keep_s=3.0, max_bytes=10**6)
    packets(ring, 10.0)
    span = ring.span(0.0, 100.0)
    assert span[0].kind == "video" and span[0].keyframe and span[0].t == 6.0  # the keyframe at or before 9.95 - 3
    clip = ring.span(7.5, 8.5)
    assert clip[0].t == 7.0 and clip[0].keyframe and max(p.t for p in clip) <= 8.5
    assert all(p.t >= 7.0 for p in clip)  # no audio from before the keyframe
    held = PacketRing(keep_s=3.0, max_bytes=10**6)
    held.hold_from = 2.5  # a pending clip keeps its start beyond keep_s
    packets(held, 10.0)
    assert held.span(2.5, 100.0)[0].t == 2.0
    small = PacketRing(keep_s=100.0, max_bytes=2500)
    packets(small, 10.0)
    assert small.bytes <= 2500 and small.trimmed_for_size > 0
    assert small.span(0.0, 100.0)[0].keyframe


def test_a_looped_file_keeps_counting_media_time(tmp_path: Path, media: dict[str, Path]) -> None:
    fanout = build_sinks({"record": {"pre_roll_s": 1.0, "post_roll_s": 2.0}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": str(media["mp4"]), "loop": True}}))
    sink = fanout.sinks[0]
    assert isinstance(sink, ClipSink)
    feed = Feed(fanout)
    try:
        feed.results(until=DURATION_S + 5.0)
        feed.event("violence_start", DURATION_S + 4.0)  # the second pass: 19 .. 22 of media time
        feed.results(until=DURATION_S + 10.0)
        wait_for(lambda: sink.clips_written["cam0"] == 1)
    finally:
        fanout.close()
    (clip,) = sink.list_clips()
    side = json.loads(Path(clip["mp4"]).with_suffix(".json").read_text())
    assert DURATION_S + 3.0 - GOP_S - 0.05 <= side["media_start"] <= DURATION_S + 3.0
    assert side["media_end"] >= DURATION_S + 6.0 - 0.05


def test_streams_added_and_removed_at_run_time(tmp_path: Path, media: dict[str, Path]) -> None:
    fanout = build_sinks({"record": {"pre_roll_s": 1.0, "post_roll_s": 1.0}}, SinkContext("t", tmp_path, tmp_path))
    sink = fanout.sinks[0]
    assert isinstance(sink, ClipSink)
    try:
        sink.add_stream("door/1", {"uri": str(media["mp4"])})  # a stream id that is no file name
        feed = Feed(fanout, stream="door/1")
        feed.results(until=5.0)
        feed.event("violence_start", 4.0)
        feed.results(until=9.0)
        wait_for(lambda: sink.clips_written.get("door/1") == 1)
        (clip,) = sink.list_clips(stream="door/1")
        assert Path(clip["mp4"]).parent.parent.name == "door_1" and clip["stream"] == "door/1"
        assert clip["id"].startswith("door_1-") and sink.clip_path(clip["id"]) == Path(clip["mp4"])
        fanout.remove_stream("door/1")
        wait_for(lambda: "door/1" not in sink._recorders)
        assert sink.list_clips(stream="door/1")  # removing a stream keeps its clips
    finally:
        fanout.close()


def test_video_mp4_cannot_carry_is_reported_and_nothing_is_written(tmp_path: Path, media: dict[str, Path],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    fanout, sink = make_sink(tmp_path, media["ffv1"], pre_roll_s=1.0, post_roll_s=1.0)
    try:
        Feed(fanout).event("violence_start", 2.0)
        Feed(fanout).results(until=6.0)
        wait_for(lambda: sink.clips_failed.get("cam0") == 1)
    finally:
        fanout.close()
    assert sink.clips_written["cam0"] == 0 and not list(sink.dir.rglob("*.*"))
    assert any("video codec ffv1 cannot go into MP4" in r.getMessage() for r in caplog.records)
