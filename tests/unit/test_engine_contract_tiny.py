"""The engine contract with a tiny registered model: `local` and the test suite's own `sequential` engine (one
module, one register call) behave the same through the Engine interface. Spark: integration/test_engine_contract."""

import pytest

import sequential_engine  # noqa: F401  (registers "sequential")
from helpers import check_engine_contract, contract_corpus
from imgsearch.engines import create_engine, engine_names
from imgsearch.errors import ImgSearchError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo_paths):
    return contract_corpus(tmp_path_factory.mktemp("contract-src"), photo_paths[:6])


def test_registry_lists_engines_and_refuses_unknown():
    assert {"local", "spark", "sequential"} <= set(engine_names())
    from helpers import settings

    with pytest.raises(ImgSearchError, match="unknown engine 'ray'"):
        create_engine("ray", settings())


@pytest.mark.parametrize("engine", ["local", "sequential"])
def test_engine_contract(engine, corpus, tmp_path, tiny_model):
    vectors = check_engine_contract(engine, tiny_model, corpus, tmp_path)
    reference = check_engine_contract("local", tiny_model, corpus, tmp_path / "ref")
    assert vectors.keys() == reference.keys()
    assert min(float(vectors[i] @ reference[i]) for i in vectors) > 0.9999
