"""YAML with line/column tracking, ``${ENV}`` substitution and ``--set`` overrides.

The tree is plain dicts/lists/scalars; ``Marks`` maps each key path to where it was written so every
problem found later can be reported as ``FILE:LINE:COL: key.path: message``.

YAML is safe-loaded and bounded (file size, nesting depth, values after alias expansion), so a
hostile file is refused with a located message instead of exhausting the stack or the memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from avstream.engine.errors import ConfigError, Problem

Path_ = tuple[str | int, ...]
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

MAX_YAML_BYTES = 1 << 20
"""Largest config file read (1 MiB); real pipelines and daemon configs are a few KiB."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and sequences."""
MAX_YAML_VALUES = 100_000
"""Most values (scalars and collections) in a document once every alias is expanded."""


class YamlLimitError(yaml.MarkedYAMLError):
    """A document over one of the limits above."""


class LimitedLoader(yaml.SafeLoader):
    """A safe loader whose composer bounds nesting depth and the expanded size of the tree.

    Sizes are counted while composing, before any Python object is built: each node's size is
    memoised, so an alias costs the size of the node it names ("billion laughs" is refused after a
    few dozen nodes instead of being expanded)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def _refuse(self, problem: str) -> YamlLimitError:
        event = self.peek_event()
        return YamlLimitError(problem=problem, problem_mark=event.start_mark)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            target = self.anchors.get(anchor) if anchor is not None else None
            if target is not None and id(target) not in self._sizes:
                raise self._refuse(f"alias *{anchor} refers to the collection that contains it")
            return super().compose_node(parent, index)
        level = 1 if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent) else 0
        self._depth += level
        if self._depth > MAX_YAML_DEPTH:
            raise self._refuse(f"nesting deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= level
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes.get(id(item), 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        if size > MAX_YAML_VALUES:
            raise YamlLimitError(
                problem=f"more than {MAX_YAML_VALUES} values once aliases are expanded",
                problem_mark=node.start_mark,
            )
        self._sizes[id(node)] = size
        return node


def safe_load_limited(text: str) -> Any:
    """``yaml.safe_load`` under the limits above (for short values such as ``--set`` ones)."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlLimitError(problem=f"value larger than {MAX_YAML_BYTES} bytes")
    loader = LimitedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class Marks:
    """Where each key path of a loaded tree was written."""

    def __init__(self, file: str):
        self.file = file
        self.at: dict[Path_, tuple[str, int, int]] = {}

    def set(self, path: Path_, line: int, col: int, file: str | None = None) -> None:
        self.at[path] = (file or self.file, line, col)

    def problem(self, path: Path_, message: str) -> Problem:
        """A problem located at ``path`` or its nearest written ancestor."""
        probe = tuple(path)
        while probe and probe not in self.at:
            probe = probe[:-1]
        file, line, col = self.at.get(probe, (self.file, 1, 1))
        return Problem(file, line, col, dotted(path), message)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(text: str, file: str) -> tuple[Any, Marks, list[Problem]]:
    """Parse ``text``; returns the tree, its marks and the problems (syntax, duplicate keys, env)."""
    marks = Marks(file)
    problems: list[Problem] = []
    if len(text) > MAX_YAML_BYTES:
        return None, marks, [Problem(file, 1, 1, "", f"file larger than {MAX_YAML_BYTES} bytes")]
    try:
        loader = LimitedLoader(text)  # the reader checks the characters here already
    except yaml.YAMLError as exc:
        return None, marks, [Problem(file, 1, 1, "", f"YAML error: {_one_line(exc)}")]
    try:
        root = loader.get_single_node()
    except YamlLimitError as exc:
        line, col = _mark_position(exc)
        return None, marks, [Problem(file, line, col, "", f"YAML refused: {exc.problem}")]
    except yaml.MarkedYAMLError as exc:
        line, col = _mark_position(exc)
        return None, marks, [Problem(file, line, col, "", f"YAML syntax error: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return None, marks, [Problem(file, 1, 1, "", f"YAML error: {_one_line(exc)}")]
    finally:
        loader.dispose()
    if root is None:
        return {}, marks, []

    def construct(node: yaml.Node, path: Path_) -> Any:
        try:
            return loader.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp 2020-02-30
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
            problems.append(Problem(file, line, col, dotted(path), f"cannot read this value: {exc}"))
            return None

    def build(node: yaml.Node, path: Path_) -> Any:
        marks.set(path, node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(construct(key_node, path))
                if key in out:
                    line = key_node.start_mark.line + 1
                    problems.append(Problem(file, line, key_node.start_mark.column + 1, dotted((*path, key)), "duplicate key"))
                marks.set((*path, key), key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = build(value_node, (*path, key))
                # Keep the key's own position (more useful than the value's) for messages.
                marks.set((*path, key), key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = construct(node, path)
        if isinstance(value, str) and "${" in value:
            value = substitute_env(value, path, marks, problems)
        return value

    try:
        tree = build(root, ())
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag
        line, col = _mark_position(exc)
        return None, marks, [Problem(file, line, col, "", f"YAML error: {exc.problem or _one_line(exc)}")]
    except yaml.YAMLError as exc:
        return None, marks, [Problem(file, 1, 1, "", f"YAML error: {_one_line(exc)}")]
    return tree, marks, problems


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _mark_position(exc: yaml.MarkedYAMLError) -> tuple[int, int]:
    mark = exc.problem_mark or exc.context_mark
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def substitute_env(value: str, path: Path_, marks: Marks, problems: list[Problem]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            problems.append(marks.problem(path, f"environment variable {name} is not set"))
            return ""
        return os.environ[name]

    return ENV_REF.sub(repl, value)


def apply_set(tree: dict[str, Any], marks: Marks, assignment: str, index: int) -> Problem | None:
    """Apply one ``--set a.b[0].c=value`` (value parsed as YAML). Returns a problem or None."""
    origin = "<--set>"
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        return Problem(origin, index, 1, "", f"--set {assignment!r}: expected KEY=VALUE")
    try:
        value = safe_load_limited(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        return Problem(origin, index, len(key) + 2, key, f"value is not valid YAML: {exc}")
    parts: list[str | int] = []
    for token in key.split("."):
        if not token:
            return Problem(origin, index, 1, key, "empty key in path")
        name, *indices = re.split(r"\[(\d+)\]", token)
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i != "")
    node: Any = tree
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = dotted(tuple(parts[: depth + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return Problem(origin, index, 1, here, "no such list item")
            if last:
                node[part] = value
            else:
                node = node[part]
        else:
            if isinstance(node, list) and part.isdigit():
                return apply_set(tree, marks, assignment.replace(f".{part}", f"[{part}]"), index)
            if not isinstance(node, dict):
                return Problem(origin, index, 1, here, "cannot set a key inside a non-mapping value")
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    marks.set(tuple(parts), index, 1, origin)
    return None


def load_yaml_file(path: Path, shape: str) -> tuple[dict[str, Any], Marks, list[Problem]]:
    """A config file read and parsed: its mapping, marks and the problems found so far. Raises
    ConfigError when the file cannot be read or parsed, or is not a mapping (``shape`` says what
    its keys should be, for the message)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError([Problem(str(path), 1, 1, "", f"file larger than {MAX_YAML_BYTES} bytes")])
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 0, 0, "", f"cannot read: {exc}")]) from None
    tree, marks, problems = load_yaml(text, str(path))
    if tree is None:
        raise ConfigError(problems)
    if not isinstance(tree, dict):
        raise ConfigError([marks.problem((), f"expected a mapping ({shape})")])
    return tree, marks, problems
