"""``avstream export``: build a self-describing ONNX model from a recipe or from the user's own module.

    avstream export --recipe highlight [--train-steps N] [--seed S] [--out models/highlight.onnx]
    avstream export --module my_pkg.my_mod:factory [--checkpoint ckpt.pt] --contract contract.json --out model.onnx
    avstream export --model model.onnx --quantize int8 --calibrate clip.mp4 [--out model.int8.onnx]
    avstream export --model model.onnx --precision fp16 | --format tensorrt [--precision int8 --calibrate URI]
    avstream export --build-engines pipeline.yaml
    avstream export zero-shot --encoder HF_FOLDER [--encoder HF_FOLDER] [--task violence|highlight|captions] [--prompts NAME|FILE.yaml] --out OUT.onnx
    avstream export audio-tagger --checkpoint Cnn14_mAP=0.431.pth [--labels class_labels_indices.csv] --out OUT.onnx

Exit codes: 0 written, 2 user error (bad arguments, missing module, bad checkpoint, unsupported
operator, parity failure), 1 unexpected failure.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from avstream.engine.cli_common import examples, reports_errors
from avstream.engine.errors import ModelError

RECIPES = ("highlight", "captions", "violence", "localization")


def _say(msg: str) -> None:
    print(f"[export] {msg}", flush=True)


def _load_factory(spec: str) -> Any:
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ModelError(f"--module {spec!r}: expected 'package.module:factory'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"--module {spec!r}: cannot import {mod_name!r}: {exc}") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise ModelError(f"--module {spec!r}: {mod_name} has no callable {attr!r}")
    return factory


def _load_checkpoint(module: Any, path: Path) -> None:
    import torch

    if not path.is_file():
        raise ModelError(f"--checkpoint {path}: file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"--checkpoint {path}: cannot read it as a PyTorch checkpoint: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"--checkpoint {path}: expected a state_dict, got {type(state).__name__}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise ModelError(f"--checkpoint {path}: does not fit the module: {' '.join(s.strip() for s in first[:3])}") from None


def _export_module(args: ExportOptions) -> int:
    from .export import export_onnx, import_torch

    torch = import_torch()
    if not args.contract:
        raise ModelError("--module needs --contract contract.json (the model's metadata and input shapes)")
    if not args.out:
        raise ModelError("--module needs --out model.onnx")
    contract_path = Path(args.contract)
    try:
        contract = json.loads(contract_path.read_text())
    except OSError as exc:
        raise ModelError(f"--contract {contract_path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"--contract {contract_path}: not valid JSON: {exc}") from None
    from avstream.engine.inference.contract import contract_from_dict

    contract_from_dict(contract, str(contract_path))  # fail early, with the key, before building anything
    sys.path.insert(0, str(Path.cwd()))
    factory = _load_factory(args.module or "")
    _say(f"building {args.module}() ...")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"--module {args.module!r}: the factory returned {type(module).__name__}, not a torch.nn.Module")
    if args.checkpoint:
        _say(f"loading checkpoint {args.checkpoint}")
        _load_checkpoint(module, Path(args.checkpoint))
    export_onnx(module, None, contract, Path(args.out), opset=args.opset, atol=args.atol, rtol=args.rtol,
                progress=_say)
    return 0


def _export_recipe(args: ExportOptions) -> int:
    from .export import export_onnx, import_torch

    import_torch()
    if args.recipe == "captions":  # two graphs (encoder + decoder step): the recipe exports both
        from .recipes import captions

        return captions.export_recipe(args, _say)
    recipe = importlib.import_module(f"{__package__}.recipes.{args.recipe}")
    out = Path(args.out or f"models/{args.recipe}.onnx")
    t0 = time.perf_counter()
    if args.checkpoint:
        model = recipe.build_model()
        _load_checkpoint(model, Path(args.checkpoint))
        model.eval()
    else:
        _say(f"training recipe {args.recipe!r}: {args.train_steps} steps, seed {args.seed}")
        model, stats = recipe.train(args.train_steps, args.seed, args.cache_dir, progress=_say)
        if args.recipe == "violence":  # thresholds in the metadata, chosen by grouped CV of the same recipe
            from .violence_release import calibrate

            cache = Path(args.cache_dir or ".cache/violence")
            recipe.CONTRACT["operating_points"] = calibrate(recipe.load_real(cache, _say), args.train_steps,
                                                            args.seed, cache, _say)
        _say(f"trained in {stats.seconds:.0f} s")
        if args.save_checkpoint:
            import torch

            torch.save(model.state_dict(), args.save_checkpoint)
            _say(f"checkpoint written to {args.save_checkpoint}")
    report = export_onnx(model, None, recipe.CONTRACT, out, opset=args.opset, real_inputs=recipe.real_inputs(),
                         atol=args.atol, rtol=args.rtol, progress=_say)
    from avstream.engine.inference.runners import measure_latency

    ms = measure_latency(out, runs=50, threads=1)
    _say(f"done in {time.perf_counter() - t0:.0f} s: {out} {report.size_bytes / 1e3:.0f} kB, "
         f"parity max abs {report.max_abs:.2e}, CPU latency {ms:.2f} ms/window (1 thread, batch 1)")
    return 0


@dataclass(frozen=True)
class ExportOptions:
    """The options of ``avstream export``, as the recipe, module and conversion paths read them."""

    recipe: str | None
    module: str | None
    model: str | None
    build_engines: str | None
    checkpoint: str | None
    contract: str | None
    out: str | None
    train_steps: int
    seed: int
    cache_dir: str | None
    save_checkpoint: str | None
    opset: int
    atol: float
    rtol: float
    quantize: str | None
    precision: str | None
    format: str
    calibrate: list[str] | None
    calibration_windows: int
    quantize_front_end: bool
    max_batch: int
    engine_cache: str | None


SOURCES = ("--recipe", "--module", "--model", "--build-engines")


@click.group("export", invoke_without_command=True, epilog=examples(
    "avstream export --recipe highlight --train-steps 1500 --out models/highlight.onnx",
    "avstream export --module my_pkg.nets:build --contract contract.json --out my.onnx",
    "avstream export --model my.onnx --quantize int8 --calibrate clip.mp4 --out my.int8.onnx",
    "avstream export --model my.onnx --format tensorrt --precision fp16",
    "avstream export --build-engines pipeline.yaml",
    "avstream export zero-shot --encoder ./clip-vit-base-patch32 --prompts violence --out violence-clip.onnx",
    "avstream export audio-tagger --checkpoint Cnn14_mAP=0.431.pth --labels class_labels_indices.csv --out cnn14.onnx"))
@click.option("--recipe", type=click.Choice(RECIPES), help="train and export a built-in model")
@click.option("--module", help="your own model: 'package.module:factory' returning a torch.nn.Module")
@click.option("--model", help="an avstream ONNX model (file or builtin:NAME) to convert: --quantize int8, "
              "--precision fp16, --format qdq|tensorrt")
@click.option("--build-engines", metavar="PIPELINE", help="build every TensorRT engine a pipeline needs on this "
              "GPU (nodes with backend: tensorrt or the tensorrt provider)")
@click.option("--checkpoint", help="state_dict to load into the module (skips recipe training)")
@click.option("--contract", help="JSON file with the avstream metadata (needed with --module)")
@click.option("--out", help="output .onnx path (recipe default: models/<recipe>.onnx)")
@click.option("--train-steps", type=int, default=600, show_default=True, help="recipe training steps")
@click.option("--seed", type=int, default=0, show_default=True, help="recipe training seed")
@click.option("--cache-dir", default=None, help="cache rendered training scenes here")
@click.option("--save-checkpoint", default=None, help="also write the trained state_dict here")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="parity tolerance, absolute")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="parity tolerance, relative")
@click.option("--quantize", type=click.Choice(["int8"]), help="with --model: INT8 static quantisation "
              "(needs --calibrate)")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="with --model: fp16 writes an "
              "FP16 ONNX variant; with --format tensorrt the engine's precision (default fp16)")
@click.option("--format", type=click.Choice(["onnx", "qdq", "tensorrt"]), default="onnx", show_default=True,
              help="with --model: onnx (INT8 with integer operators for ONNX Runtime CPU/edge), qdq (INT8 Q/DQ "
              "model for TensorRT), tensorrt (native engine + sidecar)")
@click.option("--calibrate", multiple=True, metavar="URI", help="media whose windows calibrate INT8 (file, "
              "sample://, synthetic://, rtsp://...; repeatable)")
@click.option("--calibration-windows", type=int, default=64, show_default=True, help="calibration windows per URI")
@click.option("--quantize-front-end", is_flag=True, help="also quantise the log-mel front end (faster, less "
              "accurate on quiet audio)")
@click.option("--max-batch", type=int, default=16, show_default=True, help="TensorRT profile: batch 1..N")
@click.option("--engine-cache", default=None, help="TensorRT engine cache folder")
@reports_errors("avstream export")
def export_command(**options: Any) -> int:
    """Build an ONNX model, or a lower-precision/TensorRT one.

    Give exactly one of --recipe (train and export a built-in model), --module (your own PyTorch
    module), --model (convert an exported model) or --build-engines (TensorRT engines of a pipeline),
    or run a subcommand: zero-shot (a pretrained CLIP/CLAP folder plus prompts), audio-tagger (a PANNs
    Cnn14 checkpoint).
    Exit codes: 0 written, 2 user error (bad arguments, missing module, bad checkpoint, unsupported
    operator, parity failure), 1 unexpected failure.
    """
    if click.get_current_context().invoked_subcommand is not None:
        return 0  # the subcommand does the work and returns the exit code
    args = ExportOptions(**{**options, "calibrate": list(options["calibrate"]) or None})
    given = [flag for flag in SOURCES if getattr(args, flag[2:].replace("-", "_"))]
    if len(given) != 1:
        raise click.UsageError(f"give exactly one of {', '.join(SOURCES)}" + (f" (got {', '.join(given)})" if given else ""))
    if args.build_engines:
        from .tensorrt_build import build_pipeline_engines

        return build_pipeline_engines(args.build_engines, args.engine_cache, _say)
    if args.model:
        from .convert import convert_main

        return convert_main(args, _say)
    if args.quantize or args.precision or args.format != "onnx" or args.calibrate:
        raise ModelError("--quantize/--precision/--format/--calibrate convert an exported model: "
                         "export first, then run avstream export --model OUT.onnx ...")
    return _export_recipe(args) if args.recipe else _export_module(args)


VIDEO_KINDS = ("clip", "open_clip")  # encoder kinds that are video towers; clap is the audio one


def _encoder_kind(encoder: Path) -> str:
    """clip or clap (a Hugging Face folder, by its config.json ``model_type``), or open_clip (a Hub-layout
    open_clip folder or a checkpoint file)."""
    from .pretrained.clip import _read_model_type
    from .pretrained.openclip import is_open_clip

    if not encoder.exists():
        raise ModelError(f"--encoder {encoder}: no such file or folder (expected a Hugging Face model folder, an "
                         "open_clip folder or an open_clip checkpoint file)")
    if is_open_clip(encoder):
        return "open_clip"
    kind = _read_model_type(encoder)
    if kind not in ("clip", "clap"):
        raise ModelError(f"{encoder}/config.json: model_type {kind!r} is not supported (supported: clip, clap)")
    return kind


def _load_tower(encoder: Path, kind: str, frames: int, fps: float, seconds: float | None,
                arch: str | None = None) -> Any:
    """The tower of an encoder of the given kind (see ``_encoder_kind``)."""
    if kind == "open_clip":
        from .pretrained.openclip import load_open_clip

        return load_open_clip(encoder, arch=arch, frames=frames, fps=fps)
    if kind == "clip":
        from .pretrained.clip import load_clip

        return load_clip(encoder, frames=frames, fps=fps)
    try:
        from .pretrained.clap import load_clap  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ModelError(f"{encoder}: a CLAP model, but CLAP support is not installed") from None
    return load_clap(encoder, seconds=seconds)


def _window_seconds(kinds: list[str], frames: int, fps: float, seconds: float | None) -> float | None:
    """The audio window: ``--seconds``, else the video window when a video encoder is given, else the
    audio model's own (None)."""
    if not any(kind in VIDEO_KINDS for kind in kinds):
        return seconds
    video_s = frames / fps
    if seconds is not None and abs(seconds - video_s) > 1e-6:
        raise ModelError(f"--seconds {seconds:g} differs from the video window ({frames} frames at {fps:g} fps = "
                         f"{video_s:g} s): both encoders see the same window")
    return video_s


