"""Capture devices: cameras (``v4l2:///dev/videoN``) and microphones (``mic://default|name|index``).

Cameras are read by the FFmpeg CLI (``-f v4l2``, remuxed to NUT and decoded like a network stream,
with the kernel's capture timestamps turned into wall time) or by OpenCV's V4L2 backend; PyAV's
wheels have no v4l2 input. Format, size and frame rate come from the URI query
(``?format=mjpeg&size=1280x720&fps=30``) or the source params ``capture_format``/``capture_size``/
``capture_fps``. Microphones go through sounddevice (PortAudio): a callback fills a bounded block
buffer (overflows counted), a capture thread converts to mono at the requested rate and stamps
samples with the ADC capture time, drift-corrected by :class:`~avstream.engine.avclock.AudioClock`.
Both map to capture wall time, so a camera and a microphone pair up as one stream.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from .avclock import AudioClock, ClockFit
from .capture import AudioChunker, FpsGate, MediaReader, redact_uri, source_error
from .errors import MissingDependencyError, SourceError
from .items import StreamInfo, VideoFrame
from .netcapture import LiveReader, LiveSettings, NetworkReader, Permanent, Transient

log = logging.getLogger("avstream.capture.devices")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
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
    if "size" in query and not _SIZE.match(query["size"]):
        return f"bad size {query['size']!r} (want WIDTHxHEIGHT)"
    if "fps" in query:
        try:
            float(query["fps"])
        except ValueError:
            return f"bad fps {query['fps']!r}"
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
                            settings=settings)
        self.scheme, self.options, self.use_cli = "v4l2", {str(k): str(v) for k, v in (kw.get("options") or {}).items()}, True
        self.pts_is_wall = demuxer == "v4l2"
        self._bgr = None
        self._size = None
        self._warned = set()

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
                         settings=live)
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
            m = _SIZE.match(self.capture_size or "")
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
                    raise Transient("the camera stopped delivering frames")
                if self.wall:
                    t = self.wall.place("video", self.wall.t_of(wall), 1.0 / native if native > 0 else 0.0)
                else:
                    t = self.clock.map("video", wall, wall)
                if t is None:
                    continue
                if t <= last or t < self.clock.start or not gate.keep(t):
                    continue
                last = t
                self.mark_up()
                delivered = True
                self.clock.note_end(t, wall)
                if image.shape[1] != w or image.shape[0] != h:
                    image = cv2.resize(image, (w, h))
                self.put(VideoFrame(self.stream, t, wall, np.ascontiguousarray(image)))
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


def _sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise MissingDependencyError(
            "microphone input needs sounddevice: pip install 'avstream[mic]'") from None
    except OSError as exc:  # sounddevice loads the PortAudio library at import
        raise MissingDependencyError(
            f"microphone input needs the PortAudio library (e.g. apt-get install libportaudio2): {exc}") from None
    return sounddevice


def check_mic_uri(uri: str) -> str | None:
    parts = urllib.parse.urlsplit(uri)
    if not (parts.netloc or parts.path.strip("/")):
        return "give a device: mic://default, mic://<name> or mic://<index>"
    return None


def _mic_device(uri: str) -> str | int | None:
    parts = urllib.parse.urlsplit(uri)
    name = urllib.parse.unquote(parts.netloc + parts.path).strip("/")
    if name in ("", "default"):
        return None
    return int(name) if name.isdigit() else name


class _Blocks:
    """What the PortAudio callback hands over: mono blocks with their ADC wall time, bounded."""

    def __init__(self, max_samples: int):
        self.max_samples = max_samples
        self.blocks: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.held = 0
        self.dropped = 0
        self.overflows = 0
        self.last = time.monotonic()
        self.cond = threading.Condition()

    def add(self, wall: float, block: np.ndarray, overflow: bool) -> None:
        with self.cond:
            self.overflows += overflow
            self.blocks.append((wall, block))
            self.held += len(block)
            while self.held > self.max_samples:  # the reader fell behind: the oldest audio goes
                _, old = self.blocks.popleft()
                self.held -= len(old)
                self.dropped += len(old)
            self.last = time.monotonic()
            self.cond.notify()

    def take(self, timeout: float) -> list[tuple[float, np.ndarray]]:
        with self.cond:
            if not self.blocks:
                self.cond.wait(timeout)
            out = list(self.blocks)
            self.blocks.clear()
            self.held = 0
            return out


class MicReader(LiveReader):
    """``mic://default``, ``mic://<name substring>`` or ``mic://<index>`` through sounddevice."""

    default_clock = "wall"

    def __init__(self, uri: str, *, stream: str, video: bool = False, audio: bool = True, fps: float = 0.0,
                 sample_rate: int = 16000, audio_chunk_s: float = 0.04, live: LiveSettings | None = None,
                 **_: Any):
        problem = check_mic_uri(uri)
        if problem:
            raise source_error(stream, uri, problem)
        if not audio:
            raise source_error(stream, uri, "a microphone has only audio (no video track)")
        super().__init__(uri, stream=stream, video=False, audio=True, fps=0.0, sample_rate=sample_rate,
                         audio_chunk_s=audio_chunk_s, settings=live)
        self.sd = _sounddevice()
        self.device = _mic_device(uri)
        try:
            dev = self._query()
        except (ValueError, self.sd.PortAudioError) as exc:
            names = [f"{i}: {d['name']}" for i, d in enumerate(self.sd.query_devices()) if d["max_input_channels"] > 0]
            raise source_error(stream, uri, f"no such input device ({' '.join(str(exc).split())}); "
                                            f"input devices: {'; '.join(names) or 'none'}") from None
        self.device_name = str(dev["name"])
        s = self.settings
        self.device_rate = int(s.mic_rate or dev["default_samplerate"] or sample_rate)
        self.channels = max(1, min(s.mic_channels, int(dev["max_input_channels"])))
        self.info = StreamInfo(stream, False, True, sample_rate=sample_rate, uri=redact_uri(uri))

    def _query(self) -> Any:
        """The device's PortAudio entry; the device list is refreshed once if it is not there
        (PortAudio lists devices when it starts: a device plugged in, or a sound server started,
        later is missing until then)."""
        try:
            return self.sd.query_devices(self.device, "input")
        except (ValueError, self.sd.PortAudioError):
            self.sd._terminate()
            self.sd._initialize()
            return self.sd.query_devices(self.device, "input")

    def bind(self, **kw: Any) -> None:
        super().bind(**kw)
        # The sample count is the timeline: samples are only lost where PortAudio or our buffer says
        # so (mark_gap). ADC times give the drift; their latency part can change at run time (a
        # sound server re-configuring), which shows as a step and moves nothing.
        self.audio_clock = AudioClock(self.rate, resync_s=1.0, confirm_s=1.0, absorb_steps=True,
                                      fit=ClockFit(step_s=0.02, max_dev=0.005, min_span_s=8.0))

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        out["device"] = self.device_name
        return out

    def _run(self) -> None:
        self.reconnect_loop(self._capture_once, permanent_first=True)

    def _capture_once(self) -> bool:
        import av

        sd, s = self.sd, self.settings
        blocks = _Blocks(int(s.mic_buffer * self.device_rate))

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            now = time.time()
            adc = time_info.inputBufferAdcTime
            # PortAudio's stream clock -> wall clock; without an ADC time, the block ended just now
            wall = now - (time_info.currentTime - adc) if adc else now - frames / self.device_rate
            mono = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy()
            blocks.add(wall, mono.astype(np.float32, copy=False), bool(status.input_overflow))

        try:
            stream = sd.InputStream(device=self.device, channels=self.channels, samplerate=self.device_rate,
                                    dtype="float32", callback=callback, latency="low")
            stream.start()
        except sd.PortAudioError as exc:
            text = " ".join(str(exc).split())
            if "busy" in text.lower() or "unavailable" in text.lower():
                raise Permanent(f"microphone {self.device_name!r} is busy or unavailable ({text})") from None
            raise Transient(f"cannot open microphone {self.device_name!r}: {text}") from None
        self.announce(StreamInfo(self.stream, False, True, sample_rate=self.rate, uri=redact_uri(self.uri)))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        chunker: AudioChunker | None = None
        delivered = False
        seen_overflows = seen_dropped = 0
        # the first moments of a PortAudio stream carry a step in their ADC times: skip them
        settle_until: float | None = None
        try:
            while not self._stop.is_set():
                got = blocks.take(0.1)
                if not got:
                    if time.monotonic() - blocks.last > s.stall_timeout:
                        raise Transient(f"no audio from the microphone for {s.stall_timeout:g} s")
                    continue
                if blocks.overflows > seen_overflows or blocks.dropped > seen_dropped:
                    self.count("mic_overflows", blocks.overflows - seen_overflows)
                    self.count("mic_dropped_samples", blocks.dropped - seen_dropped)
                    seen_overflows, seen_dropped = blocks.overflows, blocks.dropped
                    self.audio_clock.mark_gap()  # audio was lost: restart the timeline at the ADC time
                for wall, block in got:
                    if settle_until is None:
                        settle_until = wall + MIC_SETTLE_S
                    if wall < settle_until:
                        continue
                    frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
                    frame.sample_rate = self.device_rate
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().reshape(-1)
                        ref = self.wall.place("audio", self.wall.t_of(wall)) if self.wall else self.clock.map(
                            "audio", wall, wall)
                        if ref is None:  # a paired camera has not started yet
                            wall += len(samples) / self.rate
                            continue
                        wall += len(samples) / self.rate
                        chunker, sent = self.clock_audio(samples, ref, chunker, self._emit)
                        delivered = delivered or sent
            return delivered
        finally:
            stream.abort()
            stream.close()

    def _emit(self, chunks: Any) -> None:
        for c in chunks:
            self.clock.note_end(c.t_end, c.wall)
            self.put(c)


__all__ = ["MicReader", "OpenCvCameraReader", "SourceError", "V4L2Reader", "check_mic_uri", "check_v4l2_uri",
           "open_v4l2"]
