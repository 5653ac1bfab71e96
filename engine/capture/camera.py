"""Capture devices: cameras (``v4l2:///dev/videoN``) and microphones (``mic://default|name|index``).

Cameras are read by the FFmpeg CLI (``-f v4l2``, remuxed to NUT and decoded like a network stream,
with the kernel's capture timestamps turned into wall time) or by OpenCV's V4L2 backend; PyAV's
wheels have no v4l2 input. Format, size and frame rate come from the URI query
(``?format=mjpeg&size=1280x720&fps=30``) or the source params ``capture_format``/``capture_size``/
``capture_fps``. Microphones go through sounddevice (PortAudio): a callback fills a bounded block
buffer (overflows counted), a capture thread converts to mono at the requested rate and stamps
samples with the ADC capture time, drift-corrected by :class:`~avstream.engine.capture.avclock.AudioClock`.
Both map to capture wall time, so a camera and a microphone pair up as one stream.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
import urllib.parse
from typing import Any

import numpy as np

from avstream.engine.capture.base import FpsGate, MediaReader, redact_uri, source_error
from avstream.engine.capture.live import LiveReader, Permanent, Transient
from avstream.engine.capture.network import NetworkReader
from avstream.engine.capture.settings import LiveSettings
from avstream.engine.items import StreamInfo, VideoFrame

log = logging.getLogger("avstream.capture.devices")
_SIZE = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")  # always fullmatch: "$" lets "640x480\n" through
MAX_SIDE = 16384
MAX_FPS = 1000.0
MIC_SETTLE_S = 1.5  # audio skipped when a microphone stream starts


# --------------------------------------------------------------------------------------------------
# cameras


def parse_v4l2(uri: str) -> tuple[str, dict[str, str]]:
    """``v4l2:///dev/video0?format=mjpeg&size=1280x720&fps=30`` -> (device path, query)."""
    parts = urllib.parse.urlsplit(uri)
    device = urllib.parse.unquote(parts.netloc + parts.path) if parts.netloc else urllib.parse.unquote(parts.path)
    query = dict(urllib.parse.parse_qsl(parts.query))
    return device, query


def check_v4l2_uri(uri: str) -> str | None:
    device, query = parse_v4l2(uri)
    if not device.startswith("/"):
        return "give the device path, e.g. v4l2:///dev/video0"
    unknown = set(query) - {"format", "size", "fps"}
    if unknown:
        return f"unknown query key {sorted(unknown)[0]!r}; known: format, size, fps"
    if "size" in query:
        m = _SIZE.fullmatch(query["size"])
        if not m or max(int(m.group(1)), int(m.group(2))) > MAX_SIDE:
            return f"bad size {query['size']!r} (want WIDTHxHEIGHT, each 1..{MAX_SIDE})"
    if "fps" in query:
        try:
            fps = float(query["fps"])
        except ValueError:
            fps = math.nan
        if not 0 < fps <= MAX_FPS:  # NaN fails too
            return f"bad fps {query['fps']!r} (want a number in (0, {MAX_FPS:g}])"
    return None


def _device_problem(device: str) -> str | None:
    if not os.path.exists(device):
        found = sorted(p for p in os.listdir("/dev") if p.startswith("video")) if os.path.isdir("/dev") else []
        have = ", ".join("/dev/" + p for p in found) or "none"
        return f"camera device {device} not found (video devices here: {have})"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"no permission to open {device} (add the user to the 'video' group)"
    return None


def _camera_reason(text: str) -> Exception:
    low = text.lower()
    if "busy" in low:
        return Permanent("camera is busy (another program is using it)")
    if "inappropriate ioctl" in low or "not a video capture" in low or "not a capture device" in low:
        return Permanent("not a video capture device")
    if "no such file" in low or "no such device" in low:
        return Permanent("camera device disappeared")
    return Transient(text)


