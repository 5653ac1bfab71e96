"""``avstream run --backend ray``: each process group as a Ray actor (SPEC §10, docs/ray.md).

The supervisor stays in the ``avstream run`` process (the Ray driver) and keeps every rule of the
local backend: the same restarts, events, ``seq`` and outputs. What changes is where workers run and
how they are reached. Each group becomes a ``WorkerHost`` actor placed by the sum of its nodes'
``resources:``; once every actor is placed, edges between groups on one Ray node stay ``ipc://``
with shared-memory frames, edges between Ray nodes become ``tcp://`` to the consumer's node address,
and the workers reach the supervisor's control and results sockets over ``tcp://``. Every tcp socket
of the graph is CURVE-encrypted with the run's keys (engine/transport/edgekeys.py).
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

from avstream.engine.runtime.graph import OUTPUTS_NODE
from avstream.engine.runtime.rayactor import WorkerHost, free_ports
from avstream.engine.runtime.spawner import Child
from avstream.engine.runtime.supervisor import Supervisor, WorkerProc
from avstream.engine.transport.edgekeys import EdgeKeys, activate, stop_authenticators

RAY_EXTRA = "pip install 'avstream[ray]'"
NAMED = {"num_cpus": "CPU", "num_gpus": "GPU"}  # our keys -> Ray's resource names


class RayError(Exception):
    """A Ray set-up problem the user can act on: printed as one line, no traceback; ``code`` is the
    exit code (2: the pipeline or the command asks for what cannot be had, 1: the cluster failed)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayError(f"the Ray backend needs Ray, which is not installed ({exc.name}): {RAY_EXTRA}", 2) from None
    return ray


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast, in one line, when nothing answers at a host:port cluster address (Ray itself
    retries for minutes)."""
    if "://" in address or address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayError(f"not a Ray cluster address: {address!r} (host:port, e.g. 127.0.0.1:6379)", 2)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise RayError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def actor_resources(resources: dict[str, float]) -> dict[str, Any]:
    """``.options()`` of a group's actor from its summed resources."""
    custom = {k: v for k, v in resources.items() if k not in NAMED}
    return {"num_cpus": resources.get("num_cpus", 0.0), "num_gpus": resources.get("num_gpus", 0.0),
            **({"resources": custom} if custom else {})}


def unplaceable(group: str, needs: dict[str, float], nodes: list[dict[str, Any]], owners: dict[str, str]) -> str | None:
    """Why no live Ray node can take ``group`` (None: some can). ``owners``: resource -> the node
    that declared it, for the message."""
    offered: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.get("Resources", {}).items():
            offered[name] = max(offered.get(name, 0.0), float(amount))
    for key, amount in needs.items():
        name = NAMED.get(key, key)
        if amount and name not in offered:
            return f"node '{owners.get(key, group)}' needs resource '{key}', which no Ray node offers"
        if amount > offered.get(name, 0.0):
            return (f"node '{owners.get(key, group)}' needs {amount:g} of '{key}', no Ray node has more than "
                    f"{offered.get(name, 0.0):g}")
    fits = [n for n in nodes if all(float(n.get("Resources", {}).get(NAMED.get(k, k), 0.0)) >= v
                                    for k, v in needs.items() if v)]
    if not fits:
        return f"process '{group}' needs {needs} on one Ray node; none has all of it"
    return None


class RayChild(Child):
    """A worker started in a ``WorkerHost`` actor, with the interface the supervisor uses."""

    def __init__(self, ray: Any, actor: Any, pid: int):  # no Child.__init__: nothing is forked here
        self.ray, self.actor, self.pid = ray, actor, pid
        self.done = actor.wait.remote()
        self.rc: int | None = None

    def poll(self) -> int | None:
        if self.rc is None:
            ready, _ = self.ray.wait([self.done], timeout=0)
            if ready:
                self.rc = self._result()
        return self.rc

    def _result(self) -> int:
        try:
            return int(self.ray.get(self.done))
        except self.ray.exceptions.RayActorError:  # the actor's process died: Ray restarts it
            return -signal.SIGKILL

    def send_signal(self, signum: int) -> None:
        self.actor.signal.remote(signum)

    def wait(self, timeout: float | None = None) -> int | None:
        # never unbounded: an actor Ray is restarting answers nothing meanwhile
        ready, _ = self.ray.wait([self.done], timeout=10.0 if timeout is None else timeout)
        if ready and self.rc is None:
            self.rc = self._result()
        return self.rc


