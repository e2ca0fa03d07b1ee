"""Lecture 03's exercise checks: the solutions pass, plausible mistakes and None do not."""

import math

import pytest
import torch
from conftest import load_solutions

import musicgen_edu as mg
from musicgen_edu.exercises import CheckResult
from musicgen_edu.exercises.lecture03 import (
    check_grid_columns,
    check_samples_per_frame,
    check_token_bitrate,
    check_undelay_function,
)


@pytest.fixture(scope="module")
def solutions():
    return load_solutions("03_audio_tokens")


@pytest.fixture(scope="module", params=["debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


def passes(check_result) -> bool:
    assert isinstance(check_result, CheckResult)
    assert check_result.message  # right or wrong, the student gets a sentence
    return bool(check_result)


def test_samples_per_frame(model, solutions):
    assert passes(check_samples_per_frame(model, solutions.solve_samples_per_frame(model)))
    assert passes(check_samples_per_frame(model, 640.0)) == (model.sample_rate == 32000)
    for wrong in (None, model.frame_rate, model.sample_rate, [640], "many"):
        assert not passes(check_samples_per_frame(model, wrong))


def test_token_bitrate(model, solutions):
    answer = solutions.solve_token_bitrate(model)
    assert passes(check_token_bitrate(model, answer))
    assert answer == model.num_codebooks * 11 * model.frame_rate  # 2048 codewords = 11 bits
    per_codebook = answer / model.num_codebooks
    for wrong in (None, per_codebook, answer / 1000, model.num_codebooks * 2048 * 50, "fast"):
        assert not passes(check_token_bitrate(model, wrong))
    assert "Not yet" in repr(check_token_bitrate(model, None))


@pytest.mark.parametrize("duration", [1.0, 2.5])
def test_grid_columns(model, solutions, duration):
    answer = solutions.solve_grid_columns(model, duration)
    frames = round(duration * model.frame_rate)
    grid = mg.delay_pattern(torch.zeros(1, model.num_codebooks, frames, dtype=torch.long),
                            model.special_token, model.audio_channels)
    assert answer == grid.shape[-1]
    assert passes(check_grid_columns(model, duration, answer))
    for wrong in (None, frames, frames + model.num_codebooks - 1, answer - 1, math.nan):
        assert not passes(check_grid_columns(model, duration, wrong))


def test_undelay_function(model, solutions):
    assert passes(check_undelay_function(model, solutions.solve_undelay_function(model)))

    def forgot_bos(grid, frames, delays):  # off by one: ignores the start column
        return torch.stack([grid[:, k, d: d + frames] for k, d in enumerate(delays)], dim=1)

    def no_delay(grid, frames, delays):  # ignores the delays altogether
        return grid[:, :, 1: 1 + frames]

    def crashes(grid, frames, delays):
        raise IndexError("oops")

    for wrong in (None, forgot_bos, no_delay, crashes, 42):
        outcome = check_undelay_function(model, wrong)
        assert not passes(outcome)
    assert "IndexError" in check_undelay_function(model, crashes).message
