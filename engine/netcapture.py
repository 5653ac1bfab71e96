"""Live network inputs: ``rtsp``, ``rtsps``, ``rtmp``, ``http(s)`` (progressive and HLS), ``srt``,
``udp``, ``tcp``.

A :class:`LiveReader` runs its capture in a thread of its own and hands items over through a
bounded queue that drops the oldest media when the consumer falls behind (counted, never lagging).
:class:`NetworkReader` opens the URI with PyAV, or with the FFmpeg command-line tool as a subprocess
remuxing to NUT on a pipe where PyAV's bundled FFmpeg lacks the protocol (SRT); both paths share the
decoding below. Every blocking step has a deadline: the open timeout, PyAV's read timeout, a
watchdog that kills a silent FFmpeg subprocess, and a per-track stall check. A lost connection is
retried with exponential backoff and jitter; the reader yields ``Event("stream_down")`` and
``Event("stream_up")`` around the gap, and media time continues from the wall time of the gap
(:class:`~avstream.engine.avclock.StreamClock`). Credentials in URIs never reach a log line.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .avclock import AudioClock, ClockFit, StreamClock
from .capture import AudioChunker, FpsGate, MediaReader, redact_uri, source_error
from .errors import SourceError
from .items import AudioChunk, Event, StreamInfo, VideoFrame

log = logging.getLogger("avstream.capture.live")

NET_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp")
PYAV_LACKS = frozenset({"srt"})  # protocols missing from PyAV's wheels: read through the FFmpeg CLI
LiveItem = VideoFrame | AudioChunk | StreamInfo | Event


@dataclass(frozen=True)
class LiveSettings:
    """Settings of live readers (the source node's params of the same names)."""

    rtsp_transport: str = "tcp"
    open_timeout: float = 10.0
    stall_timeout: float = 5.0
    reconnect: bool = True
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.25
    max_reconnects: int = 0
    backend: str = "auto"
    max_lag: float = 2.0
    clock: str = "auto"
    decode_threads: int = 0
    capture_format: str = ""
    capture_size: str = ""
    capture_fps: float = 0.0
    camera_backend: str = "auto"
    mic_channels: int = 1
    mic_rate: int = 0
    mic_buffer: float = 2.0


class WallClock:
    """Media time from capture wall time, shared by the readers of one stream (camera + microphone)."""

    def __init__(self, start: float = 0.0):
        self.start = start
        self.origin: float | None = None
        self._lock = threading.Lock()

    def t_of(self, wall: float) -> float:
        with self._lock:
            if self.origin is None:
                self.origin = wall
        return self.start + wall - self.origin


class Permanent(Exception):
    """A failure that retrying cannot fix (bad credentials, missing device): the stream ends."""


class Transient(Exception):
    """A failure that may go away (server down, timeout): reconnect with backoff."""


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_text(text: str) -> str:
    """``text`` (e.g. FFmpeg's stderr) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


def classify(exc: BaseException) -> Exception:
    """A Permanent or Transient with a one-line reason for an open/read failure."""
    import av

    if isinstance(exc, (Permanent, Transient)):
        return exc
    why = str(getattr(exc, "strerror", None) or exc)
    if isinstance(exc, av.error.HTTPUnauthorizedError) or "401" in why:
        return Permanent("authentication failed (401 Unauthorized): check the user name and password")
    if isinstance(exc, av.error.HTTPForbiddenError) or "403" in why:
        return Permanent("access denied by the server (403 Forbidden)")
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return Permanent(f"protocol not available in PyAV's FFmpeg ({why}); set `backend: ffmpeg`")
    if isinstance(exc, av.error.HTTPNotFoundError):
        return Transient("not found on the server (404)")
    if isinstance(exc, (ConnectionRefusedError, av.error.ConnectionRefusedError)):
        return Transient("connection refused (is the server running?)")
    if isinstance(exc, (av.error.ExitError, TimeoutError, av.error.TimeoutError)):
        return Transient("timed out waiting for the server")
    if isinstance(exc, av.error.InvalidDataError):
        return Transient("the server sent data that is not a media stream (invalid data)")
    if isinstance(exc, (EOFError, av.error.EOFError)):
        return Transient("the connection closed")
    return Transient(" ".join(why.split()) or type(exc).__name__)


class LiveQueue:
    """Bounded hand-over from a capture thread: the oldest media item goes when full; events stay."""

    def __init__(self, max_media: int, on_drop: Callable[[], None]):
        self.max_media, self.on_drop = max_media, on_drop
        self.items: collections.deque[LiveItem] = collections.deque()
        self.media = 0
        self.cond = threading.Condition()

    def put(self, item: LiveItem) -> None:
        with self.cond:
            if isinstance(item, (VideoFrame, AudioChunk)):
                if self.media >= self.max_media:
                    for i, old in enumerate(self.items):
                        if isinstance(old, VideoFrame) or (isinstance(old, AudioChunk) and isinstance(item, AudioChunk)):
                            del self.items[i]
                            self.media -= 1
                            self.on_drop()
                            break
                self.media += 1
            self.items.append(item)
            self.cond.notify()

    def get(self, timeout: float) -> LiveItem | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                return None
            item = self.items.popleft()
            if isinstance(item, (VideoFrame, AudioChunk)):
                self.media -= 1
            return item


class LiveReader(MediaReader):
    """Base of live readers: a capture thread (``_run``) feeding a :class:`LiveQueue`.

    ``read()`` yields StreamInfo (on connect, and again when it changes), media and events. A
    permanent failure is raised from ``read()`` as a SourceError naming the stream and URI.
    """

    live = True
    default_clock = "pts"

    def __init__(self, uri: str, *, stream: str, video: bool, audio: bool, fps: float, sample_rate: int,
                 audio_chunk_s: float, settings: LiveSettings | None = None):
        self.uri, self.stream = uri, stream
        self.want_video, self.want_audio = video, audio
        self.fps, self.rate = fps, sample_rate
        self.chunk = max(1, round(audio_chunk_s * sample_rate))
        self.settings = settings or LiveSettings()
        self.info = StreamInfo(stream, has_video=video, has_audio=audio, fps=fps, sample_rate=sample_rate if audio else 0,
                               uri=redact_uri(uri))
        self.clock = StreamClock()
        self.wall: WallClock | None = None  # set: timestamps map to capture wall time (pairs, devices)
        self.counters: dict[str, float] = {}
        self.state = "connecting"
        self.audio_clock = AudioClock(sample_rate)
        self._stop = threading.Event()
        self._queue = LiveQueue(48, lambda: self.count("capture_drops"))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._announced: StreamInfo | None = None
        self._down_since: float | None = None
        self.bind()

    # --- set-up by the source node ---
    def bind(self, *, start: float = 0.0, wall: WallClock | None = None,
             count: Callable[[str, float], None] | None = None) -> None:
        """Media time starts at ``start``; with ``wall`` timestamps follow capture wall time."""
        self.clock = StreamClock(start)
        mode = self.settings.clock if self.settings.clock != "auto" else ("wall" if wall else self.default_clock)
        self.wall = (wall or WallClock(start)) if mode == "wall" else None
        # capture wall times jitter: a gap must show on several blocks before it counts
        self.audio_clock = AudioClock(self.rate, resync_s=0.3 if self.wall else 0.12, confirm=4 if self.wall else 1)
        if count is not None:
            self._external_count = count

    def count(self, name: str, amount: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount
        ext = getattr(self, "_external_count", None)
        if ext is not None:
            ext(name, amount)

    def stats(self) -> dict[str, Any]:
        """Live status: connection state, A/V skew and drift, drops, reconnects."""
        out: dict[str, Any] = {"state": self.state, **{k: round(v, 3) for k, v in self.counters.items()}}
        if self.want_audio and self.audio_clock.in_pos:
            out["av_skew_ms"] = round(self.audio_clock.skew * 1000, 2)
            out["drift_ppm"] = round(self.audio_clock.drift_ppm, 1)
        return out

    def where(self) -> str:
        return f"stream {self.stream!r}: {redact_uri(self.uri)}"

    # --- the consumer side ---
    def read(self) -> Iterator[LiveItem]:  # type: ignore[override]
        self._thread = threading.Thread(target=self._guarded, name=f"capture:{self.stream}", daemon=True)
        self._thread.start()
        while True:
            item = self._queue.get(0.1)
            if item is not None:
                yield item
                continue
            if self._stop.is_set():
                return
            if not self._thread.is_alive() and not self._queue.items:
                if self._error is not None:
                    raise self._error
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _guarded(self) -> None:
        try:
            self._run()
        except Permanent as exc:
            self._error = source_error(self.stream, self.uri, str(exc))
        except SourceError as exc:
            self._error = exc
        except Exception as exc:  # a bug: keep its traceback for the worker's report
            self._error = exc
        finally:
            self.state = "stopped" if self._error is None else "failed"

    def _run(self) -> None:
        raise NotImplementedError

    # --- helpers for capture threads ---
    def put(self, item: LiveItem) -> None:
        self._queue.put(item)

    def clip_audio(self, t: float, samples: np.ndarray) -> tuple[float, np.ndarray]:
        """Audio before the start of media time (codec priming, a pair's earlier input) is cut off."""
        floor = self.clock.start
        if t >= floor or not len(samples):
            return t, samples
        cut = min(len(samples), int(np.ceil((floor - t) * self.rate - 1e-6)))
        return t + cut / self.rate, samples[cut:]

    def announce(self, info: StreamInfo) -> None:
        """Send StreamInfo when it differs from what was last announced."""
        if info != self._announced:
            self._announced = info
            self.info = info
            self.put(info)

    def backoff(self, attempt: int) -> float:
        s = self.settings
        base = min(s.backoff_max, s.backoff_initial * 2 ** max(0, attempt - 1))
        return max(0.05, base * (1.0 + random.uniform(-s.backoff_jitter, s.backoff_jitter)))

    def reconnect_loop(self, connect_once: Callable[[], bool], permanent_first: bool = False) -> None:
        """Run ``connect_once`` (True: it delivered media) until stopped, with backoff and events.

        ``permanent_first``: a failure before the first success is final (devices: missing, busy).
        """
        attempt, down_since, ever_up = 0, None, False
        s = self.settings
        while not self._stop.is_set():
            self.clock.new_connection()
            self.state = "connecting"
            up_at = time.monotonic()
            try:
                delivered = connect_once()
                reason = "the stream ended"
            except (Permanent, *_BUGS):
                raise
            except Exception as exc:  # every other failure is reported, then retried
                err = classify(exc)
                if isinstance(err, Permanent) or (permanent_first and not ever_up):
                    raise Permanent(str(err)) from None
                delivered = self.state == "up"
                reason = str(err)
            if self._stop.is_set():
                return
            if delivered:
                ever_up = True
                if time.monotonic() - up_at > 10 * s.backoff_initial:
                    attempt = 0  # it was up a while: start the backoff afresh
            if not s.reconnect:
                if delivered:
                    log.info("%s: %s; not reconnecting (reconnect: false)", self.where(), reason)
                    return
                raise Permanent(reason)
            attempt += 1
            if s.max_reconnects and attempt > s.max_reconnects:
                raise Permanent(f"{reason}; gave up after {s.max_reconnects} reconnect attempts")
            delay = self.backoff(attempt)
            self.state = "down"
            if down_since is None or delivered:
                down_since = time.monotonic()
                self.count("disconnects")
                log.warning("%s: stream down: %s; reconnecting in %.1f s", self.where(), reason, delay)
                self.put(Event("stream_down", self.stream, {"uri": redact_uri(self.uri), "error": reason,
                                                             "retry_in_s": round(delay, 2)}, t0=self.clock.last_t))
            else:
                log.info("%s: reconnect attempt %d failed: %s; next in %.1f s", self.where(), attempt, reason, delay)
            self._down_since = down_since
            self._stop.wait(delay)

    def mark_up(self) -> None:
        """First media of a connection: report ``stream_up`` if the stream was down."""
        if self.state == "up":
            return
        down_since = self._down_since
        self.state = "up"
        if down_since is not None:
            self._down_since = None
            gap = time.monotonic() - down_since
            self.count("reconnects")
            log.warning("%s: stream up again after %.1f s", self.where(), gap)
            self.put(Event("stream_up", self.stream, {"uri": redact_uri(self.uri), "down_s": round(gap, 2)},
                           t0=self.clock.last_t))


_BUGS = (TypeError, AttributeError, NameError, AssertionError, ImportError)


class Watchdog:
    """Calls ``on_expire`` once when ``feed()`` was not called for ``timeout_s`` (checked 4x a second)."""

    def __init__(self, timeout_s: float, on_expire: Callable[[], None]):
        self.timeout_s, self.on_expire = timeout_s, on_expire
        self.last = time.monotonic()
        self.expired = False
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def feed(self, timeout_s: float | None = None) -> None:
        self.last = time.monotonic()
        if timeout_s is not None:
            self.timeout_s = timeout_s

    def stop(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(0.25):
            if time.monotonic() - self.last > self.timeout_s:
                self.expired = True
                self.on_expire()
                return


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
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, preexec_fn=_die_with_parent)
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
            text = re.sub(r"^\[[^\]]*\]\s*", "", line)
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


def _die_with_parent() -> None:
    """In the FFmpeg child: get SIGKILL when the thread that started it ends (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except OSError:
        pass


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
    """A live stream from a URL, through PyAV or the FFmpeg CLI (``settings.backend``)."""

    def __init__(self, uri: str, *, stream: str, video: bool = True, audio: bool = True, fps: float = 0.0,
                 sample_rate: int = 16000, audio_chunk_s: float = 0.04, options: dict[str, Any] | None = None,
                 live: LiveSettings | None = None, **_: Any):
        super().__init__(uri, stream=stream, video=video, audio=audio, fps=fps, sample_rate=sample_rate,
                         audio_chunk_s=audio_chunk_s, settings=live)
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
        self._size: tuple[int, int] | None = None
        self._warned: set[str] = set()

    # --- opening ---
    def pyav_options(self) -> dict[str, str]:
        s = self.settings
        us = str(int(s.stall_timeout * 1e6))
        opts = {"rw_timeout": us, "analyzeduration": "2000000"}
        if self.scheme in ("rtsp", "rtsps"):
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
        if self.scheme in ("rtsp", "rtsps") and self.settings.rtsp_transport != "auto":
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
        import av

        s = self.settings
        vs = container.streams.video[0] if self.want_video and container.streams.video else None
        aus = container.streams.audio[0] if self.want_audio and container.streams.audio else None
        if vs is None and aus is None:
            has = [k for k, ss in (("video", container.streams.video), ("audio", container.streams.audio)) if ss]
            wanted = " or ".join(k for k, on in (("video", self.want_video), ("audio", self.want_audio)) if on)
            raise Permanent(f"no {wanted} track in the stream (it has {', '.join(has) or 'none'})")
        native = 0.0
        if vs is not None:
            vs.thread_type = "AUTO"
            if s.decode_threads:
                vs.codec_context.thread_count = s.decode_threads
            rate = vs.average_rate or vs.guessed_rate
            native = float(rate) if rate else 0.0
            size = (vs.codec_context.width, vs.codec_context.height)
            if self._size is None and size[0] > 0:
                self._size = size
        w, h = self._size or (0, 0)
        eff = min(self.fps, native) if self.fps > 0 and native > 0 else (self.fps or native)
        self.announce(StreamInfo(self.stream, has_video=vs is not None, has_audio=aus is not None,
                                 fps=eff if vs is not None else 0.0, width=w if vs is not None else 0,
                                 height=h if vs is not None else 0, sample_rate=self.rate if aus is not None else 0,
                                 uri=redact_uri(self.uri)))
        gate = FpsGate(self.fps, native)
        fits = {"video": ClockFit(window_s=30.0), "audio": ClockFit(window_s=30.0)}
        resampler: Any = None
        src_fmt: tuple[Any, ...] = ()
        chunker: AudioChunker | None = None
        last_packet: dict[str, float] = {}
        last_frame: dict[str, float] = {}  # per track: when a packet last decoded to a frame
        lag = _LagMeter()
        skipping = False
        bad = 0
        a_count = 0
        delivered = False
        last_vt = getattr(self, "_last_vt", -1e18)
        for packet in container.demux(*[x for x in (vs, aus) if x is not None]):
            if self._stop.is_set():
                break
            now = time.monotonic()
            kind = "video" if packet.stream is vs else "audio"
            if dog is not None:
                dog.feed()
            if packet.size:
                last_packet[kind] = now
                for other, seen in last_packet.items():
                    if now - seen > s.stall_timeout:
                        raise Transient(f"no {other} packets for {s.stall_timeout:g} s (track stopped or changed codec)")
                if kind in last_frame and now - last_frame[kind] > s.stall_timeout:
                    raise Transient(f"{kind} packets arrive but have not decoded for {s.stall_timeout:g} s "
                                    "(the codec may have changed)")
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad += 1
                if bad > 50:
                    raise Transient(f"undecodable data ({exc.strerror or exc})") from None
                continue
            bad = 0
            if frames:
                last_frame[kind] = now
            for frame in frames:
                wall = time.time()
                if isinstance(frame, av.VideoFrame):
                    assert vs is not None
                    pts = frame.time if frame.time is not None else (packet.pts or 0) * float(vs.time_base or 0)
                    x = self.clock.map("video", pts, wall)
                    t = self._to_media("video", fits, x, pts, wall)
                    if t <= last_vt or t < self.clock.start:
                        self.count("frames_out_of_order")
                        continue
                    behind = lag.add(wall, t)
                    if behind > s.max_lag or skipping:
                        if not skipping:
                            self._warn("lag", f"decoding is {behind:.1f} s behind real time: dropping frames")
                        skipping = behind > s.max_lag / 2
                        vs.codec_context.skip_frame = "NONKEY" if skipping else "DEFAULT"
                        self.count("frames_dropped_lag")
                        continue
                    if not gate.keep(t):
                        continue
                    last_vt = self._last_vt = t
                    self.mark_up()
                    delivered = True
                    self.clock.note_end(t, wall)
                    self.put(VideoFrame(self.stream, t, wall, self._image(frame)))
                elif isinstance(frame, av.AudioFrame):
                    if resampler is None or _fmt(frame) != src_fmt:  # new resampler on a format change
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                        src_fmt = _fmt(frame)
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                        # no timestamp (raw inputs): the sample count of this connection is the clock
                        apts = out.time if out.time is not None else a_count / self.rate
                        a_count += len(samples)
                        x = self.clock.map("audio", apts, wall)
                        ref = self._to_media("audio", fits, x, apts, wall - len(samples) / self.rate)
                        t, samples = self.clip_audio(*self.audio_clock.push(samples, ref))
                        if not len(samples):
                            continue
                        if chunker is None or self.audio_clock.new_segment:
                            if chunker is not None:
                                self._put_chunks(chunker.flush())
                            chunker = AudioChunker(self.stream, self.rate, self.chunk)
                        self.mark_up()
                        delivered = True
                        self._put_chunks(chunker.push(samples, t))
        if chunker is not None:
            self._put_chunks(chunker.flush())
        return delivered

    def _put_chunks(self, chunks: Iterator[AudioChunk]) -> None:
        for c in chunks:
            self.clock.note_end(c.t_end, c.wall)
            self.put(c)

    def _to_media(self, track: str, fits: dict[str, ClockFit], x: float, pts: float, wall: float) -> float:
        """Media time: the stream's own timestamps, or (``wall`` mode) the capture wall clock."""
        if self.wall is None:
            return x
        if self.pts_is_wall:
            return self.wall.t_of(pts)
        fit = fits[track]
        fit.add(x, self.wall.t_of(wall))
        return fit.map(x)

    def _image(self, frame: Any) -> np.ndarray:
        assert self._size is not None
        w, h = self._size
        if (frame.width, frame.height) != (w, h):
            self._warn("size", f"video size changed from {w}x{h} to {frame.width}x{frame.height}: scaling to {w}x{h}")
            return np.ascontiguousarray(frame.to_ndarray(format="bgr24", width=w, height=h))
        return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s: %s", self.where(), message)


def _fmt(frame: Any) -> tuple[Any, ...]:
    return (frame.format.name, frame.layout.name, frame.sample_rate)


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


def open_network(uri: str, **kw: Any) -> NetworkReader:
    return NetworkReader(uri, **kw)


def is_live_reader(reader: MediaReader) -> bool:
    return bool(getattr(reader, "live", False))


def env_ffmpeg_ok() -> bool:
    return shutil.which("ffmpeg") is not None and os.access(shutil.which("ffmpeg") or "", os.X_OK)
