"""Lecture 08 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import numpy as np
import pytest
from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture08 import (
    check_embedding_rows,
    check_fad,
    check_sine_amplitude,
)


@pytest.fixture(scope="module")
def sol():
    return load_solutions("08_evaluation")


@pytest.fixture(scope="module", params=["debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


@pytest.mark.parametrize("target", [-23.0, -14.0, -30.0])
def test_sine_amplitude(sol, target):
    answer = sol.solve_sine_amplitude(target)
    sr = 32000
    t = np.arange(4 * sr) / sr
    assert mg.loudness(answer * np.sin(2 * np.pi * 1000 * t), sr) == pytest.approx(target, abs=0.25)
    passes(check_sine_amplitude(target, answer))
    passes(check_sine_amplitude(target, answer * 1.01))              # 0.09 dB: a rounded answer
    assert "replace None" in check_sine_amplitude(target, None).message
    uncalibrated = check_sine_amplitude(target, 10 ** (target / 20))   # full scale taken as 0 LUFS
    fails(uncalibrated)
    assert "-3.01" in uncalibrated.message
    in_db = check_sine_amplitude(target, target)
    fails(in_db)
    assert "10 ** (dB / 20)" in in_db.message
    for wrong in (10 ** ((target + 3.01) / 10), 2 * answer, answer / 2, 1.5, str(answer), [answer]):
        fails(check_sine_amplitude(target, wrong))


@pytest.mark.parametrize("mu_a, var_a, mu_b, var_b", [
    ([1, 1], [1, 9], [2, 3], [4, 1]),                 # the lecture's exercise: 5 + 5 = 10
    ([0, 0], [1, 4], [3, 4], [4, 1]),                 # the lecture's worked example: 27
    ([0.5, -1, 2], [0.25, 2, 3], [1, 1, 1], [1, 0.5, 3])])
def test_fad(sol, mu_a, var_a, mu_b, var_b):
    cov_a, cov_b = np.diag(var_a), np.diag(var_b)
    answer = sol.solve_fad(mu_a, var_a, mu_b, var_b)
    assert answer == pytest.approx(mg.frechet_distance(mu_a, cov_a, mu_b, cov_b), abs=1e-9)
    passes(check_fad(mu_a, cov_a, mu_b, cov_b, answer))
    assert "replace None" in check_fad(mu_a, cov_a, mu_b, cov_b, None).message
    means = float(np.sum((np.array(mu_a) - np.array(mu_b)) ** 2))
    only_means = check_fad(mu_a, cov_a, mu_b, cov_b, means)
    fails(only_means)
    assert "mean term" in only_means.message
    rooted = check_fad(mu_a, cov_a, mu_b, cov_b, answer ** 0.5)
    fails(rooted)
    assert "square root" in rooted.message
    for wrong in (answer + 0.5, -answer, str(answer), [answer]):
        fails(check_fad(mu_a, cov_a, mu_b, cov_b, wrong))


def test_fad_of_the_exercise_is_ten(sol):
    assert sol.solve_fad([1, 1], [1, 9], [2, 3], [4, 1]) == pytest.approx(10)


@pytest.mark.parametrize("num_clips, duration", [(3, 1.0), (2, 0.5)])
def test_embedding_rows(sol, model, num_clips, duration):
    answer = sol.solve_embedding_rows(model, num_clips, duration)
    clips = torch_clips(model, num_clips, duration)                  # what generate makes
    assert answer == mg.encodec_embeddings(model, clips, model.sample_rate, per_frame=True).shape[0]
    passes(check_embedding_rows(model, num_clips, duration, answer))
    passes(check_embedding_rows(mg.MusicGenerator(model, progress=False), num_clips, duration,
                                answer))
    assert "replace None" in check_embedding_rows(model, num_clips, duration, None).message
    per_clip = check_embedding_rows(model, num_clips, duration, num_clips)
    fails(per_clip)
    assert "per_frame" in per_clip.message
    one_clip = check_embedding_rows(model, num_clips, duration, answer // num_clips)
    fails(one_clip)
    assert f"the set has {num_clips}" in one_clip.message
    for wrong in (num_clips * duration * model.sample_rate, answer + 1, str(answer)):
        fails(check_embedding_rows(model, num_clips, duration, wrong))


def torch_clips(model, num_clips, duration):
    """Noise as long as generate's clips: round(duration x frame_rate) frames of audio."""
    samples = round(duration * model.frame_rate) * model.sample_rate // model.frame_rate
    rng = np.random.default_rng(0)
    return 0.1 * rng.standard_normal((num_clips, model.audio_channels, samples)).astype(np.float32)
