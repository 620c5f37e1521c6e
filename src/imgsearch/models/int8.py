"""int8 inference for the registered CNNs: a short distillation under simulated int8, then ONNX Runtime's static
quantization, built once per model and CPU kind by `imgsearch quantize` and cached.

Why not post-training quantization alone: on a CPU without VNNI, int8 convolutions (VPMADDUBSW) saturate their 16-bit
sums unless weights keep to 7 bits, and with 7-bit per-channel weights and u8 activations EfficientNet-Lite0's vectors
kept only cosine ~0.93 to fp32's (min-max, percentile and entropy calibration, layers left in fp32: none reached
0.98). Fine-tuning the batch-norm-folded network for a few hundred steps with the fp32 network as teacher (unlabelled
images, loss 1 - cosine of the vectors) under the same simulated quantization recovers what rounding loses; ORT then
quantizes the tuned weights. The first conv reads the uint8 pixels directly where the model's input scaling is one
integer offset and one scale ((x - 127) / 128 is a u8 tensor with zero point 127): ORT's quantized input scaling
took a third of the int8 time.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from imgsearch.errors import ModelError
from imgsearch.models.spec import ModelSpec
from imgsearch.vectors import unit

INT8_REVISION = 1  # changes whenever the recipe below does (it names cached files)
MIN_COSINE = 0.98  # mean cosine to fp32's vectors below which `auto` does not use an int8 build


@dataclass(frozen=True)
class Recipe:
    """How an int8 model is made. weight_bits 7 where int8 sums would saturate (no VNNI), else 8."""

    weight_bits: int = 7
    steps: int = 300
    batch: int = 16
    lr: float = 2e-5
    seed: int = 0

    def tag(self) -> str:
        return f"w{self.weight_bits}-s{self.steps}-b{self.batch}-v{INT8_REVISION}"


def recipe_for(vnni: bool, steps: int = Recipe.steps) -> Recipe:
    return Recipe(weight_bits=8 if vnni else 7, steps=steps)


def int8_path(spec: ModelSpec, digest: str, recipe: Recipe, cache_dir: Path) -> Path:
    import onnxruntime

    return Path(cache_dir) / "int8" / f"{spec.name}-r{spec.revision}-{digest}-{recipe.tag()}-ort{onnxruntime.__version__}.onnx"


def report_path(model_path: Path) -> Path:
    """The build's figures (quality, speed), read by `auto` and `doctor`."""
    return model_path.with_suffix(".json")


