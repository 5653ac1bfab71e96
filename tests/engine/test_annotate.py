"""Annotated video: the `annotate` sink fed real result headers for a file made with the FFmpeg CLI,
its output decoded with PyAV and checked with ffprobe; and `avstream run` end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avstream.engine.errors import ConfigError
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.sinks import SinkContext, build_sinks
from avstream.engine.sinks.annotate import AnnotateSink
from avstream.engine.sinks.overlay import BANNER_FRACTION
from tests.conftest import run_cli

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = [pytest.mark.skipif(FFMPEG is None or FFPROBE is None,
                                 reason="the FFmpeg CLI (ffmpeg, ffprobe) is not installed; scripts/test.sh installs it"),
              pytest.mark.timeout(240)]
REPO = Path(__file__).resolve().parents[2]
DURATION_S, FPS = 6.0, 25
ALERT_FROM = 3.0  # the violence alert is on from this media time


@pytest.fixture(scope="module")
def grey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat grey 320x240 H.264 file: any coloured pixel in the output is the overlay's."""
    assert FFMPEG is not None
    path = tmp_path_factory.mktemp("annotate") / "grey.mp4"
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=gray:size=320x240:rate={FPS}", "-t", str(DURATION_S), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def probe(path: Path) -> dict[str, Any]:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_name,pix_fmt,width,height:format=duration",
                          "-of", "json", str(path)], check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    (stream,) = data["streams"]
    return {**stream, "duration": float(data["format"]["duration"])}


def decode(path: Path) -> list[tuple[float, np.ndarray]]:
    import av

    with av.open(str(path)) as container:
        return [(float(f.time), f.to_ndarray(format="bgr24")) for f in container.decode(video=0)]


def feed(sink: Any, stream: str = "cam0", hop: float = 0.5) -> None:
    """Results as the publisher sends them: localization with its heatmap payload (peak in the top-left
    quadrant), violence (alert from ALERT_FROM), a caption; one window of 1 s every ``hop``."""
    heat = np.zeros((28, 28), np.float16)
    heat[3:10, 3:10] = 1.0
    heat[5:8, 5:8] = 2.0
    t0 = 0.0
    while t0 + 1.0 <= DURATION_S + 1e-6:
        common = {"schema_version": 1, "stream": stream, "t0": t0, "t1": t0 + 1.0, "wall": time.time(),
                  "latency_ms": 20.0}
        sink.send({**common, "kind": "localization", "seq": 0, "score": 0.8, "peak": [0.23, 0.23],
                   "payloads": [{"name": "heatmap", "dtype": "float16", "shape": [28, 28]}]}, [heat])
        alert = t0 + 1.0 > ALERT_FROM
        sink.send({**common, "kind": "violence", "seq": 0, "score": 0.9 if alert else 0.1, "alert": alert,
                   "audio_score": 0.5, "visual_score": 0.5}, [])
        sink.send({**common, "kind": "caption", "seq": 0, "text": "a grey wall stands still", "source": "av",
                   "confidence": 0.9}, [])
        t0 += hop


def redness_map(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[..., i].astype(np.float32) for i in range(3))
    return np.asarray(r - (g + b) / 2)


def redness(image: np.ndarray) -> float:
    return float(redness_map(image).mean())


