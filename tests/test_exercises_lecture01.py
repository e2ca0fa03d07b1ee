"""Lecture 01 exercise checks: every solution passes, plausible wrong answers and None fail."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import failed, load_solutions

import musicgen_edu as mg
from musicgen_edu.exercises.lecture01 import (
    check_decoder_steps,
    check_rtf,
    check_token_shape,
    check_wav_shape,
)

sol = load_solutions("01_first_generation")


@pytest.fixture(scope="module", params=["edu-tiny", "debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


@pytest.mark.parametrize("duration", [0.5, 1.0, 8.0, 30.0])
def test_shape_solutions_pass(model, duration):
    assert check_token_shape(model, duration, sol.solve_token_shape(model, duration))
    assert check_wav_shape(model, duration, sol.solve_wav_shape(model, duration))
    assert check_decoder_steps(model, duration, sol.solve_decoder_steps(model, duration))


def test_shapes_match_a_real_generation(model):
    out = mg.MusicGenerator(model, progress=False).generate("piano", duration=0.2, seed=0)
    assert check_token_shape(model, 0.2, out.tokens.shape)   # torch.Size works as an answer
    assert check_wav_shape(model, 0.2, list(out.wav.shape))  # so does a list
    assert check_decoder_steps(model, 0.2, out.timings["steps"])
    assert check_rtf(out, sol.solve_rtf(out))


def test_token_shape_wrong_answers(model):
    k, frames = model.num_codebooks, round(8.0 * model.frame_rate)
    assert failed(check_token_shape(model, 8.0, None))
    assert failed(check_token_shape(model, 8.0, "1, 4, 400"))
    assert failed(check_token_shape(model, 8.0, (1, k, 8 * model.sample_rate)))  # samples
    assert failed(check_token_shape(model, 8.0, (1, k + 1, frames)))
    assert failed(check_token_shape(model, 8.0, (1, k, frames, 1)))
    missing_batch = check_token_shape(model, 8.0, (k, frames))
    assert failed(missing_batch) and "batch" in missing_batch.message
    assert check_token_shape(model, 8.0, np.array([1, k, frames]))       # numpy ints are fine


def test_wav_shape_wrong_answers(model):
    right = sol.solve_wav_shape(model, 2.0)
    assert failed(check_wav_shape(model, 2.0, None))
    assert failed(check_wav_shape(model, 2.0, right[1:]))
    assert failed(check_wav_shape(model, 2.0, (1, 3 - model.audio_channels, right[2])))
    assert failed(check_wav_shape(model, 2.0, (1, model.audio_channels, 2 * model.frame_rate)))


def test_decoder_steps_wrong_answers(model):
    frames = round(4.0 * model.frame_rate)
    assert failed(check_decoder_steps(model, 4.0, None))
    just_frames = check_decoder_steps(model, 4.0, frames)
    assert failed(just_frames) and "frames only" in just_frames.message
    assert failed(check_decoder_steps(model, 4.0, frames + model.num_codebooks))
    assert failed(check_decoder_steps(model, 4.0, float(sol.solve_decoder_steps(model, 4.0)) + 0.5))
    assert failed(check_decoder_steps(model, 4.0, True))


def test_stereo_delays_are_shared_in_pairs():
    stereo = mg.load_model("debug-stereo", device="cpu")
    steps = sol.solve_decoder_steps(stereo, 1.0)
    assert steps == stereo.frame_rate + stereo.num_codebooks // 2 - 1
    assert failed(check_decoder_steps(stereo, 1.0, stereo.frame_rate + stereo.num_codebooks - 1))


def test_rtf_check():
    out = SimpleNamespace(timings={"total_s": 3.0}, duration=2.0)
    assert check_rtf(out, sol.solve_rtf(out))
    assert check_rtf(out, 1.5) and check_rtf(out, 1.505)                 # 1% slack
    assert check_rtf(out, torch.tensor(1.5).item())
    upside_down = check_rtf(out, 2.0 / 3.0)
    assert failed(upside_down) and "Upside down" in upside_down.message
    for wrong in (None, "1.5", 3.0, 1.6, float("nan")):
        assert failed(check_rtf(out, wrong))
