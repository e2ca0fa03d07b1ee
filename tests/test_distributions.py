"""distributions.py: the lecture-04 view of one decoder step is the generator's own step."""

import math

import matplotlib.axes
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.distributions import (
    STAGES,
    entropy,
    filter_steps,
    first_step_logits,
    plot_distribution,
    plot_filter_steps,
    step_logits,
    token_diversity,
)

PROMPT = "calm lo-fi piano"
seeds = st.integers(0, 2**31 - 1)


def _random_logits(seed, rows=3, vocab=257, scale=3.0):
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture(scope="module")
def first(gen):
    return first_step_logits(gen, PROMPT)


# ------------------------------------------------------------------ logits of a decoder step

def test_first_step_logits_equal_a_direct_backend_call(any_gen):
    model = any_gen.model
    got = first_step_logits(any_gen, PROMPT, negative_prompt="noise")
    cond = any_gen.backend.encode_text([PROMPT, "noise"])
    bos = torch.full((1, model.num_codebooks, 1), model.special_token)
    direct = any_gen.backend.step(bos.repeat(2, 1, 1), any_gen.backend.start(cond))
    assert set(got) == {"cond", "uncond"}
    assert got["cond"].shape == (model.num_codebooks, direct.shape[-1])
    assert torch.equal(got["cond"], direct[0]) and torch.equal(got["uncond"], direct[1])
    assert not torch.equal(got["cond"], got["uncond"])  # the prompt changes the logits


def test_first_step_logits_accept_a_loaded_model(gen, first):
    assert torch.equal(first_step_logits(gen.model, PROMPT)["cond"], first["cond"])


def test_first_step_logits_reject_other_objects():
    with pytest.raises(mg.ConfigError, match="MusicGenerator"):
        first_step_logits("debug", PROMPT)


def _delay0_codebooks(model):
    delays = mg.codebook_delays(model.num_codebooks, model.audio_channels)
    return [k for k, d in enumerate(delays) if d == 0]


@settings(max_examples=5, deadline=None)
@given(seed=seeds, top_k=st.sampled_from([0, 1, 20, 250]), top_p=st.sampled_from([0.0, 0.5, 0.9]),
       temperature=st.sampled_from([0.5, 1.0, 1.7]), scale=st.sampled_from([1.0, 3.0]),
       negative=st.sampled_from([None, "harsh noise"]))
def test_sampling_the_processed_logits_reproduces_the_generators_first_tokens(
        any_gen, seed, top_k, top_p, temperature, scale, negative):
    """Same functions, same order, same RNG -> the generator's first token column, exactly."""
    model = any_gen.model
    settings_ = dict(temperature=temperature, top_k=top_k, top_p=top_p, guidance_scale=scale)
    out = any_gen.generate(PROMPT, negative_prompt=negative, seed=seed,
                           duration=1 / model.frame_rate, **settings_)
    steps = filter_steps(first_step_logits(any_gen, PROMPT, negative), **settings_)
    if scale == 1.0:  # without CFG the generator runs only the cond row: same up to rounding
        cond = first_step_logits(any_gen, PROMPT, negative)["cond"]
        assert torch.allclose(steps["cfg"], cond)
    tokens = mg.sample_counter(steps["top_p"][None], torch.tensor([seed]), 0)[0]   # [K]
    rng = torch.Generator(device=model.device).manual_seed(seed)
    reference = any_gen.generate(PROMPT, negative_prompt=negative, seed=seed, sampler="reference",
                                 duration=1 / model.frame_rate, **settings_)
    by_rng = mg.sample_tokens(steps["top_p"][None], [rng])[0]          # [K]
    for k in _delay0_codebooks(model):  # the codebooks the first step fills
        assert tokens[k].item() == out.tokens[0, k, 0].item()
        assert by_rng[k].item() == reference.tokens[0, k, 0].item()


def test_greedy_first_token_is_the_argmax_of_the_guided_logits(gen, first):
    out = gen.generate(PROMPT, duration=1 / gen.model.frame_rate, use_sampling=False,
                       guidance_scale=3.0)
    guided = mg.classifier_free_guidance(first["cond"], first["uncond"], 3.0)
    assert out.tokens[0, 0, 0].item() == guided[0].argmax().item()