def fold_batchnorm(module, example) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into that conv (found by running `example` once, so any
    architecture works) and replace it with Identity. Returns how many were folded."""
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    last: dict[str, object] = {}
    pairs: list[tuple[nn.Conv2d, str, nn.Module]] = []
    parents = {id(child): (parent, name) for parent in module.modules() for name, child in parent.named_children()}

    def conv_hook(conv, _inp, out):
        last["conv"], last["out"] = conv, out

    def bn_hook(bn, inp):
        if last.get("out") is inp[0] and id(bn) in parents:
            parent, name = parents[id(bn)]
            pairs.append((last["conv"], name, parent))

    hooks = [m.register_forward_hook(conv_hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(bn_hook) for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    for conv, name, parent in pairs:  # in place: the conv objects stay the ones the network calls
        bn = getattr(parent, name)
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                      bn.eps, bn.weight, bn.bias)
        setattr(parent, name, nn.Identity())
    return len(pairs)


class _SimulatedInt8:
    """Fake quantization on every Conv2d as ORT will run it: u8 per-tensor activations (min-max over calibration
    batches) at the input, symmetric per-channel weights of `bits` bits."""

    def __init__(self, module, bits: int):
        import torch
        from torch.nn.utils import parametrize

        self.convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
        self.ranges: dict[int, list[float]] = {}
        self.calibrating = True
        qmax = 2 ** (bits - 1)

        class WeightFq(torch.nn.Module):
            def forward(self, w):
                s = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / qmax).clamp(min=1e-12)
                zp = torch.zeros_like(s, dtype=torch.int32)
                return torch.fake_quantize_per_channel_affine(w, s, zp, 0, -qmax, qmax)

        self._parametrize = parametrize
        self._weight_fq = WeightFq
        self.hooks = [c.register_forward_pre_hook(self._input_hook) for c in self.convs]

    def _input_hook(self, conv, inp):
        import torch

        x = inp[0]
        r = self.ranges.setdefault(id(conv), [0.0, 0.0])  # ORT's ranges always include 0
        if self.calibrating:
            r[0], r[1] = min(r[0], float(x.min())), max(r[1], float(x.max()))
            return None
        scale = max((r[1] - r[0]) / 255.0, 1e-8)
        zp = int(round(-r[0] / scale))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255),)

    def start(self) -> None:
        """Calibration done: quantize from now on."""
        self.calibrating = False
        for c in self.convs:
            self._parametrize.register_parametrization(c, "weight", self._weight_fq())

    def remove(self) -> None:
        """Back to a plain fp32 network holding the tuned weights."""
        for h in self.hooks:
            h.remove()
        for c in self.convs:
            if self._parametrize.is_parametrized(c, "weight"):
                self._parametrize.remove_parametrizations(c, "weight", leave_parametrized=False)


def distill(spec: ModelSpec, teacher, student, crops: np.ndarray, calib: np.ndarray, recipe: Recipe,
            progress: Callable[[int, float], None] | None = None):
    """Tune the BN-folded `student` under simulated int8 to give the vectors the fp32 `teacher` gives."""
    import torch
    import torch.nn.functional as F

    from imgsearch.models.onnx_session import _pixels_module

    torch.manual_seed(recipe.seed)
    sim = _SimulatedInt8(student, recipe.weight_bits)
    # uint8 NHWC crops in, input scaling inside, as the exported graph does; eval keeps dropout off (BN is folded)
    teacher_px, student_px = _pixels_module(spec, teacher), _pixels_module(spec, student)
    with torch.no_grad():
        for i in range(0, len(calib), 32):
            student_px(torch.from_numpy(np.ascontiguousarray(calib[i:i + 32])))
    sim.start()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(recipe.steps, 1))
    rng = np.random.default_rng(recipe.seed)
    dim = spec.dim
    for step in range(recipe.steps):
        x = torch.from_numpy(crops[rng.choice(len(crops), min(recipe.batch, len(crops)), replace=False)])
        if rng.random() < 0.5:
            x = x.flip(2)  # NHWC: mirror left-right
        with torch.no_grad():
            target = teacher_px(x)
        out = student_px(x)
        loss = (1 - F.cosine_similarity(out[:, :dim], target[:, :dim])).mean()
        if out.shape[1] > dim:  # a classifier head: keep its tags too
            loss = loss + 0.1 * F.kl_div(F.log_softmax(out[:, dim:], 1), F.softmax(target[:, dim:], 1),
                                         reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, loss.item())
    sim.remove()
    return student.eval()


def _direct_pixels(model, spec: ModelSpec) -> bool:
    """Let the first conv read the uint8 pixels (when (x - mean) / std is one u8 zero point and one scale)."""
    import onnx
    from onnx import helper, numpy_helper

    if len(set(spec.mean)) != 1 or len(set(spec.std)) != 1 or float(spec.mean[0]) != int(spec.mean[0]):
        return False
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    conv = next((n for n in g.node if n.op_type == "Conv"), None)
    dq = producer.get(conv.input[0]) if conv is not None else None
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    g.initializer.extend([numpy_helper.from_array(np.array(1.0 / spec.std[0], np.float32), "pixels_scale"),
                          numpy_helper.from_array(np.array(int(spec.mean[0]), np.uint8), "pixels_zero_point")])
    g.node.insert(0, helper.make_node("Transpose", ["pixels"], ["pixels_nchw"], perm=[0, 3, 1, 2],
                                      name="pixels_nchw"))
    dq.input[:] = ["pixels_nchw", "pixels_scale", "pixels_zero_point"]
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(list(g.node)):  # drop the float scaling nobody reads any more
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = {i for n in g.node for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    return True


def quantize_onnx(spec: ModelSpec, fp32_path: Path, out: Path, calib: np.ndarray, weight_bits: int) -> None:
    """ORT static QDQ quantization: per-channel s8 weights (7 bits unless VNNI), u8 activations, min-max ranges."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(calib), 16))

        def get_next(self):
            i = next(self.starts, None)
            return None if i is None else {"pixels": np.ascontiguousarray(calib[i:i + 16])}

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre, qdq = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=weight_bits < 8, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(qdq))
        _direct_pixels(model, spec)
        onnx.save(model, str(out))


