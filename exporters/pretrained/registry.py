"""Known pretrained checkpoints for ``avstream models pull NAME``, and how a pull SOURCE is read.

Each entry pins a Hugging Face Hub repository to one commit and lists the files to fetch. A file's
``sha256`` is recorded here where a public record of that file at that commit exists (see
``docs/models.md``, "Pulling pretrained checkpoints"); where it is ``None`` the download is checked
against what the Hub reports for the pinned commit instead (the LFS sha256 of a large file, the git
blob id of a small one). Either way no file is kept unchecked.

``$AVSTREAM_MODEL_REGISTRY`` may name a YAML file of further entries (same keys as below; an entry
with a built-in name replaces it), for mirrors, private checkpoints and tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from avstream.engine.errors import ModelError

REGISTRY_ENV = "AVSTREAM_MODEL_REGISTRY"
COMMIT = re.compile(r"[0-9a-f]{40}")
SHA256 = re.compile(r"[0-9a-f]{64}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
KINDS = ("clip", "clap", "open_clip")
# the built-in prompt sets each kind of tower is exported with (zeroshot.BUILTIN_PROMPTS)
DEFAULT_PROMPTS = {"clip": ("violence", "highlight"), "clap": ("violence", "captions", "sound_events"),
                   "open_clip": ("violence", "highlight")}
# what an unlisted repository contributes: config, preprocessing, tokenizer, one weights file
FOLDER_FILES = ("config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one the repository has
# an open_clip repository without a transformers config.json (openclip.py reads it): config + weights
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class Checkpoint:
    """One Hub checkpoint to fetch: ``files`` maps a file name to its sha256 (None: the Hub's hash)."""

    name: str  # folder and model-file stem: "clip-vit-b-32"
    repo: str  # "openai/clip-vit-base-patch32"
    revision: str | None  # a 40-hex commit; None: resolve the default branch once (hf:// sources)
    kind: str | None = None  # "clip" / "clap" / "open_clip"; None: read from the downloaded files
    files: Mapping[str, str | None] = field(default_factory=dict)  # empty: pick from the repo's listing
    prompts: tuple[str, ...] = ()  # empty: DEFAULT_PROMPTS of the kind
    frames: int = 8  # CLIP window: frames at fps
    fps: float = 2.0
    seconds: float = 10.0  # CLAP window
    source: str = "built-in registry"  # where the entry was read, for messages

    @property
    def recorded(self) -> bool:
        """Whether every file's sha256 is recorded here rather than taken from the Hub."""
        return bool(self.files) and all(v is not None for v in self.files.values())


# Revisions and hashes below are public records of these exact commits; none is made up. The
# CLIP ViT-B/32 and CLAP hashes were published alongside the revisions by projects that verify
# their downloads; ViT-B/16's revision is public but its files have no recorded hash here.
BUILTIN: dict[str, Checkpoint] = {
    "clip-vit-b-32": Checkpoint(
        name="clip-vit-b-32", repo="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", kind="clip",
        files={
            "config.json": "b575ef3c36f2a057fa19e221650105052d61cc9c1a972ec15019c6261ec98770",
            "merges.txt": "f526393189112391ce6f9795d4695f704121ce452c3aad1f5335cc41337eba85",
            "preprocessor_config.json": "910e70b3956ac9879ebc90b22fb3bc8a75b6a0677814500101a4c072bd7857bd",
            "pytorch_model.bin": "a63082132ba4f97a80bea76823f544493bffa8082296d62d71581a4feff1576f",
            "special_tokens_map.json": "f8c0d6c39aee3f8431078ef6646567b0aba7f2246e9c54b8b99d55c22b707cbf",
            "tokenizer.json": "b556ac8c99757ffb677208af34bc8c6721572114111a6e0aaf5fa69ff0b8d842",
            "tokenizer_config.json": "34b7336e4bee12e0a9730eaf5189f582ef3c3eea5027f65730e5717256755aad",
            "vocab.json": "5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363",
        }),
    "clip-vit-b-16": Checkpoint(
        name="clip-vit-b-16", repo="openai/clip-vit-base-patch16",
        revision="57c216476eefef5ab752ec549e440a49ae4ae5f3", kind="clip",
        files={f: None for f in ("config.json", "merges.txt", "preprocessor_config.json", "pytorch_model.bin",
                                 "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                                 "vocab.json")}),
    "clap-htsat-unfused": Checkpoint(
        name="clap-htsat-unfused", repo="laion/clap-htsat-unfused",
        revision="8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a", kind="clap",
        files={
            "config.json": "9efb9557bc804f2ca6e394486af2e45dfed0b18554909735a99c6220b84e4288",
            "merges.txt": "fe36cab26d4f4421ed725e10a2e9ddb7f799449c603a96e7f29b5a3c82a95862",
            "preprocessor_config.json": "9739f58296aa6f9ac18008fd0150fb2649bc554985fbde86d0a4041c882ac753",
            "pytorch_model.bin": "1cd3c601bc4afe0fa87be3de4c13dd2cfadd249fac1e29acf74a9b296c3219bb",
            "special_tokens_map.json": "06e405a36dfe4b9604f484f6a1e619af1a7f7d09e34a8555eb0b77b66318067f",
            "tokenizer.json": "77ef92283d67f0d97e1454909a964afcbfa2019f0fb9f18f8e88d5c25c3ba729",
            "tokenizer_config.json": "377f91458f7729a4574a84c77bdce67dbc3c58c1a345a29bbf8c4eb1307948a3",
            "vocab.json": "ed19656ea1707df69134c4af35c8ceda2cc9860bf2c3495026153a133670ab5e",
        }),
}


def _entry(name: str, raw: Any, where: str) -> Checkpoint:
    """One YAML entry, every problem named with the file and the entry."""
    at = f"{where}: {name}"
    if not isinstance(raw, dict):
        raise ModelError(f"{at}: expected a mapping with repo, revision and files")
    unknown = set(raw) - {"repo", "revision", "kind", "files", "prompts", "frames", "fps", "seconds"}
    if unknown:
        raise ModelError(f"{at}: unknown keys {', '.join(sorted(unknown))}")
    repo, revision, kind = raw.get("repo"), raw.get("revision"), raw.get("kind")
    if not isinstance(repo, str) or not REPO_ID.fullmatch(repo):
        raise ModelError(f"{at}: repo must be ORG/NAME (got {repo!r})")
    if not isinstance(revision, str) or not COMMIT.fullmatch(revision):
        raise ModelError(f"{at}: revision must be a 40-hex commit sha, not a branch or tag (got {revision!r})")
    if kind is not None and kind not in KINDS:
        raise ModelError(f"{at}: kind must be one of {', '.join(KINDS)} (got {kind!r})")
    files = raw.get("files") or {}
    if isinstance(files, list):  # names only: every hash comes from the Hub
        files = dict.fromkeys(files)
    if not isinstance(files, dict) or not files:
        raise ModelError(f"{at}: files must map file names to their sha256 (or null: the Hub's hash)")
    for fname, digest in files.items():
        if not isinstance(fname, str) or digest is not None and not (isinstance(digest, str)
                                                                     and SHA256.fullmatch(digest)):
            raise ModelError(f"{at}: files: {fname}: sha256 must be 64 lowercase hex digits or null")
    prompts = raw.get("prompts") or ()
    if not isinstance(prompts, list | tuple) or not all(isinstance(p, str) for p in prompts):
        raise ModelError(f"{at}: prompts must be a list of prompt-set names or files")
    numbers = {k: raw[k] for k in ("frames", "fps", "seconds") if k in raw}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ModelError(f"{at}: {key} must be a positive number (got {value!r})")
    return Checkpoint(name=name, repo=repo, revision=revision, kind=kind, files=dict(files),
                      prompts=tuple(prompts), frames=int(numbers.get("frames", 8)),
                      fps=float(numbers.get("fps", 2.0)), seconds=float(numbers.get("seconds", 10.0)),
                      source=where)


def load_registry(path: str | None = None) -> dict[str, Checkpoint]:
    """The built-in entries, plus (replacing same-named ones) those of ``$AVSTREAM_MODEL_REGISTRY``."""
    entries = dict(BUILTIN)
    path = path if path is not None else os.environ.get(REGISTRY_ENV, "")
    if not path:
        return entries
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"{path} (${REGISTRY_ENV}): cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ModelError(f"{path} (${REGISTRY_ENV}): not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:  # an empty file adds nothing
        data = {}
    if not isinstance(data, dict):
        raise ModelError(f"{path} (${REGISTRY_ENV}): expected a mapping of NAME -> entry")
    for name, raw in data.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise ModelError(f"{path}: entry name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
        entries[name] = _entry(name, raw, path)
    return entries


def _hub_source(repo: str, revision: str | None, source: str) -> Checkpoint:
    if not REPO_ID.fullmatch(repo):
        raise ModelError(f"{source}: expected hf://ORG/REPO[@REVISION]")
    if revision is not None and not COMMIT.fullmatch(revision):
        raise ModelError(f"{source}: the revision must be a 40-hex commit sha (a branch or tag can move); "
                         f"leave it out to resolve the default branch once")
    return Checkpoint(name=repo.replace("/", "--"), repo=repo, revision=revision, source=source)


def parse_source(source: str, registry: Mapping[str, Checkpoint]) -> Checkpoint | None:
    """The checkpoint a pull SOURCE names, or None when it is an ``.onnx`` URL or file.

    Forms: a registry NAME; ``hf://ORG/REPO[@REVISION]``; ``https://huggingface.co/ORG/REPO``
    (optionally ``/tree/REVISION``). Anything else ending in ``.onnx``, or an existing file, is None.
    """
    if source.startswith("hf://"):
        repo, _, revision = source[len("hf://"):].strip("/").partition("@")
        return _hub_source(repo, revision or None, source)
    url = urlparse(source)
    if url.scheme in ("http", "https") and url.hostname in ("huggingface.co", "hf.co") \
            and not url.path.endswith(".onnx"):
        parts = [p for p in url.path.split("/") if p]
        if len(parts) not in (2, 4) or len(parts) == 4 and parts[2] not in ("tree", "commit"):
            raise ModelError(f"{source}: expected https://huggingface.co/ORG/REPO[/tree/REVISION]")
        return _hub_source("/".join(parts[:2]), parts[3] if len(parts) == 4 else None, source)
    if source in registry:
        return registry[source]
    if url.scheme in ("http", "https") or source.endswith(".onnx") or Path(source).is_file():
        return None
    raise ModelError(f"{source}: not a known checkpoint, an hf://ORG/REPO source or an .onnx URL or file "
                     f"(known checkpoints: {', '.join(sorted(registry))})")
