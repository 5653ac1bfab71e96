"""Test clips the benchmarks share, made once and cached in the bench folder.

- ``clip_720p``: synthetic 1280x720 25 fps + 16 kHz audio (the scene generator, seed 7);
- ``real_clip``: real surveillance footage, the fight-surveillance development clips (fight and
  noFight alternating, in name order), each normalised to 1280x720 25 fps yuv420p with 48 kHz stereo
  audio (a clip without an audio track gets silence), joined and encoded once with libx264's
  default settings + AAC: what a camera archive or a user's own file looks like, B-frames included.

The data folder is ``$AVSTREAM_FIGHT_DATA`` or ``../shared/data/fight-surveillance`` next to the
checkout; it is read, never copied into the repository.

    python bench/clips.py [--seconds 60] [--cache DIR]     (prints the path of the real clip)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_CACHE = Path(tempfile.gettempdir()) / "avstream-bench"
# the shared data next to the checkout (its README: never copied into the repository)
REAL_DATA = Path(os.environ.get("AVSTREAM_FIGHT_DATA")
                 or Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-surveillance")
WIDTH, HEIGHT, FPS, AUDIO_RATE = 1280, 720, 25, 48_000


def clip_720p(folder: Path, seconds: float) -> Path:
    """A 1280x720 25 fps clip with 16 kHz audio, ``seconds`` long (seed 7)."""
    from avstream.engine.synthetic.scene import SceneConfig, write_scene

    path = folder / f"clip720_{int(seconds)}s.mp4"
    if not path.exists():
        print(f"making a {seconds:.0f} s 1280x720 25 fps clip with audio ...", flush=True)
        write_scene(SceneConfig(seed=7, duration=seconds, fps=25, width=1280, height=720), str(path))
    return path


def probe(path: Path) -> tuple[float, bool]:
    """(video duration in seconds, whether the file has an audio track), by ffprobe."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,duration:format=duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    duration = float(video[0].get("duration") or info["format"]["duration"]) if video else 0.0
    return duration, any(s.get("codec_type") == "audio" for s in streams)


def pick_clips(data: Path, seconds: float) -> list[tuple[Path, float, bool]]:
    """fight/noFight clips alternating in name order until their video lasts ``seconds``."""
    fights, calm = sorted(data.glob("fight/*.mp4")), sorted(data.glob("noFight/*.mp4"))
    order = [p for pair in zip(fights, calm, strict=False) for p in pair]
    picked, total = [], 0.0
    for path in order:
        duration, audio = probe(path)
        if duration <= 0:
            continue
        picked.append((path, duration, audio))
        total += duration
        if total >= seconds:
            break
    return picked


def join_graph(picked: list[tuple[Path, float, bool]]) -> str:
    """The filter graph: each clip scaled (aspect kept) and padded to 720p at 25 fps with a 48 kHz
    stereo track exactly as long as its video (silence where it has none), then concatenated."""
    parts = []
    for i, (_, duration, audio) in enumerate(picked):
        parts.append(f"[{i}:v]scale={WIDTH}:{HEIGHT}:force_original_aspect_ratio=decrease,"
                     f"pad={WIDTH}:{HEIGHT}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={FPS},format=yuv420p,"
                     f"trim=duration={duration:.3f},setpts=PTS-STARTPTS[v{i}]")
        src = f"[{i}:a]" if audio else f"anullsrc=r={AUDIO_RATE}:cl=stereo,"
        parts.append(f"{src}aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,apad,"
                     f"atrim=duration={duration:.3f},asetpts=PTS-STARTPTS[a{i}]")
    pads = "".join(f"[v{i}][a{i}]" for i in range(len(picked)))
    return ";".join(parts) + f";{pads}concat=n={len(picked)}:v=1:a=1[v][a]"


def real_clip(folder: Path, seconds: float) -> Path | None:
    """The joined real-footage clip, ``seconds`` long (made once, cached); None without the data."""
    if not REAL_DATA.is_dir() or shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        return None
    path = folder / f"fights_720p25_{int(seconds)}s.mp4"
    if path.exists():
        return path
    picked = pick_clips(REAL_DATA, seconds)
    if not picked:
        return None
    print(f"joining {len(picked)} real clips into {path.name} (libx264 defaults + AAC) ...", flush=True)
    inputs = [arg for p, _, _ in picked for arg in ("-i", str(p))]
    partial = path.with_suffix(".part.mp4")  # an interrupted encode never looks like a finished clip
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", join_graph(picked),
                    "-map", "[v]", "-map", "[a]", "-c:v", "libx264", "-c:a", "aac", "-t", f"{seconds:g}",
                    str(partial)], check=True)
    partial.rename(path)
    return path


def require_real_clip(folder: Path, seconds: float) -> Path:
    """``real_clip``, or exit with a message saying where the data was looked for."""
    path = real_clip(folder, seconds)
    if path is None:
        need = "ffmpeg and ffprobe" if REAL_DATA.is_dir() else f"the fight-surveillance clips at {REAL_DATA}"
        raise SystemExit(f"the real-footage clip needs {need} (set AVSTREAM_FIGHT_DATA to the data folder, "
                         "or choose the synthetic clip)")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    print(require_real_clip(folder, args.seconds))


if __name__ == "__main__":
    sys.exit(main())