def build_int8(spec: ModelSpec, weights: Path | None, crops: np.ndarray, recipe: Recipe, cache_dir: Path,
               progress: Callable[[int, float], None] | None = None, holdout: int = 64) -> Path:
    """Make (or find) the int8 ONNX model of `spec` from images as (N, H, W, 3) uint8 crops; writes a report beside
    it with the quality kept on `holdout` crops the tuning never saw, and both rates measured in this run."""
    import torch

    from imgsearch.models.onnx_session import OnnxSession, _pixels_module, export_onnx, weights_digest

    if spec.text:
        raise ModelError(f"int8 is built for the registered CNNs; {spec.name} is an image-text transformer (its "
                         "matrix products are not tuned here): use fp32")
    if len(crops) < holdout + 64:
        raise ModelError(f"int8 needs at least {holdout + 64} images to tune and check on; got {len(crops)}")
    teacher = spec.build(weights).eval()
    digest = weights_digest(teacher)
    path = int8_path(spec, digest, recipe, cache_dir)
    if path.is_file() and report_path(path).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(recipe.seed)
    order = rng.permutation(len(crops))
    check, train = crops[order[:holdout]], crops[order[holdout:]]
    calib = train[:256]
    started = time.time()
    student = spec.build(weights).eval()
    crop = spec.prep.crop
    folded = fold_batchnorm(_pixels_module(spec, student), torch.from_numpy(np.ascontiguousarray(train[:2])))
    distill(spec, teacher, student, train, calib, recipe, progress)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tuned = export_onnx(spec, student, Path(tmp), name=f"{spec.name}-tuned.onnx")
        fd, part = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            quantize_onnx(spec, tuned, Path(part), calib, recipe.weight_bits)
            os.replace(part, path)
        finally:
            Path(part).unlink(missing_ok=True)
    build_s = time.time() - started
    fp32 = OnnxSession(spec, teacher, cache_dir=cache_dir)
    int8 = OnnxSession(spec, None, cache_dir=cache_dir, path=path)
    cos = (unit(fp32.features(check)[:, :spec.dim]) * unit(int8.features(check)[:, :spec.dim])).sum(1)
    report = {"model": spec.name, "recipe": recipe.__dict__, "images": len(crops), "bn_folded": folded,
              "build_s": round(build_s, 1), "holdout": holdout, "crop": crop,
              "cosine_mean": round(float(cos.mean()), 4), "cosine_min": round(float(cos.min()), 4),
              "cosine_p5": round(float(np.percentile(cos, 5)), 4),
              "fp32_img_per_s": round(forward_rate(fp32, check), 1),
              "int8_img_per_s": round(forward_rate(int8, check), 1)}
    tmp = report_path(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(report_path(path))
    return path


def forward_rate(session, crops: np.ndarray, seconds: float = 3.0, batch: int = 32) -> float:
    x = np.ascontiguousarray(crops[:batch])
    session.features(x)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        session.features(x)
        n += len(x)
    return n / (time.perf_counter() - t)


@dataclass(frozen=True)
class BuiltInt8:
    path: Path
    report: dict

    @property
    def kept(self) -> bool:
        """Whether the build kept the vectors (mean cosine to fp32's on its held-out images >= MIN_COSINE)."""
        return self.report.get("cosine_mean", 0) >= MIN_COSINE

    @property
    def gain(self) -> float | None:
        """int8's forward rate over fp32's at build time; None when the build did not keep the vectors (auto then
        leaves it alone; asking for int8 still runs it)."""
        r = self.report
        if not self.kept or not r.get("fp32_img_per_s"):
            return None
        return r["int8_img_per_s"] / r["fp32_img_per_s"]


def any_built(spec: ModelSpec, cache_dir: Path | None) -> bool:
    """Whether any int8 build of `spec` is cached here: a glob, checked before building the network and hashing its
    weights (seconds for a big model) to find the one that fits."""
    from imgsearch.config import default_cache_dir

    folder = Path(cache_dir or default_cache_dir()) / "int8"
    return folder.is_dir() and any(folder.glob(f"{spec.name}-r{spec.revision}-*.onnx"))


def find_int8(spec: ModelSpec, module, cpu, cache_dir: Path | None, steps: int | None = None) -> BuiltInt8 | None:
    """The int8 model built on this machine for `spec` with these weights and this CPU kind's weight bits, if any
    (the most tuned one when `steps` is not given)."""
    from imgsearch.config import default_cache_dir
    from imgsearch.models.onnx_session import weights_digest

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    if not any_built(spec, cache_dir):
        return None
    folder = Path(cache_dir or default_cache_dir()) / "int8"
    recipe = recipe_for(cpu.vnni)
    stem = int8_path(spec, weights_digest(module), recipe, folder.parent).name
    head, tail = stem.split(f"-s{recipe.steps}-", 1)
    found = []
    for path in folder.glob(f"{head}-s*-{tail}"):
        report = read_report(path)
        if report is not None and (steps is None or report["recipe"]["steps"] == steps):
            found.append(BuiltInt8(path, report))
    return max(found, key=lambda b: b.report["recipe"]["steps"], default=None)


def read_report(path: Path) -> dict | None:
    try:
        return json.loads(report_path(path).read_text())
    except (OSError, ValueError):
        return None
