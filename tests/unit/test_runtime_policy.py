"""The runtime/precision choice: read from CPU flags (real or capped by ONEDNN_MAX_CPU_ISA), never from one machine."""

import pytest

from imgsearch.errors import ModelError
from imgsearch.models.cpu import features_from
from imgsearch.models.policy import choose

AVX2 = "model name\t: AMD EPYC\nflags\t\t: fpu sse4_1 avx avx2 fma\n"
AVX512_BF16 = ("model name\t: Zen 4\nflags\t\t: fpu sse4_1 avx avx2 fma avx512f avx512bw avx512vl avx512dq avx512cd "
               "avx512_vnni avx512_bf16\n")
SAPPHIRE = AVX512_BF16.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_int8")


def test_features_read_from_cpuinfo():
    avx2 = features_from(AVX2)
    assert avx2.kind == "avx2" and not avx2.native_bf16 and not avx2.vnni and avx2.model == "AMD EPYC"
    zen4 = features_from(AVX512_BF16)
    assert zen4.kind == "avx512-bf16" and zen4.native_bf16 and zen4.vnni and not zen4.emulated
    assert features_from(SAPPHIRE).kind == "amx-bf16"
    assert features_from("").kind == "older"


@pytest.mark.parametrize("cap,kind", [("AVX2", "avx2"), ("avx512_core", "avx512"),
                                      ("AVX512_CORE_VNNI", "avx512-vnni"), ("AVX512_CORE_BF16", "avx512-bf16"),
                                      ("", "avx512-bf16"), ("nonsense", "avx512-bf16")])
def test_onednn_cap_is_honoured(cap, kind):
    f = features_from(AVX512_BF16, isa_cap=cap)
    assert f.kind == kind
    assert f.emulated == (kind != "avx512-bf16")
    assert "avx512_bf16" in f.real_flags  # the hardware is still reported as it is


def test_auto_by_cpu_kind():
    avx2, zen4 = features_from(AVX2), features_from(AVX512_BF16)
    assert choose("cpu", "auto", "auto", avx2, have_onnx=True)[:2] == ("onnx", "fp32")
    assert choose("cpu", "auto", "auto", avx2, have_onnx=False)[:2] == ("torch", "fp32")
    assert choose("cpu", "auto", "auto", zen4, have_onnx=True)[:2] == ("torch", "bf16")
    # the same bf16 machine held to AVX2 by oneDNN behaves like a real AVX2 machine
    capped = features_from(AVX512_BF16, isa_cap="AVX2")
    assert choose("cpu", "auto", "auto", capped, have_onnx=True)[:2] == ("onnx", "fp32")
    assert choose("cuda", "auto", "auto", avx2, have_onnx=True)[:2] == ("torch", "bf16")


def test_explicit_choices_and_clear_refusals():
    avx2, zen4 = features_from(AVX2), features_from(AVX512_BF16)
    assert choose("cpu", "fp32", "auto", zen4, have_onnx=True)[:2] == ("onnx", "fp32")
    assert choose("cpu", "fp32", "torch", avx2, have_onnx=True)[:2] == ("torch", "fp32")
    assert choose("cpu", "auto", "torch", zen4, have_onnx=True)[:2] == ("torch", "bf16")
    assert choose("cpu", "bf16", "auto", avx2, have_onnx=True)[:2] == ("torch", "bf16")  # emulated bf16, asked for
    with pytest.raises(ModelError, match="pip install onnxruntime"):
        choose("cpu", "auto", "onnx", avx2, have_onnx=False)
    with pytest.raises(ModelError, match="bf16 is a torch path"):
        choose("cpu", "bf16", "onnx", avx2, have_onnx=True)
    with pytest.raises(ModelError, match="fp16 needs a CUDA device"):
        choose("cpu", "fp16", "auto", avx2, have_onnx=True)
    with pytest.raises(ModelError, match="runtime torch"):
        choose("cuda", "auto", "onnx", avx2, have_onnx=True)
    with pytest.raises(ModelError, match="invalid runtime 'tvm'"):
        choose("cpu", "auto", "tvm", avx2)
    with pytest.raises(ModelError, match="invalid precision 'int4'"):
        choose("cpu", "int4", "auto", avx2)


def test_int8_explicit_auto_and_refusals():
    avx2, zen4 = features_from(AVX2), features_from(AVX512_BF16)
    assert choose("cpu", "int8", "auto", avx2, have_onnx=True)[:2] == ("onnx", "int8")
    assert choose("cpu", "int8", "onnx", avx2, have_onnx=True)[:2] == ("onnx", "int8")
    # auto takes int8 only where a build here measured it faster (and kept the vectors: gain is None otherwise)
    assert choose("cpu", "auto", "auto", avx2, have_onnx=True, int8_gain=1.6)[:2] == ("onnx", "int8")
    assert choose("cpu", "auto", "auto", avx2, have_onnx=True, int8_gain=0.9)[:2] == ("onnx", "fp32")
    assert choose("cpu", "auto", "auto", avx2, have_onnx=True, int8_gain=None)[:2] == ("onnx", "fp32")
    assert choose("cpu", "fp32", "auto", avx2, have_onnx=True, int8_gain=1.6)[:2] == ("onnx", "fp32")
    assert choose("cpu", "auto", "onnx", avx2, have_onnx=True, int8_gain=1.6)[:2] == ("onnx", "int8")
    # native bf16 stays torch bf16 (no regression there); int8 must be asked for
    assert choose("cpu", "auto", "auto", zen4, have_onnx=True, int8_gain=1.6)[:2] == ("torch", "bf16")
    for args, msg in [(("cpu", "int8", "torch", avx2), "ONNX Runtime"), (("cuda", "int8", "auto", avx2), "CPU"),
                      (("cpu", "int8", "auto", avx2), "onnxruntime")]:
        with pytest.raises(ModelError, match=msg):
            choose(*args, have_onnx=False if args[1:3] == ("int8", "auto") and args[0] == "cpu" else True)
