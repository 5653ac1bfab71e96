"""CPU and memory of the monitor pipeline (all four tasks on one stream) in real time.

Input: a 1280x720 25 fps clip with audio, paced at media speed (``realtime: true``) like a camera:
the real-footage clip by default (bench/clips.py ``real_clip``), ``--synthetic`` for the generated one.
Measured in the same run, one after the other:
- monitor: ``avstream run monitor --input CLIP`` (highlight, violence, localization, captions);
- baseline: the same clip through a pipeline with only the source and a window node (decode and
  frame sampling, no models), so the models' share is visible.

For each: CPU cores used (CPU seconds of the whole process tree per media second), and memory summed
over the process tree, sampled every 0.5 s: PSS (shared pages split between the processes that map
them, so the sum counts each page once), RSS, and the number of processes; the peak and the median
of the sums, and each process's PSS at the median. Targets for the monitor: <= 0.25 cores and
<= 160 MB PSS summed.

    python bench/monitor.py [--seconds 30] [--synthetic] [--pipeline monitor] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from children import REPO, cache_bytecode, child_env  # bench/ is the script's folder
from clips import DEFAULT_CACHE, clip_720p, require_real_clip

MB = 1e6
STEADY_AFTER_S = 6.0  # models loaded and warmed up by then: the steady-state CPU figure starts here
TARGET_CORES, TARGET_PSS_MB = 0.25, 160.0

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


@dataclass
class Sample:
    at: float  # perf_counter seconds
    pss: float  # bytes, summed over the tree
    rss: float
    processes: int
    by_process: dict[str, float]  # process name -> PSS bytes
    cpu: dict[tuple[int, str], float]  # (pid, process name) -> CPU seconds so far (user + system)


@dataclass
class Measured:
    wall: float
    cpu: float
    start: float  # perf_counter seconds at the start of the command
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples) if self.samples else 0.0

    def peak(self, attr: str) -> float:
        return max((getattr(s, attr) for s in self.samples), default=0.0)

    def steady_cores(self) -> tuple[float, dict[str, float]]:
        """Cores used between the first and the last sample (start-up and shut-down left out), in all
        and per process name."""
        steady = [s for s in self.samples if s.at - self.start >= STEADY_AFTER_S]
        if len(steady) < 2:
            return 0.0, {}
        first, last = steady[0], steady[-1]
        span = last.at - first.at
        per: dict[str, float] = {}
        for key, end in last.cpu.items():
            if key in first.cpu:
                per[key[1]] = per.get(key[1], 0.0) + (end - first.cpu[key]) / span
        return sum(per.values()), per

    def per_process(self) -> dict[str, float]:
        """Each process's median PSS over the samples that saw it."""
        names: dict[str, list[float]] = {}
        for s in self.samples:
            for name, pss in s.by_process.items():
                names.setdefault(name, []).append(pss)
        return {name: statistics.median(v) for name, v in names.items()}


def label_of(proc: psutil.Process, root: int) -> str:
    """``supervisor`` for the ``avstream run`` process, the worker's own name (``avs:models``) else."""
    if proc.pid == root:
        return "supervisor"
    try:
        return proc.name()
    except psutil.Error:
        return str(proc.pid)


def sample_tree(root: psutil.Process) -> Sample | None:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    pss = rss = 0.0
    seen = 0
    by: dict[str, float] = {}
    cpu: dict[tuple[int, str], float] = {}
    at = time.perf_counter()
    for proc in procs:
        try:
            info = proc.memory_full_info()
            times = proc.cpu_times()
        except psutil.Error:
            continue  # ended between the listing and the read
        seen += 1
        pss += info.pss
        rss += info.rss
        name = label_of(proc, root.pid)
        by[name] = by.get(name, 0.0) + info.pss
        cpu[(proc.pid, name)] = times.user + times.system
    return Sample(at, pss, rss, seen, by, cpu)


