"""Decoding only what a subsampling source keeps: the frames delivered with ``skip`` are the frames
of a full decode, bit for bit, on real files encoded by FFmpeg with several GOP structures."""

from __future__ import annotations

import logging
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from avstream.engine.capture import skipping
from avstream.engine.capture.base import FpsGate
from avstream.engine.capture.files import FileReader, _FileTimeline
from avstream.engine.capture.schemes import open_reader
from avstream.engine.capture.skipping import SkipPlanner, resets_order, slices_in
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, VideoFrame
from tests.conftest import invoke_cli

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")

SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i",
          "sine=frequency=440:sample_rate=16000", "-t", "8", "-c:a", "aac", "-pix_fmt", "yuv420p"]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-x264-params"]
PYRAMID = "bframes=3:b-pyramid=normal:b-adapt=2:keyint=50"
# irregular timestamps: every 7th frame left out, the rest jittered by up to 11 ms
VFR = ["-vf", r"select='not(eq(mod(n\,7)\,3))',settb=1/1000,setpts='PTS+0.011*sin(N)/TB'", "-fps_mode", "vfr",
       "-enc_time_base:v", "1:1000"]

ENCODINGS: dict[str, tuple[str, list[str]]] = {
    "ip_only": ("mp4", [*X264, "bframes=0:keyint=50"]),
    "b_pyramid": ("mp4", [*X264, PYRAMID]),
    "open_gop": ("mp4", [*X264, "bframes=3:b-pyramid=normal:open-gop=1:keyint=30:min-keyint=5:scenecut=40"]),
    "vfr": ("mp4", [*VFR, *X264, PYRAMID]),
    "hevc": ("mp4", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "bframes=3:keyint=30:log-level=error"]),
    "mpeg2_ts": ("ts", ["-c:v", "mpeg2video", "-bf", "2", "-g", "24", "-q:v", "4"]),
}
REMUXED = {  # name: (from, extension, options before -i)
    "mkv": ("b_pyramid", "mkv", []),  # Matroska: no decode timestamps on the first packets
    "edit_list": ("b_pyramid", "mp4", ["-ss", "1.3"]),  # starts mid-GOP: the demuxer marks packets discarded
}
RATES = [0.3, 1.0, 4.0, 8.0, 12.5]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


class Clips:
    """Test inputs, encoded once per session on first use."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __getitem__(self, name: str) -> Path:
        if name in REMUXED:
            base, ext, before = REMUXED[name]
            path = self.folder / f"{name}.{ext}"
            if not path.exists():
                ffmpeg(*before, "-i", str(self[base]), "-c", "copy", str(path))
            return path
        ext, encode = ENCODINGS[name]
        path = self.folder / f"{name}.{ext}"
        if not path.exists():
            ffmpeg(*SOURCE, *encode, str(path))
        return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return Clips(tmp_path_factory.mktemp("skip"))


def read(path: Path, **kw: Any) -> tuple[list[VideoFrame | AudioChunk], FileReader]:
    reader = open_reader(str(path), stream="s", **kw)
    assert isinstance(reader, FileReader)
    try:
        items = [i for i in reader.read() if isinstance(i, (VideoFrame, AudioChunk))]
    finally:
        reader.close()
    return items, reader


def pts(p: av.Packet | av.VideoFrame) -> int:
    assert p.pts is not None
    return p.pts


def at(p: av.Packet) -> float:
    """A packet's presentation time in seconds."""
    assert p.time_base is not None
    return float(pts(p) * p.time_base)


