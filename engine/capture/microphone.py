"""Microphones through sounddevice (PortAudio), imported lazily."""
from __future__ import annotations

import collections
import logging
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from avstream.engine.capture.avclock import AudioClock, ClockFit
from avstream.engine.capture.base import AudioChunker, redact_uri, source_error
from avstream.engine.capture.decode import MonoResampler
from avstream.engine.capture.live import LiveReader, Permanent, Transient
from avstream.engine.capture.settings import LiveSettings
from avstream.engine.errors import MissingDependencyError
from avstream.engine.items import StreamInfo

log = logging.getLogger("avstream.capture.devices")
MIC_SETTLE_S = 1.5  # audio skipped when a microphone stream starts


# --------------------------------------------------------------------------------------------------
# cameras


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
        resampler = MonoResampler(self.rate)
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
                        self.count("stalls")
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
                    for samples, _ in resampler.resample(frame):
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


