"""A model load's memory is bounded: CLIP ViT-B/16 (random weights from a file, as the other tests make them), loaded
by each CPU path a user can get (`auto`, and the ONNX path that `auto` takes on CPUs without native bf16), in a
child process so its peak is its own. Once, tracing this model took a load from 1.1 GB to 10.8-13.3 GB."""

import json
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = pytest.mark.slow
PEAK_MAX_MB = 3000  # the whole process at the load's peak (imports included): below 3 GB
FIRST_BATCH_MAX_MB = 4000  # the whole process after a first batch of 8 (traced bf16 took 7.5 GB here)


def load_in_a_child(name: str, weights, runtime: str, cache) -> dict:
    """`python -m bench.models child`: imports, load, a first batch and a couple more (seconds=0)."""
    cmd = [sys.executable, "-m", "bench.models", "child", name, str(weights), runtime, "auto", "auto", "0", str(cache)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("runtime", ["auto", "onnx"])
def test_clip_vit_b16_load_stays_within_three_times_its_weights(runtime, clip_weights, tmp_path):
    row = load_in_a_child("clip_vit_b16", clip_weights("clip_vit_b16"), runtime, tmp_path / "cache")
    assert 500 < row["weights_fp32_mb"] < 700  # ~150M parameters: the figure the bound is made of is real
    assert not row["traced"], "tracing ViT-B/16 costs gigabytes (bench models)"
    # the load itself: at most 3x the fp32 weights over what the imports took, and the process below 3 GB
    assert row["load_over_base_mb"] <= 3 * row["weights_fp32_mb"], row
    assert row["load_peak_mb"] < PEAK_MAX_MB, row
    # then one batch (of 8): 2.1 GB in all when measured alone; once, in the full suite, 3.4 GB (not reproduced)
    assert row["first_batch_peak_mb"] < FIRST_BATCH_MAX_MB, row
    assert row["img_per_s"] > 0
