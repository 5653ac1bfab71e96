"""Real streaming servers on 127.0.0.1 for the live tests, and their pytest fixtures.

Every server is a real process: FFmpeg listening (TCP, HTTP, HTTPS, RTMP, SRT) or pushing (UDP) an
A/V sync pattern it encodes live (a white flash and a 1 kHz beep during the first 0.1 s of every
second), FFmpeg writing HLS served by Python's http.server, or GStreamer's RTSP server (run by the
system Python, where python3-gi lives). Readiness is a real condition (the port is listening, the
playlist has segments, the server printed ``ready``), never a sleep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
FFMPEG = shutil.which("ffmpeg")
FLASH_S = 0.1


def sync_video(width: int = 320, height: int = 240, fps: int = 25) -> str:
    return (f"color=c=0x101010:s={width}x{height}:r={fps},"
            f"drawbox=c=white:t=fill:enable='lt(mod(t,1),{FLASH_S})'")


def sync_audio(rate: int = 16000) -> str:
    """The beep track: 1 kHz at amplitude 0.5 during the first 0.1 s of every second."""
    return f"aevalsrc='0.5*sin(2*PI*1000*t)*lt(mod(t,1),{FLASH_S})':s={rate}:c=mono"


def sync_inputs(width: int = 320, height: int = 240, fps: int = 25, rate: int = 16000) -> list[str]:
    """FFmpeg input options: the sync pattern, generated in real time (``-re``)."""
    return ["-re", "-f", "lavfi", "-i", sync_video(width, height, fps), "-re", "-f", "lavfi", "-i", sync_audio(rate)]


H264_AAC = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "48k"]


def needs_ffmpeg() -> None:
    if FFMPEG is None:
        pytest.skip("the FFmpeg CLI is not installed (scripts/test.sh installs Debian's ffmpeg)")


def needs_gst_rtsp() -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("GStreamer's RTSP server for the system Python is missing "
                    "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a real condition until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def listening(port: int, kind: str = "tcp") -> bool:
    """A socket is bound (UDP) or listening (TCP) on 127.0.0.1:``port``."""
    for c in psutil.net_connections(kind=kind):
        if c.laddr and c.laddr.port == port and (kind == "udp" or c.status == psutil.CONN_LISTEN):
            return True
    return False


@dataclass
class Server:
    """A server process that can be killed and started again with the same command."""

    name: str
    cmd: list[str]
    ready: Callable[[Server], bool]
    log_dir: Path
    env: dict[str, str] | None = None
    helpers: list[Server] = field(default_factory=list)  # started before, stopped after this one
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout: float = 20.0) -> Server:
        for h in self.helpers:
            if h.proc is None or h.proc.poll() is not None:
                h.start(timeout)
        self.starts += 1
        log = open(self.log_dir / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(self.env or {})))
        log.close()
        wait_until(lambda: self.ready(self) or self._died(), timeout, f"server {self.name} to be ready")
        if self._died():
            raise AssertionError(f"server {self.name} exited: {self.log_text()[-2000:]}")
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def log_text(self) -> str:
        path = self.log_dir / f"{self.name}.{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        for h in self.helpers:
            h.stop()


def _port_ready(port: int, kind: str = "tcp") -> Callable[[Server], bool]:
    return lambda s: listening(port, kind)


def _printed_ready(s: Server) -> bool:
    return "ready" in s.log_text()


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key


def ffmpeg_server(kind: str, folder: Path, *, port: int | None = None, inputs: list[str] | None = None,
                  encode: list[str] | None = None) -> tuple[Server, str]:
    """An FFmpeg server of ``kind`` (tcp, udp, http, https, rtmp, srt, hls) and the URI to read it."""
    needs_ffmpeg()
    assert FFMPEG is not None
    port = port or free_port()
    base = [FFMPEG, "-hide_banner", "-loglevel", "warning", "-nostdin", *(inputs or sync_inputs()),
            *(encode or H264_AAC)]
    if kind == "tcp":
        return Server(kind, [*base, "-f", "mpegts", f"tcp://127.0.0.1:{port}?listen=1"], _port_ready(port),
                      folder), f"tcp://127.0.0.1:{port}"
    if kind == "udp":  # the reader binds the port; the sender just sends
        return Server(kind, [*base, "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"],
                      lambda s: True, folder), f"udp://127.0.0.1:{port}"
    if kind == "http":
        return Server(kind, [*base, "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"],
                      _port_ready(port), folder), f"http://127.0.0.1:{port}/live.ts"
    if kind == "https":
        cert, key = make_cert(folder)
        return Server(kind, [*base, "-f", "mpegts", "-listen", "1", "-cert_file", str(cert), "-key_file", str(key),
                             f"https://127.0.0.1:{port}/live.ts"], _port_ready(port), folder), \
            f"https://127.0.0.1:{port}/live.ts"
    if kind == "rtmp":
        return Server(kind, [*base, "-f", "flv", "-listen", "1", f"rtmp://127.0.0.1:{port}/live/cam"],
                      _port_ready(port), folder), f"rtmp://127.0.0.1:{port}/live/cam"
    if kind == "srt":
        return Server(kind, [*base, "-f", "mpegts", f"srt://127.0.0.1:{port}?mode=listener"],
                      _port_ready(port, "udp"), folder), f"srt://127.0.0.1:{port}?mode=caller"
    if kind == "hls":
        web = folder / f"hls{port}"
        web.mkdir(exist_ok=True)
        playlist = web / "live.m3u8"
        http = Server("hls-http", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", str(web)], _port_ready(port), folder)
        writer = Server(kind, [*base, "-f", "hls", "-hls_time", "1", "-hls_list_size", "6",
                               "-hls_flags", "delete_segments+omit_endlist", str(playlist)],
                        lambda s: playlist.exists() and playlist.read_text().count(".ts") >= 2, folder,
                        helpers=[http])
        return writer, f"http://127.0.0.1:{port}/live.m3u8"
    raise ValueError(kind)


def sync_clip(path: Path, seconds: float = 120.0, width: int = 320, height: int = 240) -> Path:
    """The sync pattern encoded to a Matroska file (H.264 + AAC), for the RTSP server and file tests."""
    needs_ffmpeg()
    assert FFMPEG is not None
    if not path.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", sync_video(width, height),
                        "-f", "lavfi", "-i", sync_audio(), "-t", str(seconds), *H264_AAC, "-y", str(path)],
                       check=True)
    return path


def rtsp_server(clip: Path, folder: Path, *, port: int | None = None, auth: str | None = None,
                tls: bool = False) -> tuple[Server, str]:
    """GStreamer's RTSP server on 127.0.0.1 serving ``clip`` at ``/live``; the URI without credentials."""
    needs_gst_rtsp()
    port = port or free_port()
    cmd = [SYSTEM_PYTHON, str(HERE / "gst_rtsp_server.py"), str(port), str(clip)]
    if auth:
        cmd += ["--auth", auth]
    if tls:
        cmd += ["--tls", *map(str, make_cert(folder))]
    scheme = "rtsps" if tls else "rtsp"
    return Server(f"rtsp{port}", cmd, _printed_ready, folder), f"{scheme}://127.0.0.1:{port}/live"


