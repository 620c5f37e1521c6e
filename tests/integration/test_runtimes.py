"""Runtimes are interchangeable: ONNX Runtime and torch give the same vectors, and the export cache is safe."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from imgsearch.errors import ModelError
from imgsearch.imaging import decode_image
from imgsearch.models import create_model

pytest.importorskip("onnxruntime")


def crops(paths, prep):
    return np.stack([decode_image(p.read_bytes(), prep, 10**8).pixels for p in paths])


@pytest.fixture(scope="module")
def lite0_torch():
    return create_model("efficientnet_lite0", device="cpu", precision="fp32", runtime="torch")


def test_onnx_and_torch_give_the_same_vectors_and_neighbours(lite0_torch, photo_paths, tmp_path):
    from imgsearch.samples import write_variants
    from imgsearch.vectors import top_k

    onnx = create_model("efficientnet_lite0", device="cpu", precision="fp32", runtime="onnx",
                        cache_dir=tmp_path / "cache")
    assert (onnx.runtime, lite0_torch.runtime) == ("onnx", "torch")
    index = crops(photo_paths, onnx.prep)
    a, b = onnx.embed(index), lite0_torch.embed(index)
    assert a.dtype == np.float32 and a.shape == b.shape
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).min() >= 0.9999
    copies = [c for cs in write_variants(photo_paths, tmp_path / "v", kinds=("crop80", "jpeg40")).values() for c in cs]
    q = crops(copies, onnx.prep)
    assert (top_k(onnx.embed(q), a, 1) == top_k(lite0_torch.embed(q), b, 1)).all()


def test_export_is_cached_per_weights_and_repaired_when_damaged(tiny_model, tmp_path, photo_paths):
    cache = tmp_path / "cache"
    first = create_model(tiny_model, runtime="onnx", cache_dir=cache)
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].name.startswith(tiny_model)
    stamp = files[0].stat().st_mtime_ns
    px = crops(photo_paths[:4], first.prep)
    want = create_model(tiny_model, runtime="torch").embed(px)
    np.testing.assert_allclose(first.embed(px), want, atol=1e-5)
    again = create_model(tiny_model, runtime="onnx", cache_dir=cache)  # reused, not exported again
    assert again.session.path == files[0] and files[0].stat().st_mtime_ns == stamp
    files[0].write_bytes(b"a truncated export")  # e.g. a disk that filled up
    repaired = create_model(tiny_model, runtime="onnx", cache_dir=cache)
    np.testing.assert_allclose(repaired.embed(px), want, atol=1e-5)


def test_new_weights_get_a_new_export(tmp_path, photo_paths):
    import torch
    import torchvision

    cache, paths = tmp_path / "cache", []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"r50-{seed}.pth")
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), paths[-1])
    a = create_model("resnet50", weights=paths[0], runtime="onnx", cache_dir=cache)
    b = create_model("resnet50", weights=paths[1], runtime="onnx", cache_dir=cache)
    assert a.session.path != b.session.path and len(list((cache / "onnx").glob("*.onnx"))) == 2
    px = crops(photo_paths[:2], a.prep)
    ref = create_model("resnet50", weights=paths[1], runtime="torch").embed(px)
    assert (b.embed(px) * ref).sum(1).min() >= 0.9999


def test_onnx_session_is_safe_across_threads(lite0, photo_paths):
    """The service embeds from several threads at once."""
    px = crops(photo_paths[:8], lite0.prep)
    want = lite0.embed(px)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: lite0.embed(px[i:i + 1])[0], range(8)))
    np.testing.assert_allclose(np.stack(got), want, atol=1e-5)


def test_onnx_runtime_refuses_what_it_cannot_do(tiny_model):
    with pytest.raises(ModelError, match="bf16 is a torch path"):
        create_model(tiny_model, runtime="onnx", precision="bf16")


def test_auto_falls_back_to_torch_when_export_fails(tiny_model, monkeypatch, photo_paths):
    from imgsearch.models import onnx_session

    def broken(spec, module, cache_dir):
        raise ModelError(f"{spec.name}: export to ONNX failed (an op ONNX lacks); use runtime torch")

    monkeypatch.setattr(onnx_session, "export_onnx", broken)
    monkeypatch.setattr("imgsearch.models.registry.cpu_features",
                        lambda: __import__("imgsearch.models.cpu", fromlist=["x"]).features_from("flags : avx2"))
    with pytest.warns(UserWarning, match="running test_tiny with torch"):
        emb = create_model(tiny_model)  # auto on a CPU without native bf16 tries onnx first
    assert emb.runtime == "torch" and "export failed" in emb.plan.why
    assert emb.embed(crops(photo_paths[:2], emb.prep)).shape == (2, 8)
    with pytest.raises(ModelError, match="export to ONNX failed"):  # asked for onnx: no silent substitute
        create_model(tiny_model, runtime="onnx")


def test_doctor_reports_cpu_choice_and_measured_speed(cli):
    import json

    out = cli("doctor", "--all", "--seconds", "0.5", "--json", env={"IMGSEARCH_BATCH_SIZE": "4"})
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert rep["cpu"]["kind"] and isinstance(rep["cpu"]["flags"], list)
    chosen = (rep["chosen"]["runtime"], rep["chosen"]["precision"])
    probed = {(p["runtime"], p["precision"]): p for p in rep["probes"]}
    assert ("torch", "fp32") in probed and ("onnx", "fp32") in probed and chosen in probed
    assert all(p["forward_img_per_s"] > 0 and p["query_ms_p50"] > 0 for p in probed.values())
    from imgsearch import doctor
    from imgsearch.config import Settings

    with pytest.raises(ModelError, match="bf16 is a torch path"):  # the CLI prints it as one line, exit 1
        doctor.run(Settings(runtime="onnx", precision="bf16"), measure=False)


def test_query_path_is_measured_once_per_machine_and_remembered(tiny_model, tmp_path, monkeypatch):
    from imgsearch.models import probe

    cache = tmp_path / "cache"
    emb, record = probe.fastest_for_queries(tiny_model, threads=1, cache_dir=cache)
    measured = record["query_ms"]
    assert set(measured) == {f"{r} {p}" for r, p in probe.cpu_candidates()} and len(measured) >= 2
    assert f"{emb.runtime} {emb.precision}" == min(measured, key=measured.get)  # the fastest one is used
    assert len(list((cache / "choices").glob("*.json"))) == 1

    def no_measuring(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(probe, "query_latency_ms", no_measuring)
    again, rec2 = probe.fastest_for_queries(tiny_model, threads=1, cache_dir=cache)
    assert rec2 == record and (again.runtime, again.precision) == (emb.runtime, emb.precision)
    with pytest.raises(AssertionError, match="measured again"):  # another thread count is another choice
        probe.fastest_for_queries(tiny_model, threads=2, cache_dir=cache)


def test_service_reports_its_measured_query_path(indexed_lite0_db, tmp_path):
    from fastapi.testclient import TestClient

    from imgsearch.config import Settings
    from imgsearch.server import create_app

    db = indexed_lite0_db
    with TestClient(create_app(str(db), settings=Settings(cache_dir=str(tmp_path / "cache")))) as c:
        path = c.get("/api/stats").json()["query_path"]
    assert path["runtime"] in ("torch", "onnx") and len(path["query_ms"]) >= 2
    forced = Settings(cache_dir=str(tmp_path / "cache"), runtime="torch", precision="fp32")
    with TestClient(create_app(str(db), settings=forced)) as c:
        path = c.get("/api/stats").json()["query_path"]
    assert (path["runtime"], path["precision"]) == ("torch", "fp32")  # asked for: not overridden by a measurement


@pytest.fixture(scope="module")
def indexed_lite0_db(tmp_path_factory, photo_paths):
    from helpers import index_photos

    db, _ = index_photos(tmp_path_factory, photo_paths[:4], "qpath")
    return db
