"""The compiled pipeline: what the supervisor runs. Produced by ``config.compile_pipeline``.

Everything here is plain data (JSON-serialisable through ``to_json``) so it can be handed to worker
processes on their command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from avstream.engine.node import WindowRequirement
from avstream.engine.transport.edges import EdgeSpec

DEFAULT_PUBLISH = "tcp://127.0.0.1:5560"


@dataclass
class NodeSpec:
    id: str
    type_id: str
    params: dict[str, Any]
    process: str  # process group name
    streams: list[str]
    line: int = 0
    window: WindowRequirement | None = None
    is_source: bool = False
    restart: dict[str, Any] = field(default_factory=dict)  # RestartPolicy fields the file sets
    resources: dict[str, float] = field(default_factory=dict)  # what placing it takes (Ray backend)
    replica_of: str = ""  # a replica of this node of the file (`replicas: N`), else ""
    replica: int = 0  # its index among the replicas
    replicas: int = 1


@dataclass
class BackendSpec:
    """Where the process groups run: ``local`` (worker processes of the supervisor) or ``ray``
    (Ray actors, placed by their nodes' ``resources``; ``address`` of the cluster, None: ``RAY_ADDRESS``
    or a local cluster)."""

    kind: str = "local"
    address: str | None = None
    node_ip: str | None = None  # this host's address in the cluster (the supervisor binds its sockets there)
    placement_timeout_s: float = 60.0


@dataclass
class OutputsSpec:
    publish: str = DEFAULT_PUBLISH
    wait_for_subscribers: int = 0
    wait_timeout_s: float = 10.0
    jsonl: str | None = None
    jsonl_fsync: str = "batch"  # "line" or "batch"
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)  # outputs.<kind>: validated settings (JSON)
    # outputs.publish.curve (absolute paths) and .insecure: see engine/transport/curve.py
    curve_secret_key: str | None = None
    curve_clients: str | None = None
    insecure: bool = False


@dataclass
class PreviewSpec:
    """Live preview of the sources' video (JPEG frames to the supervisor's viewer): at most ``fps``
    frames a second per watched stream, at most ``max_width`` wide. Costs nothing until a viewer
    asks for a stream. ``endpoint`` (the supervisor's results socket) is filled by the supervisor."""

    fps: float = 10.0
    max_width: int = 640
    quality: int = 75  # JPEG quality, 1-100
    endpoint: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 60:
            raise ValueError(f"preview fps must be in (0, 60], not {self.fps}")
        if not 16 <= self.max_width <= 4096:
            raise ValueError(f"preview max_width must be in [16, 4096], not {self.max_width}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"preview quality must be in [1, 100], not {self.quality}")


@dataclass
class PipelineSpec:
    name: str
    file: str
    base_dir: str
    nodes: dict[str, NodeSpec]
    edges: list[EdgeSpec]
    outputs: OutputsSpec
    duration: float | None = None
    live_streams: list[str] = field(default_factory=list)  # streams paced by wall time
    cpu_consumers: int = 0  # sources and nodes that use cores of their own (0: not counted)
    preview: PreviewSpec | None = None  # None: no preview frames at all (`avstream run` without a viewer)
    backend: BackendSpec = field(default_factory=BackendSpec)

    def processes(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for node in self.nodes.values():
            groups.setdefault(node.process, []).append(node.id)
        return groups

    def replicated(self) -> dict[str, list[str]]:
        """Each replicated node of the file and its replicas' node ids, in replica order."""
        groups: dict[str, list[str]] = {}
        for node in self.nodes.values():
            if node.replica_of:
                groups.setdefault(node.replica_of, []).append(node.id)
        return groups

    def inputs_of(self, node_id: str) -> list[EdgeSpec]:
        return [e for e in self.edges if e.dst == node_id]

    def outputs_of(self, node_id: str) -> list[EdgeSpec]:
        return [e for e in self.edges if e.src == node_id]

    def result_nodes(self) -> list[str]:
        """Nodes whose results go to the outputs (PUB/JSONL)."""
        return [n.id for n in self.nodes.values() if n.process and self._emits_results(n.id)]

    def _emits_results(self, node_id: str) -> bool:
        return any(e.dst == "@outputs" for e in self.edges if e.src == node_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> PipelineSpec:
        raw = json.loads(text)
        nodes = {}
        for nid, n in raw["nodes"].items():
            win = n.pop("window")
            nodes[nid] = NodeSpec(**n, window=WindowRequirement(**win) if win else None)
        return PipelineSpec(
            name=raw["name"],
            file=raw["file"],
            base_dir=raw["base_dir"],
            nodes=nodes,
            edges=[EdgeSpec.from_dict(e) for e in raw["edges"]],
            outputs=OutputsSpec(**raw["outputs"]),
            duration=raw["duration"],
            live_streams=raw["live_streams"],
            cpu_consumers=raw.get("cpu_consumers", 0),
            preview=PreviewSpec(**raw["preview"]) if raw.get("preview") else None,
            backend=BackendSpec(**raw.get("backend", {})),
        )


OUTPUTS_NODE = "@outputs"
