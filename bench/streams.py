"""Capacity: the most real-time 720p25 + 16 kHz streams the monitor pipeline sustains without drops.

A trial runs N streams through the monitor pipeline's four tasks, each stream a 1280x720 25 fps clip
with audio paced at media speed and looped (``realtime: true, loop: true``), like N cameras. Streams
alternate between the real-footage clip (fight-surveillance, bench/clips.py) and the synthetic one
(``--real-only`` for real footage only). The N sources share one capture worker, and the window and
model nodes of the monitor pipeline serve all streams in a second worker, batching windows of several
streams into one model call (``max_batch``), as ``avstream serve`` shares them. By default every video
frame is decoded (``skip: none``), as a camera's RTSP stream is; ``--skip auto`` lets file sources skip
the frames no model needs.

The whole process tree is pinned to the first C cores (``os.sched_setaffinity`` before the exec, which
every worker inherits), for C in ``--cores`` (default 1 and 2).

A trial passes when, over ``--seconds`` of media time per stream:
- no node counted a drop (the run's own final status, ``--status-json``; SPEC §4 drops);
- no ``seq`` gap in any stream's results, and every stream got its expected number of results of
  each kind (from the JSONL sink);
- every stream kept real time: its results' wall clock advanced at most ``--max-lag`` seconds more than
  their media time (a paced source that falls behind emits late instead of dropping).

A failed trial is repeated once (the machine may be shared) and N fails only when the repeat fails
too; a run that does not end by itself is reported and repeated. Search: N = 1, 2, 4, ... until a
trial fails, then bisection between the last pass and the first fail.
Each trial prints its cores used (CPU seconds of the tree per media second) and the cost per stream; the
table compares each with the 1-stream trial of the same core count (the baseline, same run), and the
capacities of the core counts with each other.

    python bench/streams.py [--cores 1,2] [--seconds 20] [--max-streams 64] [--real-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from children import REPO, cache_bytecode, child_env  # bench/ is the script's folder
from clips import DEFAULT_CACHE, clip_720p, require_real_clip

TASKS = {  # node -> (node type, model, kind of its results)
    "highlight": ("avstream/highlight@v1", "builtin:highlight", "highlight"),
    "violence": ("avstream/violence@v1", "builtin:violence", "violence"),
    "localization": ("avstream/localization@v1", "builtin:localization", "localization"),
    "captions": ("avstream/captions@v1", "builtin:captions", "caption"),
}
HOPS = {"highlight": 1.0, "violence": 0.5, "localization": 0.5, "caption": 5.0}  # the monitor's
WINDOWS = {"highlight": 2.0, "violence": 2.0, "localization": 1.0, "caption": 5.0}


def pipeline_yaml(clips: list[Path], skip: str, batch: int) -> str:
    """The monitor pipeline's four tasks over len(clips) streams (one clip each)."""
    ids = [f"cam{i}" for i in range(len(clips))]
    lines = ["version: 1", f"name: streams-{len(clips)}", "streams:"]
    for sid, clip in zip(ids, clips, strict=True):
        lines.append(f"  {sid}: {{uri: \"{clip}\", realtime: true, loop: true, skip: {skip}, audio_chunk_s: 0.1, "
                     "process: capture}")
    lines.append("nodes:")
    inputs = ", ".join(ids)
    for node, (type_id, model, _) in TASKS.items():
        extra = ", every_s: 5.0" if node == "captions" else ""
        lines.append(f"  w_{node}: {{type: avstream/av_window@v1, inputs: [{inputs}], process: models}}")
        lines.append(f"  {node}: {{type: {type_id}, inputs: [w_{node}], process: models, params: "
                     f"{{model: \"{model}\", threads: 1, max_batch: {batch}{extra}}}}}")
    lines += ["outputs:", "  publish: {endpoint: \"tcp://127.0.0.1:0\"}"]
    return "\n".join(lines) + "\n"


