"""Lecture 00 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import pytest
from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture00 import check_clip_tokens, check_same_seed, check_token_bytes


@pytest.fixture(scope="module")
def sol():
    return load_solutions("00_setup")


@pytest.fixture(scope="module", params=["edu-tiny", "debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


def test_same_seed(sol, gen):
    out = gen.generate("calm piano", duration=0.5, seed=3)
    passes(check_same_seed(out, sol.solve_same_seed(gen, out)))
    assert "replace None" in check_same_seed(out, None).message
    fails(check_same_seed(out, None))
    fails(check_same_seed(out, out))                               # not a second clip
    fails(check_same_seed(out, out.tokens))
    other_seed = check_same_seed(out, gen.generate("calm piano", duration=0.5, seed=4))
    fails(other_seed)
    assert "seed" in other_seed.message
    fails(check_same_seed(out, gen.generate("calm piano", duration=0.4, seed=3)))
    fails(check_same_seed(out, gen.generate("calm piano", duration=0.5, seed=3,
                                            temperature=0.5)))     # same seed, other draw


@pytest.mark.parametrize("seconds", [30.0, 2.5])
def test_clip_tokens(sol, model, seconds):
    answer = sol.solve_clip_tokens(model, seconds)
    passes(check_clip_tokens(model, seconds, answer))
    passes(check_clip_tokens(mg.MusicGenerator(model, progress=False), seconds, answer))
    assert answer == model.num_codebooks * round(seconds * 50)
    assert "replace None" in check_clip_tokens(model, seconds, None).message
    frames = check_clip_tokens(model, seconds, answer // model.num_codebooks)
    fails(frames)
    assert "frames" in frames.message
    for wrong in (answer + 1, seconds * model.sample_rate, str(answer), [answer], True):
        fails(check_clip_tokens(model, seconds, wrong))


def test_token_bytes(sol, model):
    answer = sol.solve_token_bytes(model, 30.0)
    passes(check_token_bytes(model, 30.0, answer))
    width = {256: 8, 2048: 11}[model.config.audio_encoder.codebook_size]   # edu-tiny, debug
    assert answer == model.num_codebooks * 1500 * width / 8
    assert "replace None" in check_token_bytes(model, 30.0, None).message
    bits = check_token_bytes(model, 30.0, answer * 8)
    fails(bits)
    assert "bits" in bits.message
    tokens = sol.solve_clip_tokens(model, 30.0)
    for wrong in (tokens, tokens * 2, tokens * 16 / 8, answer / 1000, "a lot"):
        if wrong != answer:                       # 256 codewords: one token is one byte
            fails(check_token_bytes(model, 30.0, wrong))
