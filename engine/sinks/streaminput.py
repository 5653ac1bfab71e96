"""What the sinks that open a stream's input a second time (clips, annotated video) share: which
input to open, its FFmpeg options, file names, and the media clock of the results."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avstream.engine.capture.base import NETWORK_SCHEMES

if TYPE_CHECKING:
    from avstream.engine.sinks import SinkContext

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# Network inputs that can be opened a second time. Not: SRT (read by the FFmpeg CLI, PyAV's FFmpeg
# lacks it) and UDP (one port, one reader: a second socket would take datagrams from the pipeline's own).
REOPENABLE_NETWORK = tuple(s for s in NETWORK_SCHEMES if s not in ("srt", "udp"))


def output_folder(setting: str | None, default: str, context: SinkContext) -> Path:
    """A sink's folder, created: ``setting`` (relative to the pipeline or config file), else
    ``default`` under the run's data folder."""
    base = context.data_dir / default if setting is None else Path(setting)
    folder = base if base.is_absolute() else context.base_dir / base
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_name(name: str) -> str:
    """``name`` as one file name: characters other than letters, digits, ``_.-`` become ``_``."""
    safe = _SAFE.sub("_", name)
    return "_" + safe if safe.startswith(".") or not safe else safe


def input_uri(entry: dict[str, Any]) -> str | None:
    """The URI to open of a stream entry: its ``uri``, else its ``video`` (a camera + microphone pair
    is opened from the video input alone)."""
    uri = entry.get("uri") or entry.get("video")
    return str(uri) if uri else None


def input_options(entry: dict[str, Any]) -> dict[str, str]:
    """The FFmpeg options of the stream's input (its ``options`` and ``rtsp_transport``)."""
    options = {str(k): str(v) for k, v in (entry.get("options") or {}).items()}
    if entry.get("rtsp_transport") in ("tcp", "udp"):
        options.setdefault("rtsp_transport", str(entry["rtsp_transport"]))
    return options


def capture_offset(header: dict[str, Any]) -> float:
    """Capture wall time of media time 0 by a result header: ``wall - latency_ms/1000`` is the capture
    wall of the window's last sample, ``t1``. A live input's own second connection maps its frames'
    capture wall times to the pipeline's media time with it."""
    wall = header.get("wall")
    wall = float(wall) if isinstance(wall, (int, float)) else time.time()
    return wall - float(header.get("latency_ms") or 0.0) / 1000.0 - float(header["t1"])
