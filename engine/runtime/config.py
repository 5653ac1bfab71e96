"""Pipeline files: load, override, validate (every problem at once) and compile to a ``PipelineSpec``.

The frame of a pipeline file is fixed by SPEC §2b (``version``, ``name``, ``streams``, ``nodes``,
``outputs``); node params are each node type's own pydantic schema. Each stream becomes a source node
of type ``avstream/source@v1`` (or the ``type:`` it names).
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from avstream.engine.capture.base import LIVE_SCHEMES
from avstream.engine.errors import ConfigError, ModelError, Problem
from avstream.engine.items import AV_WINDOW, MEDIA, RESULT, MediaFit
from avstream.engine.node import CheckContext, Node, WindowRequirement
from avstream.engine.runtime.graph import OUTPUTS_NODE, NodeSpec, OutputsSpec, PipelineSpec, PreviewSpec
from avstream.engine.runtime.output_options import CurveOptions as CurveOptions
from avstream.engine.runtime.output_options import OutputsOptions as OutputsOptions
from avstream.engine.runtime.placement import compile_backend, expand_replicas, node_replicas, node_resources
from avstream.engine.runtime.registry import Registry, load_registry
from avstream.engine.runtime.restarts import RestartPolicy
from avstream.engine.runtime.yamlsrc import Marks, Path_, apply_set, load_yaml_file
from avstream.engine.sinks import SINK_KINDS
from avstream.engine.transport.curve import PublishSecurity, check_publish
from avstream.engine.transport.edges import POLICIES, EdgeSpec

SOURCE_TYPE = "avstream/source@v1"
TOP_KEYS = ("version", "name", "description", "streams", "nodes", "outputs", "backend")
NODE_KEYS = ("type", "inputs", "params", "process", "restart", "resources", "replicas")
STREAM_FRAME_KEYS = ("type", "process", "restart", "resources")


@dataclass
class Overrides:
    """What the command line changes in a pipeline (SPEC §2)."""

    sets: list[str] = field(default_factory=list)
    input_uri: str | None = None
    publish: str | None = None
    jsonl: str | None = None
    duration: float | None = None
    preview: PreviewSpec | None = None  # live preview frames for a viewer (`avstream run --view`)
    backend: str | None = None  # --backend: over the file's backend.kind
    address: str | None = None  # --address: the Ray cluster


def builtin_pipelines() -> dict[str, Path]:
    folder = importlib.resources.files("avstream.pipelines")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_pipeline(ref: str) -> Path:
    """A YAML path, or the name of a built-in pipeline."""
    path = Path(ref)
    try:
        if path.is_file():
            return path
    except (OSError, ValueError):  # a name no file can have (too long, a NUL byte)
        pass
    builtins = builtin_pipelines()
    if ref in builtins:
        return builtins[ref]
    hint = ", ".join(sorted(builtins)) or "none"
    raise ConfigError([Problem(ref, 0, 0, "", f"no such file or built-in pipeline (built-ins: {hint})")])


def is_live_uri(uri: str) -> bool:
    try:
        return urlsplit(uri).scheme in LIVE_SCHEMES
    except ValueError:  # an unclosed '[': the URI check reports it
        return False


def has_live_input(entry: Mapping[str, Any]) -> bool:
    """Whether a stream entry or source's params (``uri``, or ``video`` + ``audio``) read a live input."""
    return any(isinstance(entry.get(k), str) and is_live_uri(entry[k]) for k in ("uri", "video", "audio"))


def load_mapping(path: Path, shape: str) -> tuple[dict[str, Any], Marks, list[Problem]]:
    """``load_yaml_file``, with a message for a document that is only ``null`` or ``~`` (it parses,
    so the loader found no problem to report and the error came out empty)."""
    try:
        return load_yaml_file(path, shape)
    except ConfigError as exc:
        if exc.problems:
            raise
        raise ConfigError([Problem(str(path), 1, 1, "", f"expected a mapping ({shape}), got an empty document")]) from None


