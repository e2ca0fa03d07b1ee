"""Checks for lecture 06 (experiments): clips in a grid, generate calls, what a rerun makes.

The right answers come from the package itself (``mg.grid``, the runner's own row checks and
seed-free grouping, the manifest on disk), so the checks hold for the debug model on a CPU and
for ``facebook/musicgen-small`` on Colab, whatever ``MAX_BATCH_SIZE`` is.
Solutions: ``mg.exercises.solution(6)``.
"""

from __future__ import annotations

import math
import numbers

from ..batch import BatchRunner, grid
from ..batch.manifest import read_records
from .checks import CheckResult, not_yet, result

__all__ = ["check_clip_count", "check_generate_calls", "check_new_clips"]



def _count(answer) -> int | None:
    """The answer as a whole number, or None when it is not one (None, text, 2.5, True)."""
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None
    return int(answer) if float(answer).is_integer() else None


def _groups(runner: BatchRunner, rows) -> list[int]:
    """Sizes of the groups of valid rows that share settings except for the seed."""
    items, _ = runner.parse(rows)
    groups: dict[tuple, int] = {}
    for it in items:
        groups[it.group()] = groups.get(it.group(), 0) + 1
    return list(groups.values())


def check_clip_count(prompts, axes: dict, seeds, answer) -> CheckResult:
    """Exercise 1a: how many clips does ``mg.grid(prompts=..., **axes, seed=seeds)`` make?

    Args:
        prompts: the texts (the lecture's ``prompts``).
        axes: the settings to sweep, e.g. ``{**GRID, "guidance_scale": [1.0, 3.0]}``.
        seeds: the seeds (the lecture's ``seeds``).
        answer: the student's number of clips.
    """
    if answer is None:
        return not_yet("the number of clips (rows) in the grid")
    right = len(grid(prompts=prompts, **axes, seed=seeds))
    sizes = " x ".join(str(len(v)) for v in [prompts, *axes.values(), seeds]
                       if isinstance(v, (list, tuple)))
    return result(_count(answer) == right,
                  f"{right} clips = {sizes}: a grid is every combination, so each new axis "
                  "multiplies the run (and its cost).",
                  "multiply the number of values of every axis: prompts, each setting in the "
                  "grid, and seeds.")


def check_generate_calls(runner: BatchRunner, rows, answer) -> CheckResult:
    """Exercise 1b: how many ``generate`` calls does ``runner.run(rows)`` make from scratch?

    Rows whose settings are equal except for the seed form a group; each group is cut into
    batches of at most ``runner.max_batch_size`` clips.

    Args:
        runner: the lecture's ``mg.BatchRunner`` (its ``max_batch_size`` counts).
        rows: the rows to run, e.g. ``mg.grid(prompts=..., **axes, seed=seeds, ...)``.
        answer: the student's number of generate calls.
    """
    if answer is None:
        return not_yet("the number of generate calls")
    sizes = _groups(runner, rows)
    batch = runner.max_batch_size
    right = sum(math.ceil(n / batch) for n in sizes)
    value = _count(answer)
    if value == len(sizes) and right != len(sizes):
        return result(False, "", f"{value} is the number of groups (settings); a group of "
                      f"{max(sizes)} clips needs more than one call at max_batch_size={batch}.")
    return result(value == right,
                  f"{right} calls: {len(sizes)} groups of settings (rows equal except for the "
                  f"seed) of {sorted(set(sizes))} clips, in batches of at most {batch}.",
                  "group the rows by their settings without the seed (every item in a batch has "
                  "its own seed), then count ceil(group size / runner.max_batch_size) per group.")


def check_new_clips(runner: BatchRunner, rows, answer) -> CheckResult:
    """Exercise 2: how many clips would ``runner.run(rows)`` generate now, after the first run?

    A row is skipped when its item id (a hash of prompt, settings, name and model) is in the
    manifest with status ``"ok"`` and its file exists.

    Args:
        runner: the lecture's ``mg.BatchRunner``, after ``runner.run``.
        rows: the new rows (e.g. the old rows plus one more seed, appended at the end).
        answer: the student's number of clips that would be generated.
    """
    if answer is None:
        return not_yet("the number of clips the run would generate")
    items, _ = runner.parse(rows)
    done = runner.finished(items, read_records(runner.manifest_path))  # what run() skips
    right = sum(it.item not in done for it in items)
    value = _count(answer)
    if value == len(items) and right != len(items):
        return result(False, "", f"{value} is every row; the runner skips the "
                      f"{len(items) - right} items already in manifest.jsonl with status ok.")
    return result(value == right,
                  f"{right} new clips: {len(items) - right} of the {len(items)} rows are already "
                  "in the manifest (same prompt, settings, name and model) and are skipped.",
                  "a row is skipped when its item (prompt, settings, name, model) is finished "
                  "in the manifest; read mg.read_manifest(OUTPUT_DIR) and compare.")
