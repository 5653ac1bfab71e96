"""Sharding streams over the replicas of an encoder node (``replicas: N``, SPEC §10).

Each stream goes to one replica, chosen on a consistent-hash ring (``uhashring``: md5 points, 160
virtual nodes per replica) over the replicas that are up. Losing a replica moves only its own
streams, each to the replica that follows it on the ring; the others stay where they are. When it
comes back its streams return to it. Every process computes the same ring from the same set, so the
producers of one replicated node agree without talking to each other: the supervisor tells each
producer which replicas are up (``ShardTable``), and the producer's output port sends a stream's
windows and events to its owner only, end-of-stream markers to every replica.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from uhashring import HashRing

from avstream.engine.items import EndOfStream, Item

VIRTUAL_NODES = 160  # points per replica on the ring: with 3 replicas, each takes 33% +- 4% of the keys


def replica_ring(replicas: Iterable[int]) -> HashRing:
    return HashRing(nodes={str(r): {"vnodes": VIRTUAL_NODES} for r in sorted(replicas)})


def owners(streams: Iterable[str], replicas: int, up: Iterable[int] | None = None) -> dict[str, int]:
    """Each stream's replica among ``up`` (all ``replicas`` when None or when none is up)."""
    alive = sorted(set(up if up is not None else range(replicas)) & set(range(replicas))) or list(range(replicas))
    ring = replica_ring(alive)
    return {s: int(ring.get_node(s)) for s in streams}


class ShardTable:
    """Which replicas of each replicated node are up, as this process was last told. Thread-safe:
    the control thread replaces entries, node threads read them."""

    def __init__(self) -> None:
        self._up: dict[str, frozenset[int]] = {}
        self._lock = threading.Lock()
        self.version = 0

    def set_up(self, node: str, replicas: Iterable[int]) -> None:
        with self._lock:
            self._up[node] = frozenset(int(r) for r in replicas)
            self.version += 1

    def up(self, node: str, replicas: int) -> frozenset[int]:
        """The replicas up (all of them until the supervisor says otherwise)."""
        with self._lock:
            got = self._up.get(node)
        return frozenset(range(replicas)) if got is None else got


@dataclass(frozen=True)
class ShardedEdge:
    """An edge of an output port that goes to one replica of a replicated node."""

    index: int  # among the port's edges
    node: str  # the replicated node
    replica: int
    replicas: int


class ShardRouter:
    """Picks the edges of an output port that take an item: a replicated node's edges by the owner
    of the item's stream, every other edge always."""

    def __init__(self, edges: Sequence[ShardedEdge], n_edges: int, table: ShardTable):
        self.table = table
        self.n_edges = n_edges
        self.groups: dict[str, list[ShardedEdge]] = {}
        for edge in edges:
            self.groups.setdefault(edge.node, []).append(edge)
        self.plain = [i for i in range(n_edges) if all(e.index != i for e in edges)]
        self._rings: dict[tuple[str, frozenset[int]], HashRing] = {}
        self.dropped = 0  # items given up on: their replica went down while we waited to send

    def _owner(self, node: str, replicas: int, stream: str) -> int:
        up = self.table.up(node, replicas) or frozenset(range(replicas))
        ring = self._rings.get((node, up))
        if ring is None:
            ring = self._rings[(node, up)] = replica_ring(up)
        return int(ring.get_node(stream))

    def targets(self, item: Item) -> list[int] | None:
        """The indices of the edges that take ``item``; None for all of them."""
        stream = getattr(item, "stream", None)
        if isinstance(item, EndOfStream) or not stream:
            return None  # every replica ends the stream (and forwards the marker downstream)
        chosen = list(self.plain)
        for node, edges in self.groups.items():
            owner = self._owner(node, edges[0].replicas, stream)
            chosen += [e.index for e in edges if e.replica == owner]
        return sorted(chosen)

    def gone(self, indices: Iterable[int]) -> bool:
        """Whether every one of these edges leads to a replica now down (a send to it is given up)."""
        wanted = list(indices)
        by_index = {e.index: e for edges in self.groups.values() for e in edges}
        if not wanted or any(i not in by_index for i in wanted):
            return False
        for i in wanted:
            up = self.table.up(by_index[i].node, by_index[i].replicas)
            if not up or by_index[i].replica in up:  # with none up, the stream waits for one to return
                return False
        return True
