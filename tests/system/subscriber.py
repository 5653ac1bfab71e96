"""A separate-process ZeroMQ subscriber: prints every message it receives as one JSON line.

    python subscriber.py ENDPOINT [PREFIX]
Each line: {"topic", "header", "payload_bytes": [...]}; the frame contract of SPEC §4 is checked by
the test that reads these lines.
"""

from __future__ import annotations

import json
import sys

import zmq


def main() -> None:
    endpoint = sys.argv[1]
    prefix = sys.argv[2].encode() if len(sys.argv) > 2 else b""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, prefix)
    sock.connect(endpoint)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        frames = sock.recv_multipart()
        print(json.dumps({"topic": frames[0].decode(), "header": json.loads(frames[1]),
                          "payload_bytes": [len(f) for f in frames[2:]]}), flush=True)


if __name__ == "__main__":
    main()
