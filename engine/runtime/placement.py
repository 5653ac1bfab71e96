"""The pipeline keys of SPEC §10: ``backend:`` (where the process groups run), ``resources:`` (what
placing a node takes) and ``replicas:`` (an encoder sharded over N processes). Checked here with
pydantic, reported through the compiler's located errors; ``expand_replicas`` turns a replicated node
into its replica nodes once the graph is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from avstream.engine.items import AV_WINDOW, RESULT
from avstream.engine.runtime.graph import BackendSpec, NodeSpec
from avstream.engine.transport.edges import EdgeSpec

Report = Callable[[tuple[str | int, ...], str], None]  # (key path, message): the compiler's located error
BACKENDS = ("local", "ray")
RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
MAX_REPLICAS = 64


class Resources(BaseModel):
    """``resources:`` of a node or stream: Ray's ``num_cpus``/``num_gpus`` and custom resources (any
    other key, e.g. ``camera_host: 1``), all non-negative numbers."""

    model_config = ConfigDict(extra="allow")
    num_cpus: float = Field(0.0, ge=0, description="CPU cores the node's actor reserves")
    num_gpus: float = Field(0.0, ge=0, description="GPUs (fractions allowed) the node's actor reserves")

    @model_validator(mode="after")
    def _custom_amounts(self) -> Resources:
        for name, amount in (self.model_extra or {}).items():
            if not RESOURCE_NAME.match(name):
                raise ValueError(f"resource name {name!r}: letters, digits, '_', '.', ':' and '-' only")
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise ValueError(f"{name}: an amount >= 0, got {amount!r}")
        return self

    def as_dict(self) -> dict[str, float]:
        out = {k: float(v) for k, v in (self.model_extra or {}).items()}
        out.update({k: v for k, v in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)) if v})
        return out


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "ray"] = Field("local", description="local worker processes, or Ray actors")
    address: str | None = Field(None, description="the Ray cluster (host:port or ray://...); default RAY_ADDRESS")
    node_ip: str | None = Field(None, description="this host's address in the Ray cluster (default: Ray's choice)")
    placement_timeout_s: float = Field(60.0, gt=0, description="give up when an actor is not placed within this")


def _report_validation(report: Report, path: tuple[str | int, ...], exc: ValidationError, allowed: str) -> None:
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            report((*path, *loc), f"unknown key (allowed: {allowed})")
        else:
            report((*path, *loc), f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")


def node_resources(report: Report, node: NodeSpec, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
    if "resources" not in entry:
        return
    raw = entry["resources"]
    if not isinstance(raw, dict):
        report((*path, "resources"), "resources is a mapping: {num_cpus: N, num_gpus: N, <custom>: N}")
        return
    try:
        node.resources = Resources.model_validate(raw).as_dict()
    except ValidationError as exc:
        _report_validation(report, (*path, "resources"), exc, "num_cpus, num_gpus, custom resource names")


def node_replicas(report: Report, node: NodeSpec, entry: dict[str, Any], path: tuple[str | int, ...],
                  input_kinds: tuple[str, ...], output_kind: str | None) -> None:
    if "replicas" not in entry:
        return
    raw = entry["replicas"]
    where = (*path, "replicas")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_REPLICAS:
        report(where, f"replicas is an integer from 1 to {MAX_REPLICAS} (got {raw!r})")
        return
    if raw > 1 and (input_kinds != (AV_WINDOW,) or output_kind != RESULT):
        report(where, f"replicas: only on an encoder node (windows in, results out); {node.type_id} is not one")
        return
    node.replicas = raw


def compile_backend(report: Report, raw: Any, cli_kind: str | None, cli_address: str | None) -> BackendSpec:
    """``backend:`` of the file, with ``--backend`` / ``--address`` over it."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        report(("backend",), "backend is a mapping: {kind: local|ray, address: HOST:PORT}")
        raw = {}
    try:
        opts = BackendOptions.model_validate(raw)
    except ValidationError as exc:
        _report_validation(report, ("backend",), exc, ", ".join(BackendOptions.model_fields))
        opts = BackendOptions()
    spec = BackendSpec(kind=opts.kind, address=opts.address, node_ip=opts.node_ip,
                       placement_timeout_s=opts.placement_timeout_s)
    if cli_kind is not None:
        spec.kind = cli_kind
    if cli_address is not None:
        spec.address = cli_address
    if spec.address is not None and spec.kind != "ray":
        report(("backend", "address"), "an address is for the ray backend (--backend ray or backend.kind: ray)")
    return spec


def expand_replicas(report: Report, nodes: dict[str, NodeSpec], edges: list[EdgeSpec]) -> list[EdgeSpec]:
    """Each node with ``replicas: N`` (N > 1) becomes N nodes ``ID#0`` ... ``ID#N-1``, each in a process
    of its own (``PROCESS#i``), every edge to or from it repeated per replica. Returns the new edges."""
    for nid in [n for n, spec in nodes.items() if spec.replicas > 1]:
        spec = nodes[nid]
        shared = [n for n, other in nodes.items() if other.process == spec.process and n != nid]
        if shared:
            report(("nodes", nid, "replicas"), f"replicas need a process of their own: process '{spec.process}' also "
                                               f"runs {', '.join(sorted(shared))}")
            continue
        del nodes[nid]
        names = [f"{nid}#{i}" for i in range(spec.replicas)]
        for i, name in enumerate(names):
            nodes[name] = replace(spec, id=name, process=f"{spec.process}#{i}", replica_of=nid, replica=i,
                                  streams=list(spec.streams), params=dict(spec.params), restart=dict(spec.restart),
                                  resources=dict(spec.resources))
        out: list[EdgeSpec] = []
        for edge in edges:
            if edge.dst == nid:
                out += [replace(edge, dst=name) for name in names]
            elif edge.src == nid:
                out += [replace(edge, src=name) for name in names]
            else:
                out.append(edge)
        edges = out
    return edges