class V4L2Reader(NetworkReader):
    """A camera through the FFmpeg CLI; the stream-reading, reconnect and clock code is the network one.

    ``demuxer`` replaces ``v4l2`` (e.g. ``rawvideo`` on a pipe that carries camera-like raw frames).
    """

    default_clock = "wall"

    def __init__(self, uri: str, *, stream: str, live: LiveSettings | None = None, demuxer: str = "v4l2",
                 audio: bool = False, **kw: Any):
        problem = check_v4l2_uri(uri)
        if problem:
            raise source_error(stream, uri, problem)
        self.device, query = parse_v4l2(uri)
        if demuxer == "v4l2":
            problem = _device_problem(self.device)
            if problem:
                raise source_error(stream, uri, problem)
        settings = live or LiveSettings()
        self.capture_format = query.get("format") or settings.capture_format
        self.capture_size = query.get("size") or settings.capture_size
        self.capture_fps = float(query.get("fps") or settings.capture_fps or 0)
        self.demuxer = demuxer
        # NetworkReader's URI check does not apply to a device path
        LiveReader.__init__(self, uri, stream=stream, video=True, audio=False, fps=kw.get("fps", 0.0),
                            sample_rate=kw.get("sample_rate", 16000), audio_chunk_s=kw.get("audio_chunk_s", 0.04),
                            settings=settings, fitter=kw.get("fitter"))
        self.scheme, self.options, self.use_cli = "v4l2", {str(k): str(v) for k, v in (kw.get("options") or {}).items()}, True
        self.pts_is_wall = demuxer == "v4l2"
        self.skip, self.threading_mode = kw.get("skip", "auto"), kw.get("threading", "auto")
        self._init_decoding()

    def cli_input(self) -> tuple[list[str], str]:
        args = ["-f", self.demuxer, "-thread_queue_size", "64"]
        if self.demuxer == "v4l2":
            args += ["-ts", "mono2abs"]  # kernel capture timestamps as wall time
            if self.capture_format:
                args += ["-input_format", self.capture_format]
        elif self.capture_format:
            args += ["-pixel_format", self.capture_format]
        if self.capture_size:
            args += ["-video_size", self.capture_size]
        if self.capture_fps:
            args += ["-framerate", f"{self.capture_fps:g}"]
        for k, v in self.options.items():
            args += [f"-{k}", v]
        return args, self.device

    def permanent_first(self) -> bool:
        return True

    def cli_error(self, reason: str) -> Exception:
        return _camera_reason(reason)


class OpenCvCameraReader(LiveReader):
    """A camera through OpenCV's V4L2 backend (when the FFmpeg CLI is not installed)."""

    default_clock = "wall"

    def __init__(self, uri: str, *, stream: str, live: LiveSettings | None = None, **kw: Any):
        problem = check_v4l2_uri(uri)
        if problem:
            raise source_error(stream, uri, problem)
        self.device, query = parse_v4l2(uri)
        problem = _device_problem(self.device)
        if problem:
            raise source_error(stream, uri, problem)
        super().__init__(uri, stream=stream, video=True, audio=False, fps=kw.get("fps", 0.0),
                         sample_rate=kw.get("sample_rate", 16000), audio_chunk_s=kw.get("audio_chunk_s", 0.04),
                         settings=live, fitter=kw.get("fitter"))
        s = self.settings
        self.capture_format = query.get("format") or s.capture_format
        self.capture_size = query.get("size") or s.capture_size
        self.capture_fps = float(query.get("fps") or s.capture_fps or 0)

    def _run(self) -> None:
        self.reconnect_loop(self._connect_once, permanent_first=True)

    def _connect_once(self) -> bool:
        import cv2

        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        try:
            if not cap.isOpened():
                raise Permanent("cannot open the camera (busy, or not a video capture device)")
            if self.capture_format:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.capture_format.upper()[:4].ljust(4)))
            m = _SIZE.fullmatch(self.capture_size or "")
            if m:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(m.group(1)))
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(m.group(2)))
            if self.capture_fps:
                cap.set(cv2.CAP_PROP_FPS, self.capture_fps)
            native = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.announce(StreamInfo(self.stream, True, False, fps=self.fps or native, width=w, height=h,
                                     uri=redact_uri(self.uri)))
            gate = FpsGate(self.fps, native)
            delivered = False
            last = -1e18
            while not self._stop.is_set():
                ok, image = cap.read()
                wall = time.time()
                if not ok:
                    self.count("stalls")
                    raise Transient("the camera stopped delivering frames")
                if self.wall:
                    t = self.wall.place("video", self.wall.t_of(wall), 1.0 / native if native > 0 else 0.0)
                else:
                    t = self.clock.map("video", wall, wall)
                if t is None:
                    continue
                if t <= last or t < self.clock.start or not gate.keep(t):
                    continue
                wanted = self.fitter.wanted(t) if self.fitter is not None else None
                if wanted is not None and not wanted:
                    continue  # no consumer takes a frame at this time
                last = t
                self.mark_up()
                delivered = True
                self.clock.note_end(t, wall)
                if image.shape[1] != w or image.shape[0] != h:
                    image = cv2.resize(image, (w, h))
                image = np.ascontiguousarray(image)
                if self.fitter is not None and wanted:
                    item = self.fitter.frame(self.stream, t, wall, self.fitter.fit_array(image, wanted))
                else:
                    item = VideoFrame(self.stream, t, wall, image)
                if self.preview is not None and self.preview.watching(self.stream):
                    item.native = image
                self.put(item)
            return delivered
        finally:
            cap.release()


def open_v4l2(uri: str, *, live: LiveSettings | None = None, **kw: Any) -> MediaReader:
    backend = (live or LiveSettings()).camera_backend
    if backend == "opencv" or (backend == "auto" and shutil.which("ffmpeg") is None):
        return OpenCvCameraReader(uri, live=live, **kw)
    return V4L2Reader(uri, live=live, **kw)


# --------------------------------------------------------------------------------------------------
# microphones


