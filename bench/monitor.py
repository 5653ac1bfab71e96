"""CPU cost of the monitor pipeline (all four tasks on one stream) in real time.

Input: a 1280x720 25 fps clip with audio, paced at media speed (``realtime: true``) like a camera.
Measured in the same run:
- monitor: ``avstream run monitor --input CLIP`` (highlight, violence, localization, captions);
- baseline: the same clip through a pipeline with only the source and a window node (decode and
  frame sampling, no models), so the models' share is visible.
Prints CPU seconds per media second (1.0 = one core busy) and the ratio monitor/baseline.

    python bench/monitor.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clips import clip_720p  # bench/ is the script's folder

REPO = Path(__file__).resolve().parents[1]

DECODE_ONLY = """\
version: 1
name: decode-only
streams:
  cam0: {{uri: "{clip}", realtime: true, fps: {fps}}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [cam0], params: {{seconds: 2.0, hop: 1.0, fps: {fps}, width: 112, height: 112}}}}
outputs:
  publish: {{endpoint: "tcp://127.0.0.1:0"}}
"""


def cpu_of(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} failed:\n{res.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pipeline", default="monitor")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "avstream-bench"))
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(folder, args.seconds)
    from avstream.engine.runtime.config import Overrides, load_pipeline

    spec = load_pipeline(args.pipeline, Overrides(input_uri=str(clip)))
    fps = max((n.window.fps for n in spec.nodes.values() if n.window is not None), default=8.0)
    base_yaml = folder / "decode_only.yaml"
    base_yaml.write_text(DECODE_ONLY.format(clip=clip, fps=fps))
    run = [sys.executable, "-m", "avstream.engine.cli", "run"]
    common = ["--quiet", "--publish", "tcp://127.0.0.1:0"]
    base_wall, base_cpu = cpu_of([*run, str(base_yaml), *common])
    mon_wall, mon_cpu = cpu_of([*run, args.pipeline, "--input", str(clip), "--set",
                                f"streams.{next(iter(n for n in spec.nodes.values() if n.is_source)).id}.realtime=true",
                                "--jsonl", str(folder / "monitor.jsonl"), *common])
    print(f"clip {args.seconds:.0f} s 1280x720 25 fps + 16 kHz audio, real-time pacing; video sampled at {fps:g} fps")
    print(f"baseline (decode + windows, no models): wall {base_wall:.1f} s, {base_cpu / args.seconds:.3f} CPU s per media s")
    print(f"{args.pipeline}:  wall {mon_wall:.1f} s, {mon_cpu / args.seconds:.3f} CPU s per media s "
          f"(target < 1.0)")
    print(f"ratio {args.pipeline}/baseline CPU: {mon_cpu / base_cpu:.2f}x")


if __name__ == "__main__":
    main()
