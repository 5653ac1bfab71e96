"""Chaos: the monitor pipeline on two live streams (RTSP and HTTP on loopback) under a seeded fault script.

Faults, one at a time, each followed by the measure of its recovery before the next:
- ``kill-windows``, ``kill-encoder``, ``kill-random``: SIGKILL of the window process, of one model's
  process, of any worker process;
- ``server``: a stream server stopped for 8 s, then started again;
- ``disk``: the JSONL sink's file system (a tmpfs mounted for the run; root only) filled to the last
  byte for 3 s, then freed;
- ``stall``: one model's process stopped (SIGSTOP) for 4 s, then continued (SIGCONT).
Every kind named in ``--faults`` comes once, in a seeded order; then random ones until ``--seconds``.

Per fault: the time from the end of the fault (the kill, the restart, the free, the SIGCONT) to the
first result of the kinds it hit, and to the full rate again: the first result from which each hit
(stream, kind) delivers at least 75% of its rate before the faults over the next ``RATE_WINDOW_S``.
Kinds slower than 2 results in that window (captions) count their first result only.

Afterwards the checks: seq per (stream, kind) strictly increasing with no gap on the PUB socket and
JSONL gaps equal to the lines the sink counted as dropped; no torn or duplicated JSONL line; every
topic naming its own stream and no result of a stream while its server was down; t1 per (stream, kind)
strictly increasing (no media time published twice); nothing left after stop.

    python bench/chaos.py [--seconds 300] [--seed 1] [--faults kill-windows,kill-encoder,server,disk,stall]
"""


# No `from __future__ import annotations` here or in soak.py: the tests load these files without
# registering them in sys.modules, where dataclasses would look string annotations up.
import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import livegraph as lg  # noqa: E402 - bench/ is not a package

FAULTS = ("kill-windows", "kill-encoder", "kill-random", "server", "disk", "stall")
KINDS = ("highlight", "violence", "localization", "caption")
ENCODERS = ("highlight", "violence", "localization", "captions")
KIND_OF = {"highlight": "highlight", "violence": "violence", "localization": "localization", "captions": "caption"}
STREAMS = ("cam0", "cam1")  # cam0 over RTSP, cam1 over HTTP
RATE_WINDOW_S = 6.0
FULL_RATE = 0.75
SERVER_DOWN_S, DISK_FULL_S, STALL_S = 8.0, 3.0, 4.0
OUTAGE_MARGIN_S = 6.0  # results of a stream still in flight this long after its server stopped
# The supervisor gives a process up after more than 5 crashes in 60 s (its crash-loop policy); the
# script kills one process at most this often, so that it measures recovery and not that policy.
KILLS_PER_MINUTE = 4


@dataclass
class Fault:
    kind: str
    target: str
    at: float  # wall time the fault began
    until: float = 0.0  # wall time the fault ended (recovery is measured from here)
    hits: list[tuple[str, str]] = field(default_factory=list)  # (stream, kind) it interrupts
    first_result_s: float | None = None
    full_rate_s: float | None = None
    full_by_kind: dict[str, float] = field(default_factory=dict)  # the slowest stream's time per kind


