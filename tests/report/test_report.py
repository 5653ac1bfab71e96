"""``avstream report`` on the JSONL of real runs: what each PNG shows, checked in the manifest and in
the pixels, the summary of the page, thumbnails decoded from the run's video."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.report.conftest import SEGMENT_S, SEGMENTS, RunFiles
from tests.report.pixels import colour_pixels, figure, load_rgb, manifest

pytestmark = pytest.mark.timeout(180)

SCORE_COLOURS = {"highlight score": "#1f77b4", "violence score": "#d62728", "audio score": "#ff7f0e",
                 "visual score": "#9467bd", "localization score": "#2ca02c"}
ALERT_SHADE = "#f9e1e1"  # the alert colour at 12 % over white
VIOLENCE_START = "#b8860b"


def messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def report(*args: str) -> Any:
    res = run_cli("report", *args, timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def check_series_pixels(png: Path, fig: dict[str, Any], least: int) -> None:
    """Every series the manifest lists is drawn in its colour inside its axes, and no other series'."""
    image = load_rgb(png)
    for axes in fig["axes"]:
        drawn = {s["color"] for s in axes["series"]}
        for series in axes["series"]:
            count = colour_pixels(image, axes["bbox"], series["color"])
            assert count >= least, f"{png.name} {axes['title']}: {series['label']} has {count} pixels"
        for label, colour in SCORE_COLOURS.items():
            if fig["what"] == "scores" and colour not in drawn:
                assert colour_pixels(image, axes["bbox"], colour) < 5, f"{axes['title']} shows {label}"


def test_monitor_run_report_shows_every_kind(monitor_run: RunFiles, tmp_path: Path) -> None:
    assert monitor_run.status is not None
    out = tmp_path / "report"
    res = report(str(monitor_run.jsonl), str(monitor_run.status), "--out", str(out))
    assert res.stdout.count("\n") == 1 and res.stdout.startswith("report: ")  # no TTY: one summary line
    assert f"-> {out / 'index.html'}" in res.stdout and "Traceback" not in res.stderr
    lines = messages(monitor_run.jsonl)
    counts = Counter(m["kind"] for m in lines)
    assert {"highlight", "violence", "localization", "caption", "event"} <= set(counts)

    scores = figure(out, "cam0", "scores")
    assert [[s["label"] for s in a["series"]] for a in scores["axes"]] == [
        ["highlight score"], ["violence score", "audio score", "visual score"], ["localization score"]]
    points = [a["series"][0]["points"] for a in scores["axes"]]
    assert points == [counts["highlight"], counts["violence"], counts["localization"]]
    check_series_pixels(out / scores["file"], scores, least=60)
    image = load_rgb(out / scores["file"])
    for axes in scores["axes"]:  # the alert shaded and its start marked on every row
        assert colour_pixels(image, axes["bbox"], ALERT_SHADE, tolerance=6) > 500, axes["title"]
        assert colour_pixels(image, axes["bbox"], VIOLENCE_START, tolerance=20) > 30, axes["title"]

    captions = figure(out, "cam0", "captions")
    sources = Counter(m["source"] for m in lines if m["kind"] == "caption")
    assert {s["label"]: s["points"] for s in captions["axes"][0]["series"]} == {
        f"{k} captions": n for k, n in sources.items()}
    check_series_pixels(out / captions["file"], captions, least=500)

    latency = figure(out, "cam0", "latency")
    result_kinds = sorted(k for k in counts if k != "event")
    assert [a["series"][0]["label"] for a in latency["axes"]] == [f"{k} latency" for k in result_kinds]
    check_series_pixels(out / latency["file"], latency, least=200)

    drops = figure(out, "cam0", "drops")
    status_nodes = {n["id"] for line in messages(monitor_run.status) for n in line["nodes"]}
    assert [s["label"] for s in drops["axes"][0]["series"]] == [*result_kinds, "event"]
    assert {s["label"] for s in drops["axes"][1]["series"]} == status_nodes
    check_series_pixels(out / drops["file"], drops, least=10)

    page = (out / "index.html").read_text()
    for kind in result_kinds:
        assert f"{kind}: {counts[kind]}" in page
    starts = sum(1 for m in lines if m["kind"] == "event" and m["name"] == "violence_start")
    assert starts >= 1 and f"violence_start: {starts}" in page
    assert re.search(rf"<td>{starts} \(\d+\.\d s\)</td>", page)  # the alerts column
    assert "<script" not in page and "http" not in page  # self-contained: nothing to fetch
    assert sorted(re.findall(r'src="([^"]+)"', page)) == sorted(f["file"] for f in manifest(out)["figures"])