def test_step_logits_at_the_bos_column_are_the_first_step(gen, first):
    bos = torch.full((gen.model.num_codebooks, 1), gen.model.special_token)
    assert torch.equal(step_logits(gen, PROMPT, bos)["cond"], first["cond"])


def test_step_logits_of_later_columns_reproduce_greedy_generation(gen):
    """Column c of a greedy grid is the argmax of the guided logits after columns < c."""
    model = gen.model
    out = gen.generate(PROMPT, duration=6 / model.frame_rate, use_sampling=False)
    grid = mg.delay_pattern(out.tokens, model.special_token)             # [1, K, F + D + 1]
    for c in range(2, grid.shape[-1]):
        step = step_logits(gen, PROMPT, grid[..., :c])
        guided = mg.classifier_free_guidance(step["cond"], step["uncond"], 3.0)
        for k in range(model.num_codebooks):
            if grid[0, k, c] != model.special_token:
                assert guided[k].argmax().item() == grid[0, k, c].item(), (c, k)


@pytest.mark.parametrize("bad", [torch.zeros(3, 1, dtype=torch.long),        # wrong K
                                 torch.full((4, 2), -1),                       # UNKNOWN holes
                                 torch.zeros(4, 0, dtype=torch.long)])         # no columns
def test_step_logits_reject_bad_grids(gen, bad):
    with pytest.raises(mg.ConfigError, match="grid"):
        step_logits(gen, PROMPT, bad)


# ------------------------------------------------------------------ entropy

@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(1, 4096), value=st.floats(-50, 50))
def test_entropy_of_a_uniform_distribution_is_log_v(vocab, value):
    assert entropy(torch.full((vocab,), value)).item() == pytest.approx(math.log(vocab), abs=1e-4)


@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(2, 512), data=st.data())
def test_entropy_ignores_filtered_tokens(vocab, data):
    kept = data.draw(st.integers(1, vocab))
    logits = torch.full((vocab,), -float("inf"))
    logits[:kept] = 0.0
    assert entropy(logits).item() == pytest.approx(math.log(kept), abs=1e-4)  # 0 when kept = 1
    assert torch.isfinite(entropy(logits))


def test_entropy_of_the_model_logits_is_at_most_log_v(first):
    h = entropy(first["cond"])
    assert h.shape == first["cond"].shape[:1]
    assert ((h > 0) & (h <= math.log(first["cond"].shape[-1]) + 1e-4)).all()


@settings(max_examples=30, deadline=None)
@given(seed=seeds, low=st.floats(0.05, 5.0), factor=st.floats(1.01, 2.0))
def test_entropy_drops_with_lower_temperature(seed, low, factor):
    x = _random_logits(seed)
    cold = entropy(mg.apply_temperature(x, low))
    warm = entropy(mg.apply_temperature(x, low * factor))
    assert (cold <= warm + 1e-4).all()


@settings(max_examples=30, deadline=None)
@given(seed=seeds, small=st.integers(1, 256), extra=st.integers(1, 200))
def test_entropy_drops_with_smaller_top_k(seed, small, extra):
    x = _random_logits(seed)
    assert (entropy(mg.top_k_filter(x, small))
            <= entropy(mg.top_k_filter(x, small + extra)) + 1e-4).all()


def test_entropy_drops_on_the_model_logits(first):
    temps = [entropy(mg.apply_temperature(first["cond"], t))[0].item() for t in (0.3, 0.7, 1, 2)]
    ks = [entropy(mg.top_k_filter(first["cond"], k))[0].item() for k in (1, 10, 100, 1000)]
    assert temps == sorted(temps) and ks == sorted(ks) and ks[0] == pytest.approx(0, abs=1e-6)


# ------------------------------------------------------------------ filter_steps

@settings(max_examples=25, deadline=None)
@given(temperature=st.floats(0.1, 3.0), top_k=st.integers(0, 2048), top_p=st.floats(0.0, 1.0),
       scale=st.floats(1.0, 10.0))
