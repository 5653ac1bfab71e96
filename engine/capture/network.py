"""Live network inputs: ``rtsp``, ``rtsps``, ``rtmp``, ``http(s)`` (progressive and HLS), ``srt``,
``udp``, ``tcp``.

:class:`NetworkReader` (a :class:`~avstream.engine.capture.live.LiveReader`) opens the URI with PyAV,
or with the FFmpeg command-line tool as a subprocess remuxing to NUT on a pipe where PyAV's bundled
FFmpeg lacks the protocol (SRT); both paths decode through
:class:`~avstream.engine.capture.decode.MediaDecoder` with a :class:`_LiveTimeline` per connection.
Every blocking step has a deadline: the open timeout, PyAV's read timeout, a watchdog that kills a
silent FFmpeg subprocess, and a per-track stall check. A lost connection is
retried with exponential backoff and jitter; the reader yields ``Event("stream_down")`` and
``Event("stream_up")`` around the gap, and media time continues from the wall time of the gap
(:class:`~avstream.engine.capture.avclock.StreamClock`). Credentials in URIs never reach a log line.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import numpy as np

from avstream.engine.capture.avclock import ClockFit
from avstream.engine.capture.base import RTSP_SCHEMES, AudioChunker, redact_uri, source_error
from avstream.engine.capture.decode import (
    MediaDecoder,
    Timeline,
    effective_fps,
    first_tracks,
    native_rate,
    track_kinds,
)
from avstream.engine.capture.fit import FrameFitter
from avstream.engine.capture.live import (
    LiveReader,
    LiveSettings,
    Permanent,
    Transient,
    Watchdog,
    log,
    redact_text,
)
from avstream.engine.capture.skipping import planned_mode, set_threading, slices_in, thread_type_for
from avstream.engine.items import AudioChunk, StreamInfo, VideoFrame

PYAV_LACKS = frozenset({"srt"})  # protocols missing from PyAV's wheels: read through the FFmpeg CLI
WALL_SETTLE_S = 1.0  # wall mode: arrivals of a new connection to see before timestamps are trusted


class CliInput:
    """The FFmpeg CLI reading ``url`` and remuxing its first video/audio track to NUT on a pipe."""

    def __init__(self, where: str, input_args: list[str], url: str):
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise Permanent("this input needs the FFmpeg command-line tool (e.g. apt-get install ffmpeg)")
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", *input_args, "-i", url,
               "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy", "-flush_packets", "1", "-f", "nut", "pipe:1"]
        self.where = where
        # unbuffered: PyAV's reads must return what has arrived, not wait for a full buffer
        self.proc = subprocess.Popen(_dies_with_parent(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.errors: collections.deque[str] = collections.deque(maxlen=5)
        threading.Thread(target=self._pump_stderr, name="ffmpeg-stderr", daemon=True).start()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = redact_text(raw.decode("utf-8", "replace").strip())
            if line:
                self.errors.append(line)

    def reason(self, default: str) -> str:
        """FFmpeg's last error line, without the ``[proto @ 0x...]`` prefix."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
        for line in reversed(self.errors):
            text = re.sub(r"^\[[^\]]*\]\s*", "", line)  # "[srt @ 0x...] "
            text = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://\S*:\s+", "", text)  # "URL: " (the caller names it)
            if text:
                return text
        return default

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


