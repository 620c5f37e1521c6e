"""The PyTorch runtime: the registered network (TorchScript-traced where its spec says tracing pays), fp32 or
autocast bf16/fp16, on CPU or CUDA."""

from __future__ import annotations

import warnings

import numpy as np

from imgsearch.errors import ModelError
from imgsearch.models.spec import ModelSpec


def resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return dev


class TorchSession:
    """uint8 NHWC crops -> pooled features (float32, not normalised) with the torch module."""

    runtime = "torch"

    def __init__(self, spec: ModelSpec, module, device, precision: str, threads: int = 0, jit: bool | None = None):
        """`jit`: trace the network (True), run it eager (False), or as `spec.trace` says for this precision (None:
        measured per model by `python -m bench models`)."""
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.spec = spec
        self.device = device
        self.precision = precision
        self.module = module.eval().to(device, memory_format=torch.channels_last)
        self._forward = self.module
        self.jit = False
        trace = precision in spec.trace if jit is None else jit
        if trace:
            self._forward = self._trace()
        self._mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._inv_std = (1.0 / torch.tensor(spec.std, dtype=torch.float32, device=device)).view(1, 3, 1, 1)

    def _autocast(self):
        import torch

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def _trace(self):
        """TorchScript-trace and freeze the network (BN folded into convs). The traced graph runs without taking the
        GIL between ops: under a busy server's Python threads the eager CNN slowed ~50x, the traced one ~1.5x; it is
        also 1.1-1.4x faster when idle. A ViT in bf16 gains nothing and tracing it took 2.3-7.5 GB (bench models),
        hence per-model. Falls back to eager if tracing fails."""
        import torch

        crop = self.spec.prep.crop
        example = torch.zeros(2, 3, crop, crop, device=self.device).contiguous(memory_format=torch.channels_last)
        try:
            with warnings.catch_warnings(), torch.inference_mode(), self._autocast():
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(self.module, example, check_trace=False).eval())
                traced(example)  # the first calls optimise the graph
                traced(example)
        except Exception as exc:  # pragma: no cover - depends on the model and torch build
            warnings.warn(f"{self.spec.name}: TorchScript tracing failed ({exc}); running the eager model")
            return self.module
        self.jit = True
        return traced

    def features(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if not pixels.flags.writeable or not pixels.flags.c_contiguous:
                pixels = np.array(pixels, copy=True, order="C")
            x = torch.from_numpy(pixels)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            # NHWC uint8 viewed as NCHW is exactly the channels_last layout: no copy.
            x = x.permute(0, 3, 1, 2).float()
            x = (x - self._mean) * self._inv_std
            with self._autocast():
                feats = self._forward(x)
            return feats.float().cpu().numpy()
