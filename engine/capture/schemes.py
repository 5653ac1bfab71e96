"""The input scheme registry: ``open_reader`` and ``check_uri`` for every URI kind."""
from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avstream.engine.capture.base import (
    NETWORK_SCHEMES,
    MediaReader,
    file_path,
    printable,
    redact_uri,
    source_error,
)
from avstream.engine.capture.camera import check_v4l2_uri, open_v4l2
from avstream.engine.capture.files import SAMPLES, FileReader, _generated, parse_synthetic
from avstream.engine.capture.fit import FrameFitter
from avstream.engine.capture.microphone import MicReader, check_mic_uri
from avstream.engine.capture.network import NetworkReader, check_net_uri
from avstream.engine.capture.skipping import SKIP_MODES, THREADING_MODES
from avstream.engine.errors import SourceError
from avstream.engine.synthetic.scene import SceneConfig

# --------------------------------------------------------------------------------------------------
# entry point

ReaderFactory = Callable[..., MediaReader]
UriCheck = Callable[[str], "str | None"]
_SCHEMES: dict[str, ReaderFactory] = {}
_CHECKS: dict[str, UriCheck] = {}


def register_scheme(scheme: str, factory: ReaderFactory, check: UriCheck | None = None) -> None:
    """Make ``open_reader`` hand ``scheme://`` URIs to ``factory(uri, **open_reader kwargs)``.

    ``check(uri)`` (optional) returns a problem found without opening the input, for validation.
    """
    _SCHEMES[scheme.lower()] = factory
    if check is not None:
        _CHECKS[scheme.lower()] = check


for _scheme in NETWORK_SCHEMES:
    register_scheme(_scheme, NetworkReader, check_net_uri)
register_scheme("v4l2", open_v4l2, check_v4l2_uri)
register_scheme("mic", MicReader, check_mic_uri)


def uri_scheme(uri: str) -> str:
    """The lower-case scheme of ``uri``, ``"file"`` for a plain path."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    return m.group(1).lower() if m else "file"


def open_reader(
    uri: str,
    *,
    stream: str,
    video: bool = True,
    audio: bool = True,
    fps: float = 0.0,
    sample_rate: int = 16000,
    audio_chunk_s: float = 0.04,
    options: dict[str, Any] | None = None,
    live: Any = None,
    min_size: tuple[int, int] | None = None,
    skip: str = "auto",
    threading: str = "auto",
    fitter: FrameFitter | None = None,
) -> MediaReader:
    """Open ``uri`` for ``stream``: a path or ``file://``, ``sample://<name>``, ``synthetic://...``,
    or a scheme added with :func:`register_scheme`. Raises SourceError when it cannot be opened.

    ``video``/``audio`` = False ignore that track; ``fps`` > 0 subsamples video; audio comes mono at
    ``sample_rate`` in chunks of about ``audio_chunk_s``; ``options`` go to FFmpeg (files, network);
    ``live`` (:class:`~avstream.engine.capture.settings.LiveSettings`) goes to the readers of live schemes; ``min_size`` (W, H)
    lets a file reader deliver frames scaled down to the smallest size covering it; ``skip`` and
    ``threading`` choose what video is decoded and how (:mod:`~avstream.engine.capture.skipping`;
    files and network streams); ``fitter``
    (:class:`~avstream.engine.capture.fit.FrameFitter`) makes each frame once per size its consumers
    take, on each one's frame grid (a registered factory gets it as ``fitter=`` when given).
    """
    if sample_rate <= 0 or audio_chunk_s <= 0 or fps < 0:
        raise source_error(
            stream,
            uri,
            f"bad reader settings: fps={fps} sample_rate={sample_rate} audio_chunk_s={audio_chunk_s}",
        )
    problem = _unsplittable(uri)
    if problem:
        raise source_error(stream, uri, problem)
    if skip not in SKIP_MODES or threading not in THREADING_MODES:
        raise source_error(stream, uri, f"bad decode settings: skip={skip!r} (one of {', '.join(SKIP_MODES)}), "
                                        f"decode_threading={threading!r} (one of {', '.join(THREADING_MODES)})")
    kw: dict[str, Any] = {
        "video": video,
        "audio": audio,
        "fps": fps,
        "sample_rate": sample_rate,
        "audio_chunk_s": audio_chunk_s,
    }
    scheme = uri_scheme(uri)
    if scheme == "file":
        return FileReader(uri, stream=stream, options=options, min_size=min_size, skip=skip, threading=threading,
                          fitter=fitter, **kw)
    if scheme == "sample":
        name = uri[len("sample://") :].strip("/")
        sample = SAMPLES.get(name)
        if sample is None:
            raise source_error(stream, uri, f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
        kind = "sync" if sample.scene is None else "scene"
        cfg = sample.scene or SceneConfig(duration=sample.duration)
        return _generated(uri, kind, cfg, cfg.duration, stream, fitter=fitter, **kw)
    if scheme == "synthetic":
        kind, cfg = parse_synthetic(uri, stream)
        return _generated(uri, kind, cfg, cfg.duration, stream, fitter=fitter, **kw)
    factory = _SCHEMES.get(scheme)
    if factory is None:
        known = ", ".join(sorted({"file", "sample", "synthetic", *_SCHEMES}))
        raise source_error(stream, uri, f"input scheme {scheme!r} is not supported here (supported: {known})")
    if live is not None:
        kw["live"] = live
    if fitter is not None:
        kw["fitter"] = fitter
    return factory(uri, stream=stream, options=options, skip=skip, threading=threading, **kw)


def check_uri(uri: str, base_dir: Path | None = None) -> str | None:
    """A problem with ``uri`` found without opening it (bad sample name, query key, missing file)."""
    problem = _check_uri(uri, base_dir)
    # one line, whatever control characters the URI holds (a problem is printed as one located line)
    return printable(problem) if problem else None


def _check_uri(uri: str, base_dir: Path | None) -> str | None:
    scheme = uri_scheme(uri)
    problem = _unsplittable(uri)
    if problem:
        return problem
    try:
        if scheme == "sample":
            name = uri[len("sample://") :].strip("/")
            if name not in SAMPLES:
                return f"unknown sample {name!r}; available: {', '.join(SAMPLES)}"
        elif scheme == "synthetic":
            parse_synthetic(uri)
        elif scheme == "file":
            path = resolve_file(uri, base_dir)
            if not os.path.exists(file_path(path)):
                return f"file not found: {redact_uri(path)}"
        elif scheme in _CHECKS:
            return _CHECKS[scheme](uri)
    except SourceError as exc:
        return str(exc).split(": ", 2)[-1]
    return None


def _unsplittable(uri: str) -> str | None:
    """Why ``uri`` cannot be split into its parts (an unclosed ``[`` of an IPv6 host), if it cannot."""
    if uri_scheme(uri) == "file":
        return None
    try:
        urllib.parse.urlsplit(uri)
    except ValueError as exc:
        return f"not a valid URI ({exc})"
    return None


def resolve_file(uri: str, base_dir: Path | None) -> str:
    """A relative file path resolved against ``base_dir`` (the pipeline YAML's folder); others as is."""
    if base_dir is None or uri_scheme(uri) != "file":
        return uri
    path = file_path(uri)
    if os.path.isabs(path):
        return uri
    return str(Path(base_dir) / path)
