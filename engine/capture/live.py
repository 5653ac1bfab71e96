"""Live readers: the capture thread, its bounded hand-over queue, reconnects with backoff and events.

A :class:`LiveReader` runs its capture in a thread of its own and hands items over through a
:class:`LiveQueue` that drops the oldest media when the consumer falls behind (counted, so lag never
grows). :meth:`LiveReader.reconnect_loop` retries a lost input with exponential backoff and jitter
and yields ``Event("stream_down")`` / ``Event("stream_up")`` around the gap; failures are sorted
into :class:`Permanent` (the stream ends with a clear error) and :class:`Transient` (retry).
Network readers are in ``network``, devices in ``camera`` and ``microphone``; their settings in
``settings``.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from avstream.engine.backoff import backoff_delay
from avstream.engine.capture.avclock import GRID_MARGIN_S, AudioClock, StreamClock
from avstream.engine.capture.base import AudioChunker, MediaReader, redact_uri, source_error
from avstream.engine.capture.fit import FrameFitter
from avstream.engine.capture.settings import LiveSettings
from avstream.engine.errors import SourceError
from avstream.engine.items import AudioChunk, Event, StreamInfo, VideoFrame

log = logging.getLogger("avstream.capture.live")
LiveItem = VideoFrame | AudioChunk | StreamInfo | Event


class WallClock:
    """Media time from capture wall time, shared by the readers of one stream (camera + microphone).

    ``t_of`` is the raw mapping. ``place`` adds one constant phase to every track, chosen at the
    first video frame so frames land just after the points of their frame-rate grid (windows then
    pick each frame at its own time). With ``wait_for_video``, audio is held back (None) until that
    phase is known, at most ``VIDEO_WAIT_S``.
    """

    VIDEO_WAIT_S = 5.0
    MARGIN_S = GRID_MARGIN_S  # frames sit this far after their grid point: jitter must not push them before

    def __init__(self, start: float = 0.0, wait_for_video: bool = False):
        self.start = start
        self.origin: float | None = None
        self.wait_for_video = wait_for_video
        self.phase = 0.0
        self._fixed = False
        self._waiting_since: float | None = None
        self._lock = threading.Lock()

    def t_of(self, wall: float) -> float:
        with self._lock:
            if self.origin is None:
                self.origin = wall
        return self.start + wall - self.origin

    def place(self, track: str, t: float, grid: float = 0.0) -> float | None:
        """``t`` (from ``t_of``) with the stream's phase; None while audio waits for the video."""
        with self._lock:
            if not self._fixed:
                if track == "video":
                    if grid > 0:
                        snapped = math.ceil((t - self.start) / grid - 1e-9) * grid + self.start
                        self.phase = snapped + self.MARGIN_S - t
                    self._fixed = True
                else:
                    now = time.monotonic()
                    self._waiting_since = self._waiting_since or now
                    if self.wait_for_video and now - self._waiting_since < self.VIDEO_WAIT_S:
                        return None
                    self._fixed = True
            return t + self.phase


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
                 audio_chunk_s: float, settings: LiveSettings | None = None, fitter: FrameFitter | None = None):
        self.uri, self.stream = uri, stream
        self.want_video, self.want_audio = video, audio
        self.fps, self.rate = fps, sample_rate
        self.fitter = fitter  # the consumers' frame sizes and grids; it outlives a connection
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
             count: Callable[[str, float], None] | None = None, resumed_at: float | None = None) -> None:
        """Media time starts at ``start``; with ``wall`` timestamps follow capture wall time.

        ``resumed_at`` (a restarted source): the wall time at which media time was ``start``. Media
        time runs on from then, also while the input is still down, as over any other outage."""
        self.clock = StreamClock(start)
        if resumed_at is not None:
            self.clock.last_wall = resumed_at
        mode = self.settings.clock if self.settings.clock != "auto" else ("wall" if wall else self.default_clock)
        self.wall = (wall or WallClock(start)) if mode == "wall" else None
        if resumed_at is not None and self.wall is not None and self.wall.origin is None:
            self.wall.origin = resumed_at
        # capture wall times jitter: a gap must show on several blocks before it counts
        self.audio_clock = AudioClock(self.rate, resync_s=0.3 if self.wall else 0.12, confirm_s=0.2 if self.wall else 0.0)
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
        return backoff_delay(attempt, initial=s.backoff_initial, cap=s.backoff_max, jitter=s.backoff_jitter, floor=0.05)

    def reconnect_loop(self, connect_once: Callable[[], bool], permanent_first: bool = False) -> None:
        """Run ``connect_once`` (True: it delivered media) until stopped, with backoff and events.

        ``permanent_first`` (devices): any failure before the first success is final (missing, busy,
        not a camera); after it, even those are retried (the device may be plugged in again).
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
            except _BUGS:
                raise
            except Permanent as exc:
                if not (permanent_first and ever_up):
                    raise
                # a device that worked (unplugged, taken by another program): wait for it to return
                delivered, reason = self.state == "up", str(exc)
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
            elif attempt <= 3 or attempt % 10 == 0:  # keep a long outage from flooding the log
                log.info("%s: reconnect attempt %d failed: %s; next in %.1f s", self.where(), attempt, reason, delay)
            self._down_since = down_since
            self._stop.wait(delay)

    def clock_audio(self, samples: np.ndarray, ref: float, chunker: AudioChunker | None,
                    emit: Callable[[Iterator[AudioChunk]], None]) -> tuple[AudioChunker | None, bool]:
        """Place decoded samples on the stream's audio clock and emit them as chunks.

        A new clock segment (after a gap or a reconnect) starts a new chunker, so chunk times never
        straddle a discontinuity. Returns the chunker to use next and whether anything was sent.
        """
        t, samples = self.clip_audio(*self.audio_clock.push(samples, ref))
        if not len(samples):
            return chunker, False
        if chunker is None or self.audio_clock.new_segment:
            if chunker is not None:
                emit(chunker.flush())
            chunker = AudioChunker(self.stream, self.rate, self.chunk)
        self.mark_up()
        emit(chunker.push(samples, t))
        return chunker, True

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