def region(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    return image[y0:y1, x0:x1]


def test_results_are_burned_into_a_playable_video(tmp_path: Path, grey: Path) -> None:
    fanout = build_sinks({"annotate": {"dir": str(tmp_path / "out")}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": str(grey)}}))
    feed(fanout)
    fanout.close()
    (sink,) = fanout.sinks
    assert isinstance(sink, AnnotateSink)
    (video,) = sorted((tmp_path / "out" / "cam0").glob("*"))
    assert video.name.startswith("cam0-") and video.suffix == ".mp4"  # finalised: no .part left
    info = probe(video)
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p" and (info["width"], info["height"]) == (320, 240)
    assert info["duration"] == pytest.approx(DURATION_S, abs=0.2)
    frames = decode(video)
    assert abs(len(frames) - DURATION_S * FPS) <= 2 and sink.frames_written["cam0"] == len(frames)
    source = dict(decode(grey))
    h, w = frames[0][1].shape[:2]
    banner = int(h * BANNER_FRACTION)
    for t, image in frames[5::10]:
        src = source[min(source, key=lambda s: abs(s - t))]
        assert np.abs(image.astype(int) - src).mean() > 1.0  # the overlay is there
        # the quadrants between the banner and the bottom panel
        change = np.abs(image.astype(int) - src).sum(axis=2)
        top_left, bottom_right = (banner, h // 2, 0, w // 2), (h // 2, int(h * 0.7), w // 2, w)
        assert region(change, top_left).mean() > region(change, bottom_right).mean() + 10, t
        red = redness_map(image)[banner: int(h * 0.7)]  # not the banner's or the score bars' red
        hottest = np.unravel_index(int(np.argmax(red)), red.shape)
        assert banner + hottest[0] < h // 2 and hottest[1] < w // 2 and red.max() > 40, t  # red-hot there
        banner_change = np.abs(image[:banner].astype(int) - src[:banner]).mean()
        if t > ALERT_FROM + 0.1:
            assert banner_change > 40 and redness(image[:banner]) > 60, t  # the red ALERT banner
        elif t < ALERT_FROM - 1.1:
            assert banner_change < 5, t


def test_segments_are_each_a_playable_mp4(tmp_path: Path, grey: Path) -> None:
    fanout = build_sinks({"annotate": {"dir": str(tmp_path / "out"), "segment_s": 2, "fps": 10, "width": 160}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": str(grey)}}))
    feed(fanout)
    fanout.close()
    videos = sorted((tmp_path / "out" / "cam0").glob("*"))
    assert len(videos) == 3 and all(v.suffix == ".mp4" for v in videos)
    total = 0
    for video in videos:
        info = probe(video)
        assert info["codec_name"] == "h264" and (info["width"], info["height"]) == (160, 120)
        assert info["duration"] == pytest.approx(2.0, abs=0.2)
        frames = decode(video)
        assert abs(len(frames) - 20) <= 1
        total += len(frames)
    assert abs(total - DURATION_S * 10) <= 2


def test_a_frame_waits_for_its_results(tmp_path: Path, grey: Path) -> None:
    """Results that come late (as a slow model's do) still land on their frames."""
    fanout = build_sinks({"annotate": {"dir": str(tmp_path / "out"), "kinds": ["violence"]}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": str(grey)}}))
    time.sleep(1.5)  # the reader is ahead of any result
    feed(fanout)
    fanout.close()
    (video,) = sorted((tmp_path / "out" / "cam0").glob("*.mp4"))
    frames = decode(video)
    h = frames[0][1].shape[0]
    banner = int(h * BANNER_FRACTION)
    on = [t for t, image in frames if redness(image[:banner]) > 60]
    # the first alert window is [ALERT_FROM - 0.5, ALERT_FROM + 0.5]: not the first frames, and not never
    assert on and min(on) == pytest.approx(ALERT_FROM - 0.5, abs=0.05)


def test_streams_added_and_removed_at_run_time(tmp_path: Path, grey: Path) -> None:
    fanout = build_sinks({"annotate": {"dir": str(tmp_path / "out"), "streams": ["b"]}},
                         SinkContext("t", tmp_path, tmp_path))
    (sink,) = fanout.sinks
    assert isinstance(sink, AnnotateSink)
    sink.add_stream("a", {"uri": str(grey)})  # not selected by `streams`
    sink.add_stream("b", {"uri": str(grey)})
    feed(fanout, "b")
    deadline = time.monotonic() + 60
    while sink.frames_written.get("b", 0) < DURATION_S * FPS - 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    sink.remove_stream("b")  # finalises its file
    deadline = time.monotonic() + 30
    while not list((tmp_path / "out" / "b").glob("*.mp4")) and time.monotonic() < deadline:
        time.sleep(0.1)
    fanout.close()
    (video,) = sorted((tmp_path / "out" / "b").glob("*"))
    assert probe(video)["codec_name"] == "h264"
    assert not (tmp_path / "out" / "a").exists()


def test_a_failing_encoder_is_reported_once(tmp_path: Path, grey: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    fanout = build_sinks({"annotate": {"dir": str(out)}}, SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": str(grey)}}))
    (out / "cam0").write_text("a file where the stream's folder goes")
    feed(fanout)
    fanout.close()
    errors = [r for r in caplog.records if "cannot write the video" in r.getMessage()]
    assert len(errors) == 1


def test_the_annotate_section_is_validated_with_located_errors(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text((REPO / "pipelines" / "localization.yaml").read_text()
                        + "  annotate: {fps: -1, colour: red, kinds: [highlight, smell]}\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(pipeline))
    text = str(err.value)
    assert "outputs.annotate.fps" in text and "outputs.annotate.colour: unknown key" in text
    assert "outputs.annotate.kinds[1]" in text and f"{pipeline}:" in text


def test_sample_inputs_are_annotated_too(tmp_path: Path) -> None:
    fanout = build_sinks({"annotate": {"dir": str(tmp_path / "out"), "fps": 5}},
                         SinkContext("t", tmp_path, tmp_path, {"cam0": {"uri": "sample://short"}}))
    feed(fanout)
    fanout.close()
    (video,) = sorted((tmp_path / "out" / "cam0").glob("*.mp4"))
    info = probe(video)
    assert (info["width"], info["height"]) == (640, 360)
    assert abs(len(decode(video)) - 5.0 * 5) <= 2  # sample://short is 5 s; results reach 6 s


@pytest.mark.slow
def test_avstream_run_writes_a_video_whose_heatmap_follows_the_sounding_object(tmp_path: Path) -> None:
    from avstream.engine.capture.schemes import open_reader
    from avstream.engine.items import VideoFrame

    uri = "synthetic://scene?seed=11&duration=8&objects=3"
    jsonl = tmp_path / "loc.jsonl"
    run = run_cli("run", str(REPO / "pipelines" / "localization.yaml"), "--input", uri, "--duration", "6", "--quiet",
                  "--set", "streams.cam0.realtime=false", "--set", f"outputs.annotate.dir={tmp_path / 'ann'}",
                  "--set", "outputs.annotate.heatmap_alpha=0.8", "--jsonl", str(jsonl), timeout=180)
    assert run.returncode == 0, run.stderr
    (video,) = sorted((tmp_path / "ann" / "cam0").glob("*"))
    info = probe(video)
    assert info["codec_name"] == "h264" and (info["width"], info["height"]) == (640, 360)
    frames = decode(video)
    assert abs(len(frames) - 6 * 25) <= 15  # up to the last result's t1 (its hop past --duration)
    locs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    locs = [m for m in locs if m["kind"] == "localization"]
    reader = open_reader(uri, stream="cam0", audio=False)
    truth = reader.truth
    assert truth is not None
    source = {round(item.t * 25): item.image for item in reader.read() if isinstance(item, VideoFrame)}
    follows = near_object = checked = 0
    for t, image in frames[30::8]:
        if t > 5.5:
            break
        holding = [m for m in locs if m["t0"] <= t <= m["t1"]]
        peak = max(holding, key=lambda m: m["t0"])["peak"]
        src = source[round(t * 25)]
        diff = np.abs(image.astype(np.float32) - src).sum(axis=2)
        diff[: int(360 * BANNER_FRACTION)] = 0
        diff[int(360 * 0.85):] = 0  # the bottom panel
        y, x = np.unravel_index(int(np.argmax(_blur(diff))), diff.shape)
        hot = (x / 640, y / 360)
        follows += int(abs(hot[0] - peak[0]) < 0.12 and abs(hot[1] - peak[1]) < 0.12)
        x0, y0, x1, y1 = truth["frames"][round(t * 25)]["boxes"][truth["sounding_object"]]
        near_object += int(x0 - 0.1 <= hot[0] <= x1 + 0.1 and y0 - 0.1 <= hot[1] <= y1 + 0.1)
        checked += 1
    assert checked >= 10
    figures = f"follows the peak {follows}/{checked}, on the sounding object {near_object}/{checked}"
    assert follows >= 0.8 * checked, figures  # the overlay is drawn where the published peak is
    assert near_object >= 0.6 * checked, figures  # and that is the sounding object


def _blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return np.asarray(cv2.GaussianBlur(image, (0, 0), 12))


def test_a_serve_config_takes_an_annotate_section(tmp_path: Path, grey: Path) -> None:
    from avstream.engine.serve.config import load_serve_config

    config = tmp_path / "serve.yaml"
    config.write_text(f"version: 1\nstreams:\n  cam0: {{pipeline: localization, uri: {grey}}}\n"
                      "annotate: {segment_s: 600, width: 480}\n")
    loaded = load_serve_config(config)
    assert loaded.sinks["annotate"]["segment_s"] == 600 and loaded.sinks["annotate"]["width"] == 480
    config.write_text(f"version: 1\nstreams:\n  cam0: {{pipeline: localization, uri: {grey}}}\n"
                      "annotate: {segment: 600}\n")
    with pytest.raises(ConfigError) as err:
        load_serve_config(config)
    assert f"{config}:4:" in str(err.value) and "annotate.segment: unknown key" in str(err.value)
