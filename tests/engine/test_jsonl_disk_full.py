"""The JSONL sink on a full file system: a real small tmpfs, mounted by the test (root only).

Whole lines only (a short write is cut back to the last whole line), one ``output_write_failed`` event
per spell of failures, the dropped lines counted in the status, the graph running on, and writing
resumed once there is room again.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from avstream.engine.runtime.jsonl import DROPPED, FAILED, RESUME_AFTER_LINES, RESUMED, WRITTEN, JsonlFile
from tests.system.helpers import Subscriber, start_run, stop

pytestmark = pytest.mark.timeout(120)


def mount_tmpfs(where: Path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "fs"
    mount_tmpfs(where, "64k")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                if os.write(fd, b"\0" * 4096) == 0:
                    break
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def test_a_short_write_is_cut_back_and_writing_resumes_when_space_returns(small_fs: Path) -> None:
    sink = JsonlFile(str(small_fs / "out.jsonl"))
    line = json.dumps({"pad": "x" * 988}) + "\n"
    assert len(line) == 1000
    outcomes = [sink.write(line) for _ in range(70)]  # 64 KiB hold 65 lines and a part of the 66th
    assert outcomes[:65] == [WRITTEN] * 65
    assert outcomes[65] == FAILED and outcomes[66:] == [DROPPED] * 4
    size = (small_fs / "out.jsonl").stat().st_size
    assert size == 65 * 1000, "the part of the 66th line that fitted was not cut back"
    assert sink.status() == {"path": str(small_fs / "out.jsonl"), "state": "failing", "lines_written": 65,
                             "lines_dropped": 5, "last_error": os.strerror(28)}
    subprocess.run(["mount", "-o", "remount,size=128k", str(small_fs)], check=True)
    # the spell ends after a run of whole lines (a nearly full disk may take a short line, then refuse)
    outcomes = [sink.write(line) for _ in range(RESUME_AFTER_LINES + 1)]
    assert outcomes == [WRITTEN] * (RESUME_AFTER_LINES - 1) + [RESUMED, WRITTEN]
    sink.close()
    lines = (small_fs / "out.jsonl").read_text().splitlines()
    assert len(lines) == 65 + RESUME_AFTER_LINES + 1 and all(json.loads(x) == {"pad": "x" * 988} for x in lines)
    assert sink.status()["state"] == "ok" and sink.status()["lines_dropped"] == 5


def test_a_run_survives_a_full_disk_and_resumes_its_jsonl(small_fs: Path, tmp_path: Path, port: int) -> None:
    jsonl, status_json = small_fs / "out.jsonl", tmp_path / "status.jsonl"
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = Subscriber(endpoint)
    run = start_run("highlight", "--input", "synthetic://scene?seed=5&duration=600", "--publish", endpoint,
                    "--set", "outputs.publish.wait_for_subscribers=1", "--jsonl", str(jsonl),
                    "--status-json", str(status_json), "--quiet")
    seen: list[dict] = []

    def until(pred: object, timeout: float = 60) -> dict:
        got = sub.until(pred, timeout=timeout)
        seen.extend(got)
        return got[-1]["header"]

    filler: Path | None = None
    try:
        until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["seq"] >= 2)
        filler = fill(small_fs)
        failed = until(lambda m: m["header"].get("name") == "output_write_failed")
        assert failed["detail"]["path"] == str(jsonl) and failed["detail"]["error"] == os.strerror(28)
        first_lost = until(lambda m: m["header"]["kind"] == "highlight")["seq"]
        until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["seq"] >= first_lost + 2)
        assert run.poll() is None, "the run ended on a full disk"
        filler.unlink()
        resumed = until(lambda m: m["header"].get("name") == "output_write_resumed")
        after = until(lambda m: m["header"]["kind"] == "highlight")["seq"]
        until(lambda m: m["header"]["kind"] == "highlight" and m["header"]["seq"] >= after + 1)
    finally:
        sub.close()
        out, err = stop(run)
        if filler is not None and filler.exists():
            filler.unlink()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    assert sum(1 for m in seen if m["header"].get("name") == "output_write_failed") == 1
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]  # every line whole
    by_key: dict[tuple[str, str], list[int]] = {}
    for line in lines:
        by_key.setdefault((line["stream"], line["kind"]), []).append(line["seq"])
    gaps = 0  # seq starts at 0 per (stream, kind): a line missing before the first one written is a gap too
    for seqs in by_key.values():
        assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), "a duplicated or reordered line"
        gaps += sum(b - a - 1 for a, b in zip([-1, *seqs], seqs, strict=False))
    final = json.loads(status_json.read_text().splitlines()[-1])
    state = final["outputs"]["jsonl"]
    assert state["state"] == "ok" and state["lines_dropped"] == resumed["detail"]["output_lines_dropped"] > 0
    # after the resume nothing was lost: every dropped line is a gap, and every gap a counted drop
    assert gaps == state["lines_dropped"]
