"""Lecture 04 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import pytest
import torch
from conftest import fails, load_solutions, passes
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen_edu.distributions import first_step_logits
from musicgen_edu.exercises.lecture04 import (
    check_cfg_by_hand,
    check_greedy_token,
    check_nucleus_size,
    check_temperature_for_entropy,
)


@pytest.fixture(scope="module")
def sol():
    return load_solutions("04_sampling_and_cfg")


@pytest.fixture(scope="module")
def first(gen):
    return first_step_logits(gen, "calm lo-fi piano")


@pytest.mark.parametrize("scale", [1.0, 3.0, 7.5])
def test_cfg_by_hand(sol, first, scale):
    passes(check_cfg_by_hand(first, scale, sol.solve_cfg_by_hand(first, scale)))
    passes(check_cfg_by_hand(first, scale, sol.solve_cfg_by_hand(first, scale).numpy()))
    fails(check_cfg_by_hand(first, scale, None))
    fails(check_cfg_by_hand(first, scale, "cond"))
    fails(check_cfg_by_hand(first, scale, sol.solve_cfg_by_hand(first, scale)[0]))  # one codebook
    wrong = first["cond"] + scale * (first["cond"] - first["uncond"])  # cond instead of uncond
    if scale != 1.0:
        fails(check_cfg_by_hand(first, scale, wrong))
        fails(check_cfg_by_hand(first, scale, first["cond"]))  # no guidance


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_greedy_token(sol, first, scale):
    answer = sol.solve_greedy_token(first, scale)
    passes(check_greedy_token(first, scale, answer))
    passes(check_greedy_token(first, scale, torch.tensor(answer)))
    fails(check_greedy_token(first, scale, None))
    fails(check_greedy_token(first, scale, "top"))
    fails(check_greedy_token(first, scale, (answer + 1) % first["cond"].shape[-1]))
    fails(check_greedy_token(first, scale, int(first["cond"][0].argmin())))


def test_greedy_token_needs_guidance(sol, first):
    unguided = int(first["cond"][0].argmax())
    if unguided != sol.solve_greedy_token(first, 3.0):  # the usual mistake, when it differs
        fails(check_greedy_token(first, 3.0, unguided))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), p=st.floats(0.05, 0.95), scale=st.floats(0.5, 6.0))
def test_nucleus_size_solution_matches_top_p_filter(sol, seed, p, scale):
    logits = torch.randn(500, generator=torch.Generator().manual_seed(seed)) * scale
    answer = sol.solve_nucleus_size(logits, p)
    passes(check_nucleus_size(logits, p, answer))
    fails(check_nucleus_size(logits, p, answer + 1))
    if answer > 1:
        fails(check_nucleus_size(logits, p, answer - 1))


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_nucleus_size_on_the_model(sol, first, p):
    logits = first["cond"][0]
    passes(check_nucleus_size(logits, p, sol.solve_nucleus_size(logits, p)))
    fails(check_nucleus_size(logits, p, None))
    fails(check_nucleus_size(logits, p, "many"))
    fails(check_nucleus_size(logits, p, round(p * logits.shape[-1])))  # p of the vocabulary


@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_temperature_for_entropy(sol, first, fraction):
    logits = first["cond"][0]
    answer = sol.solve_temperature_for_entropy(logits, fraction)
    assert 0 < answer < 1
    passes(check_temperature_for_entropy(logits, answer, fraction))
    fails(check_temperature_for_entropy(logits, None, fraction))
    fails(check_temperature_for_entropy(logits, 1.0, fraction))     # T = 1 changes nothing
    fails(check_temperature_for_entropy(logits, 2.0, fraction))     # the wrong direction
    fails(check_temperature_for_entropy(logits, 0.0, fraction))     # out of range
    fails(check_temperature_for_entropy(logits, "cold", fraction))
    fails(check_temperature_for_entropy(logits, True, fraction))
