"""The edge pipeline against its targets, next to the monitor pipeline as the baseline, in one run.

Both run the same 1280x720 25 fps clip with audio paced at media speed (``realtime: true``), like a
camera: the real-footage clip by default (bench/clips.py), ``--synthetic`` for the generated one.
- baseline: ``avstream run monitor --input CLIP`` (FP32 models, all four tasks, one worker);
- edge: ``avstream run pipelines/edge.yaml --input CLIP`` (INT8 built-ins, edge rates, a capture and
  a models worker).

For each, as bench/monitor.py measures it: CPU cores (CPU seconds of the process tree per media
second, start-up included, and the steady state), PSS summed over the process tree (psutil
``memory_full_info().pss``, sampled every 0.5 s; peak and median), RSS summed, per process; and the
results of each kind. Then the edge/monitor ratios and the targets: PSS summed < 200 MB and < 0.3
cores. ``--rounds N`` alternates the two N times and reports the medians (the machine is shared).

    python bench/edge.py [--seconds 30] [--rounds 1] [--synthetic] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from children import REPO, cache_bytecode  # bench/ is the script's folder
from clips import DEFAULT_CACHE, clip_720p, require_real_clip
from monitor import latencies, run_measured, show

TARGET_PSS_MB, TARGET_CORES = 200.0, 0.3
EDGE = str(REPO / "pipelines" / "edge.yaml")
KINDS = ("highlight", "violence", "localization", "caption")


def measure(pipeline: str, clip: Path, results: Path, seconds: float) -> dict[str, Any]:
    results.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "avstream.engine.cli", "run", pipeline, "--input", str(clip),
           "--set", "streams.cam0.realtime=true", "--quiet", "--publish", "tcp://127.0.0.1:0", "--jsonl", str(results)]
    got = show(Path(pipeline).stem, run_measured(cmd), seconds)
    got["latency_ms"] = latencies(results)
    got["results"] = {kind: v["results"] for kind, v in got["latency_ms"].items()}
    print("  results: " + ", ".join(f"{k} {got['results'].get(k, 0)}" for k in KINDS), flush=True)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--synthetic", action="store_true", help="the generated clip instead of real footage")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(folder, args.seconds) if args.synthetic else require_real_clip(folder, args.seconds)
    print(f"clip {clip.name}: {args.seconds:.0f} s 1280x720 25 fps + audio, real-time pacing", flush=True)
    cache_bytecode("monitor", clip)
    cache_bytecode(EDGE, clip)
    rounds: dict[str, list[dict[str, Any]]] = {"monitor": [], "edge": []}
    for r in range(args.rounds):
        print(f"-- round {r + 1}/{args.rounds}", flush=True)
        rounds["monitor"].append(measure("monitor", clip, folder / "monitor.jsonl", args.seconds))
        rounds["edge"].append(measure(EDGE, clip, folder / "edge.jsonl", args.seconds))

    def med(name: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in rounds[name])

    print(f"\nmedians over {args.rounds} round(s)      monitor (baseline)   edge     edge/monitor")
    for key, label in (("pss_peak_mb", "PSS summed, peak (MB)"), ("pss_median_mb", "PSS summed, median (MB)"),
                       ("rss_peak_mb", "RSS summed, peak (MB)"), ("cores", "cores (start-up included)"),
                       ("steady_cores", "cores (steady state)"), ("processes", "processes")):
        a, b = med("monitor", key), med("edge", key)
        print(f"  {label:<28} {a:>10.3f}       {b:>8.3f}   x{b / a:.2f}" if a else f"  {label:<28} {a} {b}")
    pss, cores = med("edge", "pss_peak_mb"), med("edge", "cores")
    missing = [k for k in KINDS if any(not x["results"].get(k) for x in rounds["edge"])]
    print(f"targets: edge PSS summed (peak) {pss:.0f} MB < {TARGET_PSS_MB:.0f} MB: "
          f"{'met' if pss < TARGET_PSS_MB else 'NOT met'}; cores {cores:.3f} < {TARGET_CORES}: "
          f"{'met' if cores < TARGET_CORES else 'NOT met'}; all four tasks produced results: "
          f"{'yes' if not missing else 'NO, missing ' + ', '.join(missing)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"clip": str(clip), "rounds": rounds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
