"""Solutions to the exercises of lecture 06 (experiments: grids, batches, resumable runs).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. They count with the same rules the runner uses.
"""

import math


def solve_clip_count(prompts, axes, seeds):
    """Exercise 1a: a grid is every combination, so the sizes of the axes multiply."""
    count = len(prompts) * len(seeds)
    for values in axes.values():
        count *= len(values)
    return count


def solve_generate_calls(prompts, axes, seeds, max_batch_size):
    """Exercise 1b: one group per setting (rows equal except for the seed), cut into batches."""
    settings = solve_clip_count([None], axes, [None])          # combinations of the settings
    per_setting = len(prompts) * len(seeds)                    # clips that share a setting
    return settings * math.ceil(per_setting / max_batch_size)


def solve_new_clips(prompts, axes, new_seeds):
    """Exercise 2: rows appended with new seeds are new items; the old rows are all skipped."""
    return solve_clip_count(prompts, axes, new_seeds)
