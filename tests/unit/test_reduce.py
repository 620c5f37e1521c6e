"""PCA reducer: exact k on a known spectrum, bit-exact persistence, recall measure, wide inputs."""

import numpy as np
import pytest

from scipy.linalg import subspace_angles

from imgsearch.reduce import (MAX_COVARIANCE_DIM, Moments, ReduceError, Reducer, fit_batches, fit_from_moments,
                              parse_target, recall_at_k)

SPECTRUM = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625] + [0.01] * 24)  # D = 32


def data_with_spectrum(n=2000, seed=0, spectrum=SPECTRUM):
    """Rows whose sample covariance is exactly Q diag(spectrum) Q^T (orthonormal, centred scores)."""
    rng = np.random.default_rng(seed)
    d = len(spectrum)
    z = rng.standard_normal((n, d))
    z -= z.mean(axis=0)
    u, _, _ = np.linalg.svd(z, full_matrices=False)  # orthonormal, zero-mean columns
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    x = np.sqrt(n - 1) * u * np.sqrt(spectrum) @ q.T + rng.standard_normal(d) * 3
    return x, q


@pytest.mark.parametrize("target", [0.5, 0.6, 0.8, 0.9, 0.95, 0.99])
def test_chosen_k_is_exact(target):
    x, _ = data_with_spectrum()
    cum = np.cumsum(SPECTRUM) / SPECTRUM.sum()
    expected = int(np.nonzero(cum >= target)[0][0]) + 1
    red = fit_batches(np.array_split(x, 7), "m", variance=target)
    assert red.k == expected and red.variance_kept >= target
    np.testing.assert_allclose(red.eigenvalues[:8], SPECTRUM[:8], rtol=1e-8)


def test_subspace_and_centering(tmp_path):
    x, q = data_with_spectrum()
    red = fit_batches([x], "m", dims=3)
    angles = subspace_angles(red.components.T, q[:, :3])
    assert np.max(angles) < 1e-6
    y = red.transform(x)
    assert y.shape == (len(x), 3) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    # centring: the projection of the fitted mean itself is the zero vector (left unnormalised)
    assert np.allclose(red.transform(red.mean[None]), 0)


def test_batched_fit_equals_one_shot():
    x, _ = data_with_spectrum(seed=1)
    a = fit_from_moments(Moments().add(x), "m", dims=5)
    parts = [Moments().add(c) for c in np.array_split(x, 5)]
    merged = Moments()
    for p in parts:
        merged = merged.merge(p)
    b = fit_from_moments(merged, "m", dims=5)
    assert np.max(subspace_angles(a.components.T, b.components.T)) < 1e-8


def test_round_trip_is_bit_exact(tmp_path):
    x, _ = data_with_spectrum()
    red = fit_batches([x], "efficientnet_lite0", variance=0.9, whiten=True)
    red.quality = {"recall_at_10": 0.97}
    red.save(tmp_path / "r")
    back = Reducer.load(tmp_path / "r")
    for name in ("mean", "components", "eigenvalues"):
        assert np.array_equal(getattr(red, name), getattr(back, name))
    assert (back.k, back.whiten, back.model, back.id, back.quality) == (red.k, True, red.model, red.id, red.quality)
    assert np.array_equal(red.transform(x[:10]), back.transform(x[:10]))
    np.savez(tmp_path / "r" / "reducer.npz", mean=red.mean + 1, components=red.components, eigenvalues=red.eigenvalues)
    with pytest.raises(ReduceError, match="damaged"):
        Reducer.load(tmp_path / "r")


def test_targets_and_errors():
    assert parse_target("0.95") == (0.95, None) and parse_target("128") == (None, 128)
    for bad in ("0", "1.5", "-3", "abc"):
        with pytest.raises(ReduceError):
            parse_target(bad)
    x, _ = data_with_spectrum(n=50)
    with pytest.raises(ReduceError, match="only"):
        fit_batches([x], "m", dims=64)
    red = fit_batches([x], "m", dims=4)
    with pytest.raises(ReduceError, match="takes 32-d"):
        red.transform(np.ones((1, 16)))


def test_recall_measure():
    rng = np.random.default_rng(0)
    full = rng.standard_normal((300, 16))
    assert recall_at_k(full, full, k=10) == 1.0
    assert recall_at_k(full, rng.standard_normal((300, 16)), k=10) < 0.3


def test_wider_than_covariance_limit_uses_randomized_pca():
    rng = np.random.default_rng(0)
    d = 70_000  # more than Spark ML's 65,535-feature limit
    assert d > MAX_COVARIANCE_DIM
    basis = rng.standard_normal((5, d)).astype(np.float32)
    x = (rng.standard_normal((120, 5)) * [10, 8, 6, 4, 2]) @ basis + rng.standard_normal((120, d)).astype(np.float32) * 0.01
    red = fit_batches([x.astype(np.float32)], "wide", variance=0.99)
    assert red.k == 5 and red.input_dim == d
    assert red.transform(x[:3]).shape == (3, 5)
