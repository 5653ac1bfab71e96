"""What ``avstream report`` says about bad input: one clear line, exit 2, no traceback; a torn last
line is skipped with a warning; without matplotlib the command names the extra to install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.report.conftest import RunFiles

pytestmark = pytest.mark.timeout(120)


def refused(*args: str) -> str:
    res = run_cli("report", *args)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and not list(Path(args[-1]).glob("*.png"))
    return res.stderr.strip()


def test_missing_and_empty_files(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert refused(str(tmp_path / "nope.jsonl"), "--out", out) == f"avstream report: error: {tmp_path / 'nope.jsonl'}: no such file"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert f"{empty}: no messages" in refused(str(empty), "--out", out)
    assert "Missing option '--out'" in run_cli("report", str(empty)).stderr


def test_a_malformed_line_is_named_by_file_and_line(monitor_run: RunFiles, tmp_path: Path) -> None:
    lines = monitor_run.jsonl.read_text().splitlines()
    out = str(tmp_path / "out")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:3], '{"kind": "highlight", "stream": "cam0", ', *lines[3:]]) + "\n")
    assert refused(str(bad), "--out", out).startswith(f"avstream report: error: {bad}:4: not a JSON line")
    bad.write_text("\n".join([*lines[:5], "[1, 2]", *lines[5:]]) + "\n")
    assert f"{bad}:6: not a JSON object" in refused(str(bad), "--out", out)
    header = json.loads(next(line for line in lines if '"kind": "violence"' in line))
    del header["t1"]
    bad.write_text("\n".join([*lines[:2], json.dumps(header)]) + "\n")
    assert f"{bad}:3: key 't1' is missing (a violence result of stream 'cam0')" in refused(str(bad), "--out", out)
    header["t1"], header["latency_ms"] = header["t0"] + 2, "slow"
    bad.write_text(json.dumps(header) + "\n")
    assert f"{bad}:1: key 'latency_ms' is \"slow\", not a number" in refused(str(bad), "--out", out)


def test_a_torn_last_line_is_skipped_with_a_warning(monitor_run: RunFiles, tmp_path: Path) -> None:
    text = monitor_run.jsonl.read_text()
    lines = text.splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text[: len(text) - len(lines[-1]) // 2 - 1])  # the last line cut in the middle
    res = run_cli("report", str(torn), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert f"warning: {torn}:{len(lines)}: the last line is torn" in res.stderr
    assert res.stdout.startswith(f"report: {len(lines) - 1} messages")


def test_a_video_that_cannot_be_opened(monitor_run: RunFiles, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video\n")
    message = refused(str(monitor_run.jsonl), "--video", str(not_video), "--out", out)
    assert message.startswith(f"avstream report: error: --video {not_video}: cannot open it as a video")
    missing = tmp_path / "missing.mp4"
    assert refused(str(monitor_run.jsonl), "--video", str(missing), "--out", out) == (
        f"avstream report: error: --video {missing}: no such file")
    # not a stream of the run: the whole argument is the file name
    assert refused(str(monitor_run.jsonl), "--video", f"ghost={missing}", "--out", out) == (
        f"avstream report: error: --video ghost={missing}: no such file")


def test_without_matplotlib_the_command_names_its_extra(monitor_run: RunFiles, tmp_path: Path) -> None:
    probe = ("import sys\nsys.modules['matplotlib'] = None  # as if not installed\n"
             "from avstream.engine.cli import main\n"
             f"main(['report', {str(monitor_run.jsonl)!r}, '--out', {str(tmp_path)!r}], prog_name='avstream')\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("avstream report needs the report extra: pip install 'avstream[report]'")
    assert "Traceback" not in res.stderr
