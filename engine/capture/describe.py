"""What ``avstream graph`` shows of how a source decodes its video: the codec, the kept and native
rates, the skip mode and the decoder threading (:mod:`~avstream.engine.capture.skipping`)."""

from __future__ import annotations

from avstream.engine.capture.base import DEVICE_SCHEMES, LIVE_SCHEMES, FpsGate, file_path
from avstream.engine.capture.decode import native_rate
from avstream.engine.capture.schemes import uri_scheme
from avstream.engine.capture.skipping import planned_mode, slices_in, thread_type_for


def describe(uri: str, *, fps: float, skip: str, threading: str, options: dict[str, str] | None = None) -> str:
    """How a source decodes its video, for ``avstream graph``; a file is opened and its first packet read."""
    scheme = uri_scheme(uri)
    if scheme in ("sample", "synthetic"):
        return "decode: none (generated frames)"
    if scheme in LIVE_SCHEMES:
        skip_text = "key frames only (approximate)" if skip == "keyframes" else "every frame (live)"
        if threading != "auto":
            thread_text = f"{threading} threading"
        elif scheme in DEVICE_SCHEMES:
            thread_text = "the camera decoder's default threading"
        else:
            thread_text = "FFmpeg's choice: frame threading where the decoder has it"
        return f"decode: {skip_text}; {thread_text} ({_FRAME_DELAY})"
    probe = _probe_file(uri, options)
    if isinstance(probe, str):
        return f"decode: cannot probe the file ({probe})"
    codec, native, slices = probe
    if not codec:
        return "decode: no video track"
    subsampling = fps > 0 and not FpsGate(fps, native).off
    mode = planned_mode(skip, live=False, codec=codec, subsampling=subsampling)
    native_text = f"{native:g} fps" if native else "an unknown rate"
    rate = f"keeps {fps:g} of {native_text}" if subsampling else f"every frame of {native_text}"
    skip_text = {
        "auto": "skip auto (lossless: non-reference frames skipped, GOP tails not decoded)",
        "nonref": "skip nonref (lossless: non-reference frames skipped)",
        "keyframes": "skip keyframes (approximate: key frames only)",
        "none": "skip none" if skip == "none" or not subsampling else f"skip {skip} does not apply to {codec}",
    }[mode]
    kind = thread_type_for(threading, live=False).lower()
    return f"decode: {codec}, {rate}; {skip_text}; {kind} threading ({slices} slice{'s' * (slices != 1)} per frame)"


_FRAME_DELAY = "frame threading: (threads - 1) frames of delay"


def _probe_file(uri: str, options: dict[str, str] | None) -> tuple[str, float, int] | str:
    """(codec, native rate, slices in the first packet) of a file's first video track, or why not."""
    import av

    try:
        with av.open(file_path(uri), options=dict(options or {})) as c:
            if not c.streams.video:
                return "", 0.0, 0
            vs = c.streams.video[0]
            codec = vs.codec_context.name
            slices = 0
            for packet in c.demux(vs):
                if packet.size:
                    slices = slices_in(bytes(packet), codec, vs.codec_context.extradata)
                    break
            return codec, native_rate(vs), slices
    except (av.FFmpegError, OSError, ValueError) as exc:
        return " ".join(str(getattr(exc, "strerror", None) or exc).split())