def test_thumbnails_show_the_frames_of_the_top_highlights(video_run: RunFiles, tmp_path: Path) -> None:
    assert video_run.video is not None
    out = tmp_path / "report"
    report(str(video_run.jsonl), "--video", str(video_run.video), "--out", str(out), "--top", "3")
    highlights = [m for m in messages(video_run.jsonl) if m["kind"] == "highlight"]
    thumbs = manifest(out)["thumbnails"]
    assert len(thumbs) == 3
    best = sorted(highlights, key=lambda m: -m["score"])[0]
    assert any(t["t0"] == best["t0"] and t["t1"] == best["t1"] for t in thumbs)  # the best window is one of them
    for thumb in thumbs:
        windows = [(t["t0"], t["t1"]) for t in thumbs if t is not thumb]
        assert all(thumb["t1"] <= t0 or thumb["t0"] >= t1 for t0, t1 in windows), "overlapping windows"
        # the frame shown at the window's middle; the last frame for a window padded past the video's end
        middle = min((thumb["t0"] + thumb["t1"]) / 2, SEGMENT_S * len(SEGMENTS))
        assert middle - 0.041 <= thumb["t"] <= middle + 1e-6
        image = load_rgb(out / thumb["file"])
        assert image.shape[:2] == (thumb["height"], thumb["width"])
        frame_colour = image[60, 160].astype(int)  # above the caption strip
        name, expected = SEGMENTS[min(int(thumb["t"] // SEGMENT_S), len(SEGMENTS) - 1)]
        assert max(abs(frame_colour - expected)) < 40, (thumb, name, frame_colour)
    scores = figure(out, "cam0", "scores")
    assert [[s["label"] for s in a["series"]] for a in scores["axes"]] == [["highlight score"]]
    check_series_pixels(out / scores["file"], scores, least=60)
    assert [f["what"] for f in manifest(out)["figures"]] == ["scores", "latency", "drops"]  # no captions
    page = (out / "index.html").read_text()
    assert all(f'src="{t["file"]}"' in page for t in thumbs) and "Top highlights" in page


def test_a_run_of_two_streams_gets_a_section_each(two_stream_run: RunFiles, video_run: RunFiles, tmp_path: Path) -> None:
    assert video_run.video is not None
    out = tmp_path / "report"
    res = run_cli("report", str(two_stream_run.jsonl), "--video", str(video_run.video), "--out", str(out))
    assert res.returncode == 2 and "the run has streams north, south" in res.stderr and "STREAM=FILE" in res.stderr
    report(str(two_stream_run.jsonl), "--video", f"south={video_run.video}", "--out", str(out), "--top", "2")
    lines = messages(two_stream_run.jsonl)
    for stream in ("north", "south"):
        scores = figure(out, stream, "scores")
        assert [[s["label"] for s in a["series"]] for a in scores["axes"]] == [
            ["highlight score"], ["violence score", "audio score", "visual score"]]
        assert scores["axes"][0]["series"][0]["points"] == sum(
            1 for m in lines if m["stream"] == stream and m["kind"] == "highlight")
        check_series_pixels(out / scores["file"], scores, least=60)
    assert {t["stream"] for t in manifest(out)["thumbnails"]} == {"south"}
    page = (out / "index.html").read_text()
    assert 'id="stream-north"' in page and 'id="stream-south"' in page
