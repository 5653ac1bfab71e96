"""One media clock per live stream: track timestamps -> media time, A/V drift correction, jitter buffer.

- :class:`StreamClock` maps each track's timestamps (seconds, in that track's own time base) of one
  connection to the stream's media time. Tracks of one connection share one origin, so their
  alignment in the container is kept; a reconnect continues media time from the wall time of the gap;
  a timestamp jump inside a connection (server restart, wrap) is bridged the same way.
- :class:`ClockFit` fits ``ref = a + b * x`` between a local clock ``x`` (sample count, PTS) and a
  reference clock ``ref`` (container PTS, capture wall time). Arrival delays only ever add, so the
  intercept comes from the lower envelope and the slope from least squares over a sliding window.
- :class:`AudioClock` stamps audio by sample count against such a fit: it resamples away the drift
  between the audio sample clock and the reference (``drift_ppm``), steers the residual skew to zero,
  and re-syncs on gaps. ``skew`` is the measured offset of the audio from the reference.
- :class:`JitterBuffer` releases the items of one stream in media-time order, holds video a little
  for late audio, and fills an audio track that stops arriving with silence so windows keep coming.

No PyAV here: plain numpy, driven by whatever timestamps a reader has (tests feed simulated clocks).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from avstream.engine.items import AudioChunk, VideoFrame

LiveMedia = VideoFrame | AudioChunk
# Frames placed on a frame grid sit this far after their grid point. Windows take "the first frame
# at or after" each point, so a timestamp a few ticks early (an RTSP sender report re-syncing the
# RTP clock moves frames by tens of microseconds) would otherwise make them take the next frame.
GRID_MARGIN_S = 0.002


class StreamClock:
    """Maps ``(track, pts)`` of the current connection to media time; continuous across reconnects.

    ``start`` is the media time of the first item (after a node restart: where the last run ended).
    With ``grid`` (the video frame period) set, a connection's first video frame lands on a multiple
    of it (plus :data:`GRID_MARGIN_S`), so window grids pick each frame at its own time rather than up
    to a frame late; with ``video_first``, other tracks wait (None) until the connection's first
    video frame is mapped.
    A jump of a track's timestamps by more than ``max_jump_s`` forwards or ``max_back_s`` backwards
    is a discontinuity: that track continues from the wall time elapsed since its previous item, and
    another track jumping by about the same amount soon after gets the same correction.
    """

    def __init__(self, start: float = 0.0, max_jump_s: float = 10.0, max_back_s: float = 1.0):
        self.start = start
        self.max_jump_s, self.max_back_s = max_jump_s, max_back_s
        self.last_t = start  # latest media time handed out (any track)
        self.last_wall: float | None = None
        self.connections = 0
        self.jumps = 0
        self._offset: float | None = None  # media time = pts + offset, for this connection
        self._tracks: dict[str, dict[str, float]] = {}
        self._recent_fix: tuple[float, float, float] | None = None  # (raw jump, correction, wall)
        self.grid = 0.0
        self.video_first = False

    def new_connection(self) -> None:
        """The next timestamp starts a new mapping (a reconnect, or a new device session)."""
        self.connections += 1
        self._offset = None
        self._tracks = {}
        self._recent_fix = None

    def map(self, track: str, pts: float, wall: float) -> float | None:
        """Media time of a sample with timestamp ``pts`` (seconds) that arrived at ``wall``."""
        if self._offset is None:
            if self.video_first and track != "video":
                return None
            gap = 0.0 if self.last_wall is None else max(0.0, wall - self.last_wall)
            base = self.start if self.last_wall is None else self.last_t + gap
            if self.grid > 0 and track == "video":
                base = math.ceil(base / self.grid - 1e-9) * self.grid + GRID_MARGIN_S
            self._offset = base - pts
        st = self._tracks.get(track)
        if st is None:
            st = self._tracks[track] = {"offset": self._offset, "pts": pts, "t": pts + self._offset, "wall": wall}
        t = pts + st["offset"]
        step = t - st["t"]
        if step > self.max_jump_s or step < -self.max_back_s:
            raw = pts - st["pts"]
            fix = self._recent_fix
            if fix is not None and abs(raw - fix[0]) < 1.0 and wall - fix[2] < 5.0:
                correction = fix[1]  # the same jump on another track: keep the tracks aligned
            else:
                correction = (st["t"] + max(0.0, wall - st["wall"])) - t
                self._recent_fix = (raw, correction, wall)
            st["offset"] += correction
            t += correction
            self.jumps += 1
        st["pts"], st["t"], st["wall"] = pts, t, wall
        self.last_t = max(self.last_t, t)
        self.last_wall = wall if self.last_wall is None else max(self.last_wall, wall)
        return t

    def note_end(self, t_end: float, wall: float) -> None:
        """An item ends at ``t_end``: the next connection continues after it."""
        self.last_t = max(self.last_t, t_end)
        self.last_wall = wall if self.last_wall is None else max(self.last_wall, wall)


class ClockFit:
    """``ref ~= a + b * x`` over the last ``window_s`` of ``x``.

    Points are grouped in bins of ``bin_s`` of ``x``; each bin keeps its lowest point (jitter only
    ever delays, so the lowest is the least delayed). ``b`` is the least-squares slope through those
    minima, 1 until they span ``min_span_s``, clamped to ``1 +- max_dev``; ``a`` is the lower envelope
    ``min(ref - b * x)``. With ``step_s``, a bin whose minimum jumps by more than that from the
    previous one is a step (a latency estimate that changed): the older points are forgotten and
    ``stepped`` is set for the caller.
    """

    def __init__(self, window_s: float = 60.0, min_span_s: float = 4.0, max_dev: float = 0.02,
                 step_s: float | None = None, bin_s: float = 0.5):
        self.window_s, self.min_span_s, self.max_dev = window_s, min_span_s, max_dev
        self.step_s, self.bin_s = step_s, bin_s
        self.bins: collections.deque[tuple[float, float]] = collections.deque()  # lowest point per bin
        self._cur: tuple[float, float] | None = None  # lowest point of the open bin
        self._cur_start = 0.0
        self.a = 0.0
        self.b = 1.0
        self.first_ref = math.nan
        self.last_ref = math.nan
        self.steps = 0
        self.stepped = False
        self.offset = 0.0  # subtracted from the fitted reference (see shift)
        self.settled = False  # for users that wait until the points span enough time

    def reset(self) -> None:
        self.bins.clear()
        self._cur = None
        self.b = 1.0
        self.first_ref = math.nan

    def add(self, x: float, ref: float) -> None:
        self.stepped = False
        if math.isnan(self.first_ref):
            self.first_ref = ref
        self.last_ref = ref
        if self._cur is None:
            self._cur, self._cur_start = (x, ref), x
            self._refit()
            return
        if ref - self.b * x < self._cur[1] - self.b * self._cur[0]:
            self._cur = (x, ref)
        self.a = min(self.a, ref - self.b * x)
        if x - self._cur_start >= self.bin_s:
            self._close_bin()

    def _close_bin(self) -> None:
        assert self._cur is not None
        low = self._cur
        if self.step_s is not None and self.bins:
            prev = self.bins[-1]
            if abs((low[1] - self.b * low[0]) - (prev[1] - self.b * prev[0])) > self.step_s:
                self.bins.clear()
                self.steps += 1
                self.stepped = True
                self.first_ref = low[1]
        self.bins.append(low)
        while len(self.bins) > 1 and low[0] - self.bins[0][0] > self.window_s:
            self.bins.popleft()
        self._cur = None
        self._refit()

    def _refit(self) -> None:
        pts = list(self.bins) + ([self._cur] if self._cur is not None else [])
        arr = np.asarray(pts, dtype=np.float64)
        xs, refs = arr[:, 0], arr[:, 1]
        b = 1.0
        if len(self.bins) >= 3 and xs[-1] - xs[0] >= self.min_span_s:
            xm, rm = xs.mean(), refs.mean()
            var = float(((xs - xm) ** 2).sum())
            if var > 0:
                b = float(((xs - xm) * (refs - rm)).sum() / var)
            b = min(1.0 + self.max_dev, max(1.0 - self.max_dev, b))
        self.b = b
        self.a = float((refs - b * xs).min())

    def map(self, x: float) -> float:
        return self.a + self.b * x - self.offset

    def shift(self, delta: float) -> None:
        """From now on map every reference ``delta`` earlier (old points included)."""
        self.offset += delta


class LinearResampler:
    """Streaming linear interpolation with a phase carried across blocks (ratio = out / in samples)."""

    def __init__(self) -> None:
        self.prev: float | None = None
        self.pos = 0.0  # position of the next output sample, in input samples from the next block start

    def reset(self) -> None:
        self.prev, self.pos = None, 0.0

    def process(self, x: np.ndarray, ratio: float) -> np.ndarray:
        if not len(x):
            return x
        if ratio == 1.0 and self.pos == 0.0:
            self.prev = float(x[-1])
            return x
        step = 1.0 / ratio
        if self.prev is not None:
            buf, base = np.concatenate([np.asarray([self.prev], np.float32), x]), 1.0
        else:
            buf, base = x, 0.0
        p = self.pos + base
        last = len(buf) - 1
        count = int(math.floor((last - p) / step)) + 1 if p <= last else 0
        out = np.interp(p + step * np.arange(count), np.arange(len(buf)), buf).astype(np.float32)
        self.pos = p + step * count - base - len(x)
        self.prev = float(x[-1])
        return out


@dataclass
class AudioClock:
    """Stamps audio blocks of one track by sample count, held to a reference clock.

    ``push(samples, ref)``: ``ref`` is the reference time (media seconds) of the block's first
    sample. Returns ``(t, out)``: ``out`` resampled so its sample count follows the reference, and
    ``t`` the media time of ``out[0]``; ``new_segment`` is True when ``t`` does not continue the
    previous output (a gap re-sync). Larger offsets than ``resync_s`` re-sync at once: a gap starts a
    new segment, an overlap drops input samples.
    """

    rate: int
    resync_s: float = 0.12
    steer_s: float = 3.0
    max_steer: float = 0.004
    deadband_s: float = 0.01
    fit: ClockFit = field(default_factory=ClockFit)
    skew: float = 0.0  # output time minus reference time (s), smoothed
    resyncs: int = 0
    dropped: int = 0  # input samples dropped by re-syncs
    in_pos: int = 0
    out_pos: int = 0
    t0: float | None = None
    new_segment: bool = False
    confirm_s: float = 0.0  # input seconds that must all be late to count as a gap (where references jitter)
    absorb_steps: bool = False  # a step in the reference (fit.step_s) moves the reference, not the audio
    _drop: int = 0  # input samples still to drop for an overlap re-sync
    _late: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    _force: bool = False
    _rs: LinearResampler = field(default_factory=LinearResampler)

    @property
    def drift_ppm(self) -> float:
        """How fast the audio sample clock runs against the reference, in parts per million."""
        return (1.0 / self.fit.b - 1.0) * 1e6 if self.fit.b else 0.0

    def push(self, samples: np.ndarray, ref: float) -> tuple[float, np.ndarray]:
        if self._drop > 0:  # finishing an overlap re-sync: discard before anything else
            n = min(len(samples), self._drop)
            self._drop -= n
            self.dropped += n
            self.in_pos += n
            samples, ref = samples[n:], ref + n / self.rate
            if not self._drop:
                self.fit.reset()
            if not len(samples):
                return (self.t0 or 0.0) + self.out_pos / self.rate, samples
        x = self.in_pos / self.rate
        self.fit.add(x, ref)
        self.new_segment = False
        if self.t0 is not None and self.fit.stepped and self.absorb_steps:
            # the reference moved, not the audio: keep the timeline, re-anchor the fit to it
            want = self.t0 + self.out_pos / self.rate - self.fit.b * self._rs.pos / self.rate
            self.fit.shift(self.fit.map(x) - want)
        ref_s = self.fit.map(x)
        if self.t0 is None:
            self.t0, self.out_pos, self.new_segment = ref_s, 0, True
        # the next output sample sits self._rs.pos input samples after this block's start
        t_next = self.t0 + self.out_pos / self.rate
        err = t_next - (ref_s + self._rs.pos * self.fit.b / self.rate)
        # a gap shows as blocks later than the fit; jitter can make a few late, a gap makes all late
        self._late.append((x, ref - ref_s))
        while len(self._late) > 1 and x - self._late[1][0] >= self.confirm_s:
            self._late.popleft()
        if self._force or (x - self._late[0][0] >= self.confirm_s and min(v for _, v in self._late) > self.resync_s):
            self._restart(ref, x)  # input gap (lost packets, reconnect): start a new segment
            t_next, err = self.t0, 0.0
        elif err < -self.resync_s:  # output fell behind the fit: also a new segment
            self._restart(ref, x)
            t_next, err = self.t0, 0.0
        elif err > self.resync_s:  # more input than time passed (a repeat): drop the excess
            self.resyncs += 1
            self._drop = int(round(err * self.rate / self.fit.b))
            return self.push(samples, ref)
        self.skew += 0.1 * (err - self.skew)
        # steer only beyond the deadband: jittery references must not make the pitch wobble
        excess = math.copysign(max(0.0, abs(err) - self.deadband_s), err)
        ratio = self.fit.b * (1.0 - min(self.max_steer, max(-self.max_steer, excess / self.steer_s)))
        out = self._rs.process(samples, ratio)
        self.in_pos += len(samples)
        self.out_pos += len(out)
        return t_next, out

    def mark_gap(self) -> None:
        """Input was lost (a known overflow): the next block starts a new segment at its reference."""
        self._force = True

    def _restart(self, ref: float, x: float) -> None:
        self._force = False
        self._late.clear()
        self.resyncs += 1
        self.fit.reset()
        self.fit.add(x, ref)
        self._rs.reset()
        self.t0, self.out_pos, self.new_segment = ref, 0, True


class JitterBuffer:
    """Releases one stream's items in media-time order.

    An item leaves when every expected track has reached its time, or after it waited ``hold_s``
    (wall). When video runs ``conceal_s`` ahead of audio and no audio arrived for that long, the gap
    is filled with silence (``concealed_s``); audio arriving later for that time is dropped
    (``late_audio_s``).
    """

    def __init__(self, stream: str, *, video: bool, audio: bool, sample_rate: int, hold_s: float = 0.25,
                 conceal_s: float = 1.0):
        self.stream, self.rate = stream, sample_rate
        self.hold_s, self.conceal_s = hold_s, conceal_s
        self.expect = {"video": video, "audio": audio}
        self.latest = {"video": -math.inf, "audio": -math.inf}  # media time reached per track
        self.arrived = {"video": 0.0, "audio": 0.0}  # wall of the latest arrival per track
        self.audio_end = -math.inf  # end of the audio released so far
        self.first_video = math.inf
        self.concealed_s = 0.0
        self.late_audio_s = 0.0
        self._heap: list[tuple[float, int, float, LiveMedia]] = []
        self._seq = itertools.count()

    def configure(self, *, video: bool, audio: bool, sample_rate: int) -> None:
        self.expect = {"video": video, "audio": audio}
        self.rate = sample_rate or self.rate

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: LiveMedia, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if isinstance(item, AudioChunk):
            if item.t_end <= self.audio_end + 1e-9:
                self.late_audio_s += len(item.samples) / item.sample_rate
                return
            if item.t < self.audio_end - 1e-9:  # overlaps concealed silence: keep the new part
                cut = int(round((self.audio_end - item.t) * item.sample_rate))
                self.late_audio_s += cut / item.sample_rate
                item = AudioChunk(item.stream, item.t + cut / item.sample_rate, item.wall, item.samples[cut:],
                                  item.sample_rate)
            kind, end = "audio", item.t_end
        else:
            kind, end = "video", item.t
            self.first_video = min(self.first_video, item.t)
        self.latest[kind] = max(self.latest[kind], end)
        self.arrived[kind] = now
        heapq.heappush(self._heap, (item.t, next(self._seq), now, item))

    def pop(self, now: float | None = None) -> list[LiveMedia]:
        now = time.monotonic() if now is None else now
        out: list[LiveMedia] = []
        self._conceal(now, out)
        active = [k for k, on in self.expect.items() if on and now - self.arrived[k] < self.hold_s]
        mark = min((self.latest[k] for k in active), default=math.inf)
        while self._heap:
            t, _, since, item = self._heap[0]
            if t > mark + 1e-9 and now - since < self.hold_s:
                break
            heapq.heappop(self._heap)
            out.append(item)
            if isinstance(item, AudioChunk):
                self.audio_end = max(self.audio_end, item.t_end)
        return out

    def flush(self) -> list[LiveMedia]:
        out = [heapq.heappop(self._heap)[3] for _ in range(len(self._heap))]
        return out

    def _conceal(self, now: float, out: list[LiveMedia]) -> None:
        if not (self.expect["audio"] and self.expect["video"] and self.rate):
            return
        if now - self.arrived["audio"] < self.conceal_s:
            return
        start = max(self.audio_end, self.latest["audio"])
        if not math.isfinite(start):  # no audio at all so far: from the first frame on
            start = self.first_video
        end = self.latest["video"] - self.hold_s
        if not math.isfinite(start) or end - start < self.conceal_s:
            return
        n = int(round((end - start) * self.rate))
        if n <= 0:
            return
        chunk = AudioChunk(self.stream, start, time.time(), np.zeros(n, np.float32), self.rate)
        self.concealed_s += n / self.rate
        self.audio_end = chunk.t_end
        self.latest["audio"] = max(self.latest["audio"], chunk.t_end)
        heapq.heappush(self._heap, (chunk.t, next(self._seq), now, chunk))
