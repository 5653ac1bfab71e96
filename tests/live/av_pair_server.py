"""A camera and a microphone on the network, for the pairing tests: one process, one clock.

Listens on two TCP ports of 127.0.0.1. Once both clients are connected it sends, in real time,
YUV4MPEG2 video (a white flash during the first 0.1 s of every second) to the first and a WAV
stream (a 1 kHz beep at the same moments) to the second. The audio "device" runs ``--ppm`` fast:
it delivers 16000 * (1 + ppm/1e6) samples per second of wall time while its header says 16 kHz,
and its beeps sit at the true moments of the flashes. Prints ``ready`` once listening.
Usage: av_pair_server.py VIDEO_PORT AUDIO_PORT [--ppm N] [--seconds S]
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

import numpy as np

W, H, FPS, RATE = 64, 48, 25, 16000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("video_port", type=int)
    ap.add_argument("audio_port", type=int)
    ap.add_argument("--ppm", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    socks = []
    for port in (args.video_port, args.audio_port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)
        socks.append(s)
    print("ready", flush=True)
    video, _ = socks[0].accept()
    audio, _ = socks[1].accept()
    for c in (video, audio):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    video.sendall(f"YUV4MPEG2 W{W} H{H} F{FPS}:1 Ip A1:1 Cmono\n".encode())
    audio.sendall(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE,
                                                                                         RATE * 2, 2, 16)
                  + b"data" + struct.pack("<I", 0xFFFFFFFF))
    true_rate = RATE * (1 + args.ppm / 1e6)
    start = time.monotonic()
    frame = sample = 0
    try:
        while True:
            now = time.monotonic() - start
            if now > args.seconds:
                return 0
            while frame / FPS <= now:
                value = 255 if (frame / FPS) % 1.0 < 0.1 else 16
                video.sendall(b"FRAME\n" + bytes([value]) * (W * H))
                frame += 1
            want = int(now * true_rate)
            if want > sample:
                n = np.arange(sample, want)
                t = n / true_rate  # the true moment of each sample
                beep = 0.5 * np.sin(2 * np.pi * 1000.0 * t) * ((t % 1.0) < 0.1)
                audio.sendall((beep * 32767).astype("<i2").tobytes())
                sample = want
            time.sleep(0.005)  # this process is the device: it runs on its own clock
    except OSError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
