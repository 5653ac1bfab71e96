"""Event clips (SPEC §8): the ``record`` sink.

Each recorded stream has a :class:`~avstream.engine.capture.packets.PacketReader` (its own demux-only
connection to the stream's input) filling a ring of encoded packets. On a configured event the sink
writes, on its own thread and once the post-roll has been read, the packets from the keyframe at or
before ``t0 - pre_roll_s`` to ``t1 + post_roll_s`` as an MP4 (stream copy), with a JSON sidecar
holding the event and every result header in the clip's span. An event that overlaps the pending
clip of its stream extends it (as does the ``*_end`` event of a configured ``*_start``), up to
``max_clip_s``. Retention by age and total size, oldest first, after each clip and at start.

Layout: ``<dir>/<stream>/<YYYY-MM-DD>/<stream>-<UTC start YYYYmmddTHHMMSS>-<event>.mp4`` + ``.json``;
a clip's id is that file name without its extension.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import math
import queue
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from avstream.engine.capture.base import redact_uri
from avstream.engine.capture.packets import PacketReader, PacketRing, is_live
from avstream.engine.capture.schemes import resolve_file, uri_scheme
from avstream.engine.sinks import Sink, SinkContext
from avstream.engine.sinks.clipwriter import write_clip
from avstream.engine.sinks.streaminput import (
    REOPENABLE_NETWORK,
    capture_offset,
    input_options,
    input_uri,
    output_folder,
    safe_name,
)

log = logging.getLogger("avstream.clips")

READ_AHEAD_S = 5.0  # how far a file's packet reader runs ahead of the pipeline's media time
LATE_EVENT_S = 15.0  # ring seconds kept beyond the pre-roll: an event names a window that is already past
RETENTION_CHECK_S = 600.0
RESULTS_WAIT_S = 10.0  # how long a read clip waits for the results of its last windows
RESULT_KINDS = ("highlight", "violence", "localization", "caption")


class RecordSettings(BaseModel):
    """``outputs.record`` of a pipeline (``record:`` of a serve config)."""

    model_config = ConfigDict(extra="forbid")

    on: list[str] = Field(default_factory=lambda: ["violence_start"], min_length=1,
                          description="event names that start a clip")
    pre_roll_s: float = Field(5.0, ge=0.0, le=300.0, description="seconds before the event's t0")
    post_roll_s: float = Field(10.0, ge=0.0, le=3600.0, description="seconds after the event's t1 (t0 when none)")
    max_clip_s: float = Field(300.0, gt=0.0, le=86400.0, description="longest clip; overlapping events extend one "
                              "clip up to this")
    retain_days: float = Field(7.0, gt=0.0, description="clips older than this are deleted")
    max_total_gb: float = Field(20.0, gt=0.0, description="the oldest clips are deleted while all clips take more")
    dir: str | None = Field(None, description="where clips go (default <data_dir>/clips; relative to the file)")
    streams: dict[str, str] = Field(default_factory=dict, description="stream id -> URI to record, instead of "
                                    "the stream's own input (e.g. a camera's full-quality record stream)")
    transcode_audio: Literal["aac"] | None = Field(None, description="audio MP4 cannot carry as is (PCM...): "
                                                   "transcode it to this; default: the clip has video only")
    ring_max_mb: float = Field(200.0, gt=0.0, description="memory bound of each stream's packet ring")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true (the pipeline loader then has the key "True")
        if isinstance(data, dict) and any(k is True or k == "True" for k in data):
            data = {("on" if k is True or k == "True" else k): v for k, v in data.items()}
        return data


@dataclass
class _Pending:
    event: dict[str, Any]
    start: float  # media time
    end: float
    events: list[dict[str, Any]] = field(default_factory=list)
    media_read_at: float | None = None  # monotonic time the ring had read past the end


@dataclass
class _Recorder:
    stream: str
    uri: str
    ring: PacketRing
    reader: PacketReader
    live: bool
    progress: float = 0.0  # latest result t1 (media time)
    window: float = 0.0  # t1 - t0 of the latest result
    offset: float | None = None  # capture wall minus media time, from the latest result
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20000))
    pending: list[_Pending] = field(default_factory=list)  # oldest first; each written once its end is read

    def hold(self) -> None:
        """Keep the ring from the start of the oldest pending clip."""
        self.ring.hold_from = self.clock_of(self.pending[0].start) if self.pending else None

    def wall_of(self, t: float) -> float:
        return t + (self.offset if self.offset is not None else time.time() - self.progress)

    def clock_of(self, t: float) -> float:
        """Media time in the ring's clock: itself for files, wall time for live inputs."""
        return self.wall_of(t) if self.live else t


