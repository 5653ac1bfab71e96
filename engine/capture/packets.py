"""Encoded packets of one stream, kept for event clips: a demux-only reader and a time-bounded ring.

Recording decodes nothing. :class:`PacketReader` opens its own connection to the stream's input
(for a file a second open; for a camera a second session, as NVRs do with a record stream), demuxes
the first video and audio track and appends the packets to a :class:`PacketRing`.

Packet time is in the ring's clock:

- files: media time as the capture nodes count it (``engine/capture/files.py``): PTS in seconds
  minus the earliest start time of the tracks read, so a clip span matches results' ``t0``/``t1``;
- live inputs: the packet's arrival wall time (unix seconds); the clip sink maps media time to wall
  time with the latest result of the stream (``wall - latency_ms/1000`` is the capture wall of ``t1``).

A file is read as the pipeline progresses: at most ``lead_s`` of media time beyond the latest media
time the pipeline reported for the stream (``progress``), so a run as fast as possible and a run
paced in real time both keep the ring short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avstream.engine.backoff import backoff_delay
from avstream.engine.capture.base import LIVE_SCHEMES, _why, file_path, redact_uri
from avstream.engine.capture.decode import first_tracks
from avstream.engine.capture.schemes import uri_scheme

log = logging.getLogger("avstream.clips")


class Segment:
    """One open input: its video and audio track, the templates of a clip's output tracks. Held by
    its packets, so a container closed by a reconnect stays usable until its packets leave the ring."""

    def __init__(self, container: Any, video: Any | None, audio: Any | None, number: int):
        self.container, self.video, self.audio, self.number = container, video, audio, number

    def track(self, kind: str) -> Any | None:
        return self.video if kind == "video" else self.audio


@dataclass(frozen=True)
class Packet:
    kind: str  # "video" or "audio"
    t: float  # seconds in the ring's clock (media time for files, arrival wall time for live inputs)
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Any  # fractions.Fraction
    keyframe: bool
    segment: Segment


class PacketRing:
    """Packets in arrival order, trimmed to whole GOPs: what is older than ``keep_s`` before the newest
    packet goes, but always from a video keyframe, so a clip can start at one. ``max_bytes`` bounds
    the memory whatever the bitrate (the oldest GOPs go first, counted in ``trimmed_for_size``)."""

    def __init__(self, keep_s: float, max_bytes: int):
        self.keep_s, self.max_bytes = keep_s, max_bytes
        self._packets: deque[Packet] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.latest = float("-inf")  # time of the newest packet
        self.ended = False  # the input ended (a file read to its end)
        self.has_video = False
        self.trimmed_for_size = 0
        self.hold_from: float | None = None  # a pending clip starts here: kept beyond keep_s (not beyond max_bytes)

    def append(self, packet: Packet) -> None:
        with self._lock:
            self._packets.append(packet)
            self._bytes += len(packet.data)
            self.latest = max(self.latest, packet.t)
            self.has_video = self.has_video or packet.kind == "video"
            self._trim()

    def _trim(self) -> None:
        cutoff = self.latest - self.keep_s
        if self.hold_from is not None:
            cutoff = min(cutoff, self.hold_from)
        while len(self._packets) > 1:
            over = self._bytes > self.max_bytes
            if not over and self._packets[0].t >= cutoff:
                return
            nxt = self._next_keyframe()
            if nxt is None:
                if not over:
                    return
                nxt = len(self._packets) - 1  # no keyframe to keep: all but the newest packet go
            elif not over and self._packets[nxt].t > cutoff:
                return  # the head's GOP still covers the cutoff
            if over:
                self.trimmed_for_size += 1
            for _ in range(nxt):
                self._bytes -= len(self._packets.popleft().data)

    def _next_keyframe(self) -> int | None:
        for i, p in enumerate(self._packets):
            if i > 0 and (p.keyframe if p.kind == "video" else not self.has_video):
                return i
        return None

    def span(self, start: float, end: float, anchor: float | None = None) -> list[Packet]:
        """The packets from the video keyframe at or before ``start`` (the first one kept when none is
        that old) up to ``end``, all of one segment: the one holding ``anchor`` (the event's time; default
        ``start``), so a clip across a reconnect is the connection the event happened on."""
        with self._lock:
            packets = list(self._packets)
        if not packets:
            return []
        at = start if anchor is None else anchor
        segment = packets[0].segment
        for p in packets:
            if p.t > at:
                break
            segment = p.segment
        packets = [p for p in packets if p.segment is segment]
        first = None
        for i, p in enumerate(packets):
            if first is not None and p.t > start:
                break
            if p.kind == "video" and p.keyframe or not self.has_video:
                first = i
        if first is None:
            return []
        head = packets[first]
        out = [p for p in packets[first:] if p.t <= end]
        # audio that starts before the keyframe would begin the clip with sound and no picture
        return [p for p in out if p.kind == "video" or p.t >= head.t - 1e-6]

    def clear(self) -> None:
        with self._lock:
            self._packets.clear()
            self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes


def is_live(uri: str) -> bool:
    return uri_scheme(uri) in LIVE_SCHEMES


class PacketReader:
    """Demuxes ``uri`` (no decoding) into ``ring`` on a thread of its own until :meth:`stop`.

    ``progress()`` is the latest media time the pipeline reported for the stream; a file is read at
    most ``lead_s`` beyond it. A live input is reconnected with backoff when it ends or fails.
    """

    def __init__(self, stream: str, uri: str, ring: PacketRing, *, progress: Callable[[], float],
                 lead_s: float, loop: bool = False, options: dict[str, str] | None = None,
                 open_timeout_s: float = 10.0):
        self.stream, self.uri, self.ring, self.loop = stream, uri, ring, loop
        self._offset = 0.0  # media time of the current pass over a looped file
        self.live = is_live(uri)
        self.progress, self.lead_s = progress, lead_s
        self.options = dict(options or {})
        self.open_timeout_s = open_timeout_s
        if self.live:  # read deadlines as the capture's network reader sets them (microseconds)
            us = str(int(open_timeout_s * 1e6))
            self.options.setdefault("rw_timeout", us)
            if uri_scheme(uri) in ("rtsp", "rtsps", "tcp", "udp"):
                self.options.setdefault("timeout", us)
            if uri_scheme(uri) in ("rtsp", "rtsps"):
                self.options.setdefault("rtsp_transport", "tcp")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{stream}", daemon=True)
        self.connections = 0
        self.error: str | None = None
        self._pass_end = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._read_once():
                    attempt, self.error = 0, None
            except Exception as exc:  # noqa: BLE001 - any input failure: report it, retry a live input
                again = self.error == " ".join(_why(exc).split())
                self.error = " ".join(_why(exc).split())
                # the same failure over and over (a camera that takes one client) is said once
                (log.debug if again else log.warning)("record %r: %s: %s%s", self.stream, redact_uri(self.uri),
                                                      self.error, "; retrying" if self.live else "")
            if not self.live and not (self.loop and self._pass_end > 0.0 and self.error is None):
                self.ring.ended = True
                return
            if not self.live:  # a looped file: the next pass continues media time, as the source node does
                self._offset += self._pass_end
                continue
            attempt += 1
            self._stop.wait(backoff_delay(attempt, initial=0.5, cap=30.0, jitter=0.25))

    def _read_once(self) -> bool:
        """Reads one connection to its end; True when it delivered packets."""
        import av

        path = self.uri if self.live else file_path(self.uri)
        timeout = (self.open_timeout_s, self.open_timeout_s) if self.live else None
        container = av.open(path, options=self.options, timeout=timeout)
        video, audio = first_tracks(container, True, True)
        if video is None and audio is None:
            container.close()
            raise ValueError("no video or audio track to record")
        self.connections += 1
        segment = Segment(container, video, audio, self.connections)
        starts = [float(s.start_time * s.time_base) for s in (video, audio)
                  if s is not None and s.start_time is not None and s.time_base]
        t0 = min(starts) if starts else 0.0
        self._pass_end = 0.0
        delivered = False
        for packet in container.demux(*[s for s in (video, audio) if s is not None]):
            if self._stop.is_set():
                return delivered
            if packet.dts is None and packet.pts is None or packet.size == 0:
                continue  # the demuxer's flush packets
            kind = "video" if packet.stream is video else "audio"
            tb = packet.time_base
            stamp = packet.pts if packet.pts is not None else packet.dts
            if self.live:
                t = time.time()
            else:
                t = float(stamp * tb) - t0 + self._offset
                self._pass_end = max(self._pass_end, t - self._offset + float((packet.duration or 0) * tb))
                self._pace(t)
            self.ring.append(Packet(kind, t, bytes(packet), packet.pts, packet.dts, packet.duration or 0, tb,
                                    bool(packet.is_keyframe), segment))
            delivered = True
        if self.live:
            log.warning("record %r: %s: the input ended; reconnecting", self.stream, redact_uri(self.uri))
        return delivered

    def _pace(self, t: float) -> None:
        """Wait while ``t`` is more than ``lead_s`` ahead of the pipeline."""
        while t > self.progress() + self.lead_s and not self._stop.is_set():
            self._stop.wait(0.05)