@dataclass
class Trial:
    streams: int
    cores: int
    passed: bool
    cpu_cores: float  # CPU seconds of the process tree per media second
    per_stream: float
    drops: int
    seq_gaps: int
    missing: int  # results short of the expected count, all streams and kinds
    worst_lag_s: float
    wall_s: float
    hung: bool  # did not end by itself: an engine fault, not a capacity limit
    why: list[str] = field(default_factory=list)


def read_results(path: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            msg = json.loads(line)
            if msg.get("kind") != "event" and "t1" in msg:
                out.setdefault(msg["stream"], {}).setdefault(msg["kind"], []).append(msg)
    return out


def final_drops(status: Path) -> tuple[int, list[str]]:
    """Drops summed over the nodes of the run's last status line, and the nodes that dropped."""
    lines = status.read_text().splitlines() if status.exists() else []
    if not lines:
        return 0, ["no status written"]
    last = json.loads(lines[-1])
    nodes = [(n["id"], int(n.get("drops", 0))) for n in last.get("nodes", [])]
    return sum(d for _, d in nodes), [f"{n} dropped {d}" for n, d in nodes if d]


def trial(n: int, cores: int, clips: list[Path], args: argparse.Namespace, folder: Path) -> Trial:
    use = [clips[i % len(clips)] for i in range(n)]
    yaml = folder / f"streams_{n}.yaml"
    yaml.write_text(pipeline_yaml(use, args.skip, min(n, args.max_batch)))
    results, status = folder / f"streams_{n}_c{cores}.jsonl", folder / f"streams_{n}_c{cores}.status.jsonl"
    results.unlink(missing_ok=True)
    status.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "avstream.engine.cli", "run", str(yaml), "--duration", f"{args.seconds:g}",
           "--quiet", "--jsonl", str(results), "--status-json", str(status)]
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    hung = False
    try:
        _, err = run.communicate(timeout=args.seconds * 3 + 60)
    except subprocess.TimeoutExpired:  # the run did not end: stop it as a user would (SIGINT), then kill
        hung = True
        run.send_signal(signal.SIGINT)
        try:
            _, err = run.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            run.kill()
            _, err = run.communicate()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    why: list[str] = []
    if hung or run.returncode != 0:  # kept for a look at what the engine said
        (folder.parent / f"streams_{n}_c{cores}.stderr").write_text(err or "")
    if hung:
        why.append(f"did not end {args.seconds * 3 + 60:.0f} s after its start")
    elif run.returncode != 0:
        why.append(f"exit {run.returncode}: {err.strip().splitlines()[-1:] or ''}")
    drops, dropped = final_drops(status)
    why += dropped
    got = read_results(results)
    gaps = missing = 0
    worst_lag = 0.0
    for i in range(n):
        kinds = got.get(f"cam{i}", {})
        for kind, hop in HOPS.items():
            msgs = kinds.get(kind, [])
            seqs = [m["seq"] for m in msgs]
            gaps += sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1)
            expected = int((args.seconds - WINDOWS[kind]) / hop + 1e-6) + 1
            missing += max(0, expected - len(msgs) - 1)  # one window of slack at the end of the run
            if len(msgs) >= 2:
                lag = (msgs[-1]["wall"] - msgs[0]["wall"]) - (msgs[-1]["t1"] - msgs[0]["t1"])
                worst_lag = max(worst_lag, lag)
    if gaps:
        why.append(f"{gaps} seq gap(s)")
    if missing:
        why.append(f"{missing} result(s) missing")
    if worst_lag > args.max_lag:
        why.append(f"fell behind real time by {worst_lag:.1f} s")
    used = cpu / args.seconds
    return Trial(n, cores, not why, used, used / n, drops, gaps, missing, worst_lag, wall, hung, why)


