"""What this CPU can do for inference, read from /proc/cpuinfo: the facts every runtime choice is made from.

The speed of a CNN on a CPU depends on a few instruction-set features: AVX2 (every x86-64 CPU of the last decade),
AVX-512, VNNI (int8 dot products without the 16-bit saturation of AVX2's VPMADDUBSW) and native bf16 (AVX512-BF16 or
AMX). oneDNN can be held to an older instruction set with `ONEDNN_MAX_CPU_ISA` to measure a slower CPU's behaviour on a
faster one; the features reported here honour that cap, so the runtime chosen under emulation is the one a real CPU of
that kind gets.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache

from imgsearch.config import usable_cpus

# ONEDNN_MAX_CPU_ISA values (oneDNN's names, upper case) -> the flags a CPU held to that ISA still has.
_AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset({"sse4_1"}),
    "AVX": frozenset({"sse4_1", "avx"}),
    "AVX2": frozenset({"sse4_1", "avx", "avx2", "fma"}),
    "AVX2_VNNI": frozenset({"sse4_1", "avx", "avx2", "fma", "avx_vnni"}),
    "AVX2_VNNI_2": frozenset({"sse4_1", "avx", "avx2", "fma", "avx_vnni"}),
    "AVX512_CORE": frozenset({"sse4_1", "avx", "avx2", "fma", *_AVX512}),
    "AVX512_CORE_VNNI": frozenset({"sse4_1", "avx", "avx2", "fma", "avx_vnni", *_AVX512, "avx512_vnni"}),
    "AVX512_CORE_BF16": frozenset({"sse4_1", "avx", "avx2", "fma", "avx_vnni", *_AVX512, "avx512_vnni",
                                   "avx512_bf16"}),
}
_WATCHED = ("avx2", "fma", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """The inference-relevant features of this CPU (after any ONEDNN_MAX_CPU_ISA cap)."""

    model: str
    cores: int
    flags: frozenset[str]  # the watched flags present (capped)
    real_flags: frozenset[str]  # the watched flags present on the hardware
    isa_cap: str = ""  # ONEDNN_MAX_CPU_ISA when set

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: there torch's bf16 autocast runs ~2x fp32 (AVX512-BF16 or AMX)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def vnni(self) -> bool:
        """int8 dot products accumulate in 32 bits without saturating (AVX512-VNNI or AVX-VNNI)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni"})

    @property
    def kind(self) -> str:
        """A short name for the CPU kind figures are recorded under."""
        if self.native_bf16:
            return "avx512-bf16" if "amx_bf16" not in self.flags else "amx-bf16"
        if "avx512f" in self.flags:
            return "avx512-vnni" if self.vnni else "avx512"
        if "avx2" in self.flags:
            return "avx2-vnni" if self.vnni else "avx2"
        return "older"

    @property
    def emulated(self) -> bool:
        return self.flags != self.real_flags

    def describe(self) -> dict:
        return {"model": self.model, "cores": self.cores, "kind": self.kind, "emulated": self.emulated,
                "flags": sorted(self.flags), "hardware_flags": sorted(self.real_flags),
                "onednn_max_cpu_isa": self.isa_cap or None}


def features_from(cpuinfo: str, isa_cap: str = "", cores: int = 1) -> CpuFeatures:
    """Parse /proc/cpuinfo text (first processor), applying an ONEDNN_MAX_CPU_ISA cap if one is given."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = set(value.split())
        elif key == "model name" and value.strip():
            model = value.strip()
    real = frozenset(f for f in _WATCHED if f in flags)
    cap = isa_cap.strip().upper()
    if cap.startswith("AVX10") or cap.startswith("AVX512_CORE_AMX") or cap in ("", "ALL", "DEFAULT"):
        capped = real
    else:
        capped = real & _CAPS.get(cap, real)
    return CpuFeatures(model=model, cores=cores, flags=frozenset(capped), real_flags=real, isa_cap=cap)


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's features (read once per process)."""
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:  # not Linux: no flags known, so no feature-specific path is chosen
        text = ""
    return features_from(text, os.environ.get("ONEDNN_MAX_CPU_ISA", ""), usable_cpus())