def _export_localization(encoders: tuple[str, ...], projection: str | None, out: str | None, frames: int, fps: float,
                         seconds: float | None, hop: float | None, model_id: str | None, opset: int, atol: float,
                         rtol: float) -> int:
    from avstream.engine.inference.contract import default_model_dir

    from .export import import_torch

    paths = {_encoder_kind(Path(e)): Path(e) for e in encoders}
    if "open_clip" in paths:
        raise ModelError("--task localization needs the patch tokens of a Hugging Face CLIP folder; open_clip "
                         "checkpoints are supported for the zero_shot, violence and highlight tasks")
    if len(encoders) != 2 or set(paths) != {"clip", "clap"}:
        raise ModelError("--task localization takes two encoders: a CLIP folder (the frame) and a CLAP folder "
                         "(the sound)")
    if projection is None:
        raise ModelError("--task localization needs --projection FILE.npy (audio dim x video dim, taking CLAP "
                         "audio embeddings into CLIP's image space), or identity for an audio tower trained in "
                         "CLIP's space")
    if frames <= 0 or fps <= 0:
        raise ModelError(f"--frames ({frames}) and --fps ({fps:g}) must be positive")
    window_s = _window_seconds(["clip"], frames, fps, seconds)
    import_torch()
    from .pretrained.clip_patches import load_clip_patches
    from .pretrained.localization import export_localization

    patches = load_clip_patches(paths["clip"], frames=frames, fps=fps)
    audio = _load_tower(paths["clap"], "clap", frames, fps, window_s)
    grid = patches.extra["grid"]
    _say(f"loaded {patches.name}: a {grid[0]}x{grid[1]} patch grid; {audio.name}")
    model_id = model_id or "zeroshot-localization"
    target = Path(out) if out else default_model_dir() / f"{model_id}.onnx"
    export_localization(patches, audio, projection, target, model_id=model_id, hop=hop, opset=opset, atol=atol,
                        rtol=rtol, progress=_say)
    if not out:
        _say(f"use it in a pipeline as  params: {{model: \"models:{model_id}\"}}")
    return 0


