"""A separate-process ZeroMQ subscriber: prints every message it receives as one JSON line.

    python subscriber.py ENDPOINT [PREFIX] [--server-key SERVER.key --client-key CLIENT.key_secret]
Each line: {"topic", "header", "payload_bytes": [...]}; the frame contract of SPEC §4 is checked by
the test that reads these lines. With keys it subscribes over CURVE (SPEC §9) through the engine's
own client helper, as a user's subscriber would.
"""

from __future__ import annotations

import argparse
import json

import zmq

from avstream.engine.transport.curve import client_socket


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("prefix", nargs="?", default="")
    parser.add_argument("--server-key")
    parser.add_argument("--client-key")
    args = parser.parse_args()
    ctx = zmq.Context()
    sock = client_socket(ctx, args.server_key, args.client_key)
    sock.setsockopt(zmq.SUBSCRIBE, args.prefix.encode())
    sock.connect(args.endpoint)
    print(json.dumps({"ready": True}), flush=True)
    while True:
        frames = sock.recv_multipart()
        print(json.dumps({"topic": frames[0].decode(), "header": json.loads(frames[1]),
                          "payload_bytes": [len(f) for f in frames[2:]]}), flush=True)


if __name__ == "__main__":
    main()
