"""Thumbnails of the top highlights: the run's video decoded by PyAV at each window's middle.

Media time is the container's time less the earliest start of its video and audio tracks, as the
file source counts it (engine/capture/files.py), so a thumbnail shows the frame the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from avstream.engine.report.analysis import clock
from avstream.engine.report.reader import ReportInputError

MAX_WIDTH = 480


@dataclass(frozen=True)
class Thumbnail:
    file: str
    t: float  # media time of the frame shown
    t0: float
    t1: float
    score: float
    width: int
    height: int


class VideoFile:
    """An opened video, checked before anything is drawn so a bad ``--video`` fails at once."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise ReportInputError(f"--video {path}: no such file")
        try:
            self.container: Any = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise ReportInputError(f"--video {path}: cannot open it as a video ({exc})") from exc
        if not self.container.streams.video:
            self.container.close()
            raise ReportInputError(f"--video {path}: the file has no video track")
        self.stream = self.container.streams.video[0]
        starts = [float(s.start_time * s.time_base) for s in (self.stream, *self.container.streams.audio[:1])
                  if s.start_time is not None and s.time_base]
        self.start = min(starts) if starts else 0.0
        self.duration = float(self.container.duration) / 1e6 if self.container.duration else 0.0

    def frame_at(self, t: float) -> tuple[np.ndarray, float] | None:
        """The RGB frame shown at media time ``t`` (the last one at or before it) and its time."""
        target = self.start + max(0.0, t)
        time_base = float(self.stream.time_base or 1)
        self.container.seek(int(target / time_base), stream=self.stream, backward=True, any_frame=False)
        best: tuple[np.ndarray, float] | None = None
        for frame in self.container.decode(self.stream):
            if frame.time is None:
                continue
            if frame.time > target + 1e-6 and best is not None:
                break
            best = (frame.to_ndarray(format="rgb24"), float(frame.time) - self.start)
            if frame.time > target + 1e-6:
                break
        return best

    def close(self) -> None:
        self.container.close()


def _captioned(rgb: np.ndarray, caption: str) -> np.ndarray:
    height, width = rgb.shape[:2]
    if width > MAX_WIDTH:
        scale = MAX_WIDTH / width
        rgb = cv2.resize(rgb, (MAX_WIDTH, max(2, round(height * scale))), interpolation=cv2.INTER_AREA)
    strip = np.zeros((26, rgb.shape[1], 3), dtype=np.uint8)
    cv2.putText(strip, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([rgb, strip])


def write_thumbnails(video: VideoFile, highlights: list[dict[str, Any]], out_dir: Path, prefix: str) -> list[Thumbnail]:
    """One PNG per highlight window, captioned with its media time and score."""
    made: list[Thumbnail] = []
    for rank, result in enumerate(highlights, start=1):
        t0, t1 = float(result["t0"]), float(result["t1"])
        middle = (t0 + t1) / 2.0
        try:
            got = video.frame_at(middle)
        except av.FFmpegError as exc:
            raise ReportInputError(f"--video {video.path}: cannot decode the frame at {clock(middle)} ({exc})") from exc
        if got is None:
            continue  # past the end of the video: a video shorter than the run
        rgb, t = got
        score = float(result.get("score", 0.0))
        image = _captioned(rgb, f"{clock(t)}  score {score:.2f}  window {clock(t0)}-{clock(t1)}")
        name = f"{prefix}-highlight-{rank}.png"
        if not cv2.imwrite(str(out_dir / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise ReportInputError(f"{out_dir / name}: cannot write the thumbnail")
        made.append(Thumbnail(name, t, t0, t1, score, image.shape[1], image.shape[0]))
    return made
