#!/usr/bin/env bash
# Sets up everything the test suite needs (system packages when run as root, a venv), type-checks the
# tree and runs the suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # qemu-user: the INT8 check on an emulated AVX2 CPU without VNNI (tests/exporters/test_quantize_avx2.py)
  need=""
  for pkg in ffmpeg libportaudio2 sox espeak-ng openssl python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good pulseaudio pulseaudio-utils libasound2-plugins qemu-user mosquitto chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
  done
  if [ -n "$need" ]; then
    echo "installing system packages:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  fi
fi

VENV=${AVSTREAM_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[cpu,export,dev,mic,serve,report,ray]"

# open_clip imports torchvision, and no torchvision wheel installable here loads beside the CPU torch
# above; the open_clip importer's tests (tests/exporters/test_pretrained_open_clip.py) run it in a
# second venv, with the torch/torchvision pair that is (a CUDA build; it runs on the CPU).
# AVSTREAM_OPENCLIP_VENV=none skips them.
OPENCLIP_VENV=${AVSTREAM_OPENCLIP_VENV:-.venv-openclip}
if [ "$OPENCLIP_VENV" != none ]; then
  if [ ! -x "$OPENCLIP_VENV/bin/python" ]; then
    python3 -m venv "$OPENCLIP_VENV"
  fi
  "$OPENCLIP_VENV/bin/python" -m pip install -q --upgrade pip
  "$OPENCLIP_VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$OPENCLIP_VENV/bin/python" -m pip install -q -e ".[openclip]"
  AVSTREAM_OPENCLIP_PYTHON="$(cd "$OPENCLIP_VENV" && pwd)/bin/python"
  export AVSTREAM_OPENCLIP_PYTHON
fi

set +e
# Lint and the whole-tree type check ([tool.mypy] in pyproject.toml); the suite runs whatever they find.
"$VENV/bin/python" -m ruff check .
lint_rc=$?
"$VENV/bin/python" -m mypy
typecheck_rc=$?
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
if [ "$lint_rc" != 0 ]; then
  echo "error: the lint failed (ruff's report is above)" >&2
  exit 1
fi
if [ "$typecheck_rc" != 0 ]; then
  echo "error: the type check failed (mypy's report is above)" >&2
  exit 1
fi
exit "$rc"
