#!/usr/bin/env bash
# GPU check of every built-in model (models/*.onnx) through every GPU path installed on this machine:
# ONNX Runtime CUDA and TensorRT providers, the native TensorRT runner, and a torch-CUDA evaluation of
# the same graph; parity against ONNX Runtime on the CPU and latency per batch size (1, 4, 16). Paths
# that are not installed are named on SKIP lines. Installs nothing; needs python3 with numpy, onnx,
# onnxruntime (and torch for the torch path). Finishes in under 5 minutes.
#
#   bash bench/gpu_check.sh [--device cuda|cpu] [--batches 1,4,16] [--json FILE]
#
# avstream is imported from this source tree, not from an installation: a temporary folder gets an
# `avstream` package whose sub-packages are links to engine/, plugins/, exporters/, models/, pipelines/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/avstream"
cp "$repo/avstream_pkg/__init__.py" "$tmp/avstream/__init__.py"
for d in engine plugins exporters models pipelines; do ln -s "$repo/$d" "$tmp/avstream/$d"; done
py="${PYTHON:-python3}"
extra=()
if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then extra=(--json "$OUT/gpu_check.json"); fi
PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}" timeout 290 "$py" "$repo/bench/gpu_check.py" "${extra[@]}" "$@"
