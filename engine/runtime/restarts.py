"""When a crashed worker is restarted, and when it is declared failed (a crash loop).

A worker that exits non-zero or is killed is restarted with exponential backoff. More than
``max_restarts`` restarts within ``window_s`` means the node is broken rather than unlucky: it is
marked ``failed`` (a ``node_failed`` event), the run goes on without it (other streams and nodes keep
running) and it is tried again every ``failed_retry_s``. A retry that stays up for
``recovered_after_s`` with its nodes running ends the failure (a ``node_recovered`` event).

The settings are per node in the pipeline file (``restart: {max_restarts: 5, window_s: 60, ...}``);
nodes that share a process use the most cautious value of each setting.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from avstream.engine.backoff import backoff_delay

RESTART_BACKOFF_INITIAL_S = 0.5  # doubles per restart inside the window, up to the cap
RESTART_BACKOFF_MAX_S = 8.0


class RestartPolicy(BaseModel):
    """The ``restart:`` key of a node (or stream) in a pipeline file."""

    model_config = ConfigDict(extra="forbid")
    max_restarts: int = Field(5, ge=0, description="restarts allowed within window_s before the node is failed")
    window_s: float = Field(60.0, gt=0, description="the sliding window the restarts are counted in")
    failed_retry_s: float = Field(300.0, gt=0, description="how often a failed node is tried again")
    recovered_after_s: float = Field(10.0, gt=0, description="a retry that stays up this long has recovered")

    @classmethod
    def combined(cls, policies: Iterable[RestartPolicy]) -> RestartPolicy:
        """One policy for a process that runs several nodes: the most cautious value of each."""
        items = list(policies) or [cls()]
        return cls(max_restarts=min(p.max_restarts for p in items), window_s=max(p.window_s for p in items),
                   failed_retry_s=min(p.failed_retry_s for p in items),
                   recovered_after_s=max(p.recovered_after_s for p in items))


def exit_description(rc: int) -> str:
    """``signal SIGKILL`` or ``exit code 3``."""
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


@dataclass
class Decision:
    """What to do after a crash: restart after ``delay_s``; ``failed`` when it just became failed
    (publish ``node_failed``), ``still_failed`` when a retry of a failed process crashed again."""

    delay_s: float
    restarts: int
    failed: bool = False
    still_failed: bool = False


@dataclass
class CrashLoop:
    """The restart history of one worker process."""

    policy: RestartPolicy
    restarts: list[float] = field(default_factory=list)  # crash times inside the window
    failed: bool = False
    failed_since: float | None = None
    failures: int = 0  # times it was declared failed over the run
    spawned_at: float = 0.0
    last_exit: str = ""

    def on_crash(self, rc: int, now: float) -> Decision:
        self.last_exit = exit_description(rc)
        self.restarts = [t for t in self.restarts if now - t < self.policy.window_s] + [now]
        if self.failed:
            return Decision(self.policy.failed_retry_s, len(self.restarts), still_failed=True)
        if len(self.restarts) > self.policy.max_restarts:
            self.mark_failed(now)
            return Decision(self.policy.failed_retry_s, len(self.restarts), failed=True)
        delay = backoff_delay(len(self.restarts), initial=RESTART_BACKOFF_INITIAL_S, cap=RESTART_BACKOFF_MAX_S)
        return Decision(delay, len(self.restarts))

    def mark_failed(self, now: float) -> None:
        self.failed, self.failed_since = True, now
        self.failures += 1

    def clear(self, now: float) -> float:
        """The failure is over: how long it lasted, in seconds."""
        failed_for = now - (self.failed_since if self.failed_since is not None else now)
        self.failed, self.failed_since, self.restarts = False, None, []
        return failed_for

    def on_spawn(self, now: float) -> None:
        self.spawned_at = now

    def check_recovered(self, alive: bool, running: bool, now: float) -> bool:
        """Whether a retry of a failed process has stayed up with its nodes running (then :meth:`clear`)."""
        return self.failed and alive and running and now - self.spawned_at >= self.policy.recovered_after_s

    def failed_detail(self, node: str, process: str, decision: Decision) -> dict[str, Any]:
        """The ``detail`` of a ``node_failed`` event."""
        return {"node": node, "process": process, "restarts": decision.restarts, "window_s": self.policy.window_s,
                "last_exit": self.last_exit, "retry_in_s": decision.delay_s, "failures": self.failures}


@dataclass
class ResumePoints:
    """How far each node got, per stream, over all of its processes: what a restarted one resumes after.

    A process that dies while still starting (or while its live input is down) reports no media time
    at all; its successor must still resume after what the processes before it had done, not from 0.
    For a live source, media time also runs on while no process is up: its successor resumes that
    much later (docs/capture.md: after an outage media time continues from its wall time)."""

    furthest: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # node -> stream -> (t, wall)

    def note(self, nodes: dict[str, Any], wall: float) -> None:
        """A worker's status report: ``nodes`` maps node ids to their status (``last_t`` per stream)."""
        for node, status in nodes.items():
            known = self.furthest.setdefault(node, {})
            last_t = status.get("last_t") if isinstance(status, dict) else None
            for stream, t in (last_t or {}).items():
                if isinstance(t, (int, float)) and t > known.get(stream, (float("-inf"), 0.0))[0]:
                    known[stream] = (float(t), wall)

    def resume(self, node: str, live: bool, wall: float) -> dict[str, float]:
        """Per stream, the media time ``node`` resumes after (``live``: plus the wall time since)."""
        return {stream: t + (max(0.0, wall - at) if live else 0.0)
                for stream, (t, at) in self.furthest.get(node, {}).items()}

    def forget_stream(self, stream: str) -> None:
        for known in self.furthest.values():
            known.pop(stream, None)
