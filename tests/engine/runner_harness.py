"""One node of a compiled pipeline in a real NodeRunner, in this process: a feeder socket in front of it,
a receiving port behind it, and a control socket standing in for the supervisor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from avstream.engine.runtime.graph import PipelineSpec
from avstream.engine.runtime.worker import ControlLink, NodeRunner
from avstream.engine.transport.edges import Inbox, InputPort, OutputPort


@dataclass
class Harness:
    runner: NodeRunner
    feeder: OutputPort  # sends what the node's (single) upstream would send
    downstream: Inbox  # what the node sends on its (single) output edge
    control: zmq.Socket[Any]  # the supervisor's side of the control link
    stop: threading.Event


@dataclass
class ControlPlane:
    zctx: zmq.Context[Any]
    stop: threading.Event  # the node's stop
    control: zmq.Socket[Any]  # the supervisor's side of the control link
    link: ControlLink


@contextmanager
def control_plane(spec: PipelineSpec, node_id: str, run_dir: Path) -> Iterator[ControlPlane]:
    """ipc:// endpoints for every edge of ``spec`` and a control link for ``node_id``, torn down after."""
    for i, edge in enumerate(spec.edges):
        edge.endpoint = f"ipc://{run_dir}/e{i}"
    zctx: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    control = zctx.socket(zmq.ROUTER)
    control.bind(f"ipc://{run_dir}/control")
    link = ControlLink(zctx, f"ipc://{run_dir}/control", node_id, stop)
    link.thread.start()
    try:
        yield ControlPlane(zctx, stop, control, link)
    finally:
        stop.set()
        link.post({"type": "bye"})
        link.thread.join(2)
        control.close(0)
        zctx.destroy(linger=0)


@contextmanager
def node_runner(spec: PipelineSpec, node_id: str, run_dir: Path) -> Iterator[Harness]:
    with control_plane(spec, node_id, run_dir) as plane:
        yield from _node_runner(spec, node_id, run_dir, plane)


def _node_runner(spec: PipelineSpec, node_id: str, run_dir: Path, plane: ControlPlane) -> Iterator[Harness]:
    zctx, stop, control, link = plane.zctx, plane.stop, plane.control, plane.link
    (out_edge,) = spec.outputs_of(node_id)
    downstream = Inbox()
    port = InputPort(zctx, out_edge, downstream, run_dir, threading.Event())
    assert port.ready.wait(5)
    runner = NodeRunner(spec, spec.nodes[node_id], zctx, run_dir, stop, link, {})
    (in_edge,) = spec.inputs_of(node_id)
    feeder = OutputPort(zctx, in_edge.src, [in_edge], run_dir, threading.Event())
    try:
        yield Harness(runner, feeder, downstream, control, stop)
    finally:
        feeder.close(0)
        runner.output.close(0)
        port.stop.set()
        stop.set()
        for p in [port, *runner.inbox.ports]:
            p.thread.join(2)
