"""`imgsearch doctor`: what this machine offers for inference, what imgsearch chose, and how fast it runs here.

The probe embeds real photos (the packaged sample set) for a few seconds with the chosen path, and times single-image
queries at the service's thread count, so a user sees on their own CPU the figures the defaults were chosen from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imgsearch.config import Settings, cache_dir_of
from imgsearch.models import create_model, cpu_features
from imgsearch.models.policy import choose, runtime_versions
from imgsearch.models.probe import cpu_candidates, forward_rate, query_latency_ms, sample_crops
from imgsearch.models.torch_session import resolve_device


@dataclass
class Probe:
    runtime: str
    precision: str
    forward_img_per_s: float
    query_ms_p50: float
    threads: int
    query_threads: int


@dataclass
class DoctorReport:
    cpu: dict
    versions: dict
    chosen: dict
    probes: list[Probe] = field(default_factory=list)
    int8: dict | None = None  # this machine's int8 build of the model: its file and the figures of its build


def probe(model: str, settings: Settings, pairs: list[tuple[str, str]], seconds: float) -> list[Probe]:
    """Forward rate of each (runtime, precision) at the indexing thread count, then one-image latency of each at the
    service's (torch's thread count is per process: every batch probe runs before any one-thread probe)."""
    s = settings
    common = dict(device=s.device, cache_dir=cache_dir_of(s))
    rates = []
    for runtime, precision in pairs:
        emb = create_model(model, threads=s.torch_threads, runtime=runtime, precision=precision, **common)
        crops = sample_crops(emb.prep, s.batch_size)
        rates.append((emb.runtime, emb.precision, forward_rate(emb, crops, seconds)))
    out = []
    for (runtime, precision, rate) in rates:
        one = create_model(model, threads=s.serve_torch_threads, runtime=runtime, precision=precision, **common)
        latency = query_latency_ms(one, sample_crops(one.prep, 8))
        out.append(Probe(runtime, precision, round(rate, 1), round(latency, 2), s.torch_threads or 0,
                         s.serve_torch_threads))
    return out


def candidates(device_type: str, int8: bool = False) -> list[tuple[str, str]]:
    """Every (runtime, precision) this device runs well."""
    if device_type == "cuda":
        return [("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16")]
    return cpu_candidates(int8)


def run(settings: Settings, model: str | None = None, seconds: float = 5.0, every: bool = False,
        measure: bool = True) -> DoctorReport:
    s = settings
    model = model or s.model
    cpu = cpu_features()
    dev = resolve_device(s.device)
    plan = choose(dev.type, s.precision, s.runtime, cpu)
    report = DoctorReport(cpu=cpu.describe(), versions=runtime_versions(),
                          chosen={"device": str(dev), "runtime": plan.runtime, "precision": plan.precision,
                                  "why": plan.why, "asked": {"runtime": s.runtime, "precision": s.precision}})
    if dev.type == "cpu":
        from imgsearch.models import get_spec
        from imgsearch.models.int8 import any_built, find_int8

        spec = get_spec(model)
        built = (find_int8(spec, spec.build(Path(s.weights) if s.weights else None), cpu, cache_dir_of(s))
                 if any_built(spec, cache_dir_of(s)) else None)
        if built is not None:
            report.int8 = {"path": str(built.path), **built.report}
            if built.gain is not None:
                plan = choose(dev.type, s.precision, s.runtime, cpu, int8_gain=built.gain)
                report.chosen.update(runtime=plan.runtime, precision=plan.precision, why=plan.why)
    if not measure:
        return report
    pairs = candidates(dev.type, report.int8 is not None) if every else [(plan.runtime, plan.precision)]
    report.probes = probe(model, s, pairs, seconds)
    return report
