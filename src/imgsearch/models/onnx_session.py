"""The ONNX Runtime path: the registered torch network exported once to ONNX (cached), run by ORT on the CPU.

The exported graph takes the same uint8 NHWC crops as the torch path and does the cast, layout change and input
scaling itself, so both runtimes see identical inputs. The file is cached under the model's weights digest, so a new
weights file gets a new export and a cached file is never used with other weights.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from imgsearch.config import default_cache_dir, usable_cpus
from imgsearch.errors import ModelError
from imgsearch.models.spec import ModelSpec

OPSET = 17


def weights_digest(module) -> str:
    """sha256 over every parameter and buffer: the identity of the weights, wherever they were loaded from."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _pixels_module(spec: ModelSpec, module):
    """The network behind a uint8 NHWC input: the ONNX graph then needs nothing but raw crops."""
    import torch

    class PixelsIn(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels):
            x = pixels.permute(0, 3, 1, 2).float()
            return self.inner((x - self.mean) * self.inv_std)

    return PixelsIn(module).eval()


def export_onnx(spec: ModelSpec, module, cache_dir: Path, name: str | None = None) -> Path:
    """The model's fp32 ONNX file, exported on first use and cached (written atomically: concurrent Spark workers
    may export at once). `name`: export to cache_dir/name instead (a network that is not the registered one)."""
    import torch

    if name is not None:
        path = Path(cache_dir) / name
    else:
        path = Path(cache_dir) / "onnx" / (f"{spec.name}-r{spec.revision}-{weights_digest(module)}"
                                           f"-torch{torch.__version__}-op{OPSET}.onnx")
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    crop = spec.prep.crop
    example = torch.zeros(2, crop, crop, 3, dtype=torch.uint8)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # nn.MultiheadAttention's inference fast path (a fused op) has no ONNX export: trace the plain ops
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(_pixels_module(spec, module), (example,), tmp, input_names=["pixels"],
                              output_names=["features"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}})
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ModelError(f"{spec.name}: export to ONNX failed ({type(exc).__name__}: {first_line(exc)}); "
                         "use runtime torch") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return path


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class OnnxSession:
    """uint8 NHWC crops -> pooled features (float32, not normalised) with ONNX Runtime on the CPU.

    `path`: run this ready ONNX file (the int8 model) instead of the fp32 export of `module`."""

    runtime = "onnx"

    def __init__(self, spec: ModelSpec, module, threads: int = 0, cache_dir: Path | None = None,
                 spin: bool = False, path: Path | None = None):
        import onnxruntime as ort

        self.spec = spec
        cache_dir = cache_dir or default_cache_dir()
        self.path = path or export_onnx(spec, module, cache_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads if threads > 0 else usable_cpus()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Spinning threads answer the next op sooner but burn cores that decode threads need between batches: with
        # spinning off the local engine's end-to-end rate was 81 img/s against 77 (mean of 6 alternating runs each,
        # 768 web-size JPEGs, 2-core AVX2), the model alone unchanged within this machine's noise.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file: export again once
            if path is not None:
                raise ModelError(f"{spec.name}: ONNX Runtime cannot load {path}: {first_line(exc)}; "
                                 "build it again (imgsearch quantize)") from None
            self.path.unlink(missing_ok=True)
            try:
                self.path = export_onnx(spec, module, cache_dir)
                self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            except Exception:
                raise ModelError(f"{spec.name}: ONNX Runtime cannot load {self.path}: {exc}") from None

    def features(self, pixels: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"pixels": np.ascontiguousarray(pixels)})[0]
