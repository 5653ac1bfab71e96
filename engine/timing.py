"""Durations a node measures (a model call), kept as a histogram with fixed buckets.

The node's status carries the cumulative bucket counts, so whoever reads the status (the metrics
sink) gets totals it can expose as a Prometheus histogram without seeing each call. No imports from
the rest of the engine, so every layer can use it.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# seconds: from a sub-millisecond model call on a GPU to a slow CPU batch
TIMING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Timing:
    """A histogram of durations in seconds: ``counts[i]`` of them at or under ``bounds[i]``."""

    def __init__(self, labels: dict[str, str] | None = None, bounds: tuple[float, ...] = TIMING_BUCKETS):
        self.labels = dict(labels or {})
        self.bounds = bounds
        self.per_bucket = [0] * (len(bounds) + 1)  # the last one: over the largest bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.per_bucket[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """JSON: ``le`` (the bounds), ``counts`` (cumulative, one per bound), ``count``, ``sum``, ``labels``."""
        cumulative, running = [], 0
        for n in self.per_bucket[:-1]:
            running += n
            cumulative.append(running)
        return {"labels": self.labels, "le": list(self.bounds), "counts": cumulative,
                "count": running + self.per_bucket[-1], "sum": round(self.sum, 6)}
