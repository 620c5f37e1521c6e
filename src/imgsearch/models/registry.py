"""The registry and the Embedder: the one piece of inference code that every engine calls."""

from __future__ import annotations

import ctypes
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from imgsearch.errors import ModelError
from imgsearch.models.cpu import cpu_features
from imgsearch.models.policy import Plan, choose
from imgsearch.models.spec import ModelSpec
from imgsearch.models.torch_session import TorchSession, resolve_device

_REGISTRY: dict[str, ModelSpec] = {}
MAX_FORWARD_BATCH = 64  # the most crops one CPU forward pass takes: larger inputs run in chunks (bounded activations)


def register_model(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[ModelSpec]:
    return [ _REGISTRY[k] for k in sorted(_REGISTRY) ]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


# glibc malloc settings that keep activations mapped between forward passes; processes that run models (Spark's
# Python workers) must start with them in their environment.
ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}

_allocator_tuned = False
_allocator_lock = threading.Lock()


def tune_allocator() -> None:
    """Stop glibc malloc from returning big blocks to the OS after every forward pass.

    With the default settings each batch re-faults its activations (millions of minor page faults) and CPU inference
    runs 3-4x slower. mallopt() applies to this process at once; the variables cover processes it starts.
    """
    global _allocator_tuned
    with _allocator_lock:
        if _allocator_tuned:
            return
        _allocator_tuned = True
        for key, value in ALLOCATOR_ENV.items():
            os.environ.setdefault(key, value)
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl, macOS): nothing to tune
            return
        m_trim_threshold, m_mmap_max = -1, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**30)


def return_free_pages() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere). Called once after a
    model load: the weights file's tensors and the build's temporaries are free by then, but with the tuning above they
    would stay resident for the process's life. Forward passes afterwards re-fault their activations once, not per
    batch."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Embedder:
    """A loaded model: uint8 RGB crops in, L2-normalised float32 vectors out, whichever runtime executes it.

    The runtime (a session: torch or ONNX Runtime) and precision come from `policy.choose`; the vectors of every
    runtime are interchangeable within the tolerance the tests hold them to, so a collection indexed with one is
    searched with another.
    """

    def __init__(self, spec: ModelSpec, weights: Path | None = None, device: str = "auto",
                 precision: str = "auto", threads: int = 0, jit: bool | None = None, runtime: str = "auto",
                 cache_dir: Path | None = None, spin: bool = False):
        tune_allocator()
        self.spec = spec
        self.name = spec.name
        self.dim = spec.dim
        self.prep = spec.prep
        dev = resolve_device(device)
        cpu = cpu_features()
        module = spec.build(weights)
        self.module = module  # the torch network (the text tower of an image-text model is used from it)
        int8 = None
        if dev.type == "cpu" and precision in ("auto", "int8") and runtime in ("auto", "onnx"):
            from imgsearch.models.int8 import find_int8

            int8 = find_int8(spec, module, cpu, cache_dir)
        self.plan: Plan = choose(dev.type, precision, runtime, cpu, int8_gain=int8.gain if int8 else None)
        self.session = None
        if self.plan.precision == "int8":
            from imgsearch.models.onnx_session import OnnxSession

            if int8 is None:
                raise ModelError(f"no int8 model of {spec.name} for this CPU kind ({cpu.kind}) here: build it "
                                 "with 'imgsearch quantize DIR' (a folder of a few hundred of your images)")
            try:
                self.session = OnnxSession(spec, None, threads=threads, cache_dir=cache_dir, spin=spin,
                                           path=int8.path)
                self.device = "cpu"
            except ModelError as exc:
                if precision != "auto":
                    raise
                # auto promised speed, not int8: a damaged build leaves the fp32 path
                warnings.warn(f"{exc}; running {spec.name} in fp32")
                self.plan = choose(dev.type, precision, runtime, cpu)
        if self.session is None and self.plan.runtime == "onnx":
            from imgsearch.models.onnx_session import OnnxSession

            try:
                self.session = OnnxSession(spec, module, threads=threads, cache_dir=cache_dir, spin=spin)
                self.device = "cpu"
            except ModelError as exc:
                if runtime != "auto":
                    raise
                # auto promised speed, not this runtime: a model ONNX cannot take still runs, with torch
                warnings.warn(f"{exc}; running {spec.name} with torch")
                self.plan = Plan("torch", self.plan.precision, f"ONNX export failed: {exc}")
        if self.session is None:
            self.session = TorchSession(spec, module, dev, self.plan.precision, threads=threads, jit=jit)
            self.device = str(dev)
        return_free_pages()

    @property
    def runtime(self) -> str:
        return self.plan.runtime

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def labels(self) -> tuple[str, ...]:
        """The classifier head's vocabulary (empty: the model does not auto-tag)."""
        return self.spec.labels

    @property
    def has_text(self) -> bool:
        return self.spec.text

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, dim) float32 with unit L2 norm."""
        return self.embed_tagged(pixels)[0]

    def embed_tagged(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, H, W, 3) uint8 -> ((N, dim) unit vectors, (N, labels) class probabilities or None): one forward pass."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
        n_labels = len(self.spec.labels)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32), (np.zeros((0, n_labels), np.float32) if n_labels
                                                                 else None)
        # on the CPU in chunks: one forward's activations grow with its batch (360 crops at once took 5 GB)
        step = MAX_FORWARD_BATCH if self.device == "cpu" else len(pixels)
        out = np.concatenate([np.asarray(self.session.features(pixels[i:i + step]), dtype=np.float32)
                              for i in range(0, len(pixels), step)])
        if out.ndim != 2 or out.shape[1] != self.dim + n_labels:  # pragma: no cover - a registration bug
            raise ModelError(f"model {self.name} produced {out.shape[1:]}-d outputs, registry says "
                             f"{self.dim} + {n_labels} labels")
        feats = out[:, :self.dim]
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        vectors = feats / np.maximum(norms, 1e-12)
        if not n_labels:
            return vectors, None
        logits = out[:, self.dim:]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return vectors, e / e.sum(axis=1, keepdims=True)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text queries -> (N, dim) unit vectors in the image vectors' space (image-text models only). Runs the
        text tower with torch, whatever runtime the image tower uses."""
        if not self.spec.text:
            raise ModelError(f"model {self.name} has no text encoder; models that search by text: "
                             f"{', '.join(m.name for m in list_models() if m.text) or 'none registered'}")
        import torch

        with torch.inference_mode():
            feats = self.module.encode_text(list(texts)).float().cpu().numpy()
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)


def create_model(name: str, weights: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 threads: int = 0, jit: bool | None = None, runtime: str = "auto", cache_dir: str | Path | None = None,
                 spin: bool = False) -> Embedder:
    """Build a registered model, ready to embed. `weights` overrides the model's default weights source; `jit`
    None traces the torch network only where its spec says tracing pays (True/False force it)."""
    spec = get_spec(name)
    path = Path(weights) if weights else None
    if path is not None and not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    return Embedder(spec, weights=path, device=device, precision=precision, threads=threads, jit=jit,
                    runtime=runtime, cache_dir=Path(cache_dir) if cache_dir else None, spin=spin)
