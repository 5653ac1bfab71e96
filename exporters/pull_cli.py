"""``avstream models pull SOURCE``: an avstream ``.onnx`` (URL or file), or a pretrained checkpoint.

A checkpoint (a registry NAME, ``hf://ORG/REPO[@REVISION]``, ``https://huggingface.co/ORG/REPO``) is
fetched from the Hugging Face Hub at a pinned revision, every file checked by hash (``hub.py``), and
exported to zero-shot ONNX models with the built-in prompt sets of its kind: violence and highlight
for CLIP, violence and sound_events for CLAP. The ``.onnx`` forms are the engine's own ``pull``,
unchanged. Lives in the exporters because exporting needs torch and transformers (the ``export``
extra), which the runtime never imports.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from avstream.engine.cli_common import USAGE_ERROR, examples, reports_errors
from avstream.engine.errors import ModelError
from avstream.engine.inference.contract import default_model_dir
from avstream.engine.inference.models_cli import pull
from avstream.exporters.pretrained.registry import (
    DEFAULT_PROMPTS,
    KINDS,
    Checkpoint,
    load_registry,
    parse_source,
)

PROG = "avstream models"


def _say(text: str) -> None:
    click.echo(text)


def offline_message(reason: str, ck: Checkpoint) -> str:
    """The one line a user without network gets: what failed and the local-folder alternative."""
    at = f" at revision {ck.revision}" if ck.revision else ""
    return (f"cannot reach the Hugging Face Hub ({reason}): download the folder {ck.repo}{at} on a machine with "
            f"network and run  avstream export zero-shot --encoder PATH --prompts violence --out violence.onnx")


def _outputs(ck: Checkpoint, kind: str, folder: Path) -> dict[str, Path]:
    prompts = ck.prompts or DEFAULT_PROMPTS[kind]
    return {p: folder / f"{ck.name}-{Path(p).stem}.onnx" for p in prompts}


def _readable(path: Path) -> bool:
    from avstream.engine.inference.contract import read_metadata

    try:
        read_metadata(path)
    except ModelError:
        return False
    return True


def _kind(ck: Checkpoint, checkpoint: Path) -> str:
    from avstream.exporters.pretrained.clip import _read_model_type
    from avstream.exporters.pretrained.openclip import is_open_clip

    kind = "open_clip" if is_open_clip(checkpoint) else _read_model_type(checkpoint)
    if kind not in KINDS:
        raise ModelError(f"{checkpoint}/config.json: model_type {kind!r} is not supported (supported: "
                         f"{', '.join(KINDS)})")
    if ck.kind and ck.kind != kind:
        raise ModelError(f"{checkpoint}: a {kind} model, but {ck.source} lists {ck.name} as {ck.kind!r}")
    return kind


def _export(ck: Checkpoint, kind: str, checkpoint: Path, todo: dict[str, Path]) -> None:
    """Load the tower once, bake each prompt set; each model is written beside its final name and renamed."""
    from avstream.exporters.export import import_torch
    from avstream.exporters.pretrained.zeroshot import export_zero_shot, load_prompts

    prompt_sets = {p: load_prompts(p) for p in todo}  # a bad prompt set fails before the model loads
    import_torch()
    from avstream.exporters.cli import _load_tower  # the loader dispatch that `avstream export` uses

    tower = _load_tower(checkpoint, kind, ck.frames, ck.fps, ck.seconds)
    _say(f"loaded {tower.name}: {tower.dim}-d embeddings, logit scale {tower.logit_scale:.2f}")
    for spec, out in todo.items():
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
        try:
            _say(f"exporting {out.name} ({prompt_sets[spec].name} prompts)")
            tmp = staging / out.name
            task = TASK_PIPELINES.get(prompt_sets[spec].name, ("zero_shot", ""))[0]
            export_zero_shot(tower, prompt_sets[spec], tmp, task=task, model_id=out.stem, progress=_say)
            tmp.replace(out)  # a half-written model never carries the final name
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# a built-in prompt set -> the task its model is exported for, and that task's node in its zeroshot-* pipeline
TASK_PIPELINES = {"violence": ("violence", "violence"), "highlight": ("highlight", "score"),
                  "captions": ("captions", "caption")}


def _report(ck: Checkpoint, checkpoint: Path, outputs: dict[str, Path]) -> None:
    from avstream.engine.inference.contract import default_model_dir, read_metadata

    _say(f"checkpoint: {checkpoint}")
    for out in outputs.values():
        meta, _ = read_metadata(out)
        labels = getattr(meta, "labels", ())
        shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} in all)" if len(labels) > 8 else "")
        _say(f"  {out}  ({meta.ref}, task {meta.task}, labels: {shown})")
    for out in outputs.values():
        meta, _ = read_metadata(out)
        ref = f"models:{out.stem}" if out.parent == default_model_dir() else str(out)
        node = next((n for t, n in TASK_PIPELINES.values() if t == meta.task), None)
        if node is not None:
            _say(f"run it:  avstream run zeroshot-{meta.task} --input URI --set nodes.{node}.params.model={ref}")
        else:
            _say(f"use it in a pipeline as  {{type: avstream/onnx_encoder@v1, inputs: [window], "
                 f"params: {{model: \"{ref}\"}}}}")
    _say(f"  avstream models inspect {next(iter(outputs.values()))}")
    _say(f"  avstream export zero-shot --encoder {checkpoint} --prompts my_labels.yaml --out my_labels.onnx")


def pull_checkpoint(ck: Checkpoint, folder: Path, *, force: bool = False) -> int:
    """Fetch (or find cached) ``ck``, export its zero-shot models, print where they are."""
    from avstream.exporters.pretrained import hub

    if ck.revision and not force:  # a pinned pull that is complete needs no network at all
        done = hub.cached_checkpoint(folder, ck.name, ck.revision)
        if done is not None:
            outputs = _outputs(ck, _kind(ck, done), folder)
            if all(p.is_file() and _readable(p) for p in outputs.values()):
                _say(f"{ck.name}@{ck.revision}: cached, nothing to do (--force pulls and exports again)")
                _report(ck, done, outputs)
                return 0
    try:
        _say(f"pulling {ck.repo}@{ck.revision or 'main'} from {hub.endpoint()}")
        resolved = hub.resolve(ck, _say)
        checkpoint = None if force else hub.cached_checkpoint(folder, ck.name, resolved.commit)
        if checkpoint is None:
            checkpoint = hub.download(resolved, folder, _say, force=force)
            checks = sorted({e.origin for e in resolved.expected.values()})
            _say(f"downloaded {len(resolved.expected)} files, each checked ({'; '.join(checks)})")
        else:
            _say(f"checkpoint already downloaded: {checkpoint}")
    except hub.HubUnreachable as exc:
        click.echo(f"{PROG}: {offline_message(str(exc), ck)}", err=True)
        return USAGE_ERROR
    kind = _kind(ck, checkpoint)
    outputs = _outputs(ck, kind, folder)
    todo = {p: out for p, out in outputs.items() if force or not (out.is_file() and _readable(out))}
    if todo:
        _export(ck, kind, checkpoint, todo)
    _report(ck, checkpoint, outputs)
    return 0


def pull_source(source: str, folder: Path, *, force: bool = False, out: Any = None) -> int:
    ck = parse_source(source, load_registry())
    if ck is None:
        return pull(source, folder, out or sys.stdout)
    return pull_checkpoint(ck, folder, force=force)


@click.command("pull", epilog=examples(
    "avstream models pull clip-vit-b-32",
    "avstream models pull clap-htsat-unfused --dir models/",
    "avstream models pull hf://openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3",
    "avstream models pull https://example.org/my_model.onnx",
    "avstream models pull ./my_model.onnx --dir models/"))
@click.argument("source")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where to keep it (default: $AVSTREAM_MODELS or ~/.cache/avstream/models)")
@click.option("--force", is_flag=True, help="a checkpoint: download and export again even if cached")
@reports_errors(PROG)
def pull_command(source: str, folder: Path | None, force: bool) -> int:
    """Fetch a model or a pretrained checkpoint, check it, keep it locally.

    SOURCE is an http(s) URL or the path of an .onnx file with avstream metadata (a file whose
    contract does not read is not kept), or a pretrained checkpoint on the Hugging Face Hub: a known
    NAME (clip-vit-b-32, clip-vit-b-16, clap-htsat-unfused; more from $AVSTREAM_MODEL_REGISTRY),
    hf://ORG/REPO[@REVISION] or https://huggingface.co/ORG/REPO. A checkpoint is downloaded at its
    pinned revision, each file checked by sha256 (or the Hub's hash), cached under
    checkpoints/NAME@REVISION and exported to zero-shot models (CLIP: violence, highlight; CLAP:
    violence, sound_events). Needs the export extra and network; offline, exit 2 with the local-folder
    alternative. Exit codes: 0 done or cached, 2 user error (unknown name, hash mismatch, no network).
    """
    return pull_source(source, folder or default_model_dir(), force=force)