def load_pipeline(ref: str, overrides: Overrides | None = None, registry: Registry | None = None) -> PipelineSpec:
    """Load and validate a pipeline; raises ConfigError listing every problem."""
    path = resolve_pipeline(ref)
    overrides = overrides or Overrides()
    tree, marks, problems = load_mapping(path, "a pipeline file: version, name, streams, nodes, outputs")
    for i, assignment in enumerate(overrides.sets, start=1):
        problem = apply_set(tree, marks, assignment, i)
        if problem:
            problems.append(problem)
    compiler = _Compiler(tree, marks, path, registry or load_registry(), problems)
    spec = compiler.compile(overrides)
    if compiler.problems:
        raise ConfigError(sorted(compiler.problems, key=lambda p: (p.file != str(path), p.line, p.col)))
    assert spec is not None
    return spec


class _Compiler:
    def __init__(self, tree: dict[str, Any], marks: Marks, path: Path, registry: Registry, problems: list[Problem]):
        self.tree = tree
        self.marks = marks
        self.path = path
        self.base_dir = path.resolve().parent
        self.registry = registry
        self.problems = problems
        self.nodes: dict[str, NodeSpec] = {}
        self.classes: dict[str, type[Node[Any]]] = {}
        self.validated: dict[str, Any] = {}
        self.edges: list[EdgeSpec] = []
        self.fed_unknown: set[str] = set()  # nodes feeding a node of unknown type

    def error(self, path: Path_, message: str) -> None:
        problem = self.marks.problem(path, message)
        if problem not in self.problems:  # two checks may find the same thing (a missing model file)
            self.problems.append(problem)

    def unknown_keys(self, mapping: dict[str, Any], allowed: tuple[str, ...], path: Path_) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(allowed)})"
                self.error((*path, key), f"unknown key{hint}")

    def mapping(self, path: Path_, required: bool) -> dict[str, Any]:
        node: Any = self.tree
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            if required:
                self.error(path, "missing (required)")
            return {}
        if not isinstance(node, dict):
            self.error(path, f"must be a mapping, got {type(node).__name__}")
            return {}
        return node

    def compile(self, overrides: Overrides) -> PipelineSpec | None:
        tree = self.tree
        self.unknown_keys(tree, TOP_KEYS, ())
        if tree.get("version") != 1:
            self.error(("version",), f"unsupported pipeline format version {tree.get('version')!r} (this engine reads 1)")
        name = str(tree.get("name") or self.path.stem)
        streams = self.mapping(("streams",), required=True)
        if not streams and "streams" in tree:
            self.error(("streams",), "at least one stream is required")
        self.apply_cli(streams, overrides)
        live = [sid for sid, s in streams.items() if isinstance(s, dict) and self.stream_is_live(s)]
        for sid, stream in streams.items():
            self.add_stream(str(sid), stream)
        nodes = self.mapping(("nodes",), required=True)
        for nid, node in nodes.items():
            self.add_node(str(nid), node)
        for nid, node in nodes.items():
            if str(nid) in self.nodes and isinstance(node, dict):
                self.add_inputs(str(nid), node.get("inputs", []), streams, live)
        self.check_cycles()
        self.assign_streams()
        self.resolve_windows()
        self.pace_sources(live)
        self.run_node_checks()
        outputs = self.compile_outputs(overrides)
        for nid, cls in self.classes.items():
            if cls.output_kind == RESULT:
                self.edges.append(EdgeSpec(nid, OUTPUTS_NODE, RESULT, "block", 64))
        self.edges = expand_replicas(self.error, self.nodes, self.edges)
        backend = compile_backend(self.error, tree.get("backend"), overrides.backend, overrides.address)
        if self.problems:
            return None
        readers: dict[str, int] = {}
        for edge in self.edges:
            edge.reader = readers.get(edge.src, 0)
            readers[edge.src] = edge.reader + 1
        return PipelineSpec(
            name=name,
            file=str(self.path),
            base_dir=str(self.base_dir),
            nodes=self.nodes,
            edges=self.edges,
            outputs=outputs,
            duration=overrides.duration,
            live_streams=live,
            cpu_consumers=sum(1 for nid, n in self.nodes.items()
                              if n.is_source or self.classes[n.replica_of or nid].uses_cores),
            preview=copy.copy(overrides.preview),
            backend=backend,
        )

    def stream_is_live(self, stream: dict[str, Any]) -> bool:
        return has_live_input(stream)

    def apply_cli(self, streams: dict[str, Any], overrides: Overrides) -> None:
        if overrides.input_uri is None:
            return
        if len(streams) != 1:
            self.problems.append(
                Problem("<--input>", 1, 1, "streams", f"--input needs a pipeline with exactly one stream, this one has {len(streams)}; use --set streams.ID.uri=URI")
            )
            return
        (sid,) = streams
        stream = streams[sid] if isinstance(streams[sid], dict) else {}
        for key in ("video", "audio"):
            stream.pop(key, None)
        stream["uri"] = overrides.input_uri
        streams[sid] = stream
        self.marks.set(("streams", sid, "uri"), 1, 1, "<--input>")

    def add_stream(self, sid: str, stream: Any) -> None:
        path: Path_ = ("streams", sid)
        if not isinstance(stream, dict):
            self.error(path, "a stream is a mapping with `uri:` (or `video:` + `audio:`)")
            return
        type_id = str(stream.get("type", SOURCE_TYPE))
        params = {k: v for k, v in stream.items() if k not in STREAM_FRAME_KEYS}
        cls = self.lookup_type(type_id, (*path, "type"))
        if cls is None:
            return
        if cls.input_kinds:
            self.error((*path, "type"), f"{type_id} is not a source node type")
            return
        self.register(sid, cls, params, path, path, process=str(stream.get("process") or sid))
        self.nodes[sid].is_source = True
        self.restart_policy(sid, stream, path)
        node_resources(self.error, self.nodes[sid], stream, path)

    def add_node(self, nid: str, node: Any) -> None:
        path: Path_ = ("nodes", nid)
        if nid in self.nodes:
            self.error(path, f"node id '{nid}' is already a stream id")
            return
        if not isinstance(node, dict):
            self.error(path, "a node is a mapping with `type`, `inputs`, `params`")
            return
        self.unknown_keys(node, NODE_KEYS, path)
        if "type" not in node:
            self.error(path, "missing key 'type'")
            return
        cls = self.lookup_type(str(node["type"]), (*path, "type"))
        if cls is None:
            inputs = node.get("inputs")
            for entry in inputs if isinstance(inputs, list) else []:
                self.fed_unknown.add(str(entry.get("from") if isinstance(entry, dict) else entry))
            return
        params = node.get("params") or {}
        if not isinstance(params, dict):
            self.error((*path, "params"), "params must be a mapping")
            return
        self.register(nid, cls, params, (*path, "params"), path, process=str(node.get("process") or nid))
        self.restart_policy(nid, node, path)
        node_resources(self.error, self.nodes[nid], node, path)
        node_replicas(self.error, self.nodes[nid], node, path, cls.input_kinds, cls.output_kind)
        if not cls.input_kinds:
            self.nodes[nid].is_source = True

    def restart_policy(self, nid: str, entry: dict[str, Any], path: Path_) -> None:
        """The node's ``restart:`` settings (engine/runtime/restarts.py), checked now."""
        if "restart" not in entry:
            return
        raw = entry["restart"]
        rpath: Path_ = (*path, "restart")
        if not isinstance(raw, dict):
            self.error(rpath, "restart is a mapping: {max_restarts: N, window_s: S, failed_retry_s: S, recovered_after_s: S}")
            return
        try:
            policy = RestartPolicy.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                if err["type"] == "extra_forbidden":
                    self.error((*rpath, *loc), f"unknown key (allowed: {', '.join(RestartPolicy.model_fields)})")
                else:
                    self.error((*rpath, *loc), f"{err['msg']} (got {err.get('input')!r})")
            return
        self.nodes[nid].restart = policy.model_dump(exclude_unset=True)

    def lookup_type(self, type_id: str, path: Path_) -> type[Node[Any]] | None:
        if type_id in self.registry.types:
            return self.registry.get(type_id)
        close = self.registry.suggest(type_id)
        hint = f" (did you mean '{close}'?)" if close else ""
        self.error(path, f"unknown node type '{type_id}'{hint}; `avstream plugins` lists the installed ones")
        return None

    def register(self, nid: str, cls: type[Node[Any]], params: dict[str, Any], ppath: Path_, npath: Path_, process: str) -> None:
        try:
            validated = cls.Params.model_validate(params)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                if err["type"] == "extra_forbidden":
                    fields = list(cls.Params.model_fields)
                    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(fields)})"
                    self.error((*ppath, *loc), f"unknown key{hint}")
                elif err["type"] == "missing":
                    self.error((*ppath, *loc), "missing (required)")
                else:
                    self.error((*ppath, *loc), f"{err['msg']} (got {err.get('input')!r})")
            validated = None
        line = self.marks.at.get(npath, ("", 0, 0))[1]
        self.nodes[nid] = NodeSpec(nid, cls.type_id, {} if validated is None else validated.model_dump(mode="json"), process, [], line)
        self.classes[nid] = cls
        self.validated[nid] = validated

    def add_inputs(self, nid: str, inputs: Any, streams: dict[str, Any], live: list[str]) -> None:
        path: Path_ = ("nodes", nid, "inputs")
        cls = self.classes[nid]
        if not isinstance(inputs, list):
            self.error(path, "inputs must be a list of stream or node ids")
            return
        if cls.input_kinds and not inputs:
            self.error(path, f"{cls.type_id} needs at least one input")
        if not cls.input_kinds and inputs:
            self.error(path, f"{cls.type_id} is a source and takes no inputs")
        for i, entry in enumerate(inputs):
            ipath: Path_ = (*path, i)
            opts: dict[str, Any] = {}
            if isinstance(entry, dict):
                opts = dict(entry)
                self.unknown_keys(opts, ("from", "policy", "size"), ipath)
                src = str(opts.get("from", ""))
            else:
                src = str(entry)
            if src not in self.nodes:
                known = list(self.nodes)
                close = difflib.get_close_matches(src, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.error(ipath, f"unknown input '{src}'{hint}")
                continue
            src_kind = self.classes[src].output_kind
            if src_kind not in cls.input_kinds:
                self.error(ipath, f"input '{src}' gives {src_kind} items but {cls.type_id} takes {' or '.join(cls.input_kinds)}")
                continue
            default_policy = "drop_oldest" if src_kind == MEDIA and self.source_paced(src, streams, live) else "block"
            policy = str(opts.get("policy", default_policy))
            if policy not in POLICIES:
                self.error((*ipath, "policy"), f"unknown policy '{policy}' (one of {', '.join(POLICIES)})")
            size = opts.get("size", 8)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                self.error((*ipath, "size"), f"queue size must be an integer >= 1 (got {size!r})")
                size = 8
            self.edges.append(EdgeSpec(src, nid, str(src_kind), policy, size))

    def source_paced(self, src: str, streams: dict[str, Any], live: list[str]) -> bool:
        """Sources paced by a clock (live, or files with realtime: true) drop rather than lag."""
        if src in live:
            return True
        stream = streams.get(src)
        return isinstance(stream, dict) and bool(stream.get("realtime", True))

    def check_cycles(self) -> None:
        graph: dict[str, list[str]] = {n: [] for n in self.nodes}
        for edge in self.edges:
            graph[edge.src].append(edge.dst)
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(n: str) -> None:
            state[n] = 1
            stack.append(n)
            for m in graph[n]:
                if state.get(m) == 1:
                    cycle = stack[stack.index(m):] + [m]
                    self.error(("nodes", m, "inputs"), "cycle: " + " -> ".join(cycle))
                elif m not in state:
                    visit(m)
            stack.pop()
            state[n] = 2

        for n in graph:
            if n not in state:
                visit(n)

    def assign_streams(self) -> None:
        for nid, spec in self.nodes.items():
            seen: set[str] = set()
            todo = [nid]
            while todo:
                n = todo.pop()
                if n in seen:
                    continue
                seen.add(n)
                todo.extend(e.src for e in self.edges if e.dst == n)
            spec.streams = sorted(s for s in seen if self.nodes[s].is_source and s in self.nodes)

    def resolve_windows(self) -> None:
        for nid, cls in self.classes.items():
            if cls.output_kind != AV_WINDOW or MEDIA not in cls.input_kinds or self.validated.get(nid) is None:
                continue
            wants: list[tuple[str, WindowRequirement]] = []
            for edge in self.edges:
                if edge.src != nid or self.validated.get(edge.dst) is None:
                    continue
                try:
                    req = self.classes[edge.dst].window_requirement(self.validated[edge.dst], self.base_dir)
                except ModelError as exc:
                    self.error(("nodes", edge.dst, "params", "model"), str(exc))
                    continue
                if req is not None:
                    wants.append((edge.dst, req))
            self.nodes[nid].window = self.merge_window(nid, wants)

    def pace_sources(self, live: list[str]) -> None:
        """Each source learns what each consumer takes: an edge to a window node carries the model's
        frame size, frame rate and sample rate (``EdgeSpec.fit``).

        The source makes each size once, scaled inside the colour conversion, and sends each window
        only the frames on its model's grid, so frames nobody uses are never converted nor copied.
        A user's own ``fps`` or ``min_size`` wins: then no fits, and the window nodes resize (and
        count it). Source types other than the built-in one are also paced through those params, as
        they may not read the fits.
        """
        for nid, spec in self.nodes.items():
            out = [e for e in self.edges if e.src == nid]
            if not spec.is_source or not out:
                continue
            windows = [self.nodes[e.dst].window for e in out]
            user_frames = bool(spec.params.get("fps")) or spec.params.get("min_size") is not None
            if not user_frames:
                for edge, window in zip(out, windows, strict=True):
                    if window is not None:
                        edge.fit = MediaFit(window.width, window.height, window.fps, window.sample_rate)
            if user_frames or spec.type_id != SOURCE_TYPE:
                self.pace_params(spec, windows)
            self.set_sample_rate(nid, out, windows)
            given: set[str] = getattr(self.validated.get(nid), "model_fields_set", set())
            if spec.params.get("realtime") is False and nid not in live and "audio_chunk_s" not in given:
                # as fast as possible, nobody waits for a chunk: fewer, larger messages cost less CPU
                spec.params["audio_chunk_s"] = 0.25

    @staticmethod
    def pace_params(spec: NodeSpec, windows: list[WindowRequirement | None]) -> None:
        """Without fits: the highest rate the windows sample, frames covering the largest size."""
        rates = [w.fps if w is not None else 0.0 for w in windows]
        if spec.params.get("fps", None) == 0 and all(r > 0 for r in rates):
            spec.params["fps"] = max(rates)
        sizes = [(w.width, w.height) if w is not None else (0, 0) for w in windows]
        if "min_size" in spec.params and spec.params["min_size"] is None and all(w and h for w, h in sizes):
            spec.params["min_size"] = [max(w for w, _ in sizes), max(h for _, h in sizes)]

    def set_sample_rate(self, nid: str, out: list[EdgeSpec], windows: list[WindowRequirement | None]) -> None:
        """A source left at its default rate delivers the rate its windows' models take.

        A stream is resampled once, by the source, to one rate: consumers that disagree are an error
        (unless the user sets the rate, and the window nodes resample what does not fit).
        """
        given: set[str] = getattr(self.validated.get(nid), "model_fields_set", set())
        if "sample_rate" not in self.nodes[nid].params or "sample_rate" in given:
            return
        wants = {e.dst: w.sample_rate for e, w in zip(out, windows, strict=True) if w is not None and w.sample_rate}
        if len(set(wants.values())) > 1:
            listed = ", ".join(f"'{dst}' {rate} Hz" for dst, rate in wants.items())
            where: Path_ = ("streams", nid) if nid in self.tree.get("streams", {}) else ("nodes", nid)
            self.error(where, f"its window nodes take audio at different rates ({listed}); a stream is resampled "
                              f"once, to one rate: give the models one rate, or set sample_rate here (the window "
                              f"nodes then resample the others)")
        elif wants:
            self.nodes[nid].params["sample_rate"] = next(iter(wants.values()))

    def merge_window(self, nid: str, wants: list[tuple[str, WindowRequirement]]) -> WindowRequirement | None:
        params = self.validated[nid]
        seconds = getattr(params, "seconds", None)
        hop = getattr(params, "hop", None)
        if not wants:
            if not seconds:
                if nid not in self.fed_unknown:
                    self.error(("nodes", nid, "params", "seconds"), "no consumer states a window length: set seconds")
                return None
            return WindowRequirement(seconds=seconds, hop=hop or seconds, fps=getattr(params, "fps", 0) or 0.0,
                                     frames=0, height=getattr(params, "height", 0) or 0,
                                     width=getattr(params, "width", 0) or 0, sample_rate=getattr(params, "sample_rate", 0) or 0)
        base_id, base = wants[0]
        for other_id, other in wants[1:]:
            if (other.seconds, other.fps, other.frames, other.height, other.width, other.sample_rate) != (
                base.seconds, base.fps, base.frames, base.height, base.width, base.sample_rate
            ):
                self.error(("nodes", other_id, "inputs"), f"needs different windows than '{base_id}' from '{nid}': give each its own window node")
        if seconds and abs(seconds - base.seconds) > 1e-6 and (base.frames or base.audio_samples):
            self.error(("nodes", nid, "params", "seconds"),
                       f"{seconds} s windows cannot feed '{base_id}': its model takes {base.seconds} s windows")
            return None
        return WindowRequirement(
            seconds=base.seconds, hop=hop or base.hop, fps=base.fps, frames=base.frames, height=base.height,
            width=base.width, sample_rate=base.sample_rate, audio_samples=base.audio_samples, source=base_id,
        )

    def run_node_checks(self) -> None:
        for nid, cls in self.classes.items():
            params = self.validated.get(nid)
            if params is None:
                continue
            downstream = [self.nodes[e.src].window for e in self.edges if e.dst == nid and self.nodes[e.src].window]
            ctx = CheckContext(node_id=nid, base_dir=self.base_dir, downstream=[w for w in downstream if w])
            prefix: Path_ = ("streams", nid) if self.nodes[nid].is_source and nid in self.tree.get("streams", {}) else ("nodes", nid, "params")
            for key, message in cls.check(params, ctx):
                self.error((*prefix, *[p for p in key.split(".") if p]), message)

    def compile_outputs(self, overrides: Overrides) -> OutputsSpec:
        raw = self.mapping(("outputs",), required=False)
        sinks = self.compile_sinks(raw)
        raw = {k: v for k, v in raw.items() if k not in sinks}
        try:
            opts = OutputsOptions.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                self.error(("outputs", *err["loc"]), msg)
            opts = OutputsOptions()
        out = OutputsSpec(
            publish=overrides.publish or opts.publish.endpoint,
            wait_for_subscribers=opts.publish.wait_for_subscribers,
            wait_timeout_s=opts.publish.wait_timeout_s,
            sinks=sinks,
            insecure=opts.publish.insecure,
        )
        if opts.publish.curve is not None:
            out.curve_secret_key = str(self.base_dir / opts.publish.curve.secret_key)
            out.curve_clients = str(self.base_dir / opts.publish.curve.clients)
        if not re.match(r"^(tcp|ipc|ws|wss)://.+", out.publish):
            where = ("<--publish>", 1, 1) if overrides.publish else None
            message = f"not a ZeroMQ endpoint: {out.publish!r} (e.g. tcp://127.0.0.1:5560 or ipc:///tmp/avstream.sock)"
            if where:
                self.problems.append(Problem(*where, "outputs.publish.endpoint", message))
            else:
                self.error(("outputs", "publish", "endpoint"), message)
        else:
            self.check_publish_security(out, from_cli=bool(overrides.publish))
        if opts.jsonl is not None:
            path = opts.jsonl.path
            out.jsonl = path if path == "-" or Path(path).is_absolute() else str(self.base_dir / path)
            out.jsonl_fsync = opts.jsonl.fsync
        if overrides.jsonl:
            out.jsonl = overrides.jsonl if overrides.jsonl == "-" else str(Path(overrides.jsonl).resolve())
        if overrides.duration is not None and overrides.duration <= 0:
            self.problems.append(Problem("<--duration>", 1, 1, "", "--duration must be > 0"))
        return out

    def check_publish_security(self, out: OutputsSpec, from_cli: bool) -> None:
        """SPEC §9: no unauthenticated publishing on the network unless asked for."""
        security = PublishSecurity(out.curve_secret_key, out.curve_clients, out.insecure)
        for key, message in check_publish(out.publish, security):
            path: Path_ = ("outputs", "publish", *key.split(".")) if key else ("outputs", "publish")
            if from_cli and not key:
                message = f"--publish {message}"
            self.error(path, message)

    def compile_sinks(self, raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The ``outputs.<kind>`` sections of registered sinks (MQTT, webhooks, ...), each validated by
        its own settings model; kept as JSON so the compiled pipeline stays plain data."""
        out: dict[str, dict[str, Any]] = {}
        for name, kind in SINK_KINDS.items():
            if name not in raw:
                continue
            try:
                settings = kind.settings_model().model_validate(raw[name] if raw[name] is not None else {})
            except ValidationError as exc:
                for err in exc.errors():
                    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    self.error(("outputs", name, *err["loc"]), msg)
                out[name] = {}
                continue
            except ImportError as exc:
                self.error(("outputs", name), f"needs a package that is not installed: {exc.name or exc}")
                out[name] = {}
                continue
            out[name] = settings.model_dump(mode="json")
        return out