TASK_PROMPTS = {"violence": "violence", "highlight": "highlight", "captions": "captions"}


@export_command.command("zero-shot", epilog=examples(
    "avstream export zero-shot --encoder ./clip-vit-base-patch32 --prompts violence --out violence-clip.onnx",
    "avstream export zero-shot --task violence --encoder ./clip-vit-base-patch32 --encoder ./clap-htsat-unfused "
    "--out models/zeroshot-violence.onnx",
    "avstream export zero-shot --task captions --encoder ./clap-htsat-unfused --out models/zeroshot-captions.onnx",
    "avstream export zero-shot --task localization --encoder ./clip --encoder ./clap --projection clap_to_clip.npy",
    "avstream export zero-shot --encoder ./clip --prompts my_labels.yaml --frames 4 --fps 1 --out mine.onnx",
    "avstream export zero-shot --task highlight --encoder ./laion2b_s34b_b79k.pt --arch ViT-B-32"))
@click.option("--encoder", "encoders", required=True, multiple=True, metavar="PATH",
              help="Hugging Face model folder: CLIPModel (video) or ClapModel (audio); or an open_clip model "
              "(video): a folder with open_clip_config.json, or a checkpoint file with --arch; give one video "
              "and one audio encoder for --task violence or highlight")
@click.option("--arch", default=None, metavar="NAME|CONFIG.json", help="the architecture of a bare open_clip "
              "checkpoint: an open_clip model name (ViT-B-32) or its model config JSON")