class RaySupervisor(Supervisor):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ray: Any = None
        self.actors: dict[str, Any] = {}
        self.placement: dict[str, dict[str, Any]] = {}
        self.keys = EdgeKeys.generate()

    def _run(self) -> int:
        try:
            self._connect()
            self._place()
        except RayError as exc:
            self.view.line(f"error: {exc}", important=True)
            return exc.code
        activate(self.keys)
        return super()._run()

    def _connect(self) -> None:
        ray = _import_ray()
        backend = self.spec.backend
        address = backend.address or os.environ.get("RAY_ADDRESS")
        if address:
            check_reachable(address)
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's own default to come; no warning
        try:
            ray.init(address=address, _node_ip_address=backend.node_ip, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(f"cannot join the Ray cluster at {address or '(a new local one)'}: {exc}") from None
        self.ray = ray
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.driver_ip = backend.node_ip or ray.util.get_node_ip_address()

    def _place(self) -> None:
        ray, spec = self.ray, self.spec
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        host_cls = ray.remote(WorkerHost)
        for name, worker in self.workers.items():
            needs: dict[str, float] = {}
            owners: dict[str, str] = {}
            for node_id in worker.nodes:
                for key, amount in spec.nodes[node_id].resources.items():
                    needs[key] = needs.get(key, 0.0) + amount
                    owners.setdefault(key, node_id)
            why = unplaceable(name, needs, nodes, owners)
            if why is not None:
                raise RayError(why, 2)
            self.actors[name] = host_cls.options(
                **actor_resources(needs), max_restarts=worker.loop.policy.max_restarts, max_task_retries=0,
                max_concurrency=4).remote(str(self.run_dir), str(self.ring_dir))
        refs = {name: actor.where.remote() for name, actor in self.actors.items()}
        ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=spec.backend.placement_timeout_s)
        if pending:
            late = [name for name, ref in refs.items() if ref in pending]
            raise RayError(f"Ray placed no actor for process(es) {', '.join(late)} within "
                           f"{spec.backend.placement_timeout_s:g} s: the cluster has the resources but they are in use")
        for name, ref in refs.items():
            self.placement[name] = {**ray.get(ref), "resources": actor_resources(self._needs(name))}
            where = self.placement[name]
            self.view.line(f"process '{name}' on Ray node {where['node_id'][:12]} ({where['node_ip']})")

    def _needs(self, name: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for node_id in self.workers[name].nodes:
            for key, amount in self.spec.nodes[node_id].resources.items():
                out[key] = out.get(key, 0.0) + amount
        return out

    def allocate_endpoints(self) -> None:
        """ipc within a Ray node, tcp (CURVE) between nodes; control and results over tcp."""
        spec, ray = self.spec, self.ray
        node_of = {name: where["node_id"] for name, where in self.placement.items()}
        ip_of = {name: where["node_ip"] for name, where in self.placement.items()}
        driver = free_ports(self.driver_ip, 2)
        self.control_endpoint = f"tcp://{self.driver_ip}:{driver[0]}"
        self.results_endpoint = f"tcp://{self.driver_ip}:{driver[1]}"
        shared: dict[tuple[str, str], str] = {}
        wanted: dict[str, list[tuple[str, str]]] = {}  # consumer process -> tcp endpoint keys to give ports
        for i, edge in enumerate(spec.edges):
            if edge.dst == OUTPUTS_NODE:
                edge.endpoint = self.results_endpoint
                continue
            src, dst = spec.nodes[edge.src].process, spec.nodes[edge.dst].process
            key = (edge.src, dst)
            if key not in shared:
                if node_of[src] == node_of[dst]:
                    shared[key] = f"ipc://{self.run_dir}/e{i}"
                else:
                    shared[key] = ""
                    wanted.setdefault(dst, []).append(key)
            edge.endpoint = shared[key]
        for dst, keys in wanted.items():
            ports = ray.get(self.actors[dst].free_ports.remote(ip_of[dst], len(keys)))
            for key, port in zip(keys, ports, strict=True):
                shared[key] = f"tcp://{ip_of[dst]}:{port}"
        for edge in spec.edges:
            if edge.dst != OUTPUTS_NODE and not edge.endpoint:
                edge.endpoint = shared[(edge.src, spec.nodes[edge.dst].process)]
        self.spec_json = spec.to_json()

    def worker_args(self, worker: WorkerProc) -> list[str]:
        return []  # the actor writes the spec and keys on its host and names them

    def start_child(self, worker: WorkerProc, argv: list[str]) -> Child:
        ray = self.ray
        actor = self.actors[worker.name]
        call = actor.start.remote(worker.name, self.spec_json, self.keys.to_json(), argv)
        try:
            pid = ray.get(call, timeout=self.spec.backend.placement_timeout_s)
        except ray.exceptions.RayActorError:  # out of Ray restarts: a fresh actor, placed again
            actor = self.actors[worker.name] = ray.remote(WorkerHost).options(
                **actor_resources(self._needs(worker.name)), max_restarts=worker.loop.policy.max_restarts,
                max_task_retries=0, max_concurrency=4).remote(str(self.run_dir), str(self.ring_dir))
            pid = ray.get(actor.start.remote(worker.name, self.spec_json, self.keys.to_json(), argv))
        where = ray.get(actor.where.remote())
        if where["node_id"] != self.placement[worker.name]["node_id"]:
            self.view.line(f"warning: process '{worker.name}' restarted on another Ray node ({where['node_ip']}); its "
                           f"edges were laid out for {self.placement[worker.name]['node_ip']}", important=True)
        self.placement[worker.name] = {**self.placement[worker.name], **where}
        return RayChild(ray, actor, int(pid))

    def extra_status(self) -> dict[str, Any]:
        return {"backend": "ray", "placement": self.placement}

    def _cleanup(self) -> None:
        stop_authenticators()  # before the supervisor's context goes
        try:
            super()._cleanup()
        finally:
            if self.ray is not None:
                for actor in self.actors.values():
                    try:
                        self.ray.get(actor.stop.remote(), timeout=5)
                    except Exception:  # an actor already gone has nothing to stop
                        pass
                    self.ray.kill(actor, no_restart=True)
                self.ray.shutdown()
