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
