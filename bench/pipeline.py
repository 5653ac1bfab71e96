"""The highlight pipeline next to the loops a user would write instead, and the full-decode floor.

Inputs: the synthetic 1280x720 25 fps clip with audio (bench/clips.py ``clip_720p``) and real
footage (the fight-surveillance clips joined to 1280x720 25 fps, libx264 defaults, 48 kHz AAC;
``real_clip``: skipped with a note when the data is absent). Rows, each a child process:

- engine: ``avstream run pipelines/highlight.yaml --input CLIP --set streams.cam0.realtime=false``
  (source, window and model in three processes, frames through shared memory);
- expert: bench/expert_loop.py, the baseline: one process, PyAV frame threading, only the sampled
  frames converted and scaled to the model's size in one swscale context, audio resampled once by
  PyAV, the model's windows on ONNX Runtime with one thread and no spinning;
- naive: what a first attempt looks like: every frame converted to BGR, then resized by OpenCV,
  PyAV and ONNX Runtime at their default threading;
- ffmpeg -threads N: ``ffmpeg -threads N -i CLIP -f null -``, decoding every frame (N = 1, cores).

The rows alternate within each repeat; medians of wall time and of CPU time (user + system of the
child and its descendants) are reported, with the ratios and their targets: engine wall <= 0.8x the
expert's, CPU <= 1.0x, and >= 1.2x faster than the full-decode floor when the model samples <= 8 fps
of a 25 fps input. The expert loop must give as many windows as the engine; the largest difference
of their model outputs and of the highlight scores is printed: 0 (both feed the model the same
frames, the first at or after each point of its 4 fps grid, scaled by swscale with area
interpolation, and the same PyAV-resampled audio; tests/test_bench_expert_loop.py).

``--spin`` adds the engine with 2 intra-op threads, spinning on and off (docs/models.md).

    python bench/pipeline.py [--seconds 60] [--repeats 5] [--inputs synthetic,real] [--spin] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from children import REPO, cache_bytecode, child_env  # bench/ is the script's folder
from clips import DEFAULT_CACHE, REAL_DATA, clip_720p, real_clip

CORES = len(os.sched_getaffinity(0))
MODEL_NODE = "score"  # the model node of pipelines/highlight.yaml

NAIVE_LOOP = r'''
import sys, json, av, cv2, numpy as np, onnxruntime as ort
from avstream.engine.inference.contract import read_contract, resolve_model
from pathlib import Path
path = resolve_model("builtin:highlight", Path("."))
c = read_contract(path).window_requirement()
sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
container = av.open(sys.argv[1])
resampler = av.AudioResampler(format="flt", layout="mono", rate=c.sample_rate)
frames, audio = [], []
next_keep = 0.0
for packet in container.demux():
    for frame in packet.decode():
        if isinstance(frame, av.VideoFrame):
            image = frame.to_ndarray(format="bgr24")
            t = float(frame.time)
            if t + 1e-6 >= next_keep:
                frames.append((t, cv2.resize(image, (c.width, c.height), interpolation=cv2.INTER_AREA)))
                next_keep += 1.0 / c.fps
        else:
            for out in resampler.resample(frame):
                audio.append(out.to_ndarray().reshape(-1))
samples = np.concatenate(audio)
t0, scores = 0.0, []
end = len(samples) / c.sample_rate
while t0 < end:
    t1 = t0 + c.seconds
    inside = [f for t, f in frames if t0 - 1e-6 <= t < t1 - 1e-6][: c.frames]
    while len(inside) < c.frames:
        inside.append(inside[-1] if inside else np.zeros((c.height, c.width, 3), np.uint8))
    clip = samples[int(t0 * c.sample_rate): int(t0 * c.sample_rate) + c.audio_samples]
    clip = np.pad(clip, (0, c.audio_samples - len(clip)))
    out = sess.run(None, {"video": np.stack(inside)[None], "audio": clip[None].astype(np.float32)})
    scores.append(out)
    t0 += c.hop
print(json.dumps({"windows": len(scores)}))
'''


@dataclass
class Row:
    name: str
    cmd: list[str]
    jsonl: Path | None = None  # the engine's results
    runs: list[tuple[float, float]] = field(default_factory=list)  # (wall s, CPU s)
    output: str = ""  # last stdout line of the last run

    @property
    def wall(self) -> float:
        return statistics.median(w for w, _ in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(c for _, c in self.runs)


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child and everything it waited for, last stdout line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=child_env())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed:\n{res.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = res.stdout.strip().splitlines()
    return wall, cpu, lines[-1] if lines else ""


def engine_row(name: str, clip: Path, folder: Path, *sets: str) -> Row:
    jsonl = folder / f"bench-{clip.stem}-{name.replace(' ', '_')}.jsonl"
    cmd = [sys.executable, "-m", "avstream.engine.cli", "run", "pipelines/highlight.yaml", "--input", str(clip),
           "--set", "streams.cam0.realtime=false", *[a for s in sets for a in ("--set", s)], "--quiet",
           "--jsonl", str(jsonl), "--publish", "tcp://127.0.0.1:0"]
    return Row(name, cmd, jsonl)


def rows_for(clip: Path, folder: Path, spin: bool) -> list[Row]:
    rows = [engine_row("engine", clip, folder),
            Row("expert", [sys.executable, str(REPO / "bench" / "expert_loop.py"), str(clip)]),
            Row("naive", [sys.executable, "-c", NAIVE_LOOP, str(clip)])]
    if spin:
        rows += [engine_row("engine 2 threads spin", clip, folder, f"nodes.{MODEL_NODE}.params.threads=2",
                            f"nodes.{MODEL_NODE}.params.spin=true"),
                 engine_row("engine 2 threads no spin", clip, folder, f"nodes.{MODEL_NODE}.params.threads=2",
                            f"nodes.{MODEL_NODE}.params.spin=false")]
    for n in sorted({1, CORES}):
        rows.append(Row(f"ffmpeg -threads {n}", ["ffmpeg", "-nostdin", "-v", "error", "-threads", str(n), "-i",
                                                 str(clip), "-f", "null", "-"]))
    return rows


def measure(rows: list[Row], repeats: int, label: str) -> None:
    for r in range(repeats):
        order = rows[r % len(rows):] + rows[: r % len(rows)]  # each row in each position in turn
        for row in order:
            if row.jsonl is not None and row.jsonl.exists():
                row.jsonl.unlink()
            wall, cpu, row.output = timed(row.cmd)
            row.runs.append((wall, cpu))
            print(f"  {label} run {r + 1}/{repeats} {row.name:<26} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)


def engine_outputs(row: Row) -> tuple[list[float], list[float]]:
    """(activations, scores) of the engine's last run, in window order."""
    assert row.jsonl is not None
    results = [json.loads(line) for line in row.jsonl.read_text().splitlines() if line.strip()]
    results = sorted((r for r in results if r.get("kind") == "highlight"), key=lambda r: r["t0"])
    return [r["activation"] for r in results], [r["score"] for r in results]


