#!/usr/bin/env bash
# Runs avstream on an emulated aarch64 CPU (qemu-user) with Debian's arm64 Python and the PyPI aarch64
# wheels, on an x86-64 Debian host: the INT8 models' agreement with FP32, an edge pipeline run and a
# part of the test suite (docs/edge.md). Needs root for apt (arm64 packages are downloaded, not
# installed), qemu-user, and a venv in .venv (the host side: the wheel build, the held-out windows).
# Usage: bash scripts/aarch64-qemu.sh [WORK_DIR] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${1:-/tmp/avstream-aarch64}
shift || true
mkdir -p "$WORK"
PY=.venv/bin/python
ORT_VERSION=${AVSTREAM_AARCH64_ORT:-1.19.2}  # 1.20+ segfaults at import under qemu-user 7.2 (docs/edge.md)

if [ ! -x "$WORK/sysroot/usr/bin/python3.11" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  (cd "$WORK" && for p in python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 \
      zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libgcc-s1 \
      libstdc++6 libdb5.3 libgdbm6 libnsl2 libtirpc3 libcrypt1 libzstd1 libgomp1 libatomic1; do
    apt-get download -qq "$p:arm64"; done
    mkdir -p sysroot && for d in *.deb; do dpkg-deb -x "$d" sysroot; done)
fi
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_26_aarch64
           --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64)
if [ ! -d "$WORK/site/numpy" ]; then
  $PY -m pip install -q --target "$WORK/site" "${PLATFORMS[@]}" --python-version 3.11 --implementation cp \
    --abi cp311 --only-binary=:all: numpy "onnxruntime==$ORT_VERSION" pyzmq av opencv-python-headless pyyaml \
    pydantic click rich psutil pytest pytest-timeout
fi
rm -rf "$WORK/wheel" "$WORK/site-avstream"
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" .
$PY -m pip install -q --no-deps --target "$WORK/site-avstream" "$WORK"/wheel/avstream-*.whl

ARM=(qemu-aarch64 -L "$WORK/sysroot" "$WORK/sysroot/usr/bin/python3.11")
export PYTHONPATH="$WORK/site-avstream:$WORK/site" PYTHONDONTWRITEBYTECODE=1
echo "== emulated: $("${ARM[@]}" -c 'import platform, onnxruntime as o, numpy as n; print(platform.machine(), "onnxruntime", o.__version__, "numpy", n.__version__)')"

# 1. INT8 vs FP32 on held-out windows made on the host, both models run on the emulated CPU
unset PYTHONPATH
$PY - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from avstream.engine.inference.contract import resolve_model
from avstream.exporters.quantize import calibration_windows, window_feeds
work = Path(sys.argv[1])
pairs = {}
for name, fp32 in {"highlight_int8": "highlight", "localization_int8": "localization",
                   "captions_int8_encoder": "captions_encoder"}.items():
    int8 = resolve_model(f"builtin:{name}", Path.cwd())
    held = window_feeds(int8, calibration_windows(int8, "synthetic://scene?seed=1000901&duration=12", count=6))
    np.savez(work / f"{name}.npz", n=len(held), **{f"{k}{i}": f[k] for i, f in enumerate(held) for k in ("video", "audio")})
    pairs[name] = [f"builtin:{name}", f"builtin:{fp32}"]
(work / "pairs.json").write_text(json.dumps(pairs))
EOF
export PYTHONPATH="$WORK/site-avstream:$WORK/site"
"${ARM[@]}" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
from avstream.engine.inference.contract import resolve_model
from avstream.exporters.int8_agreement import agreement, holds
work = Path(sys.argv[1])
worst = {}
for name, (int8, fp32) in json.loads((work / "pairs.json").read_text()).items():
    data = np.load(work / f"{name}.npz")
    feeds = [{k: data[f"{k}{i}"] for k in ("video", "audio")} for i in range(int(data["n"]))]
    got = {}
    for tag, ref in (("int8", int8), ("fp32", fp32)):
        s = ort.InferenceSession(str(resolve_model(ref, Path.cwd())), providers=["CPUExecutionProvider"])
        got[tag] = {o.name: np.concatenate([np.ravel(s.run([o.name], f)[0]) for f in feeds]) for o in s.get_outputs()}
    measured = {o: agreement(got["fp32"][o], got["int8"][o]) for o in got["fp32"]}
    print(f"{name}: {len(feeds)} windows, output correlation with FP32 on aarch64: "
          + ", ".join(f"{o} {m['corr']:.4f} (max abs {m['max_abs']:.4f})" for o, m in measured.items()))
    # the bounds of models/int8.md, as the AVX2 check applies them (exporters/int8_agreement.py)
    worst[name] = [o for o, m in measured.items() if not holds(o, m)]
assert not any(worst.values()), worst
print("INT8 agreement on aarch64: ok")
EOF

# 2. the edge pipeline, as fast as the emulated CPU goes (realtime off: emulation is slower than real time)
"${ARM[@]}" -m avstream.engine.cli validate edge
"${ARM[@]}" -m avstream.engine.cli run edge --set streams.cam0.realtime=false --duration 12 --quiet \
  --publish tcp://127.0.0.1:0 --jsonl "$WORK/edge.jsonl"
"${ARM[@]}" - "$WORK/edge.jsonl" <<'EOF'
import collections, json, sys
kinds = collections.Counter(json.loads(l)["kind"] for l in open(sys.argv[1]))
print("edge pipeline on aarch64, results per kind:", dict(kinds))
assert {"highlight", "violence", "localization", "caption"} <= kinds.keys(), kinds
EOF

# 3. a part of the test suite (the host's tests folder; pass other pytest args to choose)
cd "$REPO/tests/.." && "${ARM[@]}" -m pytest -q -p no:cacheprovider --timeout 900 "${@:-tests/engine/test_config.py}"
