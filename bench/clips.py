"""Test clips the benchmarks share, made once with the synthetic generator and cached."""

from __future__ import annotations

from pathlib import Path


def clip_720p(folder: Path, seconds: float) -> Path:
    """A 1280x720 25 fps clip with 16 kHz audio, ``seconds`` long (seed 7)."""
    from avstream.engine.synthetic.scene import SceneConfig, write_scene

    path = folder / f"clip720_{int(seconds)}s.mp4"
    if not path.exists():
        print(f"making a {seconds:.0f} s 1280x720 25 fps clip with audio ...", flush=True)
        write_scene(SceneConfig(seed=7, duration=seconds, fps=25, width=1280, height=720), str(path))
    return path
