"""A short soak (bench/soak.py): the monitor pipeline on two live HTTP streams, resources sampled per
process, one window-process and one model-process crash in the middle. The hour-long figures come
from ``python bench/soak.py``; this run checks the outputs, the clean stop and that nothing climbs
without bound.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bench_module
from tests.live.servers import needs_ffmpeg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SECONDS, EVERY, WARMUP = 90.0, 2.0, 30.0
# Generous for a 90 s run on a shared machine: a leak of one fd or thread per result would pass these
# in seconds; steady state keeps them flat.
MAX_FD_GROWTH, MAX_THREAD_GROWTH, MAX_SOCKET_GROWTH = 20, 10, 20


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs_ffmpeg()
    soak = bench_module("soak")
    got: dict[str, Any] = soak.run_soak(Path(tmp_path_factory.mktemp("soak")), SECONDS, EVERY, WARMUP, crash=True)
    print(soak.summary(got))
    return got


def test_csv_and_png_are_written(report: dict[str, Any]) -> None:
    rows = Path(report["csv"]).read_text().splitlines()
    assert rows[0].split(",") == ["t", "role", "pid", "rss", "pss", "fds", "threads", "sockets", "shm_files", "shm_bytes"]
    roles = {row.split(",")[1] for row in rows[1:]}
    assert roles == {"supervisor", "sources", "windows", "highlight", "violence", "localization", "captions"}
    assert len(rows) > 7 * (SECONDS / EVERY) * 0.5
    assert Path(report["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_crashes_leave_no_process_segment_or_socket_after_stop(report: dict[str, Any]) -> None:
    assert len(report["crashed"]) == 2
    assert report["per_role"]["windows"]["pids"] == 2 and report["per_role"]["violence"]["pids"] == 2
    assert report["exit_code"] == 0
    left = report["leftovers"]
    assert left["processes"] == [] and left["segments"] == [] and left["sockets"] == [], left
    assert report["max_shm_files"] > 0  # the rings were there while it ran


def test_fds_threads_and_sockets_do_not_grow_without_bound(report: dict[str, Any]) -> None:
    for role, figures in report["per_role"].items():
        for attr, bound in (("fds", MAX_FD_GROWTH), ("threads", MAX_THREAD_GROWTH), ("sockets", MAX_SOCKET_GROWTH)):
            g = figures[attr]
            if g is None:  # a process restarted too late in the run for a steady state of its own
                continue
            assert g["last"] - g["first"] <= bound, (role, attr, g)
    measured = [r for r, f in report["per_role"].items() if f["pss"] is not None]
    assert {"supervisor", "sources", "highlight", "localization", "captions"} <= set(measured)
