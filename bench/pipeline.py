"""The highlight pipeline vs a bare single-process loop doing the same work, in the same run.

Input: a 60 s 1280x720 25 fps clip with audio (made once with the synthetic generator).
- engine: ``avstream run pipelines/highlight.yaml --input CLIP --set streams.cam0.realtime=false``
  (source, window and model in three processes, frames through shared memory);
- bare loop: what a user would write: PyAV decodes the clip, every frame converted to BGR, audio
  resampled to 16 kHz mono, 2 s windows every 1 s with the model's frames picked and resized,
  ONNX Runtime run per window. PyAV and ONNX Runtime keep their default threading.
Both run as child processes; wall time and CPU time (user + system of the child and its
descendants) are measured for each, alternating, and the ratios printed.

    python bench/pipeline.py [--seconds 60] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clips import clip_720p  # bench/ is the script's folder

REPO = Path(__file__).resolve().parents[1]

BARE_LOOP = r'''
import sys, av, cv2, numpy as np, onnxruntime as ort
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
print(len(scores), "windows")
'''


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child and everything it waited for, last output line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{res.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = (res.stdout.strip() or res.stderr.strip()).splitlines()
    return wall, cpu, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "avstream-bench"))
    args = parser.parse_args()
    folder = Path(args.cache)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip_720p(folder, args.seconds)
    engine = [sys.executable, "-m", "avstream.engine.cli", "run", "pipelines/highlight.yaml", "--input", str(clip),
              "--set", "streams.cam0.realtime=false", "--quiet", "--jsonl", str(folder / "bench.jsonl"),
              "--publish", "tcp://127.0.0.1:0"]
    bare = [sys.executable, "-c", BARE_LOOP, str(clip)]
    print(f"cores: {os.cpu_count()}; bare loop: PyAV default decoder threading, ONNX Runtime default "
          "intra-op threads (all cores); engine: the pipeline's nodes in 3 processes, ONNX Runtime default threads")
    rows: dict[str, list[tuple[float, float]]] = {"bare": [], "engine": []}
    for r in range(args.repeats):
        for name, cmd in (("bare", bare), ("engine", engine)):
            if os.path.exists(folder / "bench.jsonl"):
                os.remove(folder / "bench.jsonl")
            wall, cpu, last = timed(cmd)
            rows[name].append((wall, cpu))
            print(f"run {r + 1} {name:<6} wall {wall:6.2f} s  cpu {cpu:6.2f} s   ({last})", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in rows.items()}
    wall_ratio = min(w for w, _ in rows["engine"]) / min(w for w, _ in rows["bare"])
    cpu_ratio = min(c for _, c in rows["engine"]) / min(c for _, c in rows["bare"])
    print(f"\nclip: {args.seconds:.0f} s 1280x720 25 fps + audio; best of {args.repeats}")
    print(f"bare   wall {min(w for w, _ in rows['bare']):.2f} s  cpu {min(c for _, c in rows['bare']):.2f} s")
    print(f"engine wall {min(w for w, _ in rows['engine']):.2f} s  cpu {min(c for _, c in rows['engine']):.2f} s")
    print(f"ratio engine/bare: wall {wall_ratio:.2f}x (target <= 0.8x), cpu {cpu_ratio:.2f}x (target <= 1.1x)")
    _ = med


if __name__ == "__main__":
    main()