@pytest.fixture(scope="session")
def live_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="session")
def clip(live_dir: Path) -> Path:
    return sync_clip(live_dir / "sync.mkv")


@pytest.fixture
def servers(live_dir: Path) -> Iterator[list[Server]]:
    """Servers a test starts; all stopped at its end."""
    started: list[Server] = []
    yield started
    for s in started:
        s.stop()


@dataclass
class Pulse:
    """A private PulseAudio server with a null sink ``avtest`` whose monitor is the default source."""

    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    sink: str = "avtest"

    def play(self, wav: Path) -> subprocess.Popen[bytes]:
        """Play ``wav`` into the null sink (returns the running ``paplay``)."""
        return subprocess.Popen(["paplay", f"--device={self.sink}", str(wav)], env=dict(os.environ, **self.env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[Pulse]:
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)")
    run = tmp_path / "pulse"
    run.mkdir()
    socket_path = run / "native"
    env = {"PULSE_RUNTIME_PATH": str(run), "XDG_RUNTIME_DIR": str(run), "HOME": str(tmp_path)}
    log = open(tmp_path / "pulse.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no", "--disallow-exit",
         "-L", f"module-native-protocol-unix auth-anonymous=1 socket={socket_path}",
         "-L", "module-null-sink sink_name=avtest rate=48000",
         "-L", "module-always-sink"],
        env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    client_env = {"PULSE_SERVER": f"unix:{socket_path}", "PULSE_SINK": "avtest", "PULSE_SOURCE": "avtest.monitor"}

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pulseaudio exited: {(tmp_path / 'pulse.log').read_text()[-2000:]}")
        return subprocess.run(["pactl", "info"], env=dict(os.environ, **client_env), capture_output=True).returncode == 0

    try:
        wait_until(up, 20, "pulseaudio to accept clients")
        yield Pulse(client_env, proc)
    finally:
        proc.kill()
        proc.wait(10)
