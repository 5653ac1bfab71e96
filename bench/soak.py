"""Soak: the monitor pipeline on two live HTTP streams for a long time, its resources sampled per process.

Every ``--every`` seconds, for the supervisor and each worker process (by role: sources, windows, one
per model): RSS, PSS (psutil ``memory_full_info``), open file descriptors, threads, sockets, and the
run's shared-memory ring segments (files and bytes under /dev/shm/avstream-<id>). Writes the samples
as CSV and a PNG plot.

Growth, per process, after the warm-up: the median of the last quarter of the samples against the
median of the first quarter (medians: single samples are noisy on a shared machine), in percent;
also the least-squares slope over the same samples, as percent per hour. A process restarted during
the run (``--crash``) is judged on the samples of its last pid, its own warm-up left out. Target:
under 2% over an hour. After stop: no worker left, no ring segment, no ipc socket file.

    python bench/soak.py [--seconds 3600] [--every 10] [--warmup 300] [--crash] [--out DIR]
"""


import argparse
import csv
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import livegraph as lg  # noqa: E402 - bench/ is not a package

TARGET_GROWTH_PCT = 2.0
FIELDS = ("t", "role", "pid", "rss", "pss", "fds", "threads", "sockets", "shm_files", "shm_bytes")


@dataclass
class Sample:
    t: float  # seconds since the start of sampling
    role: str
    pid: int
    rss: int
    pss: int
    fds: int
    threads: int
    sockets: int
    shm_files: int
    shm_bytes: int


def sample_process(t: float, role: str, pid: int, shm: tuple[int, int]) -> Sample | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            mem = proc.memory_full_info()
            return Sample(t, role, pid, mem.rss, mem.pss, proc.num_fds(), proc.num_threads(),
                          len(proc.net_connections(kind="all")), *shm)
    except psutil.Error:
        return None  # ended between the listing and the read (a crash, the stop)


def shm_usage(run: lg.Run) -> tuple[int, int]:
    files = size = 0
    for folder in run.ring_dirs():
        for entry in folder.iterdir():
            files += 1
            size += entry.stat().st_size if entry.exists() else 0
    return files, size


def growth(samples: list[Sample], warmup_s: float, attr: str) -> dict[str, float] | None:
    """First- against last-quarter medians of ``attr`` after the warm-up (last pid only), and the slope."""
    if not samples:
        return None
    last_pid = samples[-1].pid
    own = [s for s in samples if s.pid == last_pid]
    start = own[0].t
    steady = [s for s in own if s.t - start >= warmup_s]
    if len(steady) < 8:
        return None
    q = len(steady) // 4
    first = statistics.median(getattr(s, attr) for s in steady[:q])
    last = statistics.median(getattr(s, attr) for s in steady[-q:])
    xs = [s.t for s in steady]
    ys = [float(getattr(s, attr)) for s in steady]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return {"first": first, "last": last, "growth_pct": 100.0 * (last - first) / first if first else 0.0,
            "slope_pct_per_h": 100.0 * slope * 3600 / my if my else 0.0, "span_s": steady[-1].t - steady[0].t}


