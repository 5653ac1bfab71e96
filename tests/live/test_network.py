"""Network streams from real servers on 127.0.0.1, read by the real source node, windowed by the real
window node: A/V sync for every URI kind, reconnects across server restarts, bad input."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from avstream.engine.errors import SourceError
from avstream.engine.items import Item, VideoFrame
from tests.live.helpers import FPS, LiveRun, Record
from tests.live.servers import Server, ffmpeg_server, rtsp_server, sync_inputs, wait_until

pytestmark = pytest.mark.timeout(60)  # a test's own mark overrides this
FRAME = 1.0 / FPS
WARMUP_S = 3.0
NET_KINDS = ["tcp", "udp", "http", "https", "rtmp", "srt", "hls"]
RTSP_KINDS = {"rtsp-tcp": ("tcp", False), "rtsp-udp": ("udp", False), "rtsps": ("tcp", True)}


def _start(kind: str, clip: Path, folder: Path, servers: list[Server]) -> tuple[Server, dict[str, object]]:
    if kind in RTSP_KINDS:
        transport, tls = RTSP_KINDS[kind]
        srv, url = rtsp_server(clip, folder, tls=tls)
        params: dict[str, object] = {"uri": url, "rtsp_transport": transport}
    else:
        srv, url = ffmpeg_server(kind, folder)
        params = {"uri": url}
    servers.append(srv)
    srv.start()
    return srv, params


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_av_sync_of_every_uri_kind(clip: Path, live_dir: Path, servers: list[Server]) -> None:
    """A clip with a flash and a beep at every whole second, as a file and as each network stream
    kind at once: after a warm-up, every window pairs each beep with its flash within one frame."""
    runs = {"file": LiveRun({"uri": str(clip), "realtime": False})}
    for kind in [*NET_KINDS, *RTSP_KINDS]:
        _, params = _start(kind, clip, live_dir, servers)
        runs[kind] = LiveRun(params)
    try:
        for kind, run in runs.items():
            run.wait(lambda r: len(r.windows) >= 1, 30, f"{kind}: a first window")
        for kind, run in runs.items():
            first = run.rec.windows[0][0]

            def warmed_up(r: Record, first: float = first) -> bool:
                return sum(1 for w in r.windows if w[0] >= first + WARMUP_S) >= 4

            run.wait(warmed_up, 30, f"{kind}: windows after the warm-up")
        for kind, run in runs.items():
            offsets = run.offsets_after(run.rec.windows[0][0] + WARMUP_S)
            assert len(offsets) >= 4, f"{kind}: too few flash/beep pairs: {offsets}"
            worst = max(abs(o) for o in offsets)
            assert worst <= FRAME + 1e-3, f"{kind}: beep-flash offsets {np.round(offsets, 3)} exceed one frame"
            if kind != "file":  # live readers put frames on the window grid: what is left is the real A/V error
                assert float(np.median(np.abs(offsets))) < 0.01, f"{kind}: {np.round(offsets, 3)}"
            info = run.rec.info[0]
            assert info.has_video and info.has_audio and (info.width, info.height) == (320, 240), kind
            if kind != "file":
                assert run.node.status()["state"] == "up", kind
                assert "av_skew_ms" in run.node.status()
    finally:
        for run in runs.values():
            run.stop()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_servers_killed_and_restarted_streams_resume(clip: Path, live_dir: Path, servers: list[Server]) -> None:
    """Kill each server in the middle of a run: stream_down within the stall timeout, reconnect
    attempts with backoff, stream_up after the restart, and media time that stays monotonic and
    continues from the wall time of the gap."""
    kinds = ["rtsp-tcp", "srt", "udp", "http"]
    started = {k: _start(k, clip, live_dir, servers) for k in kinds}
    runs = {k: LiveRun({**p, "stall_timeout": 1.5, "open_timeout": 2.0, "backoff_initial": 0.2, "backoff_max": 1.0})
            for k, (_, p) in started.items()}
    try:
        for k, run in runs.items():
            run.wait(lambda r: len(r.windows) >= 2, 30, f"{k}: windows before the kill")
        killed_at = time.time()
        t_before = {k: run.rec.video_t[-1] for k, run in runs.items()}
        for srv, _ in started.values():
            srv.kill()
        for k, run in runs.items():
            run.wait(lambda r: any(e.name == "stream_down" for e in r.events), 15, f"{k}: stream_down")
            down = run.events("stream_down")[0]
            assert down.detail["uri"] and down.detail["error"], down
            assert run.node.status()["state"] in ("down", "connecting")
        assert time.time() - killed_at < 10
        for srv, _ in started.values():
            srv.start()
        for k, run in runs.items():
            run.wait(lambda r: any(e.name == "stream_up" for e in r.events), 30, f"{k}: stream_up")
            n = len(run.rec.windows)

            def restarted(r: Record, n: int = n) -> bool:
                return len(r.windows) >= n + 2

            run.wait(restarted, 30, f"{k}: windows after the restart")
        for k, run in runs.items():
            vt = run.rec.video_t
            assert all(b > a for a, b in zip(vt, vt[1:], strict=False)), f"{k}: video time went backwards"
            at = run.rec.audio_t
            assert all(b[0] >= a[1] - 1e-6 for a, b in zip(at, at[1:], strict=False)), f"{k}: audio overlaps"
            # the outage: media time jumps over it by the wall time it lasted
            i = int(np.argmax(np.diff(vt)))
            gap_media, gap_wall = vt[i + 1] - vt[i], run.rec.video_wall[i + 1] - run.rec.video_wall[i]
            assert vt[i] >= t_before[k] - 1.0 and gap_media > 1.0, (k, vt[i], t_before[k], gap_media)
            assert abs(gap_media - gap_wall) < 1.0, (k, gap_media, gap_wall)
            assert gap_wall < time.time() - killed_at
            st = run.node.status()
            assert st["state"] == "up" and st.get("reconnects", 0) >= 1, (k, st)
            assert [e.name for e in run.rec.events if e.name.startswith("stream_")][:2] == ["stream_down", "stream_up"]
    finally:
        for run in runs.values():
            run.stop()


@pytest.mark.timeout(60)
def test_unreachable_host_retries_with_backoff_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        run = LiveRun({"uri": f"rtsp://admin:hunter2@127.0.0.1:{port}/cam", "backoff_initial": 0.1,
                       "backoff_max": 0.4, "backoff_jitter": 0.0}, stream="door")
        try:
            with caplog.at_level(logging.INFO):
                run.wait(lambda r: bool(r.events), 10, "stream_down")
                wait_until(lambda: run.node.status().get("state") == "down" and len(
                    [r for r in caplog.records if "attempt" in r.getMessage()]) >= 2, 15, "two retries")
        finally:
            run.stop()
    down = run.events("stream_down")
    assert len(down) == 1 and "refused" in down[0].detail["error"]
    assert down[0].detail["uri"] == f"rtsp://admin:***@127.0.0.1:{port}/cam"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "hunter2" not in text and "'door'" in text and "Traceback" not in text


@pytest.mark.timeout(60)
def test_a_silent_server_never_hangs_the_reader() -> None:
    """A server that accepts and then sends nothing: the open times out, the stream is down, and
    stopping the node returns promptly."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        run = LiveRun({"uri": f"tcp://127.0.0.1:{port}", "open_timeout": 1.0, "stall_timeout": 1.0,
                       "backoff_initial": 0.2})
        try:
            run.wait(lambda r: bool(r.events), 15, "stream_down of a silent server")
        finally:
            t = time.monotonic()
            run.stop()
            assert time.monotonic() - t < 5
    assert "timed out" in run.events("stream_down")[0].detail["error"]


