"""Node-type registry filled from the entry-point group ``avstream.plugins``.

An entry point names a callable that returns node classes (or a list of them). Built-in nodes
register through the same group, so the plugin API is exercised by the project itself. Loading
errors are distinct: an import that fails, an object with the wrong interface, a duplicate id, or a
plugin written for another engine API version.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from avstream.engine import ENGINE_API_VERSION
from avstream.engine.errors import PluginError
from avstream.engine.items import KINDS
from avstream.engine.node import Node, SourceNode, parse_type_id

GROUP = "avstream.plugins"
log = logging.getLogger("avstream.registry")


@dataclass(frozen=True)
class NodeTypeInfo:
    cls: type[Node[Any]]
    plugin: str  # entry point name
    distribution: str
    version: str


class Registry:
    def __init__(self) -> None:
        self.types: dict[str, NodeTypeInfo] = {}
        self.load_errors: list[PluginError] = []

    def add(self, cls: Any, plugin: str, distribution: str, version: str) -> None:
        check_interface(cls, plugin)
        if cls.type_id in self.types:
            other = self.types[cls.type_id]
            raise PluginError(
                f"plugin {plugin!r} ({distribution}) registers node type {cls.type_id!r}, "
                f"already registered by plugin {other.plugin!r} ({other.distribution})"
            )
        self.types[cls.type_id] = NodeTypeInfo(cls, plugin, distribution, version)

    def get(self, type_id: str) -> type[Node[Any]]:
        return self.types[type_id].cls

    def suggest(self, type_id: str) -> str | None:
        """The closest known id, judged on the name (a shared vendor prefix says nothing)."""

        def name(tid: str) -> str:
            return tid.split("/", 1)[-1].split("@", 1)[0]

        best, score = None, 0.6
        for known in self.types:
            ratio = difflib.SequenceMatcher(None, name(type_id), name(known)).ratio()
            if ratio > score or (ratio == score and best is None):
                best, score = known, ratio
        return best


def check_interface(cls: Any, plugin: str) -> None:
    """Reject objects that are not node types, with a message naming the plugin."""
    if not isinstance(cls, type) or not issubclass(cls, Node):
        raise PluginError(f"plugin {plugin!r}: {cls!r} is not a subclass of avstream.engine.node.Node")
    try:
        parse_type_id(cls.type_id)
    except ValueError as exc:
        raise PluginError(f"plugin {plugin!r}: {cls.__name__}: {exc}") from None
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        raise PluginError(f"plugin {plugin!r}: {cls.type_id}: Params must be a pydantic model")
    for kind in (*cls.input_kinds, cls.output_kind):
        if kind is not None and kind not in KINDS:
            raise PluginError(f"plugin {plugin!r}: {cls.type_id}: unknown item kind {kind!r}")
    if not cls.input_kinds and not issubclass(cls, SourceNode):
        raise PluginError(f"plugin {plugin!r}: {cls.type_id}: a node without inputs must be a SourceNode")
    wanted = getattr(cls, "engine_api", ENGINE_API_VERSION)
    if wanted != ENGINE_API_VERSION:
        raise PluginError(
            f"plugin {plugin!r}: {cls.type_id} needs engine API {wanted}, this engine provides {ENGINE_API_VERSION}"
        )


_REGISTRY: Registry | None = None


def load_registry(*, strict: bool = False) -> Registry:
    """Load every plugin once per process. A broken plugin is reported, the others still load."""
    global _REGISTRY
    if _REGISTRY is not None:
        return _REGISTRY
    registry = Registry()
    for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (e.name != "builtin", e.name)):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        try:
            factory = ep.load()
        except Exception as exc:  # any import error of third-party code
            registry.load_errors.append(PluginError(f"plugin {ep.name!r} ({dist}): import failed: {exc}"))
            continue
        try:
            classes = factory() if callable(factory) and not isinstance(factory, type) else factory
            if isinstance(classes, type):
                classes = [classes]
            for cls in classes:
                registry.add(cls, ep.name, dist, version)
        except PluginError as exc:
            registry.load_errors.append(exc)
        except Exception as exc:
            registry.load_errors.append(PluginError(f"plugin {ep.name!r} ({dist}): wrong interface: {exc}"))
    for err in registry.load_errors:
        log.warning("%s", err)
    if strict and registry.load_errors:
        raise registry.load_errors[0]
    _REGISTRY = registry
    return registry
