"""The engine contract with the real default model, Spark included: the three engines list, embed, fit moments and
stream rows alike, and give the same vectors for the same files."""

import pytest

import sequential_engine  # noqa: F401  (registers "sequential")
from helpers import check_engine_contract, contract_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    return contract_corpus(tmp_path_factory.mktemp("contract-src"), photo_paths[:8])


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    return check_engine_contract("local", "efficientnet_lite0", corpus, tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("engine", ["sequential", "spark"])
def test_engine_contract_real_model(engine, corpus, reference, tmp_path):
    if engine == "spark":
        pytest.importorskip("pyspark")
    vectors = check_engine_contract(engine, "efficientnet_lite0", corpus, tmp_path)
    assert vectors.keys() == reference.keys()
    worst = min(float(vectors[i] @ reference[i]) for i in vectors)
    assert worst >= 0.999, worst


def test_clip_model_gives_the_same_vectors_in_both_engines(corpus, clip_weights, tmp_path):
    """An image-text model (random weights from a file) embeds alike in the local engine and in Spark's workers."""
    pytest.importorskip("pyspark")
    weights = clip_weights("mobileclip2_s0")
    local = check_engine_contract("local", "mobileclip2_s0", corpus, tmp_path / "local", weights=weights)
    spark = check_engine_contract("spark", "mobileclip2_s0", corpus, tmp_path / "spark", weights=weights)
    assert spark.keys() == local.keys()
    worst = min(float(spark[i] @ local[i]) for i in spark)
    assert worst >= 0.999, worst
