"""Which runtime and precision run a model, from what was asked and what the hardware offers.

`auto` is chosen from measurements (bench/results.json, section `cpu`), never from one machine's taste:
- CUDA: torch with bf16 autocast;
- a CPU with native bf16 (AVX512-BF16/AMX): torch bf16, ~2x its fp32 there;
- any other CPU: ONNX Runtime int8 where `imgsearch quantize` built the model for this CPU kind and measured it
  faster than fp32 with cosine >= 0.98 to fp32's vectors (`models/int8.py`); else ONNX Runtime fp32 (same vectors as
  torch fp32 to cosine 0.99999; on an AVX2-only CPU ~1.8x torch's forward rate), or torch fp32 where onnxruntime is
  not installed.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

from imgsearch.errors import ModelError
from imgsearch.models.cpu import CpuFeatures

RUNTIMES = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


class Plan(NamedTuple):
    """The runtime and precision that will run a model, and why (printed by `imgsearch doctor`)."""

    runtime: str  # torch | onnx
    precision: str  # fp32 | bf16 | fp16 | int8
    why: str


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def runtime_versions() -> dict[str, str | None]:
    import torch

    out: dict[str, str | None] = {"torch": torch.__version__, "onnxruntime": None}
    if onnx_available():
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def choose(device_type: str, precision: str, runtime: str, cpu: CpuFeatures, have_onnx: bool | None = None,
           int8_gain: float | None = None) -> Plan:
    """The plan for a model on `device_type` ('cpu' or 'cuda'), or a ModelError naming what is possible.

    `int8_gain`: int8's forward rate over fp32's as measured when its model was built on this machine, None when
    no int8 model of the right kind is built here (or it did not keep the vectors)."""
    if precision not in PRECISIONS:
        raise ModelError(f"invalid precision {precision!r}: use {', '.join(PRECISIONS)}")
    if runtime not in RUNTIMES:
        raise ModelError(f"invalid runtime {runtime!r}: use {', '.join(RUNTIMES)}")
    have_onnx = onnx_available() if have_onnx is None else have_onnx
    int8_wins = precision == "auto" and int8_gain is not None and int8_gain > 1.0
    if device_type == "cuda":
        if precision == "int8":
            raise ModelError("int8 runs on the CPU (ONNX Runtime); use device cpu, or bf16 on CUDA")
        if runtime == "onnx":
            raise ModelError("the onnx runtime runs on the CPU here; use runtime torch (or auto) on CUDA")
        return Plan("torch", "bf16" if precision == "auto" else precision, "CUDA: torch")
    if precision == "fp16":
        raise ModelError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "int8":
        if runtime == "torch":
            raise ModelError("int8 runs under ONNX Runtime; use runtime onnx (or auto)")
        if not have_onnx:
            raise ModelError("int8 needs onnxruntime: pip install onnxruntime")
        return Plan("onnx", "int8", "asked for int8")
    if runtime == "onnx":
        if not have_onnx:
            raise ModelError("runtime onnx needs onnxruntime: pip install onnxruntime")
        if precision == "bf16":
            raise ModelError("runtime onnx runs fp32 or int8 on the CPU; bf16 is a torch path (runtime torch or auto)")
        if int8_wins:
            return Plan("onnx", "int8", f"asked for onnx; int8 built here runs {int8_gain:.2f}x fp32")
        return Plan("onnx", "fp32", "asked for onnx")
    bf16_native = cpu.native_bf16
    if runtime == "torch" or precision == "bf16":
        chosen = precision if precision != "auto" else ("bf16" if bf16_native else "fp32")
        return Plan("torch", chosen, "asked for torch" if runtime == "torch" else "bf16 is a torch path")
    if precision == "auto" and bf16_native:
        return Plan("torch", "bf16", f"{cpu.kind}: native bf16")
    if have_onnx and int8_wins:
        return Plan("onnx", "int8", f"{cpu.kind}: no native bf16, int8 built here runs {int8_gain:.2f}x fp32")
    if have_onnx:
        return Plan("onnx", "fp32", f"{cpu.kind}: no native bf16, ONNX Runtime fp32 is the fastest measured path")
    return Plan("torch", "fp32", f"{cpu.kind}: no native bf16 and no onnxruntime")
