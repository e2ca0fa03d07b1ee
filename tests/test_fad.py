"""Fréchet Audio Distance, diversity and embedding backends (metrics/fad.py).

Known answers: for diagonal covariances the Fréchet distance has the closed form
``|mu1 - mu2|^2 + sum(s1 + s2 - 2 sqrt(s1 s2))``; identical sets give 0; and the general case
is checked against a direct scipy computation and an independent eigenvalue formula
(``tr sqrtm(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1)))``).
"""

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import linalg

from musicgen_edu.errors import ConfigError, ModelLoadError
from musicgen_edu.metrics.fad import (
    diversity,
    embedding_stats,
    encodec_embeddings,
    fad,
    frechet_distance,
    vggish_embeddings,
)


def closed_form_diagonal(mu1, s1, mu2, s2):
    return float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum())


def eigen_form(mu1, sigma1, mu2, sigma2):
    """An independent route: sqrt(S1) S2 sqrt(S1) is symmetric PSD with the same spectrum."""
    root = linalg.sqrtm(sigma1).real
    eig = np.clip(np.linalg.eigvalsh(root @ sigma2 @ root), 0, None)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * np.sqrt(eig).sum())


# ------------------------------------------------------------------ known answers

def test_worked_example_from_the_docstring():
    d = frechet_distance([0, 0], np.diag([1, 4]), [3, 4], np.diag([4, 1]))
    assert d == pytest.approx(27.0, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(*[arrays(np.float64, 4, elements=st.floats(lo, hi)) for lo, hi in
         [(-5, 5), (0.01, 9), (-5, 5), (0.01, 9)]])  # mu1, s1, mu2, s2
def test_diagonal_gaussians_match_the_closed_form(mu1, s1, mu2, s2):
    d = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert d == pytest.approx(closed_form_diagonal(mu1, s1, mu2, s2), rel=1e-7, abs=1e-8)


def test_sampled_gaussians_approach_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal([0, 1, 2], [1, 2, 3], size=(20000, 3))
    b = rng.normal([1, 1, 0], [2, 2, 1], size=(20000, 3))
    expected = closed_form_diagonal(np.array([0, 1, 2]), np.array([1, 4, 9]),
                                    np.array([1, 1, 0]), np.array([4, 4, 1]))  # 1+4 + 1+0+4 = 10
    assert fad(a, b) == pytest.approx(expected, rel=0.05)


def test_matches_scipy_directly_on_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)), rng.normal(size=(40, 6)) + 1
    (mu1, s1), (mu2, s2) = embedding_stats(a), embedding_stats(b)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert fad(a, b) == pytest.approx(direct, rel=1e-9)
    assert fad(a, b) == pytest.approx(eigen_form(mu1, s1, mu2, s2), rel=1e-6)
    np.testing.assert_allclose(s1, np.cov(a.T))          # unbiased, rows are samples


def test_identical_sets_give_zero_and_near_singular_covariances_work():
    x = np.random.default_rng(2).normal(size=(30, 5))
    assert fad(x, x) == pytest.approx(0.0, abs=1e-8)
    few = np.random.default_rng(3).normal(size=(4, 16))    # N < D: singular covariances
    other = few + 0.5
    value = fad(few, other)
    assert np.isfinite(value) and value >= 0
    assert fad(few, few) == pytest.approx(0.0, abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(1, 4), st.integers(0, 10_000))
def test_fad_is_non_negative_symmetric_and_zero_on_itself(n, m, d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * rng.uniform(0.1, 3)
    b = rng.normal(size=(m, d)) + rng.normal(size=d)
    ab, ba = fad(a, b), fad(b, a)
    assert ab >= 0 and ba >= 0
    assert ab == pytest.approx(ba, rel=1e-5, abs=1e-6)
    assert fad(a, a) == pytest.approx(0.0, abs=1e-6 * (1 + np.abs(a).max() ** 2))


def test_inputs_are_checked():
    with pytest.raises(ConfigError, match="N >= 2"):
        fad(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="same model"):
        fad(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="finite"):
        fad(np.full((4, 3), np.nan), np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="shapes disagree"):
        frechet_distance([0, 0], np.eye(2), [0, 0, 0], np.eye(3))


# ------------------------------------------------------------------ diversity

def test_diversity_known_values():
    square = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])   # 4 unit vectors, 90 deg apart
    # cosine distances: 4 pairs at 90 deg (1.0) and 2 opposite pairs (2.0) -> 8 / 6
    assert diversity(square) == pytest.approx(8 / 6)
    assert diversity(square, "euclidean") == pytest.approx((4 * np.sqrt(2) + 2 * 2) / 6)
    assert diversity(np.ones((3, 5))) == pytest.approx(0.0, abs=1e-12)   # identical clips
    assert diversity(torch.tensor([[1.0, 0], [2.0, 0]])) == pytest.approx(0.0)  # scale-free
    with pytest.raises(ConfigError, match="metric"):
        diversity(square, "manhattan")


# ------------------------------------------------------------------ embedding backends

def test_encodec_embeddings(gen):
    out = gen.generate(["a", "b"], duration=0.5, seed=0)
    emb = encodec_embeddings(gen, out)
    width = gen.model.config.audio_encoder.hidden_size
    assert emb.shape == (2, width) and np.isfinite(emb).all()
    frames = encodec_embeddings(gen.model, out, per_frame=True)
    assert frames.shape == (2 * 25, width)                  # 50 frames/s x 0.5 s per clip
    np.testing.assert_allclose(frames[:25].mean(0), emb[0], rtol=1e-6, atol=1e-6)
    at_16k = encodec_embeddings(gen.model, out.wav[0, 0, ::2].numpy(), 16000)  # resampled
    assert at_16k.shape == (1, width)
    assert fad(frames[:25], frames[25:]) > 0
    with pytest.raises(ConfigError, match="MusicGenModel"):
        encodec_embeddings("debug", out)


@pytest.mark.skipif(importlib.util.find_spec("torchvggish") is not None,
                    reason="torchvggish is installed: the error path does not apply")
def test_vggish_without_the_package_says_what_to_install():
    with pytest.raises(ModelLoadError, match="pip install torchvggish"):
        vggish_embeddings(np.zeros(16000, np.float32), 16000)
