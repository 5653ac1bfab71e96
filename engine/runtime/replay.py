"""At most once per (stream, kind, media span): the publisher's guard against replayed results.

A restarted node may compute again windows whose results were already published (its process died
after publishing and before the supervisor learnt how far it had got). ``seq`` is assigned at
publishing and keeps counting, so a subscriber could not tell such a replay from new results. The
guard keeps, per (stream, kind), the end ``t1`` of the last result published and drops a result whose
``t1`` is not past it. The drops are counted (``replayed`` in the status and the metrics) and logged
once a second in one line, as a note: nothing was lost, the subscriber had these results already.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReplayGuard:
    high: dict[tuple[str, str], float] = field(default_factory=dict)  # (stream, kind) -> last published t1
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # over the run
    unreported: dict[tuple[str, str], tuple[int, float, float]] = field(default_factory=dict)  # n, lowest t1, mark

    def admit(self, stream: str, kind: str, t1: float) -> bool:
        """True when the result is new media time for (stream, kind) and may be published."""
        key = (stream, kind)
        mark = self.high.get(key)
        if mark is None or t1 > mark:
            self.high[key] = t1
            return True
        self.dropped[key] = self.dropped.get(key, 0) + 1
        n, low, _ = self.unreported.get(key, (0, t1, mark))
        self.unreported[key] = (n + 1, min(low, t1), mark)
        return False

    def forget_stream(self, stream: str) -> None:
        """A stream removed (or restarted on request, with a new media timeline): start afresh."""
        for table in (self.high, self.dropped, self.unreported):
            for key in [k for k in table if k[0] == stream]:
                del table[key]

    def replayed(self, stream: str) -> dict[str, int]:
        """Results of ``stream`` dropped as replays, per kind."""
        return {kind: n for (s, kind), n in sorted(self.dropped.items()) if s == stream}

    def report(self) -> list[str]:
        """One line per (stream, kind) with drops since the last call."""
        lines = [f"stream '{stream}': {n} replayed {kind} result(s) not published again (t1 from {low:.2f} s, "
                 f"already published up to {mark:.2f} s)"
                 for (stream, kind), (n, low, mark) in sorted(self.unreported.items())]
        self.unreported.clear()
        return lines
