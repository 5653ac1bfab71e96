"""The CPU features that decide how an INT8 model runs, for the quantisation report and bench/quant.py.

ONNX Runtime's x86 INT8 kernels differ by CPU: with AVX-512 VNNI / AVX-VNNI (vpdpbusd) 8-bit products
accumulate in int32; on AVX2 alone (vpmaddubsw) pairs of u8 x s8 products are summed in int16 and
saturate. The same INT8 model can therefore agree with its float model on one machine and not on
another, so a report of agreement names the CPU it was measured on.

``cpu_features()`` reads the flags of ``/proc/cpuinfo``. The CPU this process sees can differ from that
file (a user-mode emulator such as ``qemu-x86_64 -cpu Haswell`` reports its own CPUID but passes the
host's file through), so where numpy's run-time CPUID detection is available and disagrees, its view
wins and the flags it cannot see are dropped. Without ``/proc/cpuinfo`` (macOS, Windows) numpy's view
is all there is.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

# the features that select ORT's INT8 (and FP16/BF16) kernels, in /proc/cpuinfo spelling
X86_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                "amx_bf16")
ARM_FEATURES = ("asimd", "asimddp", "i8mm", "sve", "sve2", "bf16")  # asimddp: sdot/udot int8 dot products
# numpy's CPUID names for those it detects at run time
_NUMPY_NAMES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512_vnni": "AVX512VNNI",
                "avx512_bf16": "AVX512BF16", "asimd": "ASIMD", "asimddp": "ASIMDDP", "sve": "SVE"}
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    machine: str  # x86_64, aarch64, ...
    flags: tuple[str, ...]  # those of X86_FEATURES / ARM_FEATURES present
    source: str  # where the flags came from

    @property
    def int8_dot(self) -> str:
        """Which 8-bit dot product ORT's kernels use here, in words."""
        if any(f in self.flags for f in _VNNI):
            return "VNNI (int32 accumulation)"
        if "avx2" in self.flags:
            return "AVX2 without VNNI (u8 x s8 pair sums saturate at int16)"
        if "asimddp" in self.flags:
            return "ARM dot product (int32 accumulation)"
        return "no 8-bit dot-product instructions detected"

    def line(self) -> str:
        return (f"CPU {self.machine}: {' '.join(self.flags) or 'none of the INT8 features'} [{self.source}]; "
                f"INT8 dot product: {self.int8_dot}")

    def as_dict(self) -> dict[str, object]:
        return {"machine": self.machine, "flags": list(self.flags), "source": self.source, "int8_dot": self.int8_dot}


def proc_cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first processor's ``flags`` (x86) or ``Features`` (ARM) in ``path``; None when unreadable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def runtime_flags() -> set[str] | None:
    """The features numpy's run-time CPUID detection found in this process (in /proc/cpuinfo spelling)."""
    import importlib

    found: dict[str, bool] | None = None
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # numpy 2, numpy 1
        try:
            found = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if found is not None:
            break
    if found is None:
        return None
    return {ours for ours, theirs in _NUMPY_NAMES.items() if found.get(theirs)}


def cpu_features(path: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    machine = platform.machine() or "unknown"
    known = X86_FEATURES + ARM_FEATURES
    proc, seen = proc_cpuinfo_flags(path), runtime_flags()
    if proc is not None and seen is not None:
        disagree = {f for f in _NUMPY_NAMES if (f in proc) != (f in seen)}
        if disagree:  # /proc/cpuinfo describes another CPU than the one this process runs on
            return CpuFeatures(machine, tuple(f for f in known if f in seen),
                               f"CPUID of this process; /proc/cpuinfo differs on {' '.join(sorted(disagree))}")
        return CpuFeatures(machine, tuple(f for f in known if f in proc), "/proc/cpuinfo")
    if proc is not None:
        return CpuFeatures(machine, tuple(f for f in known if f in proc), "/proc/cpuinfo")
    if seen is not None:
        return CpuFeatures(machine, tuple(f for f in known if f in seen), "CPUID via numpy (no /proc/cpuinfo)")
    return CpuFeatures(machine, (), "unknown (no /proc/cpuinfo, no numpy CPU detection)")