def _dies_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it gets SIGKILL when the thread that started it ends (no orphan FFmpeg), by
    util-linux's ``setpriv`` where there is one. Not a ``preexec_fn``: Python code in the forked child
    of a threaded process can wait forever on a lock that another thread held at the fork (the dynamic
    loader's, for one), and without it the child runs no Python at all. (``setpriv`` sets the signal
    after the spawn returns: a thread that ended within that millisecond would not be noticed; reader
    threads live as long as their FFmpeg.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def check_net_uri(uri: str) -> str | None:
    """A problem with a network URI found without connecting (no host, bad port)."""
    parts = urllib.parse.urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        return "bad port number"
    if parts.scheme == "udp" and port:
        return None  # udp://@:1234 listens on any address
    if not parts.hostname:
        return "no host name in the URI"
    if parts.scheme in ("udp", "tcp", "srt") and not port:
        return f"{parts.scheme}:// needs a port (e.g. {parts.scheme}://host:1234)"
    return None


class NetworkReader(LiveReader):
    """A live stream from a URL, through PyAV or the FFmpeg CLI (``settings.backend``).

    ``skip``: only ``keyframes`` applies to live inputs (see :mod:`~avstream.engine.capture.skipping`);
    ``threading``: ``auto`` leaves it to FFmpeg (frame threading where the decoder has it); the
    slices per frame of the first video packet of each connection are shown in the status.
    """

    skip = "none"
    threading_mode = "auto"
    decode_threading = ""  # what the decoder of the current connection uses: "frame" or "slice"
    slices_per_frame = 0  # counted in the connection's first video packet (0: not H.264/HEVC)
    slices_counted = False

    def __init__(self, uri: str, *, stream: str, video: bool = True, audio: bool = True, fps: float = 0.0,
                 sample_rate: int = 16000, audio_chunk_s: float = 0.04, options: dict[str, Any] | None = None,
                 live: LiveSettings | None = None, skip: str = "auto", threading: str = "auto",
                 fitter: FrameFitter | None = None, **_: Any):
        super().__init__(uri, stream=stream, video=video, audio=audio, fps=fps, sample_rate=sample_rate,
                         audio_chunk_s=audio_chunk_s, settings=live, fitter=fitter)
        problem = check_net_uri(uri)
        if problem:
            raise source_error(stream, uri, problem)
        if not (video or audio):
            raise source_error(stream, uri, "no usable track (neither video nor audio wanted)")
        self.scheme = urllib.parse.urlsplit(uri).scheme.lower()
        self.options = {str(k): str(v) for k, v in (options or {}).items()}
        backend = self.settings.backend
        self.use_cli = backend == "ffmpeg" or (backend == "auto" and self.scheme in PYAV_LACKS)
        self.pts_is_wall = False  # device timestamps that are already capture wall time
        self.skip, self.threading_mode = skip, threading
        self._init_decoding()

    def _init_decoding(self) -> None:
        """State that outlives a connection: the frame size, the last video time, warnings given."""
        self._size: tuple[int, int] | None = None
        self._last_vt = -1e18
        self._warned: set[str] = set()

    # --- opening ---
    def pyav_options(self) -> dict[str, str]:
        s = self.settings
        us = str(int(s.stall_timeout * 1e6))
        opts = {"rw_timeout": us, "analyzeduration": "2000000"}
        if self.scheme in RTSP_SCHEMES:
            if s.rtsp_transport != "auto":
                opts["rtsp_transport"] = s.rtsp_transport
            opts["timeout"] = us
        elif self.scheme in ("tcp", "udp"):
            opts["timeout"] = us
        if self.scheme == "udp":
            opts.update(overrun_nonfatal="1", fifo_size="100000")
        opts.update(self.options)
        return opts

    def cli_input(self) -> tuple[list[str], str]:
        """FFmpeg CLI input options and URL."""
        args = ["-rw_timeout", str(int(self.settings.stall_timeout * 1e6)), "-analyzeduration", "2000000"]
        if self.scheme in RTSP_SCHEMES and self.settings.rtsp_transport != "auto":
            args += ["-rtsp_transport", self.settings.rtsp_transport]
        for k, v in self.options.items():
            args += [f"-{k}", v]
        return args, self.uri

    def _run(self) -> None:
        self.reconnect_loop(self._connect_once, permanent_first=self.permanent_first())

    def permanent_first(self) -> bool:
        return False

    def _connect_once(self) -> bool:
        import av

        s = self.settings
        if not self.use_cli:
            try:
                container = av.open(self.uri, options=self.pyav_options(), timeout=(s.open_timeout, s.stall_timeout))
            except av.error.ProtocolNotFoundError:
                if s.backend == "auto" and shutil.which("ffmpeg"):
                    self.use_cli = True  # PyAV's FFmpeg lacks it: the CLI may have it
                    log.info("%s: PyAV lacks this protocol; reading through the FFmpeg CLI", self.where())
                    return self._connect_once()
                raise
            try:
                return self._decode(container, None)
            finally:
                container.close()
        args, url = self.cli_input()
        cli = self._cli = CliInput(self.where(), args, url)
        dog = Watchdog(s.open_timeout + 2.0, cli.kill)  # connect, then up to 2 s of probing
        try:
            try:
                container = av.open(cli.proc.stdout, format="nut", mode="r")
            except (av.FFmpegError, OSError) as exc:
                why = "timed out" if dog.expired else str(getattr(exc, "strerror", None) or exc)
                raise self.cli_error(cli.reason(why)) from None
            dog.feed(s.stall_timeout)
            try:
                delivered = self._decode(container, dog)
            except av.FFmpegError as exc:
                raise self.cli_error(cli.reason(str(exc))) from None
            finally:
                container.close()
            if dog.expired:
                self.count("stalls")
                raise Transient(f"no data for {s.stall_timeout:g} s")
            code = cli.proc.poll()
            if code not in (None, 0):
                raise self.cli_error(cli.reason(f"ffmpeg exited with code {code}"))
            return delivered
        finally:
            dog.stop()
            cli.kill()

    def close(self) -> None:
        cli = getattr(self, "_cli", None)
        self._stop.set()
        if cli is not None:
            cli.kill()  # unblocks a read on its pipe at once
        super().close()

    def cli_error(self, reason: str) -> Exception:
        low = reason.lower()
        if "401" in low or "unauthorized" in low:
            return Permanent("authentication failed (401 Unauthorized): check the user name and password")
        if "refused" in low:
            return Transient("connection refused (is the server running?)")
        return Transient(reason)

    # --- decoding, shared by both paths ---
    def _decode(self, container: Any, dog: Watchdog | None) -> bool:
        """Decode one connection into the hand-over queue; True when it delivered media."""
        vs, aus = first_tracks(container, self.want_video, self.want_audio)
        if vs is None and aus is None:
            wanted = " or ".join(k for k, on in (("video", self.want_video), ("audio", self.want_audio)) if on)
            raise Permanent(f"no {wanted} track in the stream (it has {track_kinds(container)})")
        native = self._setup_video(vs)
        w, h = self._size or (0, 0)
        self.announce(StreamInfo(self.stream, has_video=vs is not None, has_audio=aus is not None,
                                 fps=effective_fps(self.fps, native) if vs is not None else 0.0,
                                 width=w if vs is not None else 0, height=h if vs is not None else 0,
                                 sample_rate=self.rate if aus is not None else 0, uri=redact_uri(self.uri)))
        # frames on the grid of their own rate; in a stream of its own, audio starts with the video
        self.clock.grid = 1.0 / native if vs is not None and 0 < native <= 240 else 0.0
        self.clock.video_first = vs is not None and aus is not None and self.wall is None
        timeline = _LiveTimeline(self, vs, dog)
        skip = planned_mode(self.skip, live=True, codec=vs.codec_context.name if vs is not None else "",
                            subsampling=True)
        decoder = MediaDecoder(container, vs, aus, timeline, stream=self.stream, fps=self.fps, native=native,
                               sample_rate=self.rate, skip=skip, count=self.count, fitter=self.fitter)
        decoder.preview = self.preview  # live: only frames delivered anyway go to the preview
        for item in decoder.packets():
            self._deliver(item)
        for chunk in decoder.finish():
            self._deliver(chunk)
        return timeline.delivered

    def _setup_video(self, vs: Any | None) -> float:
        """Decoder threads; the first connection's frame size is kept for the whole run. The native rate."""
        self.decode_threading, self.slices_per_frame, self.slices_counted = "", 0, False
        if vs is None:
            return 0.0
        self.decode_threading = set_threading(vs, thread_type_for(self.threading_mode, live=True))
        if self.settings.decode_threads:
            vs.codec_context.thread_count = self.settings.decode_threads
        size = (vs.codec_context.width, vs.codec_context.height)
        if self._size is None and size[0] > 0:
            self._size = size
        return native_rate(vs)

    def count_slices(self, vs: Any, packet: Any) -> None:
        """The slices per frame of the connection's first video packet, for the status: they tell
        whether ``decode_threading: slice`` could use more than one core."""
        self.slices_counted = True
        self.slices_per_frame = slices_in(bytes(packet), vs.codec_context.name, vs.codec_context.extradata)
        log.info("%s: %d slice%s per frame, %s threading", self.where(), self.slices_per_frame,
                 "s" * (self.slices_per_frame != 1), self.decode_threading)

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.decode_threading:
            out["decode_threading"] = self.decode_threading
        if self.slices_per_frame:
            out["slices_per_frame"] = self.slices_per_frame
        return out

    def _deliver(self, item: VideoFrame | AudioChunk) -> None:
        """Into the hand-over queue; the next connection continues media time after it."""
        self.clock.note_end(item.t_end if isinstance(item, AudioChunk) else item.t, item.wall)
        self.put(item)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self.where(), message)