def run_measured(cmd: list[str], every_s: float = 0.5) -> Measured:
    """Run ``cmd``, sampling its process tree's memory every ``every_s``; CPU from the children's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=child_env())
    samples: list[Sample] = []
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(child.stderr.read() if child.stderr else ""), daemon=True)
    reader.start()
    root = psutil.Process(child.pid)
    time.sleep(1.0)  # start-up (imports, model loading) is not the steady state
    while child.poll() is None:
        got = sample_tree(root)
        if got is not None and got.processes:
            samples.append(got)
        time.sleep(every_s)
    wall = time.perf_counter() - start
    reader.join(5)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed:\n{''.join(errors)[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(wall, cpu, start, samples[:-1] or samples)


def latencies(results: Path) -> dict[str, dict[str, float]]:
    """Per result kind: how many, and the median and 95th percentile of their latency (ms)."""
    by: dict[str, list[float]] = {}
    for line in results.read_text().splitlines():
        msg = json.loads(line)
        if "latency_ms" in msg and msg.get("kind") != "event":
            by.setdefault(msg["kind"], []).append(float(msg["latency_ms"]))
    return {kind: {"results": len(v), "median": statistics.median(v),
                   "p95": sorted(v)[min(len(v) - 1, int(0.95 * len(v)))]} for kind, v in by.items()}


def show(name: str, m: Measured, seconds: float) -> dict[str, Any]:
    cores = m.cpu / seconds
    steady, per_cpu = m.steady_cores()
    print(f"{name}: wall {m.wall:.1f} s, {cores:.3f} cores (CPU s per media s, start-up included; steady state "
          f"{steady:.3f}), processes {m.median('processes'):.0f}")
    print("  cores per process (steady): " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(per_cpu.items())))
    print(f"  PSS summed: peak {m.peak('pss') / MB:.0f} MB, median {m.median('pss') / MB:.0f} MB;  "
          f"RSS summed: peak {m.peak('rss') / MB:.0f} MB, median {m.median('rss') / MB:.0f} MB")
    per = m.per_process()
    print("  PSS per process (median): " + ", ".join(f"{k} {v / MB:.0f} MB" for k, v in sorted(per.items())))
    return {"wall_s": m.wall, "cpu_s": m.cpu, "cores": cores, "steady_cores": steady,
            "steady_cores_per_process": per_cpu, "processes": m.median("processes"),
            "pss_peak_mb": m.peak("pss") / MB, "pss_median_mb": m.median("pss") / MB,
            "rss_peak_mb": m.peak("rss") / MB, "rss_median_mb": m.median("rss") / MB,
            "pss_per_process_mb": {k: v / MB for k, v in per.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pipeline", default="monitor")
    parser.add_argument("--synthetic", action="store_true", help="the generated clip instead of real footage")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to `avstream run` for the monitor run (repeatable)")
    parser.add_argument("--no-baseline", action="store_true", help="measure the monitor only")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(folder, args.seconds) if args.synthetic else require_real_clip(folder, args.seconds)
    from avstream.engine.runtime.config import Overrides, load_pipeline

    spec = load_pipeline(args.pipeline, Overrides(input_uri=str(clip)))
    fps = max((n.window.fps for n in spec.nodes.values() if n.window is not None), default=8.0)
    source = next(n.id for n in spec.nodes.values() if n.is_source)
    run = [sys.executable, "-m", "avstream.engine.cli", "run"]
    common = ["--quiet", "--publish", "tcp://127.0.0.1:0"]
    print(f"clip {clip.name}: {args.seconds:.0f} s 1280x720 25 fps + audio, real-time pacing; "
          f"video sampled at {fps:g} fps", flush=True)
    figures: dict[str, Any] = {"clip": str(clip)}
    cache_bytecode(args.pipeline, clip)
    if not args.no_baseline:
        base_yaml = folder / "decode_only.yaml"
        base_yaml.write_text(DECODE_ONLY.format(clip=clip, fps=fps))
        figures["baseline"] = show("baseline (decode + one window node, no models)",
                                   run_measured([*run, str(base_yaml), *common]), args.seconds)
    sets = [a for s in [f"streams.{source}.realtime=true", *args.sets] for a in ("--set", s)]
    results = folder / "monitor.jsonl"
    results.unlink(missing_ok=True)
    mon = run_measured([*run, args.pipeline, "--input", str(clip), *sets, "--jsonl", str(results), *common])
    figures["monitor"] = got = show(args.pipeline, mon, args.seconds)
    got["latency_ms"] = latencies(results)
    print("  result latency (capture to publish) median / p95 ms: " + ", ".join(
        f"{kind} {v['median']:.0f} / {v['p95']:.0f} ({v['results']})" for kind, v in sorted(got["latency_ms"].items())))
    cores_ok, pss_ok = got["cores"] <= TARGET_CORES, got["pss_peak_mb"] <= TARGET_PSS_MB
    print(f"targets: cores {got['cores']:.3f} <= {TARGET_CORES}: {'met' if cores_ok else 'NOT met'}; "
          f"PSS summed (peak) {got['pss_peak_mb']:.0f} MB <= {TARGET_PSS_MB:.0f} MB: {'met' if pss_ok else 'NOT met'}")
    if "baseline" in figures:
        print(f"ratio {args.pipeline}/baseline CPU: {mon.cpu / figures['baseline']['cpu_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