def video_packets(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as c:
        return [p for p in c.demux(c.streams.video[0]) if p.size]


def assert_same_items(got: list[VideoFrame | AudioChunk], want: list[VideoFrame | AudioChunk]) -> None:
    """The same frames and the same audio: timestamps equal, images and samples bit-identical, and
    video no further behind the audio in the item order than in ``want`` (plus a frame or two: a
    decoder without the frames it skips puts out the others a little later or earlier)."""
    for kind in (VideoFrame, AudioChunk):
        a, b = [i for i in got if isinstance(i, kind)], [i for i in want if isinstance(i, kind)]
        assert [i.t for i in a] == [i.t for i in b], kind.__name__
        for x, y in zip(a, b, strict=True):
            if isinstance(x, VideoFrame):
                assert isinstance(y, VideoFrame) and x.image.shape == y.image.shape and np.array_equal(x.image, y.image)
            else:
                assert isinstance(y, AudioChunk) and np.array_equal(x.samples, y.samples)
    assert video_lag(got) <= video_lag(want) + 0.1


def video_lag(items: list[VideoFrame | AudioChunk]) -> float:
    """How far (media seconds) the audio handed out before a frame runs ahead of it, at most."""
    audio_end, worst = 0.0, 0.0
    for item in items:
        if isinstance(item, AudioChunk):
            audio_end = max(audio_end, item.t_end)
        else:
            worst = max(worst, audio_end - item.t)
    return worst


# --------------------------------------------------------------------------------------------------
# the inputs have the structure each test is about


def test_the_clips_have_the_gop_structures_under_test(clips: Clips) -> None:
    def frames_under_nonref(path: Path) -> list[int]:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            vs.codec_context.skip_frame = "NONREF"
            return [int(f.pict_type) for f in c.decode(vs)]

    def leading_pictures(packets: list[av.Packet]) -> int:
        """Packets after a (not the first) key frame in decode order with an earlier pts."""
        n, key_pts = 0, None
        for i, p in enumerate(packets):
            if p.is_keyframe:
                key_pts = p.pts if i else None
            elif key_pts is not None and pts(p) < key_pts:
                n += 1
        return n

    b_frame = int(av.video.frame.PictureType.B)
    for name in ENCODINGS:
        packets = video_packets(clips[name])
        kept = frames_under_nonref(clips[name])
        if name == "ip_only":
            assert len(kept) == len(packets)  # every frame is a reference: nothing to skip
            assert leading_pictures(packets) == 0
        else:
            assert len(kept) < len(packets), f"{name}: no non-reference frames"
        if name in ("b_pyramid", "open_gop", "vfr", "hevc"):
            assert b_frame in kept, f"{name}: no reference B-frames (pyramid)"
        if name in ("open_gop", "hevc", "mpeg2_ts"):
            assert leading_pictures(packets) > 0, f"{name}: no open GOPs"
    times = np.array(sorted(at(p) for p in video_packets(clips["vfr"])))
    gaps = np.diff(times)
    assert gaps.max() > 0.07 and np.std(gaps) > 0.005  # frames left out, and jitter
    assert sum(p.is_discard for p in video_packets(clips["edit_list"])) > 0
    assert sum(p.dts is None for p in video_packets(clips["mkv"])) > 0


def test_packet_time_is_the_time_of_the_decoded_frame(clips: Clips) -> None:
    for name in ("vfr", "mpeg2_ts", "mkv", "edit_list"):
        reader = FileReader(str(clips[name]), stream="s", audio=False)
        timeline = _FileTimeline(reader._t0, reader._native, None, None)  # type: ignore[arg-type]
        reader.close()
        with av.open(str(clips[name])) as c:
            vs = c.streams.video[0]
            by_pts: dict[int, float] = {}
            decoded = 0
            for packet in c.demux(vs):
                if packet.size:
                    t = timeline.packet_time(packet)
                    assert t is not None
                    by_pts[pts(packet)] = t
                for frame in packet.decode():
                    assert timeline.video_time(frame, packet, 0.0) == by_pts[pts(frame)]
                    decoded += 1
            assert decoded > 150


# --------------------------------------------------------------------------------------------------
# lossless: bit-identical to a full decode


@pytest.mark.parametrize("name", [*ENCODINGS, *REMUXED])
def test_skipping_delivers_the_frames_of_a_full_decode(clips: Clips, name: str) -> None:
    path = clips[name]
    packets = video_packets(path)
    discarded = sum(p.is_discard for p in packets)
    for fps in RATES:
        want, full = read(path, fps=fps, skip="none")
        assert full.counters == {}  # nothing planned
        for mode in ("auto", "nonref"):
            got, reader = read(path, fps=fps, skip=mode)
            assert reader.skip_mode == mode
            assert_same_items(got, want)
            n = reader.counters
            decoded, skipped, dropped = n.get("frames_decoded", 0), n.get("frames_skipped", 0), n.get("packets_dropped", 0)
            assert decoded + skipped + dropped == len(packets) - discarded, (fps, mode, n)
            assert (skipped > 0) == (name != "ip_only"), (fps, mode, n)  # non-reference frames skipped
            if mode == "nonref":
                assert dropped == 0
            elif fps < 1:
                assert dropped > 0, (fps, n)  # GOP tails not decoded
        assert sum(isinstance(i, VideoFrame) for i in want) >= fps * 6


def test_gop_tails_and_whole_gops_are_not_decoded_at_low_rates(clips: Clips) -> None:
    packets = len(video_packets(clips["b_pyramid"]))
    _, reader = read(clips["b_pyramid"], fps=0.3, audio=False)
    # 8 s, 2 s GOPs, frames kept at 0, 3.33 and 6.67 s: the GOP from 4 to 6 s has none
    assert reader.counters["packets_dropped"] > packets * 0.6
    assert reader.counters["frames_decoded"] < packets * 0.25


def test_the_lookahead_is_bounded(clips: Clips, monkeypatch: pytest.MonkeyPatch) -> None:
    path = clips["b_pyramid"]
    want, _ = read(path, fps=0.3, skip="none")
    _, unbounded = read(path, fps=0.3)
    monkeypatch.setattr(skipping, "MAX_HELD", 8)
    got, bounded = read(path, fps=0.3)
    assert_same_items(got, want)  # past the bound packets are decoded, never wrongly skipped
    assert bounded.counters["packets_dropped"] < unbounded.counters["packets_dropped"]

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        planner = SkipPlanner("auto", vs, FpsGate(0.3, 25.0), at, stream="s",
                              native=25.0)
        demuxed = 0

        def counting() -> Iterator[av.Packet]:
            nonlocal demuxed
            for packet in c.demux(vs):
                demuxed += 1
                yield packet

        released = 0
        for _packet, _action in planner.plan(counting()):
            released += 1
            assert demuxed - released <= 8
        assert released == demuxed


def test_frame_and_slice_threading_decode_the_same_frames(clips: Clips) -> None:
    path = clips["b_pyramid"]
    want, full = read(path, fps=4.0, skip="none")
    assert full.decode_threading == "frame"  # files: the most throughput
    got, sliced = read(path, fps=4.0, threading="slice")
    assert sliced.decode_threading == "slice"
    assert_same_items(got, want)


def test_sources_that_do_not_subsample_decode_everything(clips: Clips) -> None:
    _, reader = read(clips["b_pyramid"], fps=25.0)
    assert reader.skip_mode == "none" and reader.counters == {}
    _, reader = read(clips["b_pyramid"])
    assert reader.skip_mode == "none"


# --------------------------------------------------------------------------------------------------
# key frames only (approximate)


def test_keyframes_mode_delivers_the_first_key_frame_at_or_after_each_sample_time(clips: Clips) -> None:
    path = clips["b_pyramid"]
    packets = video_packets(path)
    key_times = sorted(at(p) for p in packets if p.is_keyframe)
    gate = FpsGate(1.0, 25.0)
    expected = [t for t in key_times if gate.keep(t)]
    everything = {f.t: f.image for f in read(path, skip="none", audio=False)[0] if isinstance(f, VideoFrame)}
    got, reader = read(path, fps=1.0, skip="keyframes", audio=False)
    frames = [f for f in got if isinstance(f, VideoFrame)]
    assert [f.t for f in frames] == expected and len(expected) == 4
    for f in frames:
        assert np.array_equal(f.image, everything[f.t])
    assert reader.counters["frames_decoded"] == len(key_times)
    assert reader.counters["frames_skipped"] == len(packets) - len(key_times)


def test_bad_decode_settings_are_named() -> None:
    with pytest.raises(SourceError, match="skip='sometimes'"):
        open_reader("clip.mp4", stream="s", skip="sometimes")


# --------------------------------------------------------------------------------------------------
# corrupt data


def corrupt(src: Path, dst: Path, packets: list[av.Packet], keep: int) -> None:
    """A copy of ``src`` with the bytes of ``packets`` after the first ``keep`` overwritten."""
    shutil.copy(src, dst)
    rng = random.Random(7)
    with open(dst, "r+b") as f:
        for p in packets:
            assert p.pos is not None  # where the packet lies in the file
            f.seek(p.pos + keep)
            f.write(bytes(rng.randrange(256) for _ in range(p.size - keep)))


def test_corrupt_frames_that_are_skipped_are_never_decoded(clips: Clips, tmp_path: Path) -> None:
    path = clips["b_pyramid"]
    clean, _ = read(path, fps=4.0)
    kept = {i.t for i in clean if isinstance(i, VideoFrame)}
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.codec_context.skip_frame = "NONREF"
        references = {pts(f) for f in c.decode(vs)}
    # non-reference frames in the middle that the rate does not keep (their NAL headers intact)
    victims = [p for p in video_packets(path) if p.pts not in references and 3.0 < at(p) < 5.0
               and at(p) not in kept]
    assert len(victims) >= 5
    bad = tmp_path / "bad.mp4"
    corrupt(path, bad, victims, keep=6)
    got, reader = read(bad, fps=4.0)
    assert_same_items(got, clean)  # as if the file were intact
    assert reader.counters["frames_skipped"] >= len(victims)
    # the damage is real: decoded, the victims differ from the intact frames or do not come out at all
    # (whether it also spreads into kept frames depends on the FFmpeg build's error concealment)
    assert decoded_images(bad, victims) != decoded_images(path, victims)


def decoded_images(path: Path, packets: list[av.Packet]) -> dict[int, bytes]:
    """The pixels of the frames of ``packets``, decoded in full, by pts."""
    wanted = {pts(p) for p in packets}
    images: dict[int, bytes] = {}
    with av.open(str(path)) as c:
        for packet in c.demux(c.streams.video[0]):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:  # a damaged packet the decoder refuses
                continue
            images.update((pts(f), f.to_ndarray(format="rgb24").tobytes()) for f in frames if f.pts in wanted)
    return images


def test_corrupt_packets_in_a_skipped_region_are_handled_like_other_decode_errors(
        clips: Clips, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = clips["b_pyramid"]
    # a key frame and what follows it: frames are kept there, and others skipped around them
    victims = [p for p in video_packets(path) if 4.0 <= at(p) < 4.8]
    for keep, name in ((6, "payload"), (0, "headers")):
        bad = tmp_path / f"bad-{name}.mp4"
        corrupt(path, bad, victims, keep=keep)
        want, _ = read(bad, fps=4.0, skip="none")
        with caplog.at_level(logging.WARNING, logger="avstream.capture"):
            caplog.clear()
            got, _ = read(bad, fps=4.0)
        frames = [f for f in got if isinstance(f, VideoFrame)]
        assert frames[-1].t > 7.5  # decoding went on to the end
        # from the next key frame (6 s) on, nothing differs
        assert_same_items([i for i in got if i.t >= 6.0], [i for i in want if i.t >= 6.0])
        assert any("decoding every frame from here" in r.getMessage() for r in caplog.records), name


# --------------------------------------------------------------------------------------------------
# threading: slices per frame


@pytest.mark.parametrize("ext", ["mp4", "ts"])  # length-prefixed NAL units, Annex B start codes
def test_slices_per_frame_are_counted_in_the_first_packet(tmp_path: Path, ext: str) -> None:
    for codec, params, slices in (("libx264", ["-x264-params", "slices=4"], 4), ("libx264", [], 1),
                                  ("libx265", ["-x265-params", "slices=2:log-level=error"], 2)):
        path = tmp_path / f"{codec}{slices}.{ext}"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "0.4", "-pix_fmt", "yuv420p",
               "-c:v", codec, "-preset", "ultrafast", *params, str(path))
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            first = next(p for p in c.demux(vs) if p.size)
            data, name, extra = bytes(first), vs.codec_context.name, vs.codec_context.extradata
            assert slices_in(data, name, extra) == slices, (codec, ext)
            assert resets_order(data, name, extra)  # the first key frame is an IDR


def test_live_threading_is_ffmpegs_choice_unless_set_and_keyframes_mode_works_live(tmp_path: Path) -> None:
    from avstream.engine.capture.network import NetworkReader
    from tests.live.servers import ffmpeg_server, sync_inputs

    for params, threading, want, skip in (("slices=4", "auto", "frame", "auto"), ("slices=4", "slice", "slice", "auto"),
                                          ("sliced-threads=0:slices=1", "auto", "frame", "keyframes")):
        encode = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-x264-params", params,
                  "-g", "25", "-pix_fmt", "yuv420p", "-an"]
        server, url = ffmpeg_server("tcp", tmp_path, inputs=sync_inputs()[:5], encode=encode)
        server.start()
        try:
            reader = NetworkReader(url, stream="s", audio=False, fps=5.0, skip=skip, threading=threading)
            times: list[float] = []
            for item in reader.read():
                if isinstance(item, VideoFrame):
                    times.append(item.t)
                    if len(times) >= 3:
                        break
            reader.close()
            assert reader.decode_threading == want
            assert reader.stats()["decode_threading"] == want
            slices = reader.stats()["slices_per_frame"]
            assert slices > 1 if params == "slices=4" else slices == 1, (params, slices)
            if skip == "keyframes":  # one key frame a second (-g 25): only those come
                assert min(np.diff(times)) > 0.9, times
                assert reader.counters["frames_skipped"] >= 40
            else:
                assert max(np.diff(times)) < 0.5, times
        finally:
            server.stop()


# --------------------------------------------------------------------------------------------------
# what `avstream graph` shows


def test_graph_shows_skip_mode_rate_and_threading(clips: Clips, tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"""
version: 1
name: skipgraph
streams:
  cam: {{uri: "{clips['b_pyramid']}"}}
  door: {{uri: "rtsp://10.0.0.9/stream1", skip: keyframes}}
nodes:
  w_cam: {{type: avstream/av_window@v1, inputs: [cam]}}
  w_door: {{type: avstream/av_window@v1, inputs: [door]}}
  s_cam: {{type: avstream/highlight@v1, inputs: [w_cam], params: {{model: "builtin:highlight"}}}}
  s_door: {{type: avstream/highlight@v1, inputs: [w_door], params: {{model: "builtin:highlight"}}}}
""")
    result = invoke_cli("graph", str(pipeline))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "decode: h264, keeps 4 of 25 fps; skip auto (lossless" in out
    assert "frame threading (1 slice per frame)" in out
    assert "decode: key frames only (approximate); FFmpeg's choice: frame threading where the decoder has it" in out

