"""Chaos on a live graph: the monitor pipeline on a real RTSP and a real HTTP stream (loopback), while a
seeded script kills worker processes, restarts a stream server, fills the JSONL sink's file system and
stalls a model's process (bench/chaos.py). One run; each guarantee is checked by its own test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bench_module
from tests.live.servers import needs_ffmpeg, needs_gst_rtsp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SEED = 7
FAULTS = ["kill-windows", "kill-encoder", "kill-random", "server", "disk", "stall"]
RECOVERY_BOUND_S = 20.0  # generous: the machine is shared; bench/chaos.py prints the measured times


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    needs_ffmpeg()
    needs_gst_rtsp()
    chaos = bench_module("chaos")
    got: dict[str, Any] = chaos.run_chaos(Path(tmp_path_factory.mktemp("chaos")), seconds=0, seed=SEED,
                                          faults=FAULTS, bound=RECOVERY_BOUND_S)
    print(chaos.summary(got))
    return got


def test_every_kind_of_fault_was_injected(report: dict[str, Any]) -> None:
    kinds = [f["kind"] for f in report["faults"]]
    expected = [f for f in FAULTS if not (f == "disk" and os.geteuid() != 0)]
    assert sorted(kinds) == sorted(expected), report["skipped"]
    targets = {f["target"] for f in report["faults"] if f["kind"].startswith("kill")}
    assert "windows" in targets and targets & {"highlight", "violence", "localization", "captions"}
    assert report["node_restarted_events"] > 0


def test_seq_strictly_increases_with_gaps_only_where_a_drop_was_counted(report: dict[str, Any]) -> None:
    assert report["pub"]["seq_problems"] == [] and report["pub"]["gaps"] == {}, report["pub"]
    assert report["jsonl"]["seq_problems"] == []
    # JSONL lines lost to the full disk: each one counted by the sink, and nothing else missing
    assert report["jsonl"]["gaps"] == report["jsonl_lines_dropped"]
    if any(f["kind"] == "disk" for f in report["faults"]):
        assert report["jsonl_lines_dropped"] > 0
        assert report["output_write_failed_events"] == 1


def test_jsonl_has_no_torn_and_no_duplicated_line(report: dict[str, Any]) -> None:
    assert report["jsonl"]["lines"] > 100
    assert report["jsonl"]["torn"] == [] and report["jsonl"]["duplicated"] == 0


def test_no_result_is_attributed_to_the_wrong_stream(report: dict[str, Any]) -> None:
    assert report["wrong_stream"] == []
    assert any(f["kind"] == "server" for f in report["faults"])  # the outage check had an outage to look at


def test_back_to_full_rate_within_the_bound_after_each_fault(report: dict[str, Any]) -> None:
    for fault in report["faults"]:
        assert fault["first_result_s"] is not None and fault["full_rate_s"] is not None, fault
        assert fault["full_rate_s"] <= RECOVERY_BOUND_S, fault


def test_nothing_is_left_after_stop(report: dict[str, Any]) -> None:
    assert report["exit_code"] == 0
    left = report["leftovers"]
    assert left["processes"] == [] and left["segments"] == [] and left["sockets"] == [], left


def test_no_media_time_is_published_twice(report: dict[str, Any]) -> None:
    assert report["media_replays"] == {}
