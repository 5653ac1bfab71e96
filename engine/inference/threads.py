"""How many ONNX Runtime threads a model node gets, and whether they spin.

The cores a run may use (its affinity mask, capped by a cgroup quota) are shared by the graph's CPU
consumers: each source (its decode loop) and each model node. A model node's *share* is its ``cpus``
budget when it sets one, else ``cores / consumers``.

- ``threads: auto`` (the default): ``floor(share)`` intra-op threads, at least 1. A 2-core host
  running one source and one model gives the model 1 thread; 16 cores, 1 source and 4 models, 3.
- ``spin: auto``: pool threads spin (busy-wait for the next parallel section) only when the node has
  cores to itself: more than one thread, all within its share. Otherwise they sleep between tasks:
  a spinning thread busy-waits on a core the decoder needs (docs/models.md has the measurement).
- An explicit ``threads: N`` or ``spin: true|false`` is taken as is. Inter-op threads are 1 (the
  sequential executor runs one operator at a time; our graphs are chains).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AUTO: Literal["auto"] = "auto"
Threads = int | Literal["auto"]
Spin = bool | Literal["auto"]


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> float:
    """CPUs this process may use: its affinity mask, capped by a cgroup quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return min(float(n), quota) if quota else float(n)


def thread_plan(threads: int = 0, cpus: float = 0.0, available: float | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads of a session from the node's CPU budget.

    ``threads`` > 0 is taken as is; otherwise the budget ``cpus`` (0: all CPUs the process may use,
    which ORT's own default ignores under a cgroup quota) rounded down, at least 1. Inter-op is 1:
    the sequential executor runs one node of the graph at a time; our graphs are chains.
    """
    if threads > 0:
        return threads, 1
    budget = cpus if cpus > 0 else (available if available is not None else available_cpus())
    return max(1, int(budget)), 1


def check_threads(value: object) -> Threads:
    """A ``threads`` value as given in a pipeline: ``auto`` or a whole number >= 1; ValueError otherwise."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads must be 'auto' or a whole number of threads >= 1 (got {value!r})")
    return value


@dataclass(frozen=True)
class ThreadPlan:
    """The ORT threading of one session, and why (for the node's start-up log line)."""

    intra: int
    inter: int
    spin: bool
    reason: str


def plan_threads(threads: Threads = AUTO, spin: Spin = AUTO, *, cpus: float = 0.0, consumers: int = 1,
                 available: float | None = None) -> ThreadPlan:
    """The plan for a node asking ``threads``/``spin`` with a ``cpus`` budget (0: a share of the
    cores) in a graph of ``consumers`` sources and model nodes on ``available`` cores."""
    cores = available if available is not None else available_cpus()
    consumers = max(1, consumers)
    share = cpus if cpus > 0 else cores / consumers
    why = f"budget {cpus:g} cores" if cpus > 0 else f"{cores:g} cores / {consumers} sources and model nodes"
    intra = max(1, math.floor(share + 1e-9)) if threads == AUTO else check_threads(threads)
    assert isinstance(intra, int)
    own = intra > 1 and intra <= share + 1e-9  # the pool fits in the node's share: no one else's core
    spinning = own if spin == AUTO else bool(spin)
    return ThreadPlan(intra, 1, spinning, why)


def describe(plan: ThreadPlan) -> str:
    return (f"intra-op threads {plan.intra} ({plan.reason}), spinning {'on' if plan.spin else 'off'}")