class ClipSink(Sink):
    name = "record"

    def __init__(self, settings: RecordSettings, context: SinkContext):
        self.settings = settings
        self.dir = output_folder(settings.dir, "clips", context)
        self.base_dir = context.base_dir
        self.on = set(settings.on)
        self.clips_written: dict[str, int] = {}
        self.clips_failed: dict[str, int] = {}
        self.dropped = 0
        self.disk_full = False
        self._recorders: dict[str, _Recorder] = {}
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=10000)
        self._closing = threading.Event()
        uris = {sid: input_uri(entry) for sid, entry in context.streams.items()}
        uris.update(settings.streams)
        for sid, uri in uris.items():
            if uri:
                self._add(sid, uri, context.streams.get(sid, {}))
        self.enforce_retention()
        self._thread = threading.Thread(target=self._run, name="record", daemon=True)
        self._thread.start()

    # --- the publisher's side: never blocks ---
    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        if header.get("kind") == "status":
            return
        try:
            self._queue.put_nowait(("msg", header))
        except queue.Full:
            self.dropped += 1

    def add_stream(self, stream: str, entry: dict[str, Any]) -> None:
        """Start recording a stream added at run time; ``entry`` as in :class:`SinkContext` ``streams``
        (``record.streams`` still names the URI to record when it has the stream)."""
        self._queue.put(("add", (stream, entry)))

    def metric_families(self) -> list[Any]:
        from avstream.engine.sinks.metrics import counter_family

        written = list(self.clips_written.items())
        return [counter_family("avstream_clips_total", "Event clips written", ["stream"],
                               [((stream,), n) for stream, n in written])]

    def remove_stream(self, stream: str) -> None:
        self._queue.put(("remove", stream))

    def close(self, timeout_s: float = 2.0) -> None:
        self._closing.set()
        self._queue.put(("close", None))
        self._thread.join(timeout_s)
        for rec in list(self._recorders.values()):
            rec.reader.stop(0.5)

    # --- the listing the REST API serves ---
    def list_clips(self, stream: str | None = None) -> list[dict[str, Any]]:
        """Clips on disk, newest first: id, stream, event, wall start, duration, paths."""
        out = []
        pattern = f"{glob.escape(safe_name(stream))}/*/*.mp4" if stream is not None else "*/*/*.mp4"
        for mp4 in self.dir.glob(pattern):
            side = mp4.with_suffix(".json")
            if not side.exists():  # the sidecar is written just after the MP4: the clip is not complete yet
                continue
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError):
                meta = {}
            out.append({"id": mp4.stem, "stream": meta.get("stream", mp4.parent.parent.name),
                        "event": (meta.get("event") or {}).get("name"), "wall_start": meta.get("wall_start"),
                        "duration_s": meta.get("duration_s"), "mp4": str(mp4),
                        "json": str(side)})
        out.sort(key=lambda c: (c["wall_start"] or 0.0, c["id"]), reverse=True)
        return out

    def clip_path(self, clip_id: str) -> Path | None:
        """The MP4 of a clip id (its sidecar: the same path with ``.json``); None when unknown."""
        if not clip_id or safe_name(clip_id) != clip_id:
            return None
        found = sorted(self.dir.glob(f"*/*/{glob.escape(clip_id)}.mp4"))
        return found[0] if found else None

    # --- the sink's thread ---
    def _add(self, stream: str, uri: str, entry: dict[str, Any]) -> None:
        """A recorder of ``uri``; ``entry`` is the stream's input (its ``loop``, FFmpeg ``options`` and
        ``rtsp_transport`` apply to the recording connection too)."""
        if uri_scheme(uri) not in ("file", *REOPENABLE_NETWORK):
            log.warning("record %r: %s is not a file or a network stream PyAV can open a second time; "
                        "no clips of it", stream, redact_uri(uri))
            return
        s = self.settings
        ring = PacketRing(s.pre_roll_s + READ_AHEAD_S + LATE_EVENT_S, int(s.ring_max_mb * 1e6))
        uri = resolve_file(uri, self.base_dir)
        options = input_options(entry)
        reader = PacketReader(stream, uri, ring, progress=lambda: self._progress(stream), lead_s=READ_AHEAD_S,
                              loop=bool(entry.get("loop")), options=options)
        rec = _Recorder(stream, uri, ring, reader, is_live(uri))
        self._recorders[stream] = rec
        self.clips_written.setdefault(stream, 0)
        reader.start()

    def _progress(self, stream: str) -> float:
        rec = self._recorders.get(stream)
        return math.inf if self._closing.is_set() or rec is None else rec.progress

    def _run(self) -> None:
        closing_since: float | None = None
        checked = time.monotonic()
        while True:
            if time.monotonic() - checked > RETENTION_CHECK_S:  # clips age even when none is written
                checked = time.monotonic()
                self.enforce_retention()
            try:
                what, value = self._queue.get(timeout=0.1)
            except queue.Empty:
                what, value = "", None
            try:
                if what == "msg":
                    self._message(value)
                elif what == "remove":
                    self._remove(value)
                elif what == "add":
                    self._remove(value[0])
                    uri = self.settings.streams.get(value[0]) or input_uri(value[1])
                    if uri:
                        self._add(value[0], uri, value[1])
                elif what == "close":
                    closing_since = time.monotonic()
                self._write_ready(final=False)
                if closing_since is not None and (self._all_written() or time.monotonic() - closing_since > 1.5):
                    self._write_ready(final=True)
                    return
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop recording for good
                log.error("record: %s", exc)

    def _message(self, header: dict[str, Any]) -> None:
        rec = self._recorders.get(str(header.get("stream", "")))
        if rec is None:
            return
        kind = header.get("kind")
        if kind in RESULT_KINDS and isinstance(header.get("t1"), (int, float)):
            t1 = float(header["t1"])
            rec.progress = max(rec.progress, t1)
            if isinstance(header.get("t0"), (int, float)):
                rec.window = max(0.0, t1 - float(header["t0"]))
            rec.offset = capture_offset(header)
            rec.history.append(header)
            keep = self.settings.max_clip_s + self.settings.pre_roll_s + LATE_EVENT_S
            while rec.history and float(rec.history[0]["t1"]) < rec.progress - keep:
                rec.history.popleft()
        elif kind == "event":
            self._event(rec, header)

    def _event(self, rec: _Recorder, header: dict[str, Any]) -> None:
        name = str(header.get("name", ""))
        s = self.settings
        t0 = header.get("t0")
        t0 = float(t0) if isinstance(t0, (int, float)) else rec.progress
        t1 = float(header["t1"]) if isinstance(header.get("t1"), (int, float)) else t0
        last = rec.pending[-1] if rec.pending else None
        ends = name.endswith("_end") and name[: -len("_end")] + "_start" in self.on
        if last is not None and (ends or name in self.on) and t0 - s.pre_roll_s <= last.end:
            last.end = min(max(last.end, t1 + s.post_roll_s), last.start + s.max_clip_s)
            last.events.append(header)
            return
        if name not in self.on:
            return
        start = t0 - s.pre_roll_s
        rec.pending.append(_Pending(header, start, min(t1 + s.post_roll_s, start + s.max_clip_s), [header]))
        rec.hold()

    def _all_written(self) -> bool:
        return not any(r.pending for r in self._recorders.values())

    def _write_ready(self, final: bool) -> None:
        for rec in list(self._recorders.values()):
            while rec.pending and (final or self._ready(rec, rec.pending[0])):
                self._write(rec, rec.pending.pop(0))
                rec.hold()

    def _ready(self, rec: _Recorder, pending: _Pending) -> bool:
        """The media of the clip has been read, and the results of its last windows have come (a window
        that ends after the span can overlap it), or have not for ``RESULTS_WAIT_S``."""
        if pending.media_read_at is None:
            if not (rec.ring.ended or rec.ring.latest >= rec.clock_of(pending.end)):
                return False
            pending.media_read_at = time.monotonic()
        if self._closing.is_set():  # the run is over: no more results will come
            return True
        wanted = pending.end + rec.window
        if rec.ring.ended and not rec.live:  # a file's last window ends at most one window before its end
            wanted = min(wanted, rec.ring.latest - rec.window)
        return rec.progress >= wanted or time.monotonic() - pending.media_read_at > RESULTS_WAIT_S

    def _write(self, rec: _Recorder, pending: _Pending) -> None:
        packets = rec.ring.span(rec.clock_of(pending.start), rec.clock_of(pending.end),
                                anchor=rec.clock_of(pending.start + self.settings.pre_roll_s))
        if not packets:
            log.warning("record %r: no media recorded for the clip of %s at t=%.2f s", rec.stream,
                        pending.event.get("name"), pending.start + self.settings.pre_roll_s)
            self.clips_failed[rec.stream] = self.clips_failed.get(rec.stream, 0) + 1
            return
        # the span in media time (a live ring counts wall time)
        shift = rec.wall_of(0.0) if rec.live else 0.0
        media_start = packets[0].t - shift
        wall_start = packets[0].t if rec.live else rec.wall_of(media_start)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall_start))
        event_name, name = safe_name(str(pending.event.get("name", "event"))), safe_name(rec.stream)
        folder = self.dir / name / time.strftime("%Y-%m-%d", time.gmtime(wall_start))
        stem = f"{name}-{stamp}-{event_name}"
        n = 1
        while (folder / f"{stem}.mp4").exists():
            stem, n = f"{name}-{stamp}-{event_name}-{n}", n + 1
        try:
            result = write_clip(folder / f"{stem}.mp4", packets, self.settings.transcode_audio)
            media_end = result.media_end - shift
            results = [h for h in rec.history
                       if float(h["t1"]) > media_start and float(h["t0"]) < media_end]
            sidecar = {
                "id": stem, "stream": rec.stream, "event": pending.event, "events": pending.events,
                "t0": pending.event.get("t0"), "t1": pending.event.get("t1"),
                "media_start": round(media_start, 3), "media_end": round(media_end, 3),
                "duration_s": round(result.duration_s, 3), "wall_start": round(wall_start, 3),
                "pre_roll_s": self.settings.pre_roll_s, "post_roll_s": self.settings.post_roll_s,
                "source": redact_uri(rec.uri), "tracks": result.tracks, "notes": result.notes, "results": results,
            }
            tmp = folder / f"{stem}.json.part"
            tmp.write_text(json.dumps(sidecar, indent=1))
            tmp.replace(folder / f"{stem}.json")
        except OSError as exc:
            self.clips_failed[rec.stream] = self.clips_failed.get(rec.stream, 0) + 1
            for leftover in folder.glob(f"{stem}.*"):
                leftover.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                if not self.disk_full:
                    self.disk_full = True
                    log.error("record: the clip disk is full (%s): clips are not written until space returns",
                              self.dir)
                self.enforce_retention()
                return
            log.error("record %r: cannot write a clip: %s", rec.stream, exc.strerror or exc)
            return
        except Exception as exc:  # noqa: BLE001 - av errors, codecs MP4 cannot take: this clip only
            self.clips_failed[rec.stream] = self.clips_failed.get(rec.stream, 0) + 1
            log.error("record %r: cannot write a clip: %s", rec.stream, " ".join(str(exc).split()))
            return
        if self.disk_full:
            self.disk_full = False
            log.warning("record: clip disk has space again; recording resumed")
        for note in result.notes:
            log.warning("record %r: %s", rec.stream, note)
        self.clips_written[rec.stream] = self.clips_written.get(rec.stream, 0) + 1
        log.info("record %r: clip %s (%.1f s)", rec.stream, stem, result.duration_s)
        self.enforce_retention()

    def _remove(self, stream: str) -> None:
        rec = self._recorders.pop(stream, None)
        if rec is None:
            return
        rec.reader.stop(0.5)
        while rec.pending:
            self._write(rec, rec.pending.pop(0))
        rec.ring.clear()

    # --- retention ---
    def enforce_retention(self, now: float | None = None) -> list[Path]:
        """Deletes clips older than ``retain_days``, then the oldest while all take more than
        ``max_total_gb``; returns the MP4s deleted."""
        now = time.time() if now is None else now
        clips = []
        for mp4 in self.dir.glob("*/*/*.mp4"):
            try:
                st = mp4.stat()
                side = mp4.with_suffix(".json")
                size = st.st_size + (side.stat().st_size if side.exists() else 0)
            except OSError:
                continue
            clips.append((st.st_mtime, mp4, size))
        clips.sort()
        total = sum(size for _, _, size in clips)
        limit = self.settings.max_total_gb * 1e9
        removed = []
        for mtime, mp4, size in clips:
            if now - mtime <= self.settings.retain_days * 86400 and total <= limit:
                break
            for path in (mp4, mp4.with_suffix(".json")):
                path.unlink(missing_ok=True)
            total -= size
            removed.append(mp4)
            if not any(mp4.parent.iterdir()):
                shutil.rmtree(mp4.parent, ignore_errors=True)
        return removed


def make_clip_sink(settings: RecordSettings, context: SinkContext) -> ClipSink:
    return ClipSink(settings, context)

