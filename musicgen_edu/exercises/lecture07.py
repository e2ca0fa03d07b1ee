"""Checks for lecture 07 (the studio): where the sliders come from, greedy vs seeds, replay.

The right answers come from the package itself (GenerationConfig's field metadata, the tokens
the studio recorded), so the checks hold for edu-tiny and the debug models on a CPU and for
``facebook/musicgen-small`` on Colab. Solutions: ``mg.exercises.solution(7)``.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch

from ..generation import Generation, GenerationConfig
from .checks import CheckResult, not_yet, result

__all__ = ["check_setting_range", "check_greedy_pair", "check_reproduced"]



def check_setting_range(name: str, answer) -> CheckResult:
    """Exercise 1: the allowed ``(low, high)`` of a GenerationConfig field, read from its metadata.

    Args:
        name: a numeric GenerationConfig field, e.g. ``"guidance_scale"``.
        answer: the student's ``(low, high)`` pair.
    """
    meta = {f.name: f.metadata for f in dataclasses.fields(GenerationConfig)}.get(name)
    if not meta or "low" not in meta:          # use_sampling (bool), sampler (choices)
        return result(False, "", f"{name!r} is not a numeric GenerationConfig field; try "
                      "'temperature', 'top_k', 'top_p', 'guidance_scale' or 'duration'.")
    if answer is None:
        return not_yet("a (low, high) pair, e.g. (0, 1)")
    expected = (meta["low"], meta["high"])
    try:
        low, high = answer
        ok = all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (low, high))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        return result(False, "", f"the answer must be two numbers (low, high), got {answer!r}.")
    return result((low, high) == expected,
                  f"Right: {name} is allowed in {expected}; validate() raises outside it and the "
                  "studio's slider is built from the same metadata.",
                  f"look at dataclasses.fields(mg.GenerationConfig): the field {name!r} has "
                  "metadata['low'] and metadata['high'] (the studio's slider shows them too).")


def check_greedy_pair(studio) -> CheckResult:
    """Exercise 2: the studio's last two results are greedy, with different seeds, same tokens.

    Args:
        studio: the ``mg.Studio`` after the two generations.
    """
    history = getattr(studio, "history", None)
    if history is None:
        return not_yet("the studio (mg.Studio), after generating two greedy clips")
    if len(history) < 2:
        return result(False, "", f"the studio has {len(history)} result(s); generate two more "
                      "with studio.generate(use_sampling=False, seed=...).")
    a, b = history[-2], history[-1]
    if a.config.use_sampling or b.config.use_sampling:
        return result(False, "", "the last two results must be greedy: untick 'use sampling' "
                      "or pass use_sampling=False.")
    if a.seeds == b.seeds:
        return result(False, "", f"both used seed {a.seeds[0]}; give them different seeds, so "
                      "you can see whether the seed matters.")
    same = torch.equal(a.tokens, b.tokens)
    return result(same, f"Right: seeds {a.seeds[0]} and {b.seeds[0]} give the same tokens: greedy "
                  "decoding takes the argmax at every step and never draws a random number.",
                  "the two greedy clips differ: make every other setting equal (prompt, "
                  "negative prompt, duration, guidance scale, model) and only the seed different.")


def check_reproduced(original: Generation, answer) -> CheckResult:
    """Exercise 3: ``answer`` regenerates ``original`` outside the studio, token for token.

    Args:
        original: a studio result (``studio.history[i]``).
        answer: the :class:`Generation` the student made with ``gen.generate(...)``.
    """
    if answer is None:
        return not_yet("the Generation from gen.generate(...)")
    if not isinstance(answer, Generation):
        return result(False, "", f"the answer must be what gen.generate returns (a Generation), "
                      f"got {type(answer).__name__}.")
    if answer.seeds != original.seeds:
        return result(False, "", f"the answer used seeds {answer.seeds}, the original "
                      f"{original.seeds}: use original.seeds (the seed actually used; config.seed "
                      "is None when the seed was random).")
    differ = [f.name for f in dataclasses.fields(GenerationConfig) if f.name != "seed"
              and getattr(answer.config, f.name) != getattr(original.config, f.name)]
    if differ:
        return result(False, "", f"these settings differ from the original: {differ}; take them "
                      "from original.config.")
    same = answer.tokens.shape == original.tokens.shape and torch.equal(answer.tokens,
                                                                       original.tokens)
    return result(same, "Right: same model, prompt, settings and seed give the same tokens, so "
                  "every studio result can be replayed from its history row.",
                  "same settings and seed but other tokens: check the prompt "
                  "(original.prompts[0]), the negative prompt (studio.jobs[i]) and the model.")
