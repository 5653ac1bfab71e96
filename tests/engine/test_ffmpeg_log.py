"""FFmpeg's log stays out of Python while streams decode.

PyAV's log callback takes the GIL; PyAV frees a decoder holding the GIL and waiting for the decoder's
frame threads. With the callback installed, a stream that ends or loops while another stream's frame
thread logs deadlocks the capture process (its heartbeats stop, the supervisor kills and restarts it,
and the restart deadlocks again at its own end). The capacity bench hit it with 7 or more real-time
streams on 2 cores. The file opener installs the callback only to name FFmpeg's reason for a failed
open, and must leave it off whatever the threads do."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.conftest import make_h264_clip

av = pytest.importorskip("av")


def test_opens_from_many_threads_leave_the_log_callback_off(tmp_path: Path) -> None:
    from avstream.engine.capture.files import _open_telling_why

    good = make_h264_clip(tmp_path / "good.mp4", seconds=1)
    bad = tmp_path / "huge.y4m"  # a header FFmpeg refuses, saying why
    bad.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(4096))
    errors: list[str] = []
    opened = [0]

    def opener(path: Path) -> None:
        for _ in range(25):
            try:
                _open_telling_why(str(path), {}).close()
                opened[0] += 1
            except av.FFmpegError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=opener, args=(good if i % 2 else bad,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert opened[0] == 100 and len(errors) == 100
    assert all("Picture size 16384x16384 is invalid" in e for e in errors), errors[:3]  # the reason still reaches the user
    assert av.logging.get_level() is None  # no callback: FFmpeg's threads never wait for the GIL
