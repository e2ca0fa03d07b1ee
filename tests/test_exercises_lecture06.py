"""Lecture 06 exercise checks: the solutions pass, plausible wrong answers and None do not."""

import pytest
from conftest import fails, load_solutions, passes

import musicgen_edu as mg
from musicgen_edu.exercises.lecture06 import check_clip_count, check_generate_calls, check_new_clips

PROMPTS = ["calm piano", "fast drums"]
GRID = {"temperature": [0.7, 1.0], "top_k": [50, 250]}
BIGGER = {**GRID, "guidance_scale": [1.0, 3.0]}
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def sol():
    return load_solutions("06_experiments")


def rows_of(axes, seeds, duration=0.2):
    return mg.grid(prompts=PROMPTS, **axes, seed=seeds, duration=duration)


def test_clip_count(sol):
    answer = sol.solve_clip_count(PROMPTS, BIGGER, SEEDS)
    assert answer == 32 == len(rows_of(BIGGER, SEEDS))
    passes(check_clip_count(PROMPTS, BIGGER, SEEDS, answer))
    passes(check_clip_count(PROMPTS, BIGGER, SEEDS, 32.0))
    passes(check_clip_count(PROMPTS, GRID, [5], sol.solve_clip_count(PROMPTS, GRID, [5])))
    assert "replace None" in check_clip_count(PROMPTS, BIGGER, SEEDS, None).message
    for wrong in (16, 2 + 2 + 2 + 2 + 2, 32.5, "32", True):        # one axis short, a sum
        fails(check_clip_count(PROMPTS, BIGGER, SEEDS, wrong))


@pytest.mark.parametrize("batch", [8, 3, 1])
def test_generate_calls(sol, tmp_path, batch):
    runner = mg.BatchRunner("debug", tmp_path, max_batch_size=batch, device="cpu")
    rows = rows_of(BIGGER, SEEDS)
    answer = sol.solve_generate_calls(PROMPTS, BIGGER, SEEDS, batch)
    passes(check_generate_calls(runner, rows, answer))
    assert "replace None" in check_generate_calls(runner, rows, None).message
    if batch > 1:
        fails(check_generate_calls(runner, rows, 32 // batch))      # ignores the groups
    if batch < 4:                                                    # groups of 4 get cut
        groups = check_generate_calls(runner, rows, 8)
        fails(groups)
        assert "groups" in groups.message
    if batch == 3:                                                   # the runner agrees
        table = runner.run(rows_of(GRID, SEEDS))
        assert table.batch.nunique() == sol.solve_generate_calls(PROMPTS, GRID, SEEDS, batch)
        passes(check_generate_calls(runner, rows_of(GRID, SEEDS), table.batch.nunique()))


def test_new_clips(sol, tmp_path):
    runner = mg.BatchRunner("debug", tmp_path, max_batch_size=8, device="cpu", progress=False)
    rows = rows_of(GRID, SEEDS)
    passes(check_new_clips(runner, rows, len(rows)))                 # empty folder: all of them
    runner.run(rows)
    passes(check_new_clips(runner, rows, 0))
    more = rows + rows_of(GRID, 100)
    answer = sol.solve_new_clips(PROMPTS, GRID, [100])
    passes(check_new_clips(runner, more, answer))
    assert "replace None" in check_new_clips(runner, more, None).message
    every = check_new_clips(runner, more, len(more))
    fails(every)
    assert "skips" in every.message
    fails(check_new_clips(runner, more, 0))
    table = runner.run(more)
    assert int((~table.resumed).sum()) == answer
    passes(check_new_clips(runner, more, 0))
