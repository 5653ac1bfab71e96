"""Test clips the benchmarks share, made once with the synthetic generator and cached."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# the shared data next to the checkout (its README: never copied into the repository)
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fight-surveillance"


def clip_720p(folder: Path, seconds: float) -> Path:
    """A 1280x720 25 fps clip with 16 kHz audio, ``seconds`` long (seed 7)."""
    from avstream.engine.synthetic.scene import SceneConfig, write_scene

    path = folder / f"clip720_{int(seconds)}s.mp4"
    if not path.exists():
        print(f"making a {seconds:.0f} s 1280x720 25 fps clip with audio ...", flush=True)
        write_scene(SceneConfig(seed=7, duration=seconds, fps=25, width=1280, height=720), str(path))
    return path


def real_clip(folder: Path, seconds: float) -> Path | None:
    """Real surveillance clips (fight and no-fight, each ~2 s) joined into one ``seconds`` long 1280x720
    25 fps H.264 + AAC file in the cache folder (never in the repository); a missing track is silence."""
    if not REAL_DATA.is_dir() or shutil.which("ffmpeg") is None:
        return None
    path = folder / f"real_{int(seconds)}s.mp4"
    if path.exists():
        return path
    import av

    picked, total = [], 0.0
    names = sorted(REAL_DATA.glob("fight/*.mp4"))[::3] + sorted(REAL_DATA.glob("noFight/*.mp4"))[::3]
    names.sort(key=lambda p: p.name[::-1])  # mix the two folders
    for name in names:
        with av.open(str(name)) as c:
            audio = any(s.type == "audio" for s in c.streams)
            length = float(c.duration or 0) / 1e6
        picked.append((name, audio, length))
        total += length
        if total >= seconds:
            break
    print(f"joining {len(picked)} real clips into {path.name} ...", flush=True)
    inputs, filters = [], []
    for i, (name, audio, length) in enumerate(picked):
        inputs += ["-i", str(name)]
        filters.append(f"[{i}:v]scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,"
                       f"fps=25,setsar=1,format=yuv420p,trim=duration={length:.3f}[v{i}]")
        # every piece gets a track as long as its video; a clip without one gets silence
        src = f"[{i}:a]" if audio else "anullsrc=r=16000:cl=mono,"
        filters.append(f"{src}aresample=16000,aformat=channel_layouts=mono,apad,atrim=duration={length:.3f}[a{i}]")
    joined = "".join(f"[v{i}][a{i}]" for i in range(len(picked)))
    graph = ";".join(filters) + f";{joined}concat=n={len(picked)}:v=1:a=1:unsafe=1[v][a]"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "aac", "-t", f"{seconds:g}",
                    str(path)], check=True)
    return path
