"""Lecture 07 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import dataclasses

import pytest
from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture07 import (
    check_greedy_pair,
    check_reproduced,
    check_setting_range,
)

pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def sol():
    return load_solutions("07_studio")


@pytest.fixture
def studio():
    s = mg.Studio(mg.MusicGenerator("debug", device="cpu", progress=False),
                  config=mg.GenerationConfig(duration=0.5, seed=0))
    yield s
    s.wait(60)


@pytest.mark.parametrize("name, low, high", [("temperature", 0, 10), ("top_k", 0, 2048),
                                             ("top_p", 0, 1), ("guidance_scale", 1, 30),
                                             ("duration", 0, 600)])
def test_setting_range(sol, name, low, high):
    passes(check_setting_range(name, sol.solve_setting_range(name)))
    passes(check_setting_range(name, [low, high]))
    fails(check_setting_range(name, None))
    fails(check_setting_range(name, (low, high + 1)))
    fails(check_setting_range(name, (high, low)))
    fails(check_setting_range(name, "0..10"))
    fails(check_setting_range(name, (True, high)) if low == 1 else check_setting_range(name, 5))
    fails(check_setting_range("use_sampling", (0, 1)))


def test_greedy_pair(sol, studio):
    fails(check_greedy_pair(None))
    fails(check_greedy_pair(studio))                                 # no results yet
    studio.generate(use_sampling=True, seed=1)
    studio.generate(use_sampling=True, seed=2)
    fails(check_greedy_pair(studio))                                 # sampled: differ
    studio.generate(use_sampling=False, seed=3)
    studio.generate(use_sampling=False, seed=3)
    fails(check_greedy_pair(studio))                                 # same seed proves nothing
    studio.generate(use_sampling=False, seed=4, guidance_scale=1.0)   # another setting too
    fails(check_greedy_pair(studio))
    passes(check_greedy_pair(sol.solve_greedy_pair(studio, seed=10)))


def test_reproduced(sol, studio):
    studio.generate("dark techno", negative_prompt="drums", temperature=0.8, top_k=30, seed=None)
    studio.generate("calm piano", negative_prompt="", seed=5)
    for index in (0, -1):
        passes(check_reproduced(studio.history[index], sol.solve_reproduced(studio, index)))
    original, other = studio.history
    gen = studio.generator
    fails(check_reproduced(original, None))
    fails(check_reproduced(original, original.tokens))
    fails(check_reproduced(original, other))                         # other seed
    settings = dataclasses.asdict(original.config)
    settings.pop("seed")
    no_negative = gen.generate("dark techno", seeds=original.seeds, **settings)
    fails(check_reproduced(original, no_negative))                   # negative prompt lost
    wrong_temperature = gen.generate("dark techno", negative_prompt="drums",
                                     seeds=original.seeds, **{**settings, "temperature": 1.0})
    failed = check_reproduced(original, wrong_temperature)
    fails(failed)
    assert "temperature" in failed.message
