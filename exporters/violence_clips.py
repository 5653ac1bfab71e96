"""The real fight-surveillance clips, cut into AV windows exactly as a pipeline does it."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from avstream.engine.node import WindowRequirement


# --------------------------------------------------------------------------------------------------
# data
@dataclass(frozen=True)
class Clip:
    id: str
    label: int  # 1 fight, 0 no fight
    group: str  # source video
    path: Path


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fight-surveillance"


@dataclass
class StreamWindows:
    """The AV windows of one input, in order, as the pipeline makes them, stacked."""

    frames: np.ndarray  # (W, T, H, W, 3) uint8 BGR
    audio: np.ndarray  # (W, N) float32; zeros where the input has no audio track
    t0: np.ndarray  # (W,) media time of each window
    t1: np.ndarray
    fps: float
    has_audio: bool

    def silenced(self) -> StreamWindows:
        return replace(self, audio=np.zeros_like(self.audio))


@dataclass
class ClipData:
    clip: Clip
    windows: StreamWindows


# one score per window; the scorer sees the windows of one stream in order and may keep state
StreamScorer = Callable[[StreamWindows], np.ndarray]




def load_clips(root: Path = DEFAULT_DATA) -> list[Clip]:
    """The clips listed in ``groups.csv`` (clip, label, source_group); files under fight/ and noFight/."""
    table = root / "groups.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table}: not found (the fight-surveillance development data)")
    clips = []
    with table.open(newline="") as f:
        for row in csv.DictReader(f):
            label = {"fight": 1, "noFight": 0}.get(row["label"])
            if label is None:
                raise ValueError(f"{table}: clip {row['clip']}: unknown label {row['label']!r}")
            path = root / row["label"] / f"{row['clip']}.mp4"
            if not path.is_file():
                raise FileNotFoundError(f"{table}: clip {row['clip']}: {path} not found")
            clips.append(Clip(row["clip"], label, row["source_group"], path))
    return clips


def windows_of(uri: str, req: WindowRequirement, stream: str = "clip") -> StreamWindows:
    """Decode ``uri`` and cut it into windows with the pipeline's own window node."""
    import logging
    import threading

    from avstream.engine.capture.schemes import open_reader
    from avstream.engine.items import AVWindow, Item
    from avstream.engine.node import NodeContext
    from avstream.plugins.window import AVWindowNode, WindowParams

    ctx = NodeContext(node_id="window", streams=(stream,), base_dir=Path.cwd(), stop_event=threading.Event(),
                      logger=logging.getLogger("avstream.eval"), window=req)
    node = AVWindowNode(ctx, WindowParams())
    out: list[Item] = []
    with open_reader(uri, stream=stream, sample_rate=req.sample_rate or 16000) as reader:
        info = reader.info
        out += node.process(info)
        for item in reader.read():
            out += node.process(item)
    out += node.on_eos(stream)
    wins = [w for w in out if isinstance(w, AVWindow)]
    if not wins:
        raise ValueError(f"{uri}: no window (input shorter than a frame?)")
    n_audio = req.audio_samples or int(round(req.seconds * (req.sample_rate or 16000)))
    frames = np.stack([w.frames if w.frames is not None else
                       np.zeros((req.frames, req.height, req.width, 3), np.uint8) for w in wins])
    audio = np.stack([w.audio if w.audio is not None else np.zeros(n_audio, np.float32) for w in wins])
    return StreamWindows(frames, audio.astype(np.float32), np.array([w.t0 for w in wins]),
                         np.array([w.t1 for w in wins]), req.fps, bool(info.has_audio))


def _req_key(req: WindowRequirement) -> str:
    return f"{req.seconds:g}s-hop{req.hop:g}-{req.fps:g}fps-{req.frames}x{req.height}x{req.width}-{req.sample_rate}"


def load_clip_windows(clips: Sequence[Clip], req: WindowRequirement, cache_dir: Path | None,
                      progress: Callable[[str], None] = print) -> list[ClipData]:
    """Windows of every clip (cached as .npz per clip under ``cache_dir/windows-<window spec>``)."""
    folder = cache_dir / f"windows-{_req_key(req)}" if cache_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    out = []
    t_start = time.perf_counter()
    for i, clip in enumerate(clips):
        path = folder / f"{clip.id}.npz" if folder is not None else None
        if path is not None and path.exists():
            z = np.load(path)
            sw = StreamWindows(z["frames"], z["audio"], z["t0"], z["t1"], float(z["fps"]), bool(z["has_audio"]))
        else:
            sw = windows_of(str(clip.path), req)
            if path is not None:
                np.savez(path, frames=sw.frames, audio=sw.audio, t0=sw.t0, t1=sw.t1, fps=sw.fps,
                         has_audio=sw.has_audio)
        out.append(ClipData(clip, sw))
        if (i + 1) % 50 == 0 or i + 1 == len(clips):
            progress(f"windows of {i + 1}/{len(clips)} clips ({time.perf_counter() - t_start:.0f} s)")
    return out


# --------------------------------------------------------------------------------------------------
# protocol pieces
