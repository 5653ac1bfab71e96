"""Error classes of the engine.

Each error also subclasses the builtin a caller would catch for that situation (the PyAV habit), and
carries the place it belongs to (node id, YAML path, stream) so messages point at the user's file.
"""

from __future__ import annotations

from dataclasses import dataclass


class AvstreamError(Exception):
    """Base class of every error raised by avstream."""


@dataclass(frozen=True)
class Problem:
    """One configuration problem, located in a file."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(AvstreamError, ValueError):
    """The pipeline, a CLI option or a model does not fit: every problem, collected at once."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PluginError(AvstreamError, ImportError):
    """A plugin could not be loaded (import failed, wrong interface, duplicate id)."""


class ModelError(AvstreamError, ValueError):
    """A model file is missing, unreadable or lacks the avstream metadata."""


class MissingDependencyError(AvstreamError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class SourceError(AvstreamError, ConnectionError):
    """A source could not be opened or read; the message names the stream and the (redacted) URI."""


class NodeFailure(AvstreamError, RuntimeError):
    """A node failed at run time; the supervisor logs its traceback and restarts it."""
