"""How long ``avstream report`` takes on a long run.

A real monitor run (all four kinds, a violence segment) of ``--piece`` seconds of a ``synthetic://``
scene, at full speed, makes the JSONL and the status lines; its lines are then repeated, shifted in
media time, wall time and ``seq``, up to ``--minutes`` of results: what a long run's file holds,
heatmaps included. The report is timed as a user runs it (a child process).

    python bench/report.py [--minutes 60] [--piece 60] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def real_run(folder: Path, seconds: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    jsonl, status = folder / "piece.jsonl", folder / "piece-status.jsonl"
    for path in (jsonl, status):
        path.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "avstream.engine.cli", "run", "monitor", "--input",
                    f"synthetic://scene?seed=5&duration={seconds:g}&violence=1", "--set", "streams.cam0.realtime=false",
                    "--jsonl", str(jsonl), "--status-json", str(status), "--quiet", "--publish", "tcp://127.0.0.1:5899"],
                   check=True)
    return [json.loads(line) for line in jsonl.read_text().splitlines()], [
        json.loads(line) for line in status.read_text().splitlines()]


def repeat(lines: list[dict[str, Any]], piece_s: float, copies: int) -> list[str]:
    """The piece's lines ``copies`` times, each copy later by ``piece_s`` of media and wall time."""
    walls = [m["wall"] for m in lines]
    wall_span = (max(walls) - min(walls)) if walls else 0.0
    per_key: dict[tuple[str, str], int] = {}
    for m in lines:
        key = (m["stream"], m["kind"])
        per_key[key] = max(per_key.get(key, -1), int(m["seq"]))
    out = []
    for k in range(copies):
        for m in lines:
            shifted = dict(m, wall=m["wall"] + k * max(wall_span, piece_s),
                           seq=m["seq"] + k * (per_key[(m["stream"], m["kind"])] + 1))
            for key in ("t0", "t1"):
                if key in m:
                    shifted[key] = m[key] + k * piece_s
            out.append(json.dumps(shifted))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--piece", type=float, default=60.0, help="seconds of the real run that is repeated")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "avstream-bench" / "report")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, status = real_run(args.out, args.piece)
    copies = max(1, round(args.minutes * 60 / args.piece))
    jsonl, status_file = args.out / "long.jsonl", args.out / "long-status.jsonl"
    jsonl.write_text("\n".join(repeat(results, args.piece, copies)) + "\n")
    status_file.write_text("\n".join(repeat(status, args.piece, copies)) + "\n")
    lines = copies * len(results)
    print(f"{lines} results and events ({jsonl.stat().st_size / 1e6:.1f} MB), {copies * len(status)} status lines, "
          f"{copies * args.piece / 60:g} min of media time")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "avstream.engine.cli", "report", str(jsonl), str(status_file),
                    "--out", str(args.out / "html")], check=True)
    print(f"avstream report: {time.perf_counter() - started:.1f} s wall (interpreter start included)")


if __name__ == "__main__":
    main()