def test_filter_steps_end_with_what_the_generator_samples_from(first, temperature, top_k, top_p,
                                                               scale):
    steps = filter_steps(first["cond"], temperature, top_k, top_p, scale, uncond=first["uncond"])
    assert tuple(steps) == STAGES
    guided = (mg.classifier_free_guidance(first["cond"], first["uncond"], scale) if scale > 1
              else first["cond"])
    expected = mg.process_logits(guided, temperature=temperature, top_k=top_k, top_p=top_p)
    assert torch.equal(steps["top_p"], expected)
    assert torch.equal(steps["logits"], first["cond"])
    assert torch.equal(steps["cfg"], guided)
    # each filter only removes tokens, never brings one back
    finite = [torch.isfinite(s).sum().item() for s in steps.values()]
    assert finite == sorted(finite, reverse=True)


def test_filter_steps_take_the_first_step_dict(first):
    a = filter_steps(first, 0.7, 50, 0.9, 3.0)
    b = filter_steps(first["cond"], 0.7, 50, 0.9, 3.0, uncond=first["uncond"])
    assert all(torch.equal(a[s], b[s]) for s in STAGES)
    assert (torch.isfinite(a["top_k"]).sum(-1) == 50).all()


def test_filter_steps_validate_like_generation_config(first):
    with pytest.raises(mg.ConfigError, match="uncond"):
        filter_steps(first["cond"], guidance_scale=3.0)
    with pytest.raises(mg.ConfigError, match="temperature"):
        filter_steps(first, temperature=0.0)
    with pytest.raises(mg.ConfigError, match="top_p"):
        filter_steps(first, top_p=1.5)


# ------------------------------------------------------------------ token_diversity

@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=st.integers(1, 5))
def test_token_diversity_of_identical_runs_is_zero(seed, n):
    run = torch.randint(0, 2048, (4, 30), generator=torch.Generator().manual_seed(seed))
    div = token_diversity([run] * n)
    assert div["pairwise_difference"] == 0.0 and div["runs"] == n
    assert div["distinct_per_codebook"] == [len(row.unique()) for row in run]


def test_token_diversity_counts_differences():
    a = torch.zeros(2, 4, dtype=torch.long)
    b = a.clone()
    b[0, :2] = 1                                   # 2 of 8 positions differ
    div = token_diversity(torch.stack([a, b]))
    assert div["pairwise_difference"] == pytest.approx(0.25)
    assert div["distinct_per_codebook"] == [2, 1]
    assert div["distinct_per_run"] == pytest.approx((1 + 1 + 2 + 1) / 4)
    assert token_diversity([a[None], b[None]]) == div   # [1, K, S] items work too


def test_token_diversity_greedy_is_zero_and_sampling_is_not(gen):
    kw = dict(duration=0.5, seeds=[1, 2, 3])
    greedy = gen.generate([PROMPT] * 3, use_sampling=False, **kw)
    sampled = gen.generate([PROMPT] * 3, **kw)
    assert token_diversity(greedy.tokens)["pairwise_difference"] == 0.0
    assert token_diversity(sampled.tokens)["pairwise_difference"] > 0.0


def test_token_diversity_rejects_mismatched_runs():
    with pytest.raises(mg.ConfigError, match="shape"):
        token_diversity([torch.zeros(4, 3), torch.zeros(4, 5)])
    with pytest.raises(mg.ConfigError):
        token_diversity([])


# ------------------------------------------------------------------ plots

def test_plot_distribution_returns_axes_with_zero_bars_for_filtered_tokens(first):
    ax = plot_distribution(mg.top_k_filter(first["cond"][0], 5), top=20, title="top-5")
    assert isinstance(ax, matplotlib.axes.Axes)
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 20 and sum(h > 0 for h in heights) == 5
    assert "5 kept" in ax.get_title() and "top-5" in ax.get_title()
    with pytest.raises(mg.ConfigError, match="logits\\[0\\]"):
        plot_distribution(first["cond"])


def test_plot_filter_steps_draws_one_panel_per_stage(first):
    axes = plot_filter_steps(filter_steps(first, 0.7, 50, 0.9, 3.0), top=30)
    assert len(axes) == len(STAGES)
    assert all(isinstance(ax, matplotlib.axes.Axes) for ax in axes)
    assert "50 kept" in axes[3].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")
