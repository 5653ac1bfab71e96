"""Sinks: sections under `outputs:` validated by their own settings model, every published message
handed to them, one failing sink isolated from the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from pydantic import BaseModel, ConfigDict, Field

from avstream.engine.errors import ConfigError
from avstream.engine.items import Event, Result
from avstream.engine.runtime.config import load_pipeline
from avstream.engine.runtime.outputs import ResultPublisher
from avstream.engine.sinks import (
    SINK_KINDS,
    Sink,
    SinkContext,
    SinkFanout,
    SinkKind,
    build_sinks,
    register_sink,
)
from tests.pipelines import write_demo_pipeline

RECEIVED: list[tuple[dict[str, Any], list[np.ndarray]]] = []


class RecorderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = "rec"
    limit: int = Field(10, gt=0)


class Recorder(Sink):
    name = "recorder"

    def __init__(self, settings: RecorderSettings):
        self.settings = settings
        self.closed = False

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        RECEIVED.append((header, arrays))

    def close(self, timeout_s: float = 2.0) -> None:
        self.closed = True


class Broken(Sink):
    name = "broken"

    def send(self, header: dict[str, Any], arrays: list[np.ndarray]) -> None:
        raise RuntimeError("boom")


def make_recorder(settings: RecorderSettings, context: SinkContext) -> Recorder:
    return Recorder(settings)


@pytest.fixture
def recorder_kind() -> Any:
    register_sink("recorder", SinkKind(f"{__name__}:RecorderSettings", f"{__name__}:make_recorder", "test"))
    RECEIVED.clear()
    yield
    SINK_KINDS.pop("recorder", None)


def pipeline(tmp_path: Path, outputs: str) -> str:
    return write_demo_pipeline(tmp_path, outputs, "sinks")


def test_a_registered_section_is_validated_and_kept_as_plain_data(tmp_path: Path, recorder_kind: None) -> None:
    spec = load_pipeline(pipeline(tmp_path, "recorder: {label: door, limit: 3}\n"))
    assert spec.outputs.sinks == {"recorder": {"label": "door", "limit": 3}}
    with pytest.raises(ConfigError) as err:
        load_pipeline(pipeline(tmp_path, "recorder: {label: door, limit: 0, colour: red}\n"))
    lines = [str(p) for p in err.value.problems]
    assert any(":9:27: outputs.recorder.limit:" in line for line in lines), lines  # the value itself
    assert any("outputs.recorder.colour: unknown key" in line for line in lines), lines


def test_an_unregistered_section_is_an_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_pipeline(pipeline(tmp_path, "nowhere: {a: 1}\n"))
    assert any("outputs.nowhere" in str(p) and "unknown key" in str(p) for p in err.value.problems)


def test_publisher_hands_every_message_to_the_sinks(tmp_path: Path, recorder_kind: None) -> None:
    fanout = build_sinks({"recorder": {"label": "x", "limit": 1}}, SinkContext("t", tmp_path, tmp_path))
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ResultPublisher(ctx, f"ipc://{tmp_path}/pub", None, "batch", SinkFanout([Broken(), *fanout.sinks]))
    heat = np.ones((2, 3), np.float32)
    pub.publish_result(Result("localization", "cam0", 0.0, 2.0, 0.0, "m@1", {"score": 0.5}, {"heatmap": heat}))
    pub.publish_event(Event("stream_down", "cam0", {"uri": "x"}))
    pub.publish_status({"nodes": [], "streams": []})
    pub.close()
    ctx.destroy(linger=0)
    kinds = [h["kind"] for h, _ in RECEIVED]
    assert kinds == ["localization", "event", "status"]  # the broken sink did not stop the recorder
    header, arrays = RECEIVED[0]
    assert header["seq"] == 0 and header["stream"] == "cam0" and header["payloads"][0]["name"] == "heatmap"
    assert np.array_equal(arrays[0], heat)
    assert isinstance(fanout.sinks[0], Recorder) and fanout.sinks[0].closed
