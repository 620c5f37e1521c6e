"""The service's query batcher with a fake encoder and store: concurrent queries share forward passes and store
calls, each gets its own answer, and a failure reaches every waiting caller."""

import threading

import numpy as np
import pytest

from imgsearch.service import QueryBatcher, _Query
from imgsearch.store import CollectionInfo, Hit

INFO = CollectionInfo(name="images_m", model="m", dim=2, count=10, index_type="FLAT")


class FakeEncoder:
    def __init__(self):
        self.calls = []
        self.gate = threading.Event()

    def encode(self, pixels):
        self.gate.wait(5)
        self.calls.append(len(pixels))
        return np.stack([[float(p[0, 0, 0]), 1.0] for p in pixels]).astype(np.float32)


class FakeStore:
    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def search(self, info, vectors, k, path_prefix=None, tags=None, **kw):
        if self.fail:
            raise RuntimeError("milvus is down")
        self.calls.append((len(vectors), k))
        return [[Hit(id=f"q{int(v[0])}-{j}", path="file:///x", score=1.0) for j in range(k)] for v in vectors]


def query(i, k=2):
    return _Query(np.full((1, 1, 3), i, np.uint8), k, None, INFO)


def run_concurrently(batcher, queries):
    answers = [None] * len(queries)

    def go(i):
        answers[i] = batcher.search(queries[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    return threads, answers


def test_concurrent_queries_share_batches_and_get_their_own_answers():
    enc, store = FakeEncoder(), FakeStore()
    batcher = QueryBatcher(enc, store, max_batch=8, wait_ms=50)
    try:
        threads, answers = run_concurrently(batcher, [query(i, k=2 if i % 2 else 3) for i in range(6)])
        enc.gate.set()
        for t in threads:
            t.join(10)
        assert sum(enc.calls) == 6 and len(enc.calls) < 6  # forward passes were shared
        assert sum(n for n, _ in store.calls) == 6 and {k for _, k in store.calls} == {2, 3}
        assert len(store.calls) <= 2 * len(enc.calls)  # one store call per distinct k in a batch
        for i, a in enumerate(answers):
            assert [h.id for h in a.hits] == [f"q{i}-{j}" for j in range(2 if i % 2 else 3)]
            assert a.timings_ms["batch"] >= 1
    finally:
        batcher.close()


def test_a_failure_reaches_every_caller():
    enc = FakeEncoder()
    enc.gate.set()
    batcher = QueryBatcher(enc, FakeStore(fail=True), max_batch=4, wait_ms=20)
    try:
        with pytest.raises(RuntimeError, match="milvus is down"):
            batcher.search(query(1))
        with pytest.raises(RuntimeError, match="milvus is down"):
            batcher.search(query(2))  # the batcher is still alive after a failure
    finally:
        batcher.close()