class _LiveTimeline(Timeline):
    """One connection of a live stream around :class:`MediaDecoder`.

    Timestamps go through the reader's stream clock (and, in wall mode, to capture wall time);
    frames out of order or while decoding lags behind real time are dropped (counted); a track that
    stops delivering packets, or whose packets stop decoding, for ``stall_timeout`` ends the
    connection; each packet feeds the watchdog of an FFmpeg subprocess.
    """

    max_bad_packets = 50
    drains_resampler = False  # the connection's tail is not waited for

    def __init__(self, reader: NetworkReader, video: Any | None, dog: Watchdog | None):
        self.reader, self.dog = reader, dog
        self.video: Any = video  # only read for video frames, which come only with a video track
        self.stall_s = reader.settings.stall_timeout
        self.max_lag = reader.settings.max_lag
        self.fits = {"video": _WallTrack(), "audio": _WallTrack()}
        self.lag = _LagMeter()
        self.skipping = False
        self.delivered = False
        self.chunker: AudioChunker | None = None
        self.audio_samples = 0  # this connection's, the clock of audio without timestamps
        self.now = 0.0
        self.last_packet: dict[str, float] = {}
        self.last_frame: dict[str, float] = {}  # per track: when a packet last decoded to a frame

    def packet(self, kind: str, packet: Any) -> bool:
        if self.reader._stop.is_set():
            return False
        self.now = now = time.monotonic()
        if self.dog is not None:
            self.dog.feed()
        if packet.size:
            if kind == "video" and not self.reader.slices_counted:
                self.reader.count_slices(self.video, packet)
            self.last_packet[kind] = now
            for other, seen in self.last_packet.items():
                if now - seen > self.stall_s:
                    self.reader.count("stalls")
                    raise Transient(f"no {other} packets for {self.stall_s:g} s (track stopped or changed codec)")
            if kind in self.last_frame and now - self.last_frame[kind] > self.stall_s:
                self.reader.count("stalls")
                raise Transient(f"{kind} packets arrive but have not decoded for {self.stall_s:g} s "
                                "(the codec may have changed)")
        return True

    def decoded(self, kind: str) -> None:
        self.last_frame[kind] = self.now

    def undecodable(self, exc: Exception) -> Exception:
        return Transient(f"undecodable data ({getattr(exc, 'strerror', None) or exc})")

    def video_time(self, frame: Any, packet: Any, wall: float) -> float | None:
        reader = self.reader
        if frame.time is None and packet.pts is None:
            # No time at all (RTSP's first frame, before RTCP): taking 0 would misplace the stream's
            # frame grid, which the first frame sets.
            reader.count("frames_without_timestamp")
            return None
        pts = frame.time if frame.time is not None else packet.pts * float(self.video.time_base or 0)
        x = reader.clock.map("video", pts, wall)
        assert x is not None  # video is never held back
        t = self.to_media("video", x, pts, wall)
        if t is None:
            return None
        if t <= reader._last_vt or t < reader.clock.start:
            reader.count("frames_out_of_order")
            return None
        if self.lagging(wall, t):
            reader.count("frames_dropped_lag")
            return None
        return t

    def lagging(self, wall: float, t: float) -> bool:
        """Decoding is too far behind real time: drop frames, and decode key frames only, until it
        has caught up half the way."""
        behind = self.lag.add(wall, t)
        if behind <= self.max_lag and not self.skipping:
            return False
        if not self.skipping:
            self.reader._warn("lag", f"decoding is {behind:.1f} s behind real time: dropping frames")
        self.skipping = behind > self.max_lag / 2
        keyframes_only = self.skipping or self.reader.skip == "keyframes"
        self.video.codec_context.skip_frame = "NONKEY" if keyframes_only else "DEFAULT"
        return True

    def kept_video(self, t: float, wall: float) -> None:
        self.reader._last_vt = t
        self.reader.mark_up()
        self.delivered = True

    def video_size(self, frame: Any) -> tuple[int, int]:
        """The size of the run's first connection: a stream that changes size is scaled back to it."""
        reader = self.reader
        if reader._size is None:
            reader._size = (frame.width, frame.height)
        w, h = reader._size
        if (frame.width, frame.height) != (w, h):
            reader._warn("size", f"video size changed from {w}x{h} to {frame.width}x{frame.height}: scaling to {w}x{h}")
        return w, h

    def audio(self, samples: np.ndarray, pts: float | None, frame: Any, wall: float) -> Iterator[AudioChunk]:
        reader, rate = self.reader, self.reader.rate
        # no timestamp (raw inputs): the sample count of this connection is the clock
        apts = pts if pts is not None else self.audio_samples / rate
        self.audio_samples += len(samples)
        x = reader.clock.map("audio", apts, wall)
        if x is None:  # before this connection's first video frame
            reader.count("settling_dropped")
            return iter(())
        # the input's last sample arrived at ``wall``; the resampler may hand out older samples
        if pts is not None and frame is not None and frame.time is not None:
            back = frame.time + frame.samples / frame.sample_rate - apts
        else:
            back = len(samples) / rate
        ref = self.to_media("audio", x, apts, wall - max(0.0, back))
        if ref is None:
            return iter(())
        chunks: list[AudioChunk] = []
        self.chunker, sent = reader.clock_audio(samples, ref, self.chunker, chunks.extend)
        self.delivered = self.delivered or sent
        return iter(chunks)

    def finish(self) -> Iterator[AudioChunk]:
        return self.chunker.flush() if self.chunker is not None else iter(())

    def to_media(self, track: str, x: float, pts: float, wall: float) -> float | None:
        """Media time: the stream's own timestamps, or (``wall`` mode) the capture wall clock.

        None: still settling (see :class:`_WallTrack`).
        """
        reader = self.reader
        if reader.wall is None:
            return x
        t = reader.wall.t_of(pts) if reader.pts_is_wall else self.fits[track].map(x, reader.wall.t_of(wall))
        if t is not None:
            t = reader.wall.place(track, t, reader.clock.grid)
        if t is None:
            reader.count("settling_dropped")
        return t


