"""The ``avstream serve`` config file (SPEC §6): server settings, streams, and the sink sections.

Parsed with the pipeline YAML loader, so every problem is reported at once as
``FILE:LINE:COL: key.path: message``. A stream entry is validated exactly as a pipeline's stream
entry (the source node's own params and checks), plus ``pipeline:``, the template it runs through.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avstream.engine.errors import ConfigError, Problem
from avstream.engine.node import CheckContext
from avstream.engine.runtime.config import CurveOptions, _Compiler, builtin_pipelines, load_mapping
from avstream.engine.runtime.registry import Registry, load_registry
from avstream.engine.runtime.yamlsrc import Marks, Path_
from avstream.engine.sinks import SINK_KINDS
from avstream.engine.transport.curve import PublishSecurity, check_publish

TOP_KEYS = ("version", "server", "streams", "mqtt", "webhooks", "record", "annotate")
SINK_SECTIONS = ("mqtt", "webhooks", "record", "annotate")
STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # always fullmatch: "$" accepts a trailing newline


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: str = Field("127.0.0.1:8760", pattern=r"^[^:\s]+:\d{1,5}$", description="HOST:PORT of the REST API")
    token_file: str = Field("token", description="bearer token file; created (0600) when missing")
    data_dir: str = Field("data", description="clips and state; relative to the config file")
    metrics_auth: bool = Field(False, description="require the token on /metrics too")
    watch: bool = Field(False, description="re-read the config when the file changes (as on SIGHUP)")
    publish: str = Field("tcp://127.0.0.1:5560", description="ZeroMQ PUB endpoint of all streams' results")
    publish_curve: CurveOptions | None = Field(None, description="CURVE keys of the PUB endpoint (SPEC §9)")
    publish_insecure: bool = Field(False, description="allow an unauthenticated non-loopback tcp PUB endpoint")
    failed_retry_s: float = Field(60.0, gt=0, description="how often a failed stream is tried again")
    max_body_bytes: int = Field(65536, ge=1024, description="largest accepted request body")
    events_history: int = Field(1000, ge=1, description="events kept for GET /api/events")
    viewer: bool = Field(True, description="serve the live web viewer at / and WS /api/live")


@dataclass
class StreamEntry:
    id: str
    pipeline: str  # the template reference as written
    template: Path  # the resolved pipeline file
    params: dict[str, Any]  # the source node's validated params (JSON)
    raw: dict[str, Any]  # the entry as given (compared on reload)


@dataclass
class ServeConfig:
    file: Path
    base_dir: Path
    server: ServerSettings
    streams: dict[str, StreamEntry] = field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)  # sink kind -> validated settings (JSON)

    def path(self, value: str) -> Path:
        """A path of the config, relative to its folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def publish_security(self) -> PublishSecurity:
        curve = self.server.publish_curve
        return PublishSecurity(str(self.path(curve.secret_key)) if curve else None,
                               str(self.path(curve.clients)) if curve else None, self.server.publish_insecure)


def resolve_template(ref: str, base_dir: Path) -> Path | None:
    path = Path(ref) if Path(ref).is_absolute() else base_dir / ref
    try:
        if path.is_file():
            return path.resolve()
    except (OSError, ValueError):  # a name no file can have (too long, a NUL byte): not a file
        pass
    return builtin_pipelines().get(ref)