def expert_scores(activations: list[float]) -> list[float]:
    """The highlight node's causal score of the expert's activations (same normalisation)."""
    from avstream.engine.inference.contract import read_contract, resolve_model
    from avstream.plugins.encoders import RollingScore, activation_prior

    contract = read_contract(resolve_model("builtin:highlight", REPO))
    roll = RollingScore(60.0, prior=activation_prior(contract))
    need = contract.window_requirement()
    return [roll.update(i * need.hop + need.seconds, a) for i, a in enumerate(activations)]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(label: str, clip: Path, rows: list[Row]) -> dict[str, Any]:
    by = {r.name: r for r in rows}
    engine, expert, naive = by["engine"], by["expert"], by["naive"]
    floors = [r for r in rows if r.name.startswith("ffmpeg")]
    print(f"\n{label}: {clip.name}, medians of {len(engine.runs)} runs, {CORES} cores")
    print(f"  {'row':<26} {'wall s':>8} {'cpu s':>8} {'cores':>6}")
    for r in rows:
        print(f"  {r.name:<26} {r.wall:8.2f} {r.cpu:8.2f} {r.cpu / r.wall:6.2f}")
    got = json.loads(expert.output)
    acts, scores = engine_outputs(engine)
    mine = got["activation"]
    same = len(mine) == len(acts)
    d_act = max((abs(a - b) for a, b in zip(acts, mine, strict=False)), default=0.0)
    d_score = max((abs(a - b) for a, b in zip(scores, expert_scores(mine), strict=False)), default=0.0)
    print(f"  windows: engine {len(acts)}, expert {len(mine)} ({'same' if same else 'DIFFERENT'}); "
          f"max |activation difference| {d_act:.4f}, max |score difference| {d_score:.4f}")
    wall_ratio, cpu_ratio = engine.wall / expert.wall, engine.cpu / expert.cpu
    floor = min(floors, key=lambda r: r.wall)
    speedup = floor.wall / engine.wall
    print(f"  engine/expert wall {wall_ratio:.2f}x (target <= 0.8x: {verdict(wall_ratio <= 0.8)}), "
          f"cpu {cpu_ratio:.2f}x (target <= 1.0x: {verdict(cpu_ratio <= 1.0)})")
    print(f"  engine/naive  wall {engine.wall / naive.wall:.2f}x, cpu {engine.cpu / naive.cpu:.2f}x")
    print(f"  speed-up over the full decode: {floor.name} wall / engine wall = {speedup:.2f}x "
          f"(target >= 1.2x when sampling <= 8 of 25 fps: {verdict(speedup >= 1.2)})")
    spin = [r for r in rows if "spin" in r.name]
    for r in spin:
        print(f"  {r.name}: wall {r.wall / engine.wall:.2f}x, cpu {r.cpu / engine.cpu:.2f}x the engine's default")
    return {"clip": str(clip), "cores": CORES, "rows": {r.name: {"wall_s": r.wall, "cpu_s": r.cpu, "runs": r.runs}
                                                         for r in rows},
            "windows": {"engine": len(acts), "expert": len(mine)}, "max_activation_diff": d_act,
            "max_score_diff": d_score, "engine_over_expert": {"wall": wall_ratio, "cpu": cpu_ratio},
            "floor_over_engine_wall": speedup}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inputs", default="synthetic,real", help="comma-separated: synthetic, real")
    parser.add_argument("--spin", action="store_true", help="also the engine with 2 threads, spinning on and off")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clips: list[tuple[str, Path]] = []
    for name in [s.strip() for s in args.inputs.split(",") if s.strip()]:
        if name == "synthetic":
            clips.append(("synthetic", clip_720p(folder, args.seconds)))
        elif name == "real":
            real = real_clip(folder, args.seconds)
            if real is None:
                print(f"no real footage (looked in {REAL_DATA}; set AVSTREAM_FIGHT_DATA): real input skipped")
            else:
                clips.append(("real", real))
        else:
            raise SystemExit(f"--inputs: unknown input {name!r} (synthetic, real)")
    if not clips:
        raise SystemExit("no input to measure")
    print(f"{CORES} cores; {args.repeats} repeats per row, rows alternating; clips {args.seconds:g} s 1280x720 25 fps "
          "+ audio; the engine samples 4 fps at 64x64 for the highlight model", flush=True)
    figures = {}
    measured = []
    cache_bytecode("pipelines/highlight.yaml", clips[0][1])
    for label, clip in clips:
        rows = rows_for(clip, folder, args.spin)
        measure(rows, args.repeats, label)
        measured.append((label, clip, rows))
    for label, clip, rows in measured:
        figures[label] = report(label, clip, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