class _WallTrack:
    """One track's timestamps -> capture wall time, from arrival times.

    Arrival only bounds capture from above, and a new connection often starts with a backlog (the
    sender's or the prober's buffer) that drains faster than real time. Nothing is kept until the
    arrivals have run at real-time pace for ``WALL_SETTLE_S``; the fit then starts afresh.
    """

    def __init__(self) -> None:
        self.fit = ClockFit(window_s=30.0)
        self.recent: collections.deque[tuple[float, float]] = collections.deque()

    def map(self, x: float, arrival: float) -> float | None:
        if not self.fit.settled:
            self.recent.append((arrival, x))
            while arrival - self.recent[0][0] > WALL_SETTLE_S:
                self.recent.popleft()
            w0, x0 = self.recent[0]
            span = arrival - w0
            if span < 0.8 * WALL_SETTLE_S or abs((x - x0) - span) > 0.1 * span:
                return None
            self.fit.reset()
            self.fit.settled = True
            for w, xx in self.recent:
                self.fit.add(xx, w)
        self.fit.add(x, arrival)
        return self.fit.map(x)


class _LagMeter:
    """How far decoding is behind the source: (wall - media time) now versus its minimum.

    The minimum over the last 10 s (not the whole run) keeps bursty inputs such as HLS, which
    deliver a segment at once, from reading as lag; a steady slowdown still shows within 10 s.
    """

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self.base = float("inf")
        self.recent: collections.deque[tuple[float, float]] = collections.deque()

    def add(self, wall: float, t: float) -> float:
        d = wall - t
        self.base = min(self.base, d)
        self.recent.append((wall, d))
        while self.recent and wall - self.recent[0][0] > self.window_s:
            self.recent.popleft()
        return min(v for _, v in self.recent) - self.base if len(self.recent) > 5 else 0.0
