"""CPU of the live preview: the monitor pipeline on a 1280x720 25 fps clip in real time, three ways.

- off: no preview configured (``avstream run`` without a viewer);
- idle: the preview configured (PreviewSpec defaults) and nobody watching (``avstream serve``'s case);
- watched: one viewer watching the stream at 10 fps (JPEG frames up to 640 wide, received and counted).

Each run is a fresh interpreter with the supervisor in it (so a viewer object can be set on it); CPU
seconds of the whole process tree (supervisor, workers) per media second, taken when it ends. The
runs alternate ``--rounds`` times, so a slow moment of a shared machine does not land on one mode.

    python bench/preview.py [--seconds 30] [--rounds 2] [--real]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from children import child_env  # bench/ is the script's folder
from clips import DEFAULT_CACHE, clip_720p, require_real_clip

MODES = ("off", "idle", "watched")


def child(mode: str, clip: str, seconds: float) -> None:
    from avstream.engine.items import PreviewFrame
    from avstream.engine.runtime.config import Overrides, load_pipeline
    from avstream.engine.runtime.graph import PreviewSpec
    from avstream.engine.runtime.supervisor import Supervisor

    class CountingViewer:
        def __init__(self) -> None:
            self.frames = 0
            self.bytes = 0

        def wanted_streams(self) -> set[str]:
            return {"cam0"}

        def send_frame(self, frame: PreviewFrame) -> None:
            self.frames += 1
            self.bytes += len(frame.jpeg)

    overrides = Overrides(input_uri=clip, duration=seconds, publish="tcp://127.0.0.1:0",
                          preview=None if mode == "off" else PreviewSpec())
    sup = Supervisor(load_pipeline("monitor", overrides), quiet=True)
    viewer = CountingViewer() if mode == "watched" else None
    sup.viewer = viewer
    rc = sup.run()
    print(json.dumps({"rc": rc, "frames": viewer.frames if viewer else 0,
                      "kb_per_frame": round(viewer.bytes / viewer.frames / 1e3, 1) if viewer and viewer.frames else 0}))


def measure(mode: str, clip: Path, seconds: float) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(clip), str(seconds)], env=child_env(),
                         capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"mode": mode, "cores": cpu / seconds, "wall_s": time.monotonic() - started, **got}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--real", action="store_true", help="the real-footage clip (default: the synthetic one)")
    args = parser.parse_args()
    DEFAULT_CACHE.mkdir(parents=True, exist_ok=True)
    clip = require_real_clip(DEFAULT_CACHE, args.seconds) if args.real else clip_720p(DEFAULT_CACHE, args.seconds)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        for mode in MODES:
            got = measure(mode, clip, args.seconds)
            runs[mode].append(got)
            print(f"round {r + 1} {mode:8s} {got['cores']:.3f} cores  preview frames {got['frames']}"
                  f" ({got['frames'] / args.seconds:.1f}/s, {got['kb_per_frame']} kB each)", flush=True)
    base = statistics.median(g["cores"] for g in runs["off"])
    for mode in MODES:
        cores = statistics.median(g["cores"] for g in runs[mode])
        print(f"{mode:8s} median {cores:.3f} cores ({cores - base:+.3f} vs off)")


if __name__ == "__main__":
    main()