def search(cores: int, clips: list[Path], args: argparse.Namespace, folder: Path) -> list[Trial]:
    """Doubling until a trial fails, then bisection: the largest passing N is the capacity."""
    trials: list[Trial] = []

    def run(n: int) -> bool:
        t = trial(n, cores, clips, args, folder)
        if t.hung:  # a run that never ended says nothing about capacity: report it and try once more
            print(f"  {cores} core(s), {n:>3} stream(s): the run did not end ({'; '.join(t.why)}); again", flush=True)
            trials.append(t)
            t = trial(n, cores, clips, args, folder)
        if not t.passed and not t.hung:  # the machine is shared: a failure counts when a repeat fails too
            print(f"  {cores} core(s), {n:>3} stream(s): failed ({'; '.join(t.why)}); repeating once", flush=True)
            t.why = [f"(first try) {w}" for w in t.why]
            trials.append(t)
            t = trial(n, cores, clips, args, folder)
        trials.append(t)
        verdict = "pass" if t.passed else "FAIL: " + "; ".join(t.why)
        print(f"  {cores} core(s), {n:>3} stream(s): {t.cpu_cores:.3f} cores used, {t.per_stream:.3f} per stream, "
              f"lag {t.worst_lag_s:.2f} s, wall {t.wall_s:.0f} s -> {verdict}", flush=True)
        return t.passed

    good, bad = 0, None
    n = 1
    while n <= args.max_streams:
        if not run(n):
            bad = n
            break
        good, n = n, n * 2
    if bad is None:
        return trials
    while bad - good > 1:
        mid = (good + bad) // 2
        if run(mid):
            good = mid
        else:
            bad = mid
    return trials


def capacity(trials: list[Trial]) -> int:
    return max((t.streams for t in trials if t.passed), default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", default="1,2", help="core counts to pin to, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="media seconds per trial and stream")
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=8, help="windows per model call, at most")
    parser.add_argument("--max-lag", type=float, default=1.0, help="seconds a stream may fall behind real time")
    parser.add_argument("--skip", default="none", choices=["none", "auto"], help="none: decode every frame "
                        "(like a camera); auto: files skip the frames no model needs")
    parser.add_argument("--real-only", action="store_true", help="only the real-footage clip")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--json", help="write every trial here")
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    core_counts = [int(c) for c in args.cores.split(",")]
    if max(core_counts) > len(os.sched_getaffinity(0)):
        raise SystemExit(f"--cores {args.cores}: this process may run on {len(os.sched_getaffinity(0))} core(s)")
    clips = [require_real_clip(folder, 60.0)]
    if not args.real_only:
        clips.append(clip_720p(folder, 60.0))
    cache_bytecode("monitor", clips[0])
    print(f"streams: {', '.join(c.name for c in clips)} alternating, 1280x720 25 fps + audio (16 kHz to the models), "
          f"paced in real time and looped; decode skip: {args.skip}; {args.seconds:g} s per trial", flush=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        by_cores = {c: search(c, clips, args, Path(tmp)) for c in core_counts}
    print("\ncores  streams  result  cores used  per stream  per stream / 1-stream trial  lag s")
    for c, trials in by_cores.items():
        base = next((t.per_stream for t in trials if t.streams == 1 and not t.hung), float("nan"))
        for t in sorted((t for t in trials if not t.hung), key=lambda t: (t.streams, t.passed)):
            print(f"{c:>5}  {t.streams:>7}  {'pass' if t.passed else 'FAIL':>6}  {t.cpu_cores:>10.3f}  {t.per_stream:>10.3f}"
                  f"  {t.per_stream / base:>27.2f}  {t.worst_lag_s:>5.2f}")
    hangs = [f"{t.cores} core(s) x {t.streams}" for ts in by_cores.values() for t in ts if t.hung]
    if hangs:
        print(f"runs that did not end (retried once): {', '.join(hangs)}")
    caps = {c: capacity(t) for c, t in by_cores.items()}
    print("\ncapacity (most streams without drops): " + ", ".join(f"{c} core(s): {n}" for c, n in caps.items()))
    for c, n in caps.items():
        if n:
            print(f"  {c} core(s): {n / c:.1f} streams per core")
    if len(caps) > 1:
        first = core_counts[0]
        for c in core_counts[1:]:
            if caps[first]:
                print(f"  ratio {c} cores / {first} core(s): x{caps[c] / caps[first]:.2f} streams "
                      f"(x{c / first:.0f} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps({"capacity": caps, "args": vars(args),
                                               "trials": {c: [asdict(t) for t in ts] for c, ts in by_cores.items()}},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
