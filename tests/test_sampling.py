"""Logit processing equals transformers' processors; filters keep what they promise."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (ClassifierFreeGuidanceLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from musicgen_edu import (apply_temperature, classifier_free_guidance, process_logits,
                          sample_tokens, top_k_filter, top_p_filter)

seeds = st.integers(0, 2**31 - 1)


def _logits(seed, rows=6, vocab=64, scale=3.0):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


@settings(max_examples=40, deadline=None)
@given(seed=seeds, k=st.integers(1, 80), p=st.floats(0.01, 0.99), t=st.floats(0.1, 5.0))
def test_filters_equal_transformers(seed, k, p, t):
    x = _logits(seed)
    assert torch.equal(apply_temperature(x, t), TemperatureLogitsWarper(t)(None, x))
    assert torch.equal(top_k_filter(x, k), TopKLogitsWarper(k)(None, x))
    assert torch.equal(top_p_filter(x, p), TopPLogitsWarper(p)(None, x))
    expected = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, TemperatureLogitsWarper(t)(None, x)))
    assert torch.equal(process_logits(x, temperature=t, top_k=k, top_p=p), expected)


@settings(max_examples=20, deadline=None)
@given(seed=seeds, scale=st.floats(1.01, 10.0))
def test_cfg_equals_transformers(seed, scale):
    cond, uncond = _logits(seed), _logits(seed + 1)
    input_ids = torch.zeros(cond.shape[0], 1, dtype=torch.long)  # only its batch size is read
    ref = ClassifierFreeGuidanceLogitsProcessor(scale)(input_ids, torch.cat([cond, uncond]))
    assert torch.equal(classifier_free_guidance(cond, uncond, scale), ref)


@settings(max_examples=30, deadline=None)
@given(seed=seeds, k=st.integers(1, 64))
def test_top_k_keeps_exactly_k_distinct_logits(seed, k):
    kept = torch.isfinite(top_k_filter(_logits(seed), k)).sum(dim=-1)
    assert (kept == k).all()  # random floats have no ties


@settings(max_examples=30, deadline=None)
@given(seed=seeds, p=st.floats(0.05, 0.95))
def test_top_p_keeps_the_smallest_set_with_mass_p(seed, p):
    x = _logits(seed)
    kept = torch.isfinite(top_p_filter(x, p))
    probs = x.softmax(-1)
    for row in range(x.shape[0]):
        mass = probs[row][kept[row]].sum()
        dropped_max = probs[row][~kept[row]].max() if (~kept[row]).any() else 0.0
        kept_min = probs[row][kept[row]].min()
        assert mass >= p - 1e-6
        assert kept_min >= dropped_max  # only the most likely tokens survive


@pytest.mark.parametrize("off", [0.0, 1.0])
def test_top_p_off_values_keep_everything(off):
    x = _logits(0)
    assert torch.equal(top_p_filter(x, off), x)
    assert torch.equal(top_k_filter(x, 0), x)


def test_sampling_per_item_generators_are_reproducible_and_greedy_is_argmax():
    logits = _logits(3, rows=8).view(2, 4, 64)
    draw = lambda: sample_tokens(logits, [torch.Generator().manual_seed(s) for s in (1, 2)])  # noqa: E731
    a, b = draw(), draw()
    assert a.shape == (2, 4) and torch.equal(a, b)
    assert torch.equal(sample_tokens(logits, greedy=True), logits.argmax(-1))


def test_sampling_never_picks_filtered_tokens():
    logits = top_k_filter(_logits(5, rows=4).view(1, 4, 64), 3)
    gens = [torch.Generator().manual_seed(0)]
    for _ in range(50):
        tokens = sample_tokens(logits, gens)
        assert torch.isfinite(logits.gather(-1, tokens[..., None])).all()


def test_sampling_matches_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().view(1, 1, 3).expand(1, 2000, 3).contiguous()
    tokens = sample_tokens(logits, [torch.Generator().manual_seed(0)])
    freq = torch.bincount(tokens.flatten(), minlength=3).float() / tokens.numel()
    assert torch.allclose(freq, probs, atol=0.04)
