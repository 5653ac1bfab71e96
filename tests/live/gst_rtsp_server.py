"""A real RTSP server for the live tests (GStreamer's gst-rtsp-server), serving one clip at /live.

Runs under the system Python (``/usr/bin/python3``, where Debian's python3-gi and
gir1.2-gst-rtsp-server-1.0 live), on 127.0.0.1 only. Prints ``ready`` once it listens.
Usage: gst_rtsp_server.py PORT CLIP.mkv [--auth USER:PASSWORD] [--tls CERT.pem KEY.pem]
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("clip")
    ap.add_argument("--auth")
    ap.add_argument("--tls", nargs=2)
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(args.port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{args.clip}" ! matroskademux name=d '
        "d.video_0 ! queue ! rtph264pay name=pay0 pt=96 config-interval=1 "
        "d.audio_0 ! queue ! rtpmp4gpay name=pay1 pt=97 )"
    )
    factory.set_shared(True)
    if args.auth or args.tls:
        auth = GstRtspServer.RTSPAuth()
        if args.tls:
            cert = Gio.TlsCertificate.new_from_files(args.tls[0], args.tls[1])
            auth.set_tls_certificate(cert)
        if args.auth:
            user, password = args.auth.split(":", 1)
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", "viewer")
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("viewer", "media.factory.access", True)
            perms.add_permission_for_role("viewer", "media.factory.construct", True)
            factory.set_permissions(perms)
        else:
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", "anonymous")
            auth.set_default_token(token)
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("anonymous", "media.factory.access", True)
            perms.add_permission_for_role("anonymous", "media.factory.construct", True)
            factory.set_permissions(perms)
        server.set_auth(auth)
    server.get_mount_points().add_factory("/live", factory)
    if not server.attach(None):
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
