"""The loop someone who knows PyAV and ONNX Runtime writes for one model on one file: the baseline
of bench/pipeline.py.

- one process; PyAV decodes with frame threading on every core the process may use;
- only the frames the model samples (the first at or after each point of its frame grid) are
  converted, scaled straight to the model's size and pixel format by one persistent swscale context
  (area interpolation, as the engine scales);
- audio resampled once, by PyAV's resampler, to the model's rate, mono float32;
- windows of the model's length and hop (its metadata), run as soon as their media has arrived,
  batch 1, on ONNX Runtime with one intra-op thread and no spinning.

    python bench/expert_loop.py CLIP [--model builtin:highlight] [--output activation]

Prints one JSON line: the number of windows and the chosen output of each window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
from av.video.reformatter import VideoReformatter

from avstream.engine.inference.contract import read_contract, resolve_model


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("clip")
    parser.add_argument("--model", default="builtin:highlight")
    parser.add_argument("--output", default="activation", help="contract output key to print per window")
    args = parser.parse_args()
    path = resolve_model(args.model, Path("."))
    contract = read_contract(path)
    need = contract.window_requirement()
    assert contract.video is not None and contract.audio is not None, "a video + audio model"
    video_in, audio_in = contract.video, contract.audio
    out_name = contract.outputs[args.output].name
    sess = session(path)

    container = av.open(args.clip)
    vs, aus = container.streams.video[0], container.streams.audio[0]
    vs.thread_type = "FRAME"
    vs.thread_count = len(os.sched_getaffinity(0))
    scaler = VideoReformatter()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=need.sample_rate)
    # The model's frame grid is k / fps; each point takes the first frame at or after it (the rule of
    # the window picks below and of the contract). A tolerance here (keeping a frame up to half a
    # source frame before a point) would keep a frame the picks then skip for that point, so the point
    # got the next point's frame twice: at 25 fps the frame at 0.24 s for 0.25 s, 0.52 s for both 0.25
    # and 0.5, two duplicated frames in every 2 s window.
    next_point = 0.0  # media time of the next grid point a frame is kept for
    frames: list[tuple[float, np.ndarray]] = []  # sampled frames of the windows still to come
    audio: list[np.ndarray] = []
    audio_start, audio_len = 0, 0  # sample index of audio[0], samples held
    video_end = audio_end = 0.0
    next_t0 = 0.0
    results: list[float] = []

    def run_window(t0: float) -> None:
        nonlocal audio, audio_start, audio_len
        t1 = t0 + need.seconds
        inside = [f for f in frames if t0 - 1e-6 <= f[0] < t1 - 1e-6] or frames[-1:]
        picks = []
        for k in range(need.frames):  # the first sampled frame at or after each grid point
            want = t0 + k / need.fps
            later = [img for t, img in inside if t >= want - 1e-6]
            picks.append(later[0] if later else inside[-1][1])
        held = np.concatenate(audio) if len(audio) > 1 else (audio[0] if audio else np.zeros(0, np.float32))
        first = int(round(t0 * need.sample_rate)) - audio_start
        clip = held[max(0, first): first + need.audio_samples]
        clip = np.pad(clip, (0, need.audio_samples - len(clip)))
        feed = {video_in.name: np.stack(picks)[None], audio_in.name: clip[None].astype(np.float32, copy=False)}
        results.append(float(np.asarray(sess.run([out_name], feed)[0]).reshape(-1)[0]))
        # drop what the next windows no longer need
        nxt = t0 + need.hop
        frames[:] = [f for f in frames if f[0] >= nxt - 1e-6] or frames[-1:]
        cut = int(round(nxt * need.sample_rate)) - audio_start
        if cut > 0:
            audio, audio_start, audio_len = [held[cut:]], audio_start + cut, len(held) - cut

    for packet in container.demux(vs, aus):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):
                t = float(frame.time or 0.0)
                video_end = t
                if t < next_point - 1e-6:
                    continue
                next_point = (math.floor(t * need.fps + 1e-6) + 1) / need.fps
                image = scaler.reformat(frame, format=video_in.pixel_format, width=need.width, height=need.height,
                                        interpolation="AREA").to_ndarray()
                frames.append((t, image))
            else:
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    audio.append(samples)
                    audio_len += len(samples)
                    audio_end = (audio_start + audio_len) / need.sample_rate
        while video_end + 1.0 / need.fps >= next_t0 + need.seconds - 1e-6 and audio_end >= next_t0 + need.seconds - 1e-6:
            run_window(next_t0)
            next_t0 = round(next_t0 + need.hop, 9)
    for out in resampler.resample(None):
        samples = out.to_ndarray().reshape(-1)
        audio.append(samples)
        audio_len += len(samples)
        audio_end = (audio_start + audio_len) / need.sample_rate
    while next_t0 < max(video_end, audio_end):  # the last, partial windows, padded
        run_window(next_t0)
        next_t0 = round(next_t0 + need.hop, 9)
    print(json.dumps({"windows": len(results), args.output: results}))


if __name__ == "__main__":
    main()