def write_csv(samples: list[Sample], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for s in samples:
            w.writerow([f"{s.t:.2f}", s.role, s.pid, s.rss, s.pss, s.fds, s.threads, s.sockets, s.shm_files, s.shm_bytes])


def plot(samples: list[Sample], path: Path, warmup_s: float, crashes_s: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = sorted({s.role for s in samples})
    panels = [("pss", "PSS (MB)", 1e6), ("rss", "RSS (MB)", 1e6), ("fds", "open fds", 1), ("threads", "threads", 1),
              ("sockets", "sockets", 1), ("shm_bytes", "ring segments (MB, whole run)", 1e6)]
    fig, axes = plt.subplots(3, 2, figsize=(13, 10), sharex=True)
    for ax, (attr, title, scale) in zip(axes.flat, panels, strict=True):
        for role in roles if attr != "shm_bytes" else ["supervisor"]:
            mine = [s for s in samples if s.role == role]
            ax.plot([s.t / 60 for s in mine], [getattr(s, attr) / scale for s in mine], label=role, lw=1)
        ax.axvline(warmup_s / 60, color="grey", ls=":", lw=1)
        for at in crashes_s:
            ax.axvline(at / 60, color="red", ls="--", lw=0.8)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle("avstream soak: monitor pipeline, two live HTTP streams (dotted: end of warm-up; dashed: SIGKILL)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_soak(folder: Path, seconds: float, every: float, warmup: float, crash: bool,
             log: Any = print) -> dict[str, Any]:
    servers = [lg.http_server(i, folder) for i in range(2)]
    for server in servers:
        server.start()
    pipeline = lg.monitor_pipeline({f"cam{i}": s.uri for i, s in enumerate(servers)}, folder / "soak.yaml")
    run = lg.Run(pipeline, folder, folder / "results.jsonl").start()
    samples: list[Sample] = []
    crashed: list[str] = []
    crashes_s: list[float] = []
    try:
        run.wait_results(("highlight",), ("cam0", "cam1"), timeout=180)
        t0 = time.monotonic()
        crash_at = [seconds * 0.4, seconds * 0.6] if crash else []
        while (t := time.monotonic() - t0) < seconds:
            if run.proc is not None and run.proc.poll() is not None:
                raise RuntimeError(f"avstream run ended during the soak:\n{run.log_text()[-2000:]}")
            workers = run.workers()
            run.note_sockets()
            if crash_at and t >= crash_at[0]:
                role = "windows" if len(crash_at) == 2 else "violence"
                os.kill(workers[role], signal.SIGKILL)
                crashed.append(f"{role} at {t:.0f} s")
                crashes_s.append(t)
                crash_at.pop(0)
            shm = shm_usage(run)
            for role, pid in [("supervisor", run.pid), *sorted(workers.items())]:
                got = sample_process(t, role, pid, shm)
                if got is not None:
                    samples.append(got)
            time.sleep(max(0.0, every - (time.monotonic() - t0 - t)))
    finally:
        rc = run.stop()
        for server in servers:
            server.stop()
    left = run.leftovers()
    write_csv(samples, folder / "soak.csv")
    plot(samples, folder / "soak.png", warmup, crashes_s)
    roles = sorted({s.role for s in samples})
    per_role: dict[str, Any] = {}
    for role in roles:
        mine = [s for s in samples if s.role == role]
        per_role[role] = {attr: growth(mine, warmup, attr) for attr in ("pss", "rss", "fds", "threads", "sockets")}
        per_role[role]["pids"] = len({s.pid for s in mine})
    return {"seconds": seconds, "every_s": every, "warmup_s": warmup, "samples": len(samples), "crashed": crashed,
            "exit_code": rc, "leftovers": left, "per_role": per_role, "csv": str(folder / "soak.csv"),
            "png": str(folder / "soak.png"), "jsonl": lg.check_jsonl(run.jsonl),
            "max_shm_files": max((s.shm_files for s in samples), default=0)}


def summary(report: dict[str, Any]) -> str:
    lines = [f"soak {report['seconds']:.0f} s, a sample every {report['every_s']:g} s, warm-up {report['warmup_s']:.0f} s, "
             f"crashes: {report['crashed'] or 'none'}; exit code {report['exit_code']}",
             "growth after warm-up (last- vs first-quarter median; slope as %/h), target < 2%:"]
    for role, figs in report["per_role"].items():
        parts = []
        for attr in ("pss", "rss", "fds", "threads", "sockets"):
            g = figs[attr]
            if g is None:
                parts.append(f"{attr} n/a")
            elif attr in ("pss", "rss"):
                mark = "ok" if g["growth_pct"] < TARGET_GROWTH_PCT else "OVER"
                parts.append(f"{attr} {g['first'] / 1e6:.1f}->{g['last'] / 1e6:.1f} MB {g['growth_pct']:+.2f}% "
                             f"({g['slope_pct_per_h']:+.2f}%/h) {mark}")
            else:
                parts.append(f"{attr} {g['first']:.0f}->{g['last']:.0f}")
        lines.append(f"  {role:13} " + "; ".join(parts))
    lines.append(f"left after stop: {report['leftovers']}; JSONL: {report['jsonl']['lines']} lines, "
                 f"torn {report['jsonl']['torn']}, duplicated {report['jsonl']['duplicated']}")
    lines.append(f"CSV {report['csv']}, plot {report['png']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds left out of the growth figures")
    parser.add_argument("--crash", action="store_true", help="SIGKILL the window process, then a model's, mid-soak")
    parser.add_argument("--out", help="folder for soak.csv, soak.png and the run's files (default: a temporary one)")
    args = parser.parse_args()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        report = run_soak(Path(args.out), args.seconds, args.every, args.warmup, args.crash)
        print(summary(report))
        return
    with tempfile.TemporaryDirectory(prefix="avs-soak-") as tmp:
        report = run_soak(Path(tmp), args.seconds, args.every, args.warmup, args.crash)
        print(summary(report))


if __name__ == "__main__":
    main()