@pytest.mark.timeout(60)
def test_401_is_a_clear_final_error_without_the_password(clip: Path, live_dir: Path, servers: list[Server],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    srv, url = rtsp_server(clip, live_dir, auth="viewer:s3cret")
    servers.append(srv.start())
    bad = url.replace("rtsp://", "rtsp://viewer:wrong@")
    with caplog.at_level(logging.INFO):
        run = LiveRun({"uri": bad}, stream="gate")
        run.wait_done(30)
    assert isinstance(run.error, SourceError)
    msg = str(run.error)
    assert "'gate'" in msg and "401" in msg and "wrong" not in msg and "viewer:***@" in msg and "\n" not in msg
    good = LiveRun({"uri": url.replace("rtsp://", "rtsp://viewer:s3cret@")}, stream="gate")
    try:
        good.wait(lambda r: len(r.video_t) > 10, 30, "video with the right password")
        assert good.rec.info[0].uri.startswith("rtsp://viewer:***@")
    finally:
        good.stop()
    assert not any("s3cret" in r.getMessage() or "wrong" in r.getMessage() for r in caplog.records)


def _serve_bytes(data: bytes, seconds: float = 0.0, chunk: int = 188 * 40) -> tuple[int, threading.Event]:
    """A TCP server (a real socket, in a thread) sending ``data``. With ``seconds`` it behaves like a
    live broadcast: paced over that many seconds, and a client that reconnects gets the bytes of the
    moment, not the start again."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    done = threading.Event()
    pos = [0]

    def serve() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                if not seconds:
                    pos[0] = 0
                rate = len(data) / seconds if seconds else 0.0
                try:
                    while pos[0] < len(data) and not done.is_set():
                        conn.sendall(data[pos[0]:pos[0] + chunk])
                        pos[0] += chunk
                        if rate:
                            done.wait(chunk / rate)  # the broadcast's own pace
                except OSError:
                    pass
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


def _encode_ts(path: Path, seconds: float, size: str, vcodec: str = "libx264", audio: bool = True) -> bytes:
    import subprocess

    w, h = size.split("x")
    inputs = sync_inputs(int(w), int(h))
    inputs = [a for a in inputs if a != "-re"]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", *inputs[: 4 if not audio else None], "-t", str(seconds),
           "-c:v", vcodec, "-g", "25", "-pix_fmt", "yuv420p", *(["-c:a", "aac"] if audio else ["-an"]),
           "-f", "mpegts", "-y", str(path)]
    subprocess.run(cmd, check=True)
    return path.read_bytes()


@pytest.mark.timeout(60)
def test_resolution_change_mid_stream_is_scaled_with_one_warning(live_dir: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = _encode_ts(live_dir / "a.ts", 2, "320x240") + _encode_ts(live_dir / "b.ts", 2, "640x480")
    port, done = _serve_bytes(data)
    shapes: set[tuple[int, ...]] = set()

    def keep(item: Item) -> None:
        if isinstance(item, VideoFrame):
            shapes.add(item.image.shape)

    with caplog.at_level(logging.WARNING):
        run = LiveRun({"uri": f"tcp://127.0.0.1:{port}", "reconnect": False}, consume=keep)
        try:
            run.wait_done(30)
        finally:
            done.set()
    assert run.error is None, run.error
    assert shapes == {(240, 320, 3)} and len(run.rec.video_t) > 80
    changes = [r.getMessage() for r in caplog.records if "size changed" in r.getMessage()]
    assert len(changes) == 1 and "640x480" in changes[0] and "tcp://127.0.0.1" in changes[0]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_codec_change_garbage_and_missing_tracks_keep_the_reader_alive(live_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A stream whose video codec changes mid-way, a server that sends garbage, a stream without
    audio: each is reported in one clear line naming the stream and URI, none raises."""
    mixed = _encode_ts(live_dir / "h264.ts", 3, "320x240", audio=False) + _encode_ts(
        live_dir / "mpeg2.ts", 6, "320x240", vcodec="mpeg2video", audio=False)
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    video_only = _encode_ts(live_dir / "v.ts", 3, "320x240", audio=False)
    ports = {}
    stops = []
    for name, data, live in (("mixed", mixed, 9.0), ("garbage", garbage, 0.0), ("video_only", video_only, 0.0)):
        ports[name], done = _serve_bytes(data, live)
        stops.append(done)
    quick = {"stall_timeout": 1.0, "open_timeout": 2.0, "backoff_initial": 0.2, "backoff_max": 0.5}
    with caplog.at_level(logging.INFO):
        runs = {name: LiveRun({"uri": f"tcp://127.0.0.1:{p}", **quick}, stream=name) for name, p in ports.items()}
        try:
            runs["garbage"].wait(lambda r: bool(r.events), 30, "garbage reported")
            runs["video_only"].wait(lambda r: len(r.windows) >= 1, 30, "video-only windows")
            runs["mixed"].wait(lambda r: [e.name for e in r.events] == ["stream_down", "stream_up"], 30,
                               "a reconnect at the codec change")
            n = len(runs["mixed"].rec.video_t)
            runs["mixed"].wait(lambda r: len(r.video_t) > n + 25, 30, "MPEG-2 video after the change")
        finally:
            for r in runs.values():
                r.stop()
            for d in stops:
                d.set()
    for r in runs.values():
        assert r.error is None, r.error
    assert "not a media stream" in runs["garbage"].events("stream_down")[0].detail["error"]
    vo = runs["video_only"].rec
    assert vo.info[0].has_video and not vo.info[0].has_audio and not vo.audio_t
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("'garbage'" in m and f"tcp://127.0.0.1:{ports['garbage']}" in m for m in lines)
    assert any("'mixed'" in m and "codec" in m for m in lines), lines


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_slow_consumer_gets_fresh_frames_and_counted_drops(live_dir: Path, servers: list[Server]) -> None:
    """The graph is slower than the source: the reader drops its oldest media (counted) instead of
    letting the lag grow."""
    srv, url = ffmpeg_server("tcp", live_dir)
    servers.append(srv.start())
    lags: list[float] = []

    def slow(item: Item) -> None:
        if isinstance(item, VideoFrame):
            lags.append(time.time() - item.wall)
            time.sleep(0.1)  # a consumer that takes 100 ms per frame (the source sends one per 40 ms)

    run = LiveRun({"uri": url}, windows=False, consume=slow)
    try:
        run.wait(lambda r: len(r.video_t) >= 45, 40, "45 frames through the slow consumer")
    finally:
        run.stop()
    drops = run.node.ctx.counters.get("capture_drops", 0)
    assert drops > 15, run.node.ctx.counters
    assert max(lags[-20:]) < 4.0, f"lag grew to {max(lags):.1f} s"


def test_validation_names_the_problem_of_each_live_uri(tmp_path: Path) -> None:
    from avstream.engine.node import CheckContext
    from avstream.plugins.sources import FileSource, SourceParams

    ctx = CheckContext(node_id="cam", base_dir=tmp_path)
    cases = {
        "tcp://127.0.0.1": "needs a port",
        "rtsp:///live": "no host",
        "srt://host:99999": "bad port",
        "v4l2://dev/video0": "device path",
        "v4l2:///dev/video0?size=big": "bad size",
        "mic://": "give a device",
    }
    for uri, why in cases.items():
        problems = dict(FileSource.check(SourceParams(uri=uri), ctx))
        assert why in problems.get("uri", ""), (uri, problems)
    for ok in ("rtsp://user:pw@cam.local/stream", "udp://@:5000", "srt://host:9000?mode=caller",
               "https://example.org/live.m3u8", "v4l2:///dev/video0?format=mjpeg&size=1280x720&fps=30", "mic://2"):
        assert FileSource.check(SourceParams(uri=ok), ctx) == [], ok
    (tmp_path / "clip.mp4").write_bytes(b"x")
    mixed = dict(FileSource.check(SourceParams(video="clip.mp4", audio="mic://default"), ctx))
    assert "live input" in mixed["audio"]
    assert FileSource.check(SourceParams(video="v4l2:///dev/video0", audio="mic://default"), ctx) == []
