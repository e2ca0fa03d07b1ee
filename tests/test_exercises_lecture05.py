"""Lecture 05 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import pytest
from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture05 import check_bound, check_kv_bytes, check_realtime_steps


@pytest.fixture(scope="module")
def sol():
    return load_solutions("05_latency")


@pytest.fixture(scope="module", params=["debug", "debug-stereo"])
def model(request):
    return mg.load_model(request.param, device="cpu")


@pytest.mark.parametrize("seconds", [30.0, 2.0])
def test_realtime_steps(sol, model, seconds):
    answer = sol.solve_realtime_steps(model, seconds)
    delay = max(mg.codebook_delays(model.num_codebooks, model.audio_channels))
    assert answer == (seconds * 50 + delay) / seconds
    passes(check_realtime_steps(model, seconds, answer))
    passes(check_realtime_steps(mg.MusicGenerator(model, progress=False), seconds, answer))
    assert "replace None" in check_realtime_steps(model, seconds, None).message
    frame_rate = check_realtime_steps(model, seconds, model.frame_rate)
    fails(frame_rate)
    assert "delay" in frame_rate.message
    for wrong in (seconds * 50 + delay, 1 / answer, str(answer), [answer]):
        fails(check_realtime_steps(model, seconds, wrong))


@pytest.mark.parametrize("batch", [1, 2])
def test_kv_bytes(sol, model, batch):
    answer = sol.solve_kv_bytes(model, batch, 750)
    passes(check_kv_bytes(model, batch, 750, answer))
    assert answer == mg.decode_bound(model, batch_size=batch, cache_len=750,
                                     bandwidth_gbs=1)["kv_bytes"]
    assert "replace None" in check_kv_bytes(model, batch, 750, None).message
    no_cfg = check_kv_bytes(model, batch, 750, answer // 2)
    fails(no_cfg)
    assert "guidance" in no_cfg.message
    for wrong in (answer + 4, answer * 2, answer / 4, "big"):       # fp32 -> bytes, not bits
        fails(check_kv_bytes(model, batch, 750, wrong))


def test_bound(sol, model):
    answer = sol.solve_bound(model, 1, 750, 3350)
    passes(check_bound(model, 1, 750, 3350, answer))
    bound = mg.decode_bound(model, cache_len=750, bandwidth_gbs=3350)
    assert answer == pytest.approx(bound["bound_steps_per_s"])
    assert "replace None" in check_bound(model, 1, 750, 3350, None).message
    for units in (1 / answer, answer / 1e9):
        wrong = check_bound(model, 1, 750, 3350, units)
        fails(wrong)
        assert "units" in wrong.message
    weights_only = 3350e9 / bound["weight_bytes"]                 # forgot the KV cache
    fails(check_bound(model, 1, 750, 3350, weights_only))
    fails(check_bound(model, 1, 750, 3350, sol.solve_bound(model, 4, 750, 3350)))
