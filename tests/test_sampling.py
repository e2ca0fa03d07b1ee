"""Logit processing equals transformers' processors; filters keep what they promise."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    ClassifierFreeGuidanceLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from musicgen_edu import (
    apply_temperature,
    classifier_free_guidance,
    process_logits,
    sample_tokens,
    top_k_filter,
    top_p_filter,
)

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


# --- the counter-based sampler (GenerationConfig.sampler="counter") ---------------------------
from scipy import stats  # noqa: E402

from musicgen_edu.sampling import counter_uniform, sample_counter  # noqa: E402

_M32 = 0xFFFFFFFF


def _fmix32(h: int) -> int:   # MurmurHash3's finaliser on Python ints, the specification
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def test_counter_uniform_equals_the_integer_specification():
    seeds = [0, 1, 12345, 2**40 + 3, 2**63 - 1]
    ids = torch.tensor([0, 7, 2047]).expand(len(seeds), 4, 3)
    u = counter_uniform(torch.tensor(seeds), 17, 4)
    per_token = counter_uniform(torch.tensor(seeds), 17, 4, ids)
    for b, seed in enumerate(seeds):
        h = _fmix32((seed & _M32) ^ 0x9E3779B9)
        h = _fmix32(h ^ ((seed >> 32) & _M32))
        h = _fmix32(h ^ 17)
        for k in range(4):
            hk = _fmix32(_fmix32(h ^ ((k * 0x632BE5AB) & _M32)))
            assert u[b, k].item() == ((hk >> 9) + 0.5) / 2**23
            for j, token in enumerate([0, 7, 2047]):
                ht = _fmix32(hk ^ token)
                assert per_token[b, k, j].item() == ((ht >> 9) + 0.5) / 2**23


@pytest.mark.parametrize("axis", ["seeds", "steps"])
def test_counter_uniform_is_uniform_and_uncorrelated(axis):
    if axis == "seeds":
        u = counter_uniform(torch.arange(40000), 0, 2).flatten()
    else:
        u = torch.cat([counter_uniform(torch.tensor([7]), s, 2) for s in range(20000)]).flatten()
    assert 0 < u.min() and u.max() < 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]) < 0.03


def test_counter_step_as_tensor_equals_int():
    seeds = torch.tensor([3, 4])
    assert torch.equal(counter_uniform(seeds, 9, 4), counter_uniform(seeds, torch.tensor([9]), 4))


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5), (1.5, 3)])
def test_counter_frequencies_match_softmax_chi_square(temperature, top_k):
    base = torch.tensor([2.0, 1.5, 1.0, 0.2, 0.0, -0.5, -1.0, -3.0])
    logits = process_logits(base, temperature=temperature, top_k=top_k)
    probs = torch.softmax(logits, -1)
    n = 30000
    tokens = sample_counter(logits.view(1, 1, 8).expand(n, 1, 8), torch.arange(n), 0,
                            top_k=top_k)
    counts = torch.bincount(tokens.flatten(), minlength=8).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0                               # filtered: never drawn
    expected = probs[kept].double() / probs[kept].double().sum() * n
    assert stats.chisquare(counts[kept].numpy(), expected.numpy()).pvalue > 1e-3


def test_counter_filtered_tokens_never_drawn_over_steps():
    logits = top_p_filter(top_k_filter(_logits(9, rows=8).view(2, 4, 64), 10), 0.8)
    seeds = torch.tensor([11, 12])
    for step in range(300):
        tokens = sample_counter(logits, seeds, step)
        assert torch.isfinite(logits.gather(-1, tokens[..., None])).all()


def test_counter_is_batch_invariant_and_reproducible():
    logits = _logits(4, rows=12).view(3, 4, 64)
    seeds = torch.tensor([5, 99, 2**40])
    together = sample_counter(logits, seeds, 42)
    alone = torch.cat([sample_counter(logits[i:i + 1], seeds[i:i + 1], 42) for i in range(3)])
    assert torch.equal(together, alone)
    assert torch.equal(together, sample_counter(logits, seeds, 42))        # same run again
    assert not torch.equal(together, sample_counter(logits, seeds, 43))    # the step matters
    assert not torch.equal(together, sample_counter(logits, seeds + 1, 42))  # the seed matters


def test_counter_top_k_candidates_give_the_full_vocabulary_draw():
    """Noise for the k candidates only is the same draw as noise for every token."""
    logits = top_k_filter(_logits(6, rows=12).view(3, 4, 64), 10)
    seeds = torch.tensor([1, 2, 3])
    for step in range(40):
        assert torch.equal(sample_counter(logits, seeds, step, top_k=10),
                           sample_counter(logits, seeds, step))


def test_counter_draw_is_stable_under_tiny_logit_changes():
    """The Gumbel race moves a token only when two noisy scores nearly tie: a perturbation
    of the size of bf16 rounding keeps almost every draw (an inverse CDF keeps 96 % here)."""
    logits = process_logits(_logits(7, rows=2000, vocab=256).view(500, 4, 256), top_k=50)
    noisy = logits + 0.01 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    seeds = torch.arange(500)
    same = (sample_counter(logits, seeds, 3, top_k=50) ==
            sample_counter(noisy, seeds, 3, top_k=50)).float().mean()
    assert same > 0.985, same


def test_counter_one_certain_token_and_rounding_edge():
    logits = torch.full((1, 4, 16), -float("inf"))
    logits[..., 3] = 0.0                                         # all mass on token 3
    for step in range(50):
        assert (sample_counter(logits, torch.tensor([1]), step) == 3).all()


def test_counter_sampler_compiles_to_one_graph():
    """No graph breaks (no .item(), no Python loop over the batch): capturable in a CUDA graph."""
    import torch._dynamo as dynamo

    logits, seeds = _logits(1, rows=8).view(2, 4, 64), torch.tensor([1, 2])
    explained = dynamo.explain(sample_counter)(logits, seeds, torch.tensor([3]))
    assert explained.graph_count == 1 and explained.graph_break_count == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: needs CUDA")
def test_counter_noise_is_the_same_on_cpu_and_gpu():
    seeds = torch.tensor([0, 5, 2**40 + 1])
    cpu = counter_uniform(seeds, 12, 4)
    gpu = counter_uniform(seeds.cuda(), torch.tensor([12], device="cuda"), 4)
    assert torch.equal(cpu, gpu.cpu())


def test_sampling_value_draws_as_draw_tokens_and_compares_by_value():
    import dataclasses

    from musicgen_edu.sampling import Sampling, draw_tokens

    logits = torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(0))    # [2B, K, V]
    knobs = dict(batch=2, guidance_scale=3.0, use_sampling=True, temperature=0.9, top_k=5,
                 top_p=0.0, sampler="counter")
    sampling, seeds = Sampling(**knobs), torch.tensor([1, 2])
    assert torch.equal(sampling.draw(logits, seeds, 4),
                       draw_tokens(logits, seeds=seeds, step=4, **knobs))
    assert sampling == Sampling(**knobs) and hash(sampling) == hash(Sampling(**knobs))
    assert sampling != dataclasses.replace(sampling, top_k=6)           # another graph key
    assert sampling.capturable and not dataclasses.replace(sampling, sampler="reference").capturable
    assert dataclasses.replace(sampling, sampler="reference", use_sampling=False).capturable
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampling.top_k = 1