def mount_tmpfs(where: Path, size: str = "32m") -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        block = b"\0" * 65536
        while True:
            try:
                if os.write(fd, block) == 0:
                    break
            except OSError:
                break
        for size in (4096, 512, 1):  # the last bytes of the last page
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def schedule(seed: int, faults: list[str], seconds: float) -> list[str]:
    """Each named kind once (seeded order), then seeded random kinds: more than ``seconds`` can hold."""
    rng = random.Random(seed)
    order = list(faults)
    rng.shuffle(order)
    return order + [rng.choice(faults) for _ in range(int(seconds // 10))]


class Chaos:
    def __init__(self, folder: Path, seconds: float, seed: int, faults: list[str], log: Callable[[str], None] = print):
        self.folder = folder
        self.seconds = seconds
        self.seed = seed
        self.faults = faults
        self.log = log
        self.rng = random.Random(seed + 1)
        self.done: list[Fault] = []
        self.outages: list[tuple[str, float, float]] = []  # (stream, server stopped, started again)
        self.kills: dict[str, list[float]] = {}  # process group -> monotonic times it was killed

    def setup(self) -> None:
        self.jsonl_dir = self.folder / "jsonl-fs"
        # room for the whole run's JSONL (about 40 KB/s here): only the filler may fill it
        self.disk = mount_tmpfs(self.jsonl_dir, f"{max(64, int(self.seconds * 0.2) + 64)}m")
        if not self.disk and "disk" in self.faults:
            self.log("disk fault skipped: mounting a tmpfs needs root and mount(8)")
            self.faults = [f for f in self.faults if f != "disk"]
        self.servers = {"cam0": lg.rtsp_server(0, self.folder, self.seconds + 240),
                        "cam1": lg.http_server(1, self.folder)}
        for server in self.servers.values():
            server.start()
        pipeline = lg.monitor_pipeline({s: srv.uri for s, srv in self.servers.items()}, self.folder / "chaos.yaml")
        self.run = lg.Run(pipeline, self.folder, self.jsonl_dir / "results.jsonl").start()

    def rec(self) -> lg.Recorder:
        assert self.run.recorder is not None
        return self.run.recorder

    def baseline(self, seconds: float) -> None:
        self.run.wait_results(KINDS, STREAMS, timeout=180)
        time.sleep(seconds)
        now = time.time()
        self.rate: dict[tuple[str, str], float] = {}
        for s in STREAMS:
            for k in KINDS:
                n = sum(1 for m in self.rec().results() if (m.header["stream"], m.header["kind"]) == (s, k)
                        and m.at > now - seconds)
                self.rate[(s, k)] = n / seconds
        self.log("rate before the faults (results/s): " + ", ".join(f"{s}/{k} {r:.2f}" for (s, k), r in self.rate.items()))

    # --- faults ---
    def inject(self, kind: str) -> Fault:
        workers = self.run.workers()
        if kind in ("kill-windows", "kill-encoder", "kill-random"):
            group = ("windows" if kind == "kill-windows" else self.rng.choice(ENCODERS) if kind == "kill-encoder"
                     else self.rng.choice(sorted(workers)))
            recent = [t for t in self.kills.get(group, []) if time.monotonic() - t < 60.0]
            if len(recent) >= KILLS_PER_MINUTE:
                time.sleep(60.0 - (time.monotonic() - recent[0]) + 0.5)
                workers = self.run.workers()
            self.kills.setdefault(group, []).append(time.monotonic())
            fault = Fault(kind, group, time.time())
            os.kill(workers[group], signal.SIGKILL)
            fault.until = fault.at
            hit_kinds = [KIND_OF[group]] if group in KIND_OF else list(KINDS)
            fault.hits = [(s, k) for s in STREAMS for k in hit_kinds]
        elif kind == "server":
            stream = self.rng.choice(STREAMS)
            server = self.servers[stream]
            fault = Fault(kind, f"{stream} ({server.name})", time.time())
            server.stop()
            time.sleep(SERVER_DOWN_S)
            server.start()
            fault.until = time.time()
            self.outages.append((stream, fault.at, fault.until))
            fault.hits = [(stream, k) for k in KINDS]
        elif kind == "disk":
            fault = Fault(kind, str(self.jsonl_dir), time.time())
            filler = fill(self.jsonl_dir)
            time.sleep(DISK_FULL_S)
            filler.unlink()
            fault.until = time.time()
        elif kind == "stall":
            group = self.rng.choice(ENCODERS)
            fault = Fault(kind, group, time.time())
            os.kill(workers[group], signal.SIGSTOP)
            time.sleep(STALL_S)
            os.kill(workers[group], signal.SIGCONT)
            fault.until = time.time()
            fault.hits = [(s, KIND_OF[group]) for s in STREAMS]
        else:
            raise ValueError(kind)
        return fault

    def recovered(self, fault: Fault, bound: float) -> bool:
        """Fill in the fault's recovery times; True once known (or past ``bound``)."""
        now = time.time()
        if fault.kind == "disk":
            resumed = [m.at for m in self.rec().events("output_write_resumed") if m.at >= fault.at]
            if resumed:
                fault.first_result_s = fault.full_rate_s = max(0.0, resumed[0] - fault.until)
            return bool(resumed) or now - fault.until > bound
        firsts: list[float] = []
        fulls: list[float] = []
        by_kind: dict[str, float] = {}
        for key in fault.hits:
            # only media time not yet published before the fault counts as recovery
            covered = max((m.header["t1"] for m in self.rec().results()
                           if (m.header["stream"], m.header["kind"]) == key and m.at <= fault.at),
                          default=-math.inf)
            arrivals = [m.at for m in self.rec().results() if (m.header["stream"], m.header["kind"]) == key
                        and m.at > fault.until and m.header["t1"] > covered]
            if not arrivals:
                return now - fault.until > bound
            firsts.append(arrivals[0] - fault.until)
            need = math.floor(FULL_RATE * self.rate[key] * RATE_WINDOW_S)
            if need < 2:
                fulls.append(arrivals[0] - fault.until)
                by_kind[key[1]] = max(by_kind.get(key[1], 0.0), fulls[-1])
                continue
            full = next((a for i, a in enumerate(arrivals[:max(0, len(arrivals) - need + 1)])
                         if arrivals[i + need - 1] - a <= RATE_WINDOW_S), None)
            if full is None:
                return now - fault.until > bound + RATE_WINDOW_S
            fulls.append(full - fault.until)
            by_kind[key[1]] = max(by_kind.get(key[1], 0.0), fulls[-1])
        fault.full_by_kind = {k: round(v, 2) for k, v in by_kind.items()}
        fault.first_result_s = max(firsts)
        fault.full_rate_s = max(fulls)
        return True

    def script(self, bound: float) -> None:
        deadline = time.monotonic() + self.seconds
        required = len(self.faults)
        for i, kind in enumerate(schedule(self.seed, self.faults, self.seconds)):
            if i >= required and time.monotonic() > deadline:
                break
            if self.run.proc is not None and self.run.proc.poll() is not None:
                self.log("avstream run ended during the faults")
                break
            fault = self.inject(kind)
            while not self.recovered(fault, bound):
                self.run.sample()
                time.sleep(0.25)
            self.done.append(fault)
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in fault.full_by_kind.items())
            self.log(f"{fault.kind:13} {fault.target:22} first result {_s(fault.first_result_s)}, "
                     f"full rate {_s(fault.full_rate_s)}" + (f" (per kind: {kinds})" if kinds else ""))
            time.sleep(1.0)

    def teardown(self) -> dict[str, Any]:
        rc = self.run.stop()
        for server in self.servers.values():
            server.stop()
        left = self.run.leftovers()
        report = self.checks()
        report.update(exit_code=rc, leftovers=left)
        if self.disk:
            subprocess.run(["umount", "-l", str(self.jsonl_dir)], check=False)
        return report

    def checks(self) -> dict[str, Any]:
        msgs = self.rec().messages
        jsonl = lg.check_jsonl(self.run.jsonl)
        statuses = self.rec().statuses()
        final = statuses[-1].header if statuses else {}
        dropped = int(final.get("outputs", {}).get("jsonl", {}).get("lines_dropped", 0))
        wrong_stream = lg.check_attribution(msgs, STREAMS)
        for stream, stopped, started in self.outages:
            during = [m for m in self.rec().results() if stopped + OUTAGE_MARGIN_S < m.at < started]
            own = [m for m in during if m.header["stream"] == stream]
            if own:
                wrong_stream.append(f"{len(own)} results of {stream} while its server was down")
            if not [m for m in during if m.header["stream"] != stream]:
                wrong_stream.append(f"no result of the other stream while {stream}'s server was down")
        return {
            "seed": self.seed, "faults": [asdict(f) for f in self.done], "rate_before": {
                f"{s}/{k}": r for (s, k), r in self.rate.items()},
            "pub": lg.check_pub(msgs), "jsonl": jsonl, "jsonl_lines_dropped": dropped,
            "wrong_stream": wrong_stream, "media_replays": lg.media_replays(self.rec().results()),
            "node_restarted_events": len(self.rec().events("node_restarted")),
            "output_write_failed_events": len(self.rec().events("output_write_failed")),
            "drops_counted": sum(lg.node_drops(final).values()),
        }


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f} s"


def run_chaos(folder: Path, seconds: float, seed: int, faults: list[str], bound: float = 20.0,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    chaos = Chaos(folder, seconds, seed, faults, log)
    try:
        chaos.setup()
        chaos.baseline(8.0)
        chaos.script(bound)
    finally:
        if hasattr(chaos, "run"):
            report = chaos.teardown()
        else:
            for server in getattr(chaos, "servers", {}).values():
                server.stop()
            if chaos.disk:
                subprocess.run(["umount", "-l", str(chaos.jsonl_dir)], check=False)
    report["skipped"] = [f for f in faults if f not in chaos.faults]
    return report


def summary(report: dict[str, Any]) -> str:
    faults = report["faults"]
    firsts = [f["first_result_s"] for f in faults if f["first_result_s"] is not None]
    fulls = [f["full_rate_s"] for f in faults if f["full_rate_s"] is not None]
    lines = [f"faults injected: {len(faults)} ({', '.join(f['kind'] for f in faults)}); skipped: {report['skipped']}",
             f"messages checked: {report['pub']['messages']} published, {report['jsonl']['lines']} JSONL lines",
             f"recovery: first result max {max(firsts, default=0):.1f} s, full rate max {max(fulls, default=0):.1f} s; "
             f"never recovered: {sum(1 for f in faults if f['full_rate_s'] is None)}",
             f"PUB seq problems {len(report['pub']['seq_problems'])}, gaps {report['pub']['gaps']}; JSONL torn "
             f"{report['jsonl']['torn']}, duplicated {report['jsonl']['duplicated']}, gaps {report['jsonl']['gaps']} "
             f"(lines dropped and counted: {report['jsonl_lines_dropped']})",
             f"wrong stream: {report['wrong_stream']}; media time published twice: {report['media_replays']}",
             f"node restarts {report['node_restarted_events']}, media drops counted {report['drops_counted']}, "
             f"exit code {report['exit_code']}, left after stop: {report['leftovers']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="fault script length (each kind runs once anyway)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--bound", type=float, default=20.0, help="recovery time allowed per fault (s)")
    parser.add_argument("--json", help="write the report to this file")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {unknown}: choose from {', '.join(FAULTS)}")
    with tempfile.TemporaryDirectory(prefix="avs-chaos-") as tmp:
        report = run_chaos(Path(tmp), args.seconds, args.seed, faults, args.bound)
    print(summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