def validate_stream(sid: str, entry: Any, marks: Marks, base_dir: Path, problems: list[Problem],
                    registry: Registry | None = None) -> StreamEntry | None:
    """One stream entry (``streams.<sid>``), its problems appended located through ``marks``."""
    path: Path_ = ("streams", sid)
    before = len(problems)
    if not STREAM_ID.fullmatch(sid):
        problems.append(marks.problem(path, "a stream id is letters, digits, '-' and '_' (at most 64)"))
        return None
    if not isinstance(entry, dict):
        problems.append(marks.problem(path, "a stream is a mapping with `pipeline:` and `uri:` (or `video:` + `audio:`)"))
        return None
    ref = entry.get("pipeline")
    template = None
    if not isinstance(ref, str) or not ref:
        problems.append(marks.problem((*path, "pipeline"), "missing (required): a built-in pipeline name or a file"))
    else:
        template = resolve_template(ref, base_dir)
        if template is None:
            names = ", ".join(sorted(builtin_pipelines()))
            problems.append(marks.problem((*path, "pipeline"), f"no such file or built-in pipeline '{ref}' (built-ins: {names})"))
    source = {k: v for k, v in entry.items() if k != "pipeline"}
    if not any(k in source for k in ("uri", "video", "audio")):
        problems.append(marks.problem(path, "missing `uri:` (or `video:` + `audio:`)"))
        return None
    compiler = _Compiler({"streams": {sid: source}}, marks, base_dir / "serve.yaml", registry or load_registry(), problems)
    compiler.base_dir = base_dir
    compiler.add_stream(sid, source)
    node = compiler.nodes.get(sid)
    params = compiler.validated.get(sid)
    if node is not None and params is not None:
        cls = compiler.classes[sid]
        for key, message in cls.check(params, CheckContext(node_id=sid, base_dir=base_dir, downstream=[])):
            compiler.error((*path, *[p for p in key.split(".") if p]), message)
    if len(problems) > before or node is None or template is None or not isinstance(ref, str):
        return None
    return StreamEntry(sid, ref, template, node.params, dict(entry))


def _sink_section(name: str, value: Any, marks: Marks, problems: list[Problem]) -> dict[str, Any] | None:
    kind = SINK_KINDS.get(name)
    if kind is None:
        problems.append(marks.problem((name,), f"the '{name}' output is not available in this build"))
        return None
    data = value if value is not None else {}
    try:
        return kind.settings_model().model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(marks.problem((name, *loc), msg))
    except ImportError as exc:
        problems.append(marks.problem((name,), f"needs a package that is not installed: {exc.name or exc}"))
    return None


def load_serve_config(file: str | Path) -> ServeConfig:
    """Load and validate a serve config; raises ConfigError listing every problem."""
    path = Path(file)
    tree, marks, problems = load_mapping(path, "a serve config: version, server, streams, ...")
    base_dir = path.resolve().parent
    for key in tree:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(TOP_KEYS)})"
            problems.append(marks.problem((key,), f"unknown key{hint}"))
    if tree.get("version") != 1:
        problems.append(marks.problem(("version",), f"unsupported serve config version {tree.get('version')!r} (this engine reads 1)"))
    server = ServerSettings()
    raw_server = tree.get("server") or {}
    try:
        server = ServerSettings.model_validate(raw_server)
    except ValidationError as exc:
        for err in exc.errors():
            msg = "unknown key" if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err.get('input')!r})"
            problems.append(marks.problem(("server", *err["loc"]), msg))
    config = ServeConfig(path, base_dir, server)
    for key, message in check_publish(server.publish, config.publish_security(), "server.publish_curve",
                                      "server.publish_insecure"):
        where = ("publish_" + key).split(".") if key else ["publish"]
        problems.append(marks.problem(("server", *where), message))
    streams = tree.get("streams") or {}
    if not isinstance(streams, dict):
        problems.append(marks.problem(("streams",), "must be a mapping of stream id to stream entry"))
        streams = {}
    registry = load_registry()
    for sid, entry in streams.items():
        stream = validate_stream(str(sid), entry, marks, base_dir, problems, registry)
        if stream is not None:
            config.streams[str(sid)] = stream
    for name in SINK_SECTIONS:
        if name in tree:
            settings = _sink_section(name, tree[name], marks, problems)
            if settings is not None:
                config.sinks[name] = settings
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.file != str(path), p.line, p.col)))
    return config


def validate_request_stream(body: Any, base_dir: Path) -> StreamEntry:
    """A stream posted over REST: ``{"id", "pipeline", "uri", ...}``; ConfigError located at ``<request>``."""
    marks = Marks("<request>")
    if not isinstance(body, dict):
        raise ConfigError([Problem("<request>", 1, 1, "", "the body is a JSON object: {\"id\", \"pipeline\", \"uri\", ...}")])
    sid = body.get("id")
    if not isinstance(sid, str) or not STREAM_ID.fullmatch(sid):
        raise ConfigError([Problem("<request>", 1, 1, "id", "missing or invalid: letters, digits, '-' and '_' (at most 64)")])
    problems: list[Problem] = []
    entry = validate_stream(sid, {k: v for k, v in body.items() if k != "id"}, marks, base_dir, problems)
    if problems or entry is None:
        raise ConfigError(problems)
    return entry
