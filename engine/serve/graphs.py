"""Pipeline templates shared by many streams.

A template is a pipeline file with one stream. Compiled once, its nodes other than that stream's
source (windows, encoders, ...) run once for every stream naming it: the *shared graph*. Each edge
that left the template's source becomes a *fan-in* endpoint, bound by the shared consumer; every
serve stream gets a source node of its own, in a process of its own, whose PUSH sockets connect to
those endpoints. ZeroMQ fair-queues the sources, so adding or removing a stream changes nothing on
the consumer side, and items carry their ``stream`` so the shared nodes keep state per stream.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from avstream.engine.errors import ConfigError, Problem
from avstream.engine.runtime.config import has_live_input, load_pipeline
from avstream.engine.runtime.graph import OUTPUTS_NODE, NodeSpec, PipelineSpec, PreviewSpec
from avstream.engine.serve.config import StreamEntry
from avstream.engine.transport.edges import EdgeSpec


@dataclass
class Template:
    key: str  # a short unique name: process names and endpoints use it
    file: Path
    spec: PipelineSpec  # the shared nodes; the template's own source node is the model each stream's source is made from (never run)
    source_id: str  # the template's own stream id (never run)
    fan_in: list[EdgeSpec] = field(default_factory=list)  # edges a serve stream's source feeds
    processes: dict[str, list[str]] = field(default_factory=dict)  # shared process -> node ids
    results_endpoint: str = ""  # the supervisor's results socket (preview frames go there too)

    def spec_file(self, run_dir: Path) -> Path:
        return run_dir / f"template-{self.key}.json"

    def source_spec(self, stream: StreamEntry, base_dir: Path) -> PipelineSpec:
        """The one-node graph of a serve stream's source, connected to this template's fan-in."""
        template_source = self.spec.nodes[self.source_id]
        params = dict(stream.params)
        # A stream's own frame rate or size wins over what its consumers take (the windows then resize).
        own_frames = bool(params.get("fps")) or params.get("min_size") is not None
        # What the compiler derived for the template's source from its consumers.
        for key in ("fps", "min_size"):
            if params.get(key) in (0, None) and template_source.params.get(key) not in (0, None):
                params[key] = template_source.params[key]
        if "sample_rate" not in stream.raw and "sample_rate" in template_source.params:
            params["sample_rate"] = template_source.params["sample_rate"]
        node = NodeSpec(stream.id, template_source.type_id, params, stream.id, [stream.id], is_source=True)
        edges = [EdgeSpec(stream.id, e.dst, e.kind, e.policy, e.size, e.endpoint, reader=i,
                          fit=None if own_frames else e.fit)
                 for i, e in enumerate(self.fan_in)]
        live = [stream.id] if has_live_input(params) else []
        # the preview is always there: it costs nothing until a viewer watches the stream
        return PipelineSpec(self.spec.name, self.spec.file, str(base_dir), {stream.id: node}, edges,
                            copy.deepcopy(self.spec.outputs), None, live,
                            preview=PreviewSpec(endpoint=self.results_endpoint))


def compile_template(file: Path, key: str, run_dir: Path, results_endpoint: str) -> Template:
    """Compile ``file`` for sharing; raises ConfigError located in the template file."""
    spec = load_pipeline(str(file))
    sources = [n for n in spec.nodes.values() if n.is_source]
    if len(sources) != 1:
        raise ConfigError([Problem(str(file), 1, 1, "streams",
                                   f"a pipeline shared by `serve` streams has exactly one stream (this one has {len(sources)})")])
    source = sources[0]
    template = Template(key, file, spec, source.id, results_endpoint=results_endpoint)
    shared: dict[tuple[str, str], str] = {}  # (producer, consumer process): one socket for its edges
    for i, edge in enumerate(spec.edges):
        if edge.dst == OUTPUTS_NODE:
            edge.endpoint = results_endpoint
            continue
        kind = "in" if edge.src == source.id else "e"
        edge.endpoint = shared.setdefault((edge.src, spec.nodes[edge.dst].process), f"ipc://{run_dir}/{key}-{kind}{i}")
        if edge.src == source.id:
            template.fan_in.append(edge)
    for node in spec.nodes.values():
        if node.id != source.id:
            node.process = f"{key}.{node.process}"
            template.processes.setdefault(node.process, []).append(node.id)
    source.process = ""  # never spawned: the serve streams' own sources stand in for it
    template.spec_file(run_dir).write_text(spec.to_json())
    return template


def write_spec(spec: PipelineSpec, path: Path) -> Path:
    path.write_text(json.dumps(asdict(spec)))
    return path
