"""A camera and a microphone as one stream: two live inputs aligned by capture wall time, with the
microphone's sample clock running fast; the windows keep beeps on their flashes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port
from tests.live.helpers import FPS, LiveRun
from tests.live.servers import HERE, Server

FRAME = 1.0 / FPS


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_pair_with_a_fast_audio_clock_stays_in_sync(live_dir: Path, servers: list[Server]) -> None:
    ppm = 5000.0  # 5x the 1000 ppm of the long simulated run: shows within a short real one
    vport, aport = free_port(), free_port()
    srv = Server("pair", [sys.executable, str(HERE / "av_pair_server.py"), str(vport), str(aport), "--ppm",
                          str(ppm)], lambda s: "ready" in s.log_text(), live_dir)
    servers.append(srv.start())
    run = LiveRun({"video": f"tcp://127.0.0.1:{vport}", "audio": f"tcp://127.0.0.1:{aport}"}, stream="door")
    try:
        run.wait(lambda r: len(r.windows) >= 1, 30, "a first window")
        first = run.rec.windows[0][0]
        run.wait(lambda r: r.windows[-1][0] >= first + 16, 40, "16 s of windows")
        status = run.node.status()
    finally:
        run.stop()
    info = run.rec.info[0]
    assert info.has_video and info.has_audio and " + " in info.uri
    late = run.offsets_after(first + 6.0)  # after the warm-up: the drift is learnt
    assert len(late) >= 8
    assert max(abs(o) for o in late) <= FRAME + 1e-3, np.round(late, 3)
    # uncorrected, the audio would have run ahead by ppm * elapsed by now
    assert ppm * 1e-6 * (run.rec.windows[-1][0] - first) > FRAME
    per = {k: v for k, v in status.items() if isinstance(v, dict)}
    audio = next(v for k, v in per.items() if str(aport) in k)
    assert audio["drift_ppm"] == pytest.approx(ppm, abs=1000), status
    assert abs(audio["av_skew_ms"]) < 20
