"""The supervisor's side of ``replicas: N`` (engine/transport/shards.py): which replicas are up, what
moves when one is lost or returns, and the gap a lost replica leaves.

When a replica's process dies, the windows it held (its queue, what ZeroMQ had in flight to it) are
lost. Its streams move to the replicas that follow it on the ring (``streams_moved``), and for each
moved stream the first result more than one hop past the last one published before the loss shows
the gap: its windows are counted as dropped (``results_dropped``, and ``dropped`` per stream and kind
in the status). The results themselves keep their ``seq`` rule: the publisher numbers what it
publishes, so ``seq`` stays gap-free while ``t0`` jumps over the windows lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avstream.engine.items import Event, Result
from avstream.engine.runtime.graph import PipelineSpec
from avstream.engine.transport.shards import owners

WATCH_RESULTS = 50  # results of a moved stream checked for the gap before the watch ends
HOLD_S = 3.0  # at most this long a result waits for the earlier ones its stream's previous owner still has


@dataclass
class _Handover:
    """A stream moving back to a returned replica: the replica it leaves may still be finishing windows
    of it, so results are published in media-time order, each waiting (at most ``HOLD_S``) for the
    ones before it."""

    node: str
    marks: dict[str, float]  # kind -> the last t1 published
    held: dict[str, list[Result]] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)  # kind -> when its oldest held result came
    left: int = WATCH_RESULTS


@dataclass
class _Watch:
    node: str
    replica: int
    marks: dict[str, float]  # kind -> the last t1 published before the loss
    left: int = WATCH_RESULTS


@dataclass
class ShardMonitor:
    spec: PipelineSpec | None  # None: no replicated node (`avstream serve` builds its graphs itself)
    up: dict[str, set[int]] = field(default_factory=dict)  # replicated node -> replicas up
    replicas: dict[str, list[str]] = field(default_factory=dict)  # replicated node -> its replica node ids
    hop: dict[str, float] = field(default_factory=dict)  # replicated node -> hop of its windows (s)
    watches: dict[str, _Watch] = field(default_factory=dict)  # moved stream -> its gap watch
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (stream, kind) -> windows lost
    handovers: dict[str, _Handover] = field(default_factory=dict)  # stream moving back -> its ordering

    def __post_init__(self) -> None:
        if self.spec is None:
            return
        self.replicas = self.spec.replicated()
        for node, ids in self.replicas.items():
            self.up[node] = set(range(len(ids)))
            windows = [self.spec.nodes[e.src].window for e in self.spec.inputs_of(ids[0])]
            self.hop[node] = next((w.hop for w in windows if w is not None), 0.0)

    def streams(self, node: str) -> list[str]:
        assert self.spec is not None  # only asked about replicated nodes
        return list(self.spec.nodes[self.replicas[node][0]].streams)

    def owners(self, node: str) -> dict[str, int]:
        return owners(self.streams(node), len(self.replicas[node]), self.up[node])

    def producers(self) -> set[str]:
        """The processes whose nodes feed a replicated node (they route by the table)."""
        if self.spec is None:
            return set()
        ids = {r for reps in self.replicas.values() for r in reps}
        return {self.spec.nodes[e.src].process for e in self.spec.edges if e.dst in ids}

    def messages(self) -> list[dict[str, Any]]:
        """The control messages that give a producer the replicas up."""
        return [{"type": "shards", "node": node, "up": sorted(up)} for node, up in self.up.items()]

    def degraded(self) -> bool:
        return any(len(up) < len(self.replicas[n]) for n, up in self.up.items())

    def _change(self, node_id: str, alive: bool, marks: dict[tuple[str, str], float]) -> Event | None:
        spec = self.spec.nodes.get(node_id) if self.spec is not None else None
        if spec is None or not spec.replica_of:
            return None
        node, replica = spec.replica_of, spec.replica
        if (replica in self.up[node]) == alive:
            return None
        before = self.owners(node)
        (self.up[node].add if alive else self.up[node].discard)(replica)
        after = self.owners(node)
        moved = {s: after[s] for s in before if before[s] != after[s]}
        for stream in moved:
            mine = {k: t1 for (s, k), t1 in marks.items() if s == stream}
            if alive:
                self.handovers[stream] = _Handover(node, mine)
            else:
                self.watches[stream] = _Watch(node, replica, mine)
        return Event("streams_moved", "", {"node": node, "replica": replica, "reason": "replica_up" if alive else
                                            "replica_lost", "up": sorted(self.up[node]), "moved": moved})

    def lost(self, node_id: str, marks: dict[tuple[str, str], float]) -> Event | None:
        """A replica's process died: its streams move. ``marks``: (stream, kind) -> last t1 published."""
        return self._change(node_id, False, marks)

    def returned(self, node_id: str, marks: dict[tuple[str, str], float]) -> Event | None:
        """A replica is up again: its streams come back to it."""
        return self._change(node_id, True, marks)

    def order(self, result: Result, now: float) -> list[Result]:
        """The results to publish now: ``result`` itself, except during a handover, where results wait
        for the earlier windows of their stream (the replica it left may still be finishing them)."""
        hand = self.handovers.get(result.stream)
        mark = hand.marks.get(result.kind) if hand is not None else None
        if hand is None or mark is None:
            return [result]
        held = hand.held.setdefault(result.kind, [])
        held.append(result)
        held.sort(key=lambda r: r.t1)
        hand.left -= 1
        return self._release(result.stream, hand, result.kind, now, force=False)

    def _release(self, stream: str, hand: _Handover, kind: str, now: float, force: bool) -> list[Result]:
        held, hop = hand.held[kind], self.hop.get(hand.node, 0.0)
        out: list[Result] = []
        while held and (force or held[0].t1 <= hand.marks[kind] + 1.5 * hop):
            r = held.pop(0)
            out.append(r)
            hand.marks[kind] = max(hand.marks[kind], r.t1)
        if held:
            hand.since.setdefault(kind, now)
        else:
            hand.since.pop(kind, None)
        if hand.left <= 0 and not any(hand.held.values()):
            self.handovers.pop(stream, None)
        return out

    def overdue(self, now: float) -> list[Event | Result]:
        """Results held past ``HOLD_S``: the windows they waited for are lost; reported, then published."""
        out: list[Event | Result] = []
        for stream, hand in list(self.handovers.items()):
            for kind, since in list(hand.since.items()):
                if now - since < HOLD_S:
                    continue
                first, hop = hand.held[kind][0], self.hop.get(hand.node, 0.0)
                missing = int(round((first.t1 - hand.marks[kind]) / hop)) - 1 if hop > 0 else 0
                if missing > 0:
                    key = (stream, kind)
                    self.dropped[key] = self.dropped.get(key, 0) + missing
                    out.append(Event("results_dropped", stream, {
                        "node": hand.node, "kind": kind, "reason": "handover", "windows": missing},
                        t0=hand.marks[kind], t1=first.t1 - hop))
                out += self._release(stream, hand, kind, now, force=True)
        return out

    def check(self, result: Result) -> Event | None:
        """A result about to be published: the gap a lost replica left in its stream, once."""
        watch = self.watches.get(result.stream)
        if watch is None:
            return None
        watch.left -= 1
        if watch.left <= 0:
            del self.watches[result.stream]
        mark = watch.marks.get(result.kind)
        hop = self.hop.get(watch.node, 0.0)
        if mark is None or hop <= 0:
            return None
        missing = int(round((result.t1 - mark) / hop)) - 1
        if missing <= 0:
            watch.marks[result.kind] = max(mark, result.t1)  # results the lost replica had sent already
            return None
        del watch.marks[result.kind]
        if not watch.marks:
            self.watches.pop(result.stream, None)
        key = (result.stream, result.kind)
        self.dropped[key] = self.dropped.get(key, 0) + missing
        return Event("results_dropped", result.stream, {
            "node": watch.node, "replica": watch.replica, "kind": result.kind, "reason": "replica_lost",
            "windows": missing}, t0=mark, t1=result.t1 - hop)

    def stream_drops(self, stream: str) -> dict[str, int]:
        return {kind: n for (s, kind), n in sorted(self.dropped.items()) if s == stream}

    def status(self) -> dict[str, Any]:
        return {node: {"replicas": len(ids), "up": sorted(self.up[node]), "owners": self.owners(node)}
                for node, ids in self.replicas.items()}
