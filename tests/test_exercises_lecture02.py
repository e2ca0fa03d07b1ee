"""Lecture 02 exercise checks: every solution passes, plausible wrong answers and None fail."""

from __future__ import annotations

import pytest
from conftest import failed, load_solutions

import musicgen_edu as mg
from musicgen_edu.exercises.lecture02 import (
    check_cfg_rows,
    check_embedding_shape,
    check_num_text_tokens,
    check_padding,
)

PROMPTS = ["lo-fi", "calm lo-fi piano with soft drums", "epic orchestra"]


sol = load_solutions("02_prompts")


@pytest.fixture(scope="module", params=["debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


@pytest.mark.parametrize("prompt", ["lo-fi", "calm lo-fi piano", "café ☕"])
def test_num_text_tokens(model, prompt):
    right = sol.solve_num_text_tokens(model, prompt)
    assert check_num_text_tokens(model, prompt, right)
    assert failed(check_num_text_tokens(model, prompt, None))
    assert failed(check_num_text_tokens(model, prompt, len(prompt.split())))  # words, not tokens
    assert failed(check_num_text_tokens(model, prompt, float(right)))
    one_short = check_num_text_tokens(model, prompt, right - 1)
    assert failed(one_short) and "</s>" in one_short.message


def test_embedding_shape(model):
    right = sol.solve_embedding_shape(model, PROMPTS)
    assert check_embedding_shape(model, PROMPTS, right)
    assert check_embedding_shape(model, PROMPTS, list(right))
    assert failed(check_embedding_shape(model, PROMPTS, None))
    assert failed(check_embedding_shape(model, PROMPTS, "3, 33, 64"))
    t5_width = (right[0], right[1], model.config.text_encoder.hidden_size)
    wrong_width = check_embedding_shape(model, PROMPTS, t5_width)
    assert failed(wrong_width) and "projection" in wrong_width.message
    shortest = min(len(model.tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert failed(check_embedding_shape(model, PROMPTS, (right[0], shortest, right[2])))
    assert failed(check_embedding_shape(model, PROMPTS, right[1:]))


def test_padding(model):
    right = sol.solve_padding(model, PROMPTS)
    assert right > 0 and check_padding(model, PROMPTS, right)
    assert check_padding(model, ["same", "same"], 0)
    assert failed(check_padding(model, PROMPTS, None))
    assert failed(check_padding(model, PROMPTS, 0))
    assert failed(check_padding(model, PROMPTS, right + 1))


@pytest.mark.parametrize("num_prompts, scale", [(1, 3.0), (4, 3.0), (2, 1.0), (3, 1.5)])
def test_cfg_rows(num_prompts, scale):
    right = sol.solve_cfg_rows(num_prompts, scale)
    assert check_cfg_rows(num_prompts, scale, right)
    assert failed(check_cfg_rows(num_prompts, scale, None))
    other = num_prompts if right == 2 * num_prompts else 2 * num_prompts
    assert failed(check_cfg_rows(num_prompts, scale, other))


def test_cfg_rows_match_the_generator():
    """The check's rule is what the generator does: count the rows the backend is fed."""
    gen = mg.MusicGenerator("debug", device="cpu", progress=False)
    rows = []
    step = gen.backend.step
    gen.backend.step = lambda tokens, state: rows.append(tokens.shape[0]) or step(tokens, state)
    try:
        for scale in (3.0, 1.0):
            rows.clear()
            gen.generate(["a", "b"], duration=0.04, seed=0, guidance_scale=scale)
            assert set(rows) == {sol.solve_cfg_rows(2, scale)}
    finally:
        del gen.backend.step
