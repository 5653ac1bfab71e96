"""The settings of live inputs (network streams, cameras, microphones), defined once.

:class:`LiveSettings` is what the live readers read; the source node's params
(``avstream/source@v1``) extend it, so the YAML keys, descriptions, defaults and limits of these
settings live here only. ``jitter_buffer`` is read by the source node (it merges live readers).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LiveSettings(BaseModel):
    """Settings of live readers (the source node's params of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rtsp_transport: Literal["tcp", "udp", "auto"] = Field(
        default="tcp", description="RTSP transport: tcp (interleaved, robust), udp, or auto (FFmpeg tries UDP first)."
    )
    open_timeout: float = Field(
        default=10.0, gt=0.0, le=600.0, description="Seconds to wait for a connection to open before retrying."
    )
    stall_timeout: float = Field(
        default=5.0, gt=0.0, le=600.0,
        description="A live input that delivers no packets (or no packets of one of its tracks) for this many "
        "seconds is down: stream_down is published and it is reconnected.",
    )
    reconnect: bool = Field(default=True, description="Reconnect a live input that went down.")
    backoff_initial: float = Field(
        default=0.5, gt=0.0, le=600.0, description="First reconnect delay in seconds; doubles per failed attempt."
    )
    backoff_max: float = Field(default=30.0, gt=0.0, le=3600.0, description="Longest reconnect delay in seconds.")
    backoff_jitter: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Random +- fraction added to each reconnect delay."
    )
    max_reconnects: int = Field(
        default=0, ge=0, description="Give up (stream ends with an error) after this many failed attempts; 0: never."
    )
    backend: Literal["auto", "pyav", "ffmpeg"] = Field(
        default="auto",
        description="Network reader: pyav, ffmpeg (the FFmpeg CLI as a subprocess) or auto (the CLI only for "
        "protocols PyAV lacks, e.g. srt).",
    )
    max_lag: float = Field(
        default=2.0, gt=0.0, le=600.0,
        description="Live video decoded more than this many seconds behind real time is dropped (counted) "
        "until decoding catches up.",
    )
    jitter_buffer: float = Field(
        default=0.25, ge=0.0, le=10.0,
        description="Seconds a live item may wait for the other track (late audio); audio missing for 4x this "
        "long (at least 1 s) is filled with silence so windows keep coming.",
    )
    clock: Literal["auto", "pts", "wall"] = Field(
        default="auto",
        description="Live timing: pts (the stream's own timestamps, A/V aligned as sent), wall (capture wall "
        "time, for a camera + microphone pair) or auto (pts for one network URI, wall for pairs and devices).",
    )
    decode_threads: int = Field(default=0, ge=0, le=64, description="Video decoder threads of live inputs (0: auto).")
    capture_format: str = Field(
        default="", description="Camera pixel format / codec (v4l2), e.g. mjpeg or yuyv422; the URI's ?format= wins."
    )
    capture_size: str = Field(
        default="", pattern=r"^([1-9][0-9]{0,4}x[1-9][0-9]{0,4})?$", description="Camera frame size WIDTHxHEIGHT; the URI's ?size= wins."
    )
    capture_fps: float = Field(
        default=0.0, ge=0.0, le=1000.0, description="Camera frame rate to request; the URI's ?fps= wins (0: default)."
    )
    camera_backend: Literal["auto", "ffmpeg", "opencv"] = Field(
        default="auto", description="Camera reader: the FFmpeg CLI, OpenCV's V4L2 backend, or auto (FFmpeg if installed)."
    )
    mic_channels: int = Field(
        default=1, ge=1, le=64, description="Microphone channels to capture (mixed down to mono); the device is the URI."
    )
    mic_rate: int = Field(
        default=0, ge=0, le=384000, description="Microphone capture rate in Hz (0: the device's default); resampled."
    )
    mic_buffer: float = Field(
        default=2.0, gt=0.0, le=60.0, description="Seconds of microphone audio buffered before the oldest is dropped."
    )
