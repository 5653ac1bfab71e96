"""Decode only the video frames a subsampling source delivers, and pick the decoder's threading.

A source that keeps ``fps`` frames per second of a faster stream throws most decoded frames away
(:class:`~avstream.engine.capture.base.FpsGate` keeps the first frame at or after each grid point).
:class:`SkipPlanner` sits between the demuxer and the decoder and tells, per video packet, how to
decode it (``skip``):

- ``auto`` (lossless): a packet whose frame the gate would not keep is sent with the decoder's
  ``skip_frame = NONREF`` (the decoder drops it if no other frame references it); a packet whose
  frame may be kept is sent with ``DEFAULT``. Packets after the last needed frame of a GOP (in
  decode order) up to the next key frame are not decoded at all, unless the next GOP's leading
  pictures (open GOP: decoded after its key frame, shown before it, referencing this GOP) are
  needed, or (H.264, HEVC) the next key frame is not an IDR. The frames delivered are exactly
  those of a full decode.
- ``nonref``: the same without dropping GOP tails.
- ``keyframes`` (approximate): ``skip_frame = NONKEY``; the gate keeps the first key frame at or
  after each grid point.
- ``none``: every frame is decoded.

Exactness for files: decode timestamps never decrease and a packet's pts is at least its dts, so
once a packet with dts D is demuxed, every frame with pts below D has been demuxed too. The planner
holds packets (audio too, so their interleaving is unchanged) until the pts of each held video packet
is below the latest dts (or the input ended), runs a copy of the gate over those times in
presentation order (the decoder's output order) and then releases them. The held packets are
bounded (:data:`LOOKAHEAD_S` of video); past that the oldest is decoded without dropping.
A file that breaks those rules (no timestamps, decode timestamps going back, a frame the decoder
did not output where one was predicted) is decoded in full from that point on.

Live inputs are not planned (``auto`` and ``nonref`` decode every frame there): their media time
is the stream clock's mapping of pts (offsets after jumps and reconnects, wall-clock fits), known
only once a frame is decoded; looking ahead would add latency; and cameras seldom send B-frames,
the frames ``NONREF`` can skip. ``keyframes`` works on live inputs too.

Threading: FFmpeg's frame threading decodes several frames at once (the most throughput, and
(threads - 1) frames of delay); slice threading splits one frame, so it only helps streams coded
with several slices per frame, and adds no delay. Files use frame threading. Live inputs leave the
choice to FFmpeg (``AUTO``: frame threading where the decoder has it): slice threading on
multi-slice live streams (libx264's zerolatency writes them) fell behind under CPU load — media time
after a reconnect and the A/V sync of RTSP/SRT streams drifted by frames on a loaded 2-core machine
(tests/live/test_network.py), while frame threading held. The slices per frame (counted in the
first packet: H.264 NAL types 1 and 5, HEVC VCL types 0-31, length-prefixed as in MP4/MKV or with
Annex B start codes as in MPEG-TS/RTSP) are shown in the status. ``decode_threading: frame|slice``
overrides it (``slice``: the least latency, given cores to spare).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from avstream.engine.capture.base import log


class RateGate(Protocol):
    """What the planner simulates: FpsGate, or the source's gate followed by its consumers'."""

    def keep(self, t: float) -> bool: ...


SkipMode = Literal["auto", "nonref", "keyframes", "none"]  # the source param ``skip``
ThreadingMode = Literal["auto", "frame", "slice"]  # the source param ``decode_threading``
SKIP_MODES: tuple[str, ...] = get_args(SkipMode)
THREADING_MODES: tuple[str, ...] = get_args(ThreadingMode)

# Decoders whose skip_frame is read per packet and skips exactly the non-reference frames; the
# bit-identical tests cover them (others decode every frame).
PLANNED_CODECS = frozenset({"h264", "hevc", "mpeg2video", "mpeg4"})
LOOKAHEAD_S = 10.0  # video held back at most (a GOP of libx264's default keyint=250 at 25 fps)
MAX_HELD = 1000  # packets, whatever the frame rate
DROP = "DROP"  # the action of a packet that is not decoded
# The first packet of a GOP tail not decoded: the decoder puts out what it holds and is reset
# (the next packet it gets is a key frame that starts afresh), so frames before the gap come out
# at once rather than after the next packets, as they would without the gap.
DRAIN = "DRAIN"

Count = Callable[[str, float], None]


def _no_count(name: str, amount: float) -> None:
    pass


@dataclass
class _Entry:
    """A demuxed packet waiting for its action."""

    packet: Any
    video: bool
    seq: int = 0
    pts: int | None = None
    t: float = 0.0
    key: bool = False
    gop: int = -1
    leading: bool = False  # decoded after its GOP's key frame, shown before it
    discard: bool = False  # the demuxer marked it: decoded as a reference, never output
    needed: bool | None = None  # None: not yet known


class _Gop:
    """What the planner knows of one GOP (a key frame and the packets up to the next one)."""

    __slots__ = ("key_pts", "closed", "unresolved", "last_needed", "leading_needed", "tail_dropped")

    def __init__(self, key_pts: int, closed: bool):
        self.key_pts = key_pts
        self.closed = closed  # its key frame resets the decoder's picture order (IDR)
        self.unresolved = 0
        self.last_needed = -1  # seq of the last needed packet (decode order)
        self.leading_needed = False
        self.tail_dropped = False  # its last packet was not decoded


# what a decoded frame was expected to be
_NEEDED, _SKIPPABLE, _PLAIN, _DISCARD = range(4)


class SkipPlanner:
    """Per-packet decode actions for one video track (see the module docstring).

    ``plan(packets)`` yields ``(packet, action)`` in demux order: ``action`` is the ``skip_frame``
    to set before decoding a video packet, :data:`DROP` for one not to decode (:data:`DRAIN`: and
    drain the decoder), or None (audio, the end-of-input flush). ``decoded(pts)`` is told every
    video frame that comes out of the decoder; ``close()`` counts what the decoder did not put out.
    ``time_of(packet)`` is the media time the timeline gives the packet's frame (None: unknown);
    ``gate`` (a fresh gate of the source's rate) is simulated.
    """

    def __init__(self, mode: str, video: Any, gate: RateGate, time_of: Callable[[Any], float | None], *,
                 stream: str, native: float, count: Count | None = None):
        self.mode = mode
        self.video, self.sim, self.time_of = video, gate, time_of
        self.stream = stream
        self.count = count or _no_count
        self._codec = video.codec_context.name
        self.lossless = mode in ("auto", "nonref")
        self.drop_tails = mode == "auto"
        self.active = self.lossless  # False: every packet decodes with DEFAULT
        self.cap = min(MAX_HELD, max(16, round((native or 25.0) * LOOKAHEAD_S)))
        self._queue: deque[_Entry] = deque()
        self._held_video = 0
        self._unsettled: list[tuple[int, int, _Entry]] = []  # (pts, seq, entry), presentation order
        self._unsettled_pts: set[int] = set()
        self._seq = 0
        self._latest_dts: int | None = None
        self._frontier: int | None = None  # highest pts simulated
        self._gops: dict[int, _Gop] = {}
        self._gop = -1
        self._eof = False
        self._last_released_dropped = False
        self._undrained = False  # video sent to the decoder since it was last drained
        self.demuxed_t = 0.0  # media time of the latest video packet demuxed, decoded or not
        # frames expected out of the decoder: pts -> kind, and a heap of those pts
        self._expected: dict[int, int] = {}
        self._pending: list[int] = []

    # --- the demux side ---
    def plan(self, packets: Iterable[Any]) -> Iterator[tuple[Any, str | None]]:
        source = iter(packets)
        while True:
            try:
                packet = next(source)
            except StopIteration:
                self._end()
                yield from self._release()
                return
            except Exception:  # a read error: what is held is decoded before it is raised
                self._end()
                yield from self._release()
                raise
            video = packet.stream is self.video
            t = self.time_of(packet) if video and packet.pts is not None else None
            if t is not None:
                self.demuxed_t = max(self.demuxed_t, t)
            if video and packet.size and self.mode == "keyframes":
                if not packet.is_keyframe:
                    self._expect(packet.pts, _SKIPPABLE)
                yield packet, None  # NONKEY is set once for the whole input
            elif video and packet.size:
                self._add_video(packet, t)
                yield from self._release()
            else:  # audio, and the flush at the end of the input
                if video and packet.pts is None and packet.dts is None:
                    self._end()
                if not self._queue:
                    yield packet, None
                else:
                    self._queue.append(_Entry(packet, False))
                    yield from self._release()

    def _add_video(self, packet: Any, t: float | None) -> None:
        pts, dts = packet.pts, packet.dts
        problem = self._broken(pts, dts, t) if self.active else ""
        if problem:
            self._stop_planning(problem)
        if not self.active or pts is None or t is None:
            self._queue.append(_Entry(packet, True, needed=True))
            self._held_video += 1
            return
        self._seq += 1
        e = _Entry(packet, True, seq=self._seq, pts=pts, key=packet.is_keyframe, discard=packet.is_discard)
        if e.key:
            self._gop += 1
            self._gops[self._gop] = _Gop(pts, self._codec not in ("h264", "hevc") or resets_order(
                bytes(packet), self._codec, self.video.codec_context.extradata))
        e.gop = self._gop
        gop = self._gops.get(self._gop)
        if gop is not None:
            e.leading = pts < gop.key_pts
            gop.unresolved += 1
        if e.discard:
            self._resolve(e, False)
            self._expect(pts, _DISCARD)
        else:
            e.t = t
            heapq.heappush(self._unsettled, (pts, e.seq, e))
            self._unsettled_pts.add(pts)
        self._queue.append(e)
        self._held_video += 1
        if dts is not None and (self._latest_dts is None or dts > self._latest_dts):
            self._latest_dts = dts
        self._settle()

    def _broken(self, pts: int | None, dts: int | None, t: float | None) -> str:
        """Why the reordering rule cannot be trusted for this packet ('' when it can)."""
        if pts is None:
            return "a video packet without a timestamp"
        if t is None:
            return "no media time before decoding"
        if dts is not None and (pts < dts or (self._latest_dts is not None and dts < self._latest_dts)):
            return "decode timestamps out of order"
        if (self._frontier is not None and pts <= self._frontier) or pts in self._expected or pts in self._unsettled_pts:
            return "a frame timestamp that repeats or comes too late"
        return ""

    def _settle(self) -> None:
        """Simulate the gate over the frames whose place in presentation order is now certain."""
        while self._unsettled and (self._eof or (self._latest_dts is not None and self._unsettled[0][0] < self._latest_dts)):
            pts, _, e = heapq.heappop(self._unsettled)
            self._unsettled_pts.discard(pts)
            self._frontier = pts
            self._resolve(e, self.sim.keep(e.t))

    def _resolve(self, e: _Entry, needed: bool) -> None:
        e.needed = needed
        gop = self._gops.get(e.gop)
        if gop is None:
            return
        gop.unresolved -= 1
        if needed:
            gop.last_needed = max(gop.last_needed, e.seq)
            gop.leading_needed = gop.leading_needed or e.leading

    def _end(self) -> None:
        self._eof = True
        self._settle()

    def _stop_planning(self, why: str) -> None:
        """From here on every frame is decoded (what was already decided stands)."""
        if self.active:
            self.active = False
            log.info("stream %r: %s: decoding every frame from here", self.stream, why)

    # --- the release side ---
    def _release(self) -> Iterator[tuple[Any, str | None]]:
        while self._queue:
            e = self._queue[0]
            if not e.video:
                self._queue.popleft()
                yield e.packet, None
                continue
            action = self._action(e, force=self._held_video > self.cap)
            if action is None:
                return  # not known yet: keep holding
            self._queue.popleft()
            self._held_video -= 1
            if e.key and e.gop - 1 in self._gops:
                self._gops[e.gop - 1].tail_dropped = self._last_released_dropped
                self._gops.pop(e.gop - 2, None)  # no held packet looks that far back
            if action == DROP and not e.leading and self._undrained:
                action = DRAIN
            self._last_released_dropped = action in (DROP, DRAIN)
            self._undrained = action != DRAIN and (self._undrained or not self._last_released_dropped)
            if self._last_released_dropped:
                self.count("packets_dropped", 1.0)
            elif e.pts is not None and not e.discard and self.active:
                self._expect(e.pts, _NEEDED if e.needed else (_SKIPPABLE if action == "NONREF" else _PLAIN))
            yield e.packet, action

    def _action(self, e: _Entry, force: bool) -> str | None:
        """The action for the oldest held video packet; None: wait for more packets."""
        if not self.active or e.needed:
            return "DEFAULT"
        if e.needed is None:
            return "DEFAULT" if force else None
        gop = self._gops.get(e.gop)
        if not self.drop_tails or gop is None:
            return "NONREF"
        previous = self._gops.get(e.gop - 1)
        if e.leading and previous is not None and previous.tail_dropped:
            return DROP  # it references the dropped tail, and is not needed
        nxt = self._gops.get(e.gop + 1)
        if gop.last_needed > e.seq or (nxt is not None and (nxt.leading_needed or not nxt.closed)):
            # A frame decoded later may reference it; or the next key frame does not reset the
            # picture order count, and after a gap FFmpeg's H.264/HEVC decoders can misplace it
            # (the count's low bits wrap) and put frames out of order.
            return "NONREF"
        next_leading_known = self._eof or (
            nxt is not None and self._latest_dts is not None and self._latest_dts > nxt.key_pts)
        if gop.unresolved == 0 and next_leading_known:
            return DROP
        return "NONREF" if force else None

    # --- the decoder side ---
    def _expect(self, pts: int | None, kind: int) -> None:
        if pts is None:
            return
        self._expected[pts] = kind
        heapq.heappush(self._pending, pts)

    def decoded(self, pts: int | None) -> None:
        """A video frame with timestamp ``pts`` came out of the decoder."""
        self.count("frames_decoded", 1.0)
        if pts is None:
            if self.active:
                self._stop_planning("a decoded frame without a timestamp")
            return
        self._passed(lambda p: p < pts)
        kind = self._expected.pop(pts, None)
        if kind is not None and self._pending and self._pending[0] == pts:
            heapq.heappop(self._pending)  # the smallest left, all below it just went
        if self.active and kind in (None, _DISCARD):
            self._unexpected(pts, "the decoder put out a frame that was not predicted")

    def close(self) -> None:
        """The input ended and the decoder was drained: what it did not put out was skipped."""
        self._passed(lambda p: True)

    def _passed(self, before: Callable[[int], bool]) -> None:
        while self._pending and before(self._pending[0]):
            p = heapq.heappop(self._pending)
            kind = self._expected.pop(p, None)
            if kind == _SKIPPABLE:
                self.count("frames_skipped", 1.0)
            elif kind == _NEEDED and self.active:
                self._unexpected(p, "a frame the rate keeps did not come out of the decoder")

    def _unexpected(self, pts: int, what: str) -> None:
        tb = self.video.time_base
        at = float(pts * tb) if tb else 0.0
        log.warning("stream %r: %s (pts %.3f s; corrupt data?): decoding every frame from here", self.stream, what, at)
        self.active = False


def planned_mode(skip: str, *, live: bool, codec: str, subsampling: bool) -> str:
    """The skip mode an input gets: ``skip`` where it applies, else ``none``."""
    if skip == "keyframes":
        return skip
    if skip == "none" or live or not subsampling or codec not in PLANNED_CODECS:
        return "none"
    return skip


# --------------------------------------------------------------------------------------------------
# threading


def slices_in(data: bytes, codec: str, extradata: bytes | None) -> int:
    """The slice NAL units in one H.264/HEVC packet (0: another codec, or none found)."""
    if codec not in ("h264", "hevc"):
        return 0
    nal_types = _nal_types(data, codec, extradata)
    if codec == "h264":
        return sum(1 for b in nal_types if b & 0x1F in (1, 5))
    return sum(1 for b in nal_types if (b >> 1) & 0x3F <= 31)


def resets_order(data: bytes, codec: str, extradata: bytes | None) -> bool:
    """An H.264 IDR or HEVC IDR/BLA picture (the picture order count restarts) in this packet."""
    types = _nal_types(data, codec, extradata)
    if codec == "h264":
        return any(b & 0x1F == 5 for b in types)
    return any(16 <= (b >> 1) & 0x3F <= 20 for b in types)


def _nal_types(data: bytes, codec: str, extradata: bytes | None) -> list[int]:
    """The first byte of each NAL unit header in a packet, Annex B or length-prefixed."""
    if data[:3] == b"\0\0\1" or data[:4] == b"\0\0\0\1":
        return _annexb_types(data)
    return _length_prefixed_types(data, _length_size(codec, extradata))


def _length_size(codec: str, extradata: bytes | None) -> int:
    """NAL length field size of avcC / hvcC extradata (4 when it does not say)."""
    if extradata and codec == "h264" and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    if extradata and codec == "hevc" and len(extradata) > 21 and extradata[0] == 1:
        return (extradata[21] & 3) + 1
    return 4


def _length_prefixed_types(data: bytes, size: int) -> list[int]:
    out, i = [], 0
    while i + size < len(data):
        n = int.from_bytes(data[i:i + size], "big")
        if n <= 0:
            break
        out.append(data[i + size])
        i += size + n
    return out


def _annexb_types(data: bytes) -> list[int]:
    out, i = [], data.find(b"\0\0\1")
    while 0 <= i and i + 3 < len(data):
        out.append(data[i + 3])
        i = data.find(b"\0\0\1", i + 3)
    return out


def thread_type_for(mode: str, *, live: bool) -> str:
    """PyAV's ``thread_type`` for ``decode_threading: mode``: FRAME, SLICE, or AUTO (live, FFmpeg's choice)."""
    if mode == "frame":
        return "FRAME"
    if mode == "slice":
        return "SLICE"
    return "AUTO" if live else "FRAME"


def set_threading(video: Any, thread_type: str) -> str:
    """Set ``thread_type`` on a not yet opened decoder; FRAME falls back to AUTO (slice threads)
    for codecs without frame threads. Returns the kind set ("frame" or "slice")."""
    import av

    frame_threads = bool(video.codec_context.codec.capabilities & av.codec.codec.Capabilities.frame_threads)
    if thread_type in ("FRAME", "AUTO") and not frame_threads:
        video.thread_type = "AUTO"
        return "slice"
    video.thread_type = thread_type
    return "frame" if thread_type == "AUTO" else thread_type.lower()  # AUTO: FFmpeg takes frame threads
