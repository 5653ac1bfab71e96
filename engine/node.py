"""The node API: a node type is a manifest (versioned id, typed params, declared input and output
kinds) plus a process function, with explicit lifecycle hooks.

Built-in nodes and third-party nodes are written and registered the same way (entry-point group
``avstream.plugins``). A node never starts other nodes; the supervisor owns the graph.

Lifecycle of one node instance, in its own thread of a worker process::

    __init__(ctx, params) -> on_start() -> process(item)* / on_eos(stream)* -> on_stop()

A source node (no inputs) implements ``produce()`` instead of ``process()``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from avstream.engine.items import Item, MediaFit
from avstream.engine.timing import Timing

if TYPE_CHECKING:
    from avstream.engine.capture.preview import PreviewTap


class Params(BaseModel):
    """Base of every node's params: unknown keys are errors, every field has a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=Params)


class NodeState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class WindowRequirement:
    """What a consumer of AV windows needs; the window node is configured from it (SPEC §5)."""

    seconds: float
    hop: float
    fps: float = 0.0  # video frames per second inside a window; 0: no video needed
    frames: int = 0  # frames per window
    height: int = 0
    width: int = 0
    sample_rate: int = 0  # 0: no audio needed
    audio_samples: int = 0
    source: str = ""  # who asked, for error messages


@dataclass
class CheckContext:
    """What a node type's validation hook may look at."""

    node_id: str
    base_dir: Path
    downstream: list[WindowRequirement] = field(default_factory=list)


@dataclass
class NodeContext:
    """What a running node gets from the engine."""

    node_id: str
    streams: tuple[str, ...]
    base_dir: Path
    stop_event: threading.Event
    logger: logging.Logger
    window: WindowRequirement | None = None  # resolved window spec, for window nodes
    # sources: what each outgoing edge's consumer takes (in edge order; None: every frame as made);
    # a source that honours them sends VideoFrame.fitted (see avstream.engine.capture.fit)
    output_fits: tuple[MediaFit | None, ...] = ()
    cpu_consumers: int = 1  # sources and model nodes of the graph, sharing the cores (engine/inference/threads.py)
    resume_after: dict[str, float] = field(default_factory=dict)  # per stream media time, after a restart
    duration: float | None = None  # media-time limit of sources (--duration)
    counters: dict[str, float] = field(default_factory=dict)  # exported in node status
    timings: dict[str, Timing] = field(default_factory=dict)  # histograms, exported in node status
    preview: PreviewTap | None = None  # sources, when the pipeline has a live preview (engine/capture/preview.py)

    def count(self, name: str, amount: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """One duration into the histogram ``name`` (its labels are those of the first call)."""
        timing = self.timings.get(name)
        if timing is None:
            timing = self.timings[name] = Timing(labels)
        timing.observe(seconds)

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()


class Node(Generic[P]):
    """Base class of every node type. Subclasses set the class attributes and override hooks."""

    type_id: ClassVar[str] = ""  # "vendor/name@vN"
    summary: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    input_kinds: ClassVar[tuple[str, ...]] = ()  # accepted item kinds; empty for sources
    output_kind: ClassVar[str | None] = None
    # A node whose work takes cores of its own (model inference): the compiler counts these and the
    # sources as the graph's CPU consumers, among which such a node shares the cores.
    uses_cores: ClassVar[bool] = False

    def __init__(self, ctx: NodeContext, params: P):
        self.ctx = ctx
        self.params = params
        self.state = NodeState.CREATED

    # --- validation and graph compilation (class level, no process needed) ---
    @classmethod
    def parse_params(cls, params: Any) -> Any:
        """``params`` as this type's ``Params`` model: a validated dict, or an instance as is."""
        return params if isinstance(params, cls.Params) else cls.Params.model_validate(params)

    @classmethod
    def check(cls, params: Any, ctx: CheckContext) -> list[tuple[str, str]]:
        """Extra validation beyond the params schema: (params key path, message) pairs."""
        return []

    @classmethod
    def window_requirement(cls, params: Any, base_dir: Path) -> WindowRequirement | None:
        """For AV-window consumers: the window this node needs (read from its model's metadata)."""
        return None

    @classmethod
    def preflight(cls, params: Any) -> None:
        """Checks that only matter for running, not for validating (an installed runtime...).

        Called by ``avstream run`` before any process starts; raise MissingDependencyError or
        another AvstreamError with a message that says what to do.
        """

    # --- lifecycle ---
    def on_start(self) -> None:
        """Open resources (models, devices). Runs before the first item."""

    def process(self, item: Item) -> Iterable[Item]:
        """Turn one input item into zero or more output items."""
        return ()

    def on_eos(self, stream: str) -> Iterable[Item]:
        """``stream`` ended on every input: flush what is held for it."""
        return ()

    def on_stop(self) -> None:
        """Release resources. Always called, also after a failure."""

    def status(self) -> dict[str, Any]:
        """Extra per-node status for the live view (latest score, skew...)."""
        return {}


class SourceNode(Node[P]):
    """A node with no inputs: it produces items until its input ends or the engine stops it."""

    output_kind: ClassVar[str | None] = "media"

    def produce(self) -> Iterator[Item]:
        raise NotImplementedError("source nodes implement produce()")


def parse_type_id(type_id: str) -> tuple[str, int]:
    """Split ``vendor/name@v3`` into (``vendor/name``, 3); ValueError when malformed."""
    name, sep, version = type_id.partition("@")
    if not sep or not version.startswith("v") or not version[1:].isdigit() or "/" not in name:
        raise ValueError(f"node type id {type_id!r} is not of the form 'vendor/name@vN'")
    return name, int(version[1:])
