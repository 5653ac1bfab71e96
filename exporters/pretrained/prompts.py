"""Prompt sets for zero-shot heads: label -> prompt texts, per modality, and caption banks.

A prompts YAML file is one of:

- a mapping ``label: [prompt, ...]`` (a single string is one prompt), used for any tower;
- sections: ``video:`` and/or ``audio:`` (each such a mapping), ``any:`` for both, and ``positive:``,
  the labels that count as the task's positive class (violence: fighting, gunshot, ...);
  a positive label must be in every section;
- a caption bank: ``captions: [text, ...]`` (or a bare list of texts); each caption is its own label.

Built-in sets live in ``avstream/exporters/prompts/`` and are named by their file stem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from avstream.engine.errors import ModelError

BUILTIN_PROMPTS = ("violence", "highlight", "sound_events", "captions")
PROMPTS_PACKAGE = "avstream.exporters.prompts"
MODALITIES = ("video", "audio")
SECTION_KEYS = frozenset({"any", "video", "audio", "positive", "captions"})
MAX_CAPTIONS = 10_000  # a bank is embedded at export time and multiplied per window: keep it bounded


@dataclass(frozen=True)
class PromptSet:
    name: str  # file stem: "violence"
    sections: dict[str, dict[str, list[str]]]  # "any" | "video" | "audio" -> label -> prompt texts
    source: str  # where it was read from, for messages and the metadata
    positive: tuple[str, ...] = ()  # the task's positive labels (violence, highlight)
    captions: bool = False  # a caption bank: one label per caption text
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, list[str]]:
        """The prompts of the set's first section (``any`` when it has one)."""
        return self.sections.get("any") or next(iter(self.sections.values()))

    def for_modality(self, modality: str) -> dict[str, list[str]]:
        """The labels and prompts for a tower of ``modality`` ("video" or "audio")."""
        if modality in self.sections:
            return self.sections[modality]
        if "any" in self.sections:
            return self.sections["any"]
        raise ModelError(f"{self.source}: no prompts for a {modality} encoder (sections: {', '.join(self.sections)})")


def _label_map(data: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(data, dict) or not data:
        raise ModelError(f"{where}: expected a mapping of label -> list of prompt texts")
    labels: dict[str, list[str]] = {}
    for label, prompts in data.items():
        if not isinstance(label, str) or not label.strip():
            raise ModelError(f"{where}: label {label!r} is not a non-empty string")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ModelError(f"{where}: {label}: expected a non-empty list of prompt texts")
        labels[label] = list(prompts)
    if len(labels) < 2:
        raise ModelError(f"{where}: needs at least two labels (a softmax over one label is always 1)")
    return labels


def _caption_bank(data: Any, source: str) -> dict[str, list[str]]:
    if not isinstance(data, list) or not all(isinstance(c, str) and c.strip() for c in data):
        raise ModelError(f"{source}: captions: expected a list of caption texts")
    bank = list(dict.fromkeys(c.strip() for c in data))
    if not 2 <= len(bank) <= MAX_CAPTIONS:
        raise ModelError(f"{source}: captions: {len(bank)} distinct texts (2 to {MAX_CAPTIONS} allowed)")
    return {c: [c] for c in bank}


def _is_sectioned(data: dict[Any, Any]) -> bool:
    return bool(data) and set(data) <= SECTION_KEYS and any(isinstance(data.get(k), (dict, list)) for k in SECTION_KEYS)


def parse_prompts(text: str, source: str, name: str) -> PromptSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, list):
        return PromptSet(name=name, sections={"any": _caption_bank(data, source)}, source=source, captions=True)
    if not isinstance(data, dict) or not data:
        raise ModelError(f"{source}: expected a mapping of label -> list of prompt texts")
    if not _is_sectioned(data):
        return PromptSet(name=name, sections={"any": _label_map(data, source)}, source=source)
    if "captions" in data:
        if set(data) != {"captions"}:
            raise ModelError(f"{source}: a caption bank has only 'captions:' (found also: "
                             f"{', '.join(sorted(set(data) - {'captions'}))})")
        return PromptSet(name=name, sections={"any": _caption_bank(data["captions"], source)}, source=source,
                         captions=True)
    sections = {k: _label_map(data[k], f"{source}: {k}") for k in ("any", *MODALITIES) if k in data}
    if not sections:
        raise ModelError(f"{source}: no 'any', 'video' or 'audio' section of labels")
    positive = data.get("positive", [])
    if isinstance(positive, str):
        positive = [positive]
    if not isinstance(positive, list) or not all(isinstance(p, str) for p in positive):
        raise ModelError(f"{source}: positive: expected a list of labels")
    for section, labels in sections.items():
        missing = [p for p in positive if p not in labels]
        if missing:
            raise ModelError(f"{source}: positive label(s) {', '.join(map(repr, missing))} are not in the "
                             f"{section!r} section (its labels: {', '.join(labels)})")
        if positive and len(positive) == len(labels):
            raise ModelError(f"{source}: {section}: every label is positive; add labels of the calm/other class")
    return PromptSet(name=name, sections=sections, source=source, positive=tuple(positive))


def load_prompts(spec: str | Path) -> PromptSet:
    """A prompts YAML file, or the name of a built-in set (see ``BUILTIN_PROMPTS``)."""
    if isinstance(spec, str) and spec in BUILTIN_PROMPTS:
        text = resources.files(PROMPTS_PACKAGE).joinpath(f"{spec}.yaml").read_text(encoding="utf-8")
        return parse_prompts(text, f"builtin:{spec}", spec)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the prompts file: {exc.strerror or exc} "
                         f"(or name a built-in set: {', '.join(BUILTIN_PROMPTS)})") from None
    return parse_prompts(text, str(path), path.stem)
