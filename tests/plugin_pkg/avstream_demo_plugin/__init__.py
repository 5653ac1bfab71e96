"""A third-party plugin package, installed the way any other would be (a dist-info with an entry point).

``demo/loudness@v1`` turns AV windows into ``loudness`` results; ``demo/passthrough@v1`` forwards
windows unchanged (used to build graphs the built-in types cannot, e.g. a cycle).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from pydantic import Field

from avstream.engine.items import AVWindow, Item, Result
from avstream.engine.node import Node, Params


class LoudnessParams(Params):
    floor_db: float = Field(-80.0, le=0, description="level reported for silence, in dBFS")


class Loudness(Node[LoudnessParams]):
    type_id = "demo/loudness@v1"
    summary = "RMS level of each window's audio in dBFS"
    Params = LoudnessParams
    input_kinds = ("av_window",)
    output_kind = "result"

    def process(self, item: Item) -> Iterable[Item]:
        if not isinstance(item, AVWindow):
            return ()
        audio = item.audio if item.audio is not None else np.zeros(1, np.float32)
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        db = max(self.params.floor_db, 20 * np.log10(rms) if rms > 0 else self.params.floor_db)
        return [Result("loudness", item.stream, item.t0, item.t1, item.wall, "demo-loudness@1", {"db": db})]


class Passthrough(Node[Params]):
    type_id = "demo/passthrough@v1"
    summary = "forwards AV windows unchanged"
    input_kinds = ("av_window",)
    output_kind = "av_window"

    def process(self, item: Item) -> Iterable[Item]:
        return [item]


def node_types() -> list[type[Node[Any]]]:
    return [Loudness, Passthrough]