@click.option("--task", type=click.Choice(["zero_shot", "violence", "highlight", "captions", "localization"]),
              default="zero_shot", show_default=True, help="what the graph outputs: label probabilities, or the "
              "outputs of the violence, highlight, retrieval-captions or localization node")
@click.option("--projection", default=None, metavar="FILE.npy|identity", help="--task localization: the "
              "(audio dim x video dim) matrix taking CLAP audio embeddings into CLIP's image space")
@click.option("--prompts", default=None, metavar="FILE|NAME", help="YAML of label -> prompt texts (or a caption "
              "bank), or a built-in set: violence, highlight, sound_events, captions [default: the task's set]")
@click.option("--out", default=None, help="output .onnx path [default: ID.onnx in $AVSTREAM_MODELS or "
              "~/.cache/avstream/models, which pipelines name as models:ID]")
@click.option("--frames", type=int, default=8, show_default=True, help="video frames per window (CLIP)")
@click.option("--fps", type=float, default=2.0, show_default=True, help="video frame rate of the window (CLIP)")
@click.option("--seconds", type=float, default=None, help="audio window length (CLAP) [default: the video "
              "window with a CLIP encoder, else 10]")
@click.option("--hop", type=float, default=None, help="seconds between windows [default: the window length]")
@click.option("--id", "model_id", default=None, help="model id in the metadata (default: zeroshot-<prompts>)")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="parity tolerance vs PyTorch, absolute")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="parity tolerance vs PyTorch, relative")
@reports_errors("avstream export zero-shot")
def zero_shot_command(encoders: tuple[str, ...], arch: str | None, task: str, projection: str | None, prompts: str | None,
                      out: str | None, frames: int, fps: float, seconds: float | None, hop: float | None, model_id: str | None, opset: int, atol: float,
                      rtol: float) -> int:
    """Bake a zero-shot head (labels from prompt texts) on pretrained CLIP/CLAP/open_clip encoders into ONNX.

    The prompts are embedded now; the graph needs no text tower and no tokenizer at run time. With
    --task zero_shot it outputs the label probabilities (the generic encoder node runs it); with
    violence, highlight or captions it outputs what avstream/violence@v1, avstream/highlight@v1 or
    avstream/retrieval_captions@v1 take. Exit codes: 0 written, 2 user error (missing folder,
    unknown model_type, bad prompts file, parity failure), 1 unexpected failure.
    """
    from avstream.engine.inference.contract import default_model_dir

    from .export import import_torch
    from .pretrained.zeroshot import check_task, default_model_id, export_zero_shot, load_prompts

    if task == "localization":
        return _export_localization(encoders, projection, out, frames, fps, seconds, hop, model_id, opset, atol, rtol)
    if projection is not None:
        raise ModelError("--projection is for --task localization")
    if prompts is None and task not in TASK_PROMPTS:
        raise ModelError("--prompts is required with --task zero_shot (a YAML file or: violence, highlight, "
                         "sound_events, captions)")
    prompt_set = load_prompts(prompts or TASK_PROMPTS[task])  # a bad prompts file fails before the model loads
    if frames <= 0 or fps <= 0:
        raise ModelError(f"--frames ({frames}) and --fps ({fps:g}) must be positive")
    if hop is not None and hop <= 0:
        raise ModelError(f"--hop {hop:g} must be positive")
    paths = [Path(e) for e in encoders]
    kinds = [_encoder_kind(p) for p in paths]
    if arch is not None and "open_clip" not in kinds:
        raise ModelError("--arch names the architecture of an open_clip checkpoint; no --encoder is one")
    modalities = ["audio" if k == "clap" else "video" for k in kinds]
    check_task(task, modalities, prompt_set)  # mistakes in the arguments fail before any model loads
    window_s = _window_seconds(kinds, frames, fps, seconds)
    import_torch()
    towers = []
    for path, kind in zip(paths, kinds, strict=True):
        tower = _load_tower(path, kind, frames, fps, window_s, arch)
        _say(f"loaded {tower.name}: {tower.dim}-d embeddings, logit scale {tower.logit_scale:.2f}")
        towers.append(tower)
    model_id = model_id or default_model_id(task, prompt_set.name)
    target = Path(out) if out else default_model_dir() / f"{model_id}.onnx"
    export_zero_shot(towers, prompt_set, target, task=task, model_id=model_id, hop=hop, opset=opset, atol=atol,
                     rtol=rtol, progress=_say)
    if not out:
        _say(f"use it in a pipeline as  params: {{model: \"models:{model_id}\"}}")
    return 0


@export_command.command("audio-tagger", epilog=examples(
    "avstream export audio-tagger --checkpoint Cnn14_mAP=0.431.pth --labels class_labels_indices.csv "
    "--out cnn14.onnx",
    "avstream export audio-tagger --checkpoint Cnn14_16k_mAP=0.438.pth --sample-rate 16000 --window-size 512 "
    "--hop-size 160 --fmax 8000 --seconds 5 --out cnn14-16k.onnx"))
@click.option("--checkpoint", required=True, metavar="FILE.pth", help="PANNs Cnn14 checkpoint ({'model': "
              "state_dict} as published, or a bare state_dict)")
@click.option("--labels", default=None, metavar="CSV", help="class names: index,mid,display_name (AudioSet's "
              "class_labels_indices.csv); without it the labels are class_0..class_N-1")
@click.option("--out", required=True, help="output .onnx path")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="audio window length")
@click.option("--sample-rate", type=int, default=32000, show_default=True, help="the checkpoint's sample rate")
@click.option("--window-size", type=int, default=1024, show_default=True, help="STFT window (n_fft)")
@click.option("--hop-size", type=int, default=320, show_default=True, help="STFT hop")
@click.option("--mel-bins", type=int, default=64, show_default=True, help="mel bins")
@click.option("--fmin", type=float, default=50.0, show_default=True, help="lowest mel frequency, Hz")
@click.option("--fmax", type=float, default=14000.0, show_default=True, help="highest mel frequency, Hz")
@click.option("--id", "model_id", default="panns-cnn14", show_default=True, help="model id in the metadata")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="parity tolerance vs PyTorch, absolute")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="parity tolerance vs PyTorch, relative")
@reports_errors("avstream export audio-tagger")
def audio_tagger_command(checkpoint: str, labels: str | None, out: str, seconds: float, sample_rate: int,
                         window_size: int, hop_size: int, mel_bins: int, fmin: float, fmax: float,
                         model_id: str, opset: int, atol: float, rtol: float) -> int:
    """Export a PANNs Cnn14 audio tagger from a local checkpoint, log-mel front end inside the graph.

    The graph takes mono samples at --sample-rate (the engine resamples to it) and outputs one sigmoid
    probability per label (multi-label, task audio_tags); the labels are in its metadata, so the generic
    encoder node (avstream/onnx_encoder@v1) runs it. Exit codes: 0 written, 2 user error (missing file,
    another architecture, settings the checkpoint contradicts, bad labels CSV, parity failure), 1
    unexpected failure.
    """
    from .export import import_torch

    import_torch()
    from .pretrained.panns import FrontEnd, export_audio_tagger, load_cnn14, read_labels

    label_set = read_labels(Path(labels)) if labels else None  # a bad CSV fails before the model loads
    front = FrontEnd(sample_rate=sample_rate, window_size=window_size, hop_size=hop_size, mel_bins=mel_bins,
                     fmin=fmin, fmax=fmax)
    tagger = load_cnn14(Path(checkpoint), seconds=seconds, front=front)
    _say(f"loaded {tagger.name}: {tagger.classes} classes, widths {tagger.extra['widths']}")
    export_audio_tagger(tagger, label_set, Path(out), model_id=model_id, opset=opset, atol=atol, rtol=rtol,
                        progress=_say)
    return 0
