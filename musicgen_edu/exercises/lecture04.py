"""Checks for lecture 04 (sampling and classifier-free guidance).

Each check recomputes the right answer with the package's own sampling functions (the ones the
generator uses) from the logits the student has in the notebook, so it works for any model:
edu-tiny or the debug model on a CPU, ``facebook/musicgen-small`` on a GPU. Solutions:
``mg.exercises.solution(4)``.
"""

from __future__ import annotations

import torch

from ..distributions import entropy
from ..sampling import apply_temperature, classifier_free_guidance, top_p_filter
from .checks import CheckResult, not_yet, result

__all__ = ["check_cfg_by_hand", "check_greedy_token", "check_nucleus_size",
           "check_temperature_for_entropy"]



def check_cfg_by_hand(first: dict, scale: float, answer) -> CheckResult:
    """Exercise 1: the guided logits ``[K, V]``, computed without ``mg.classifier_free_guidance``.

    Args:
        first: the dict from ``mg.first_step_logits`` (``cond`` and ``uncond`` logits ``[K, V]``).
        scale: the guidance scale.
        answer: the student's guided logits ``[K, V]`` (tensor or array).
    """
    if answer is None:
        return not_yet("the guided logits, a tensor shaped like first['cond']")
    expected = classifier_free_guidance(first["cond"], first["uncond"], scale)
    try:
        answer = torch.as_tensor(answer, dtype=expected.dtype, device=expected.device)
    except (TypeError, ValueError, RuntimeError):
        return result(False, "", f"the answer must be a tensor, got {type(answer).__name__}.")
    if answer.shape != expected.shape:
        return result(False, "", f"the answer has shape {list(answer.shape)}; the guided logits "
                      f"have the shape of first['cond'], {list(expected.shape)}.")
    ok = torch.allclose(answer, expected, rtol=1e-4, atol=1e-4)
    return result(ok, f"Right: uncond + {scale} × (cond − uncond) moves every logit away from "
                  f"the unconditional one, {scale} times as far as the conditional one is.",
                  "start from the unconditional logits and add scale times the difference "
                  "(cond − uncond); scale = 1 must give back first['cond'].")


def check_greedy_token(first: dict, scale: float, answer) -> CheckResult:
    """Exercise 2: the codebook-0 token greedy decoding picks at the first step (with CFG).

    Args:
        first: the dict from ``mg.first_step_logits``.
        scale: the guidance scale (1 = no guidance).
        answer: the token id (an int).
    """
    if answer is None:
        return not_yet("a token id (an int)")
    guided = first["cond"] if scale <= 1 else classifier_free_guidance(
        first["cond"], first["uncond"], scale)
    expected = int(guided[0].argmax())
    try:
        got = int(answer)
    except (TypeError, ValueError, RuntimeError):
        return result(False, "", f"the answer must be one token id, got {answer!r}.")
    return result(got == expected, f"Right: greedy decoding takes the argmax of the guided "
                  f"logits, token {expected}; temperature, top-k and top-p never change the "
                  "argmax, so greedy ignores them.",
                  "apply guidance first (greedy still uses CFG), then take the argmax of "
                  "codebook 0; the argmax of first['cond'] alone is not it.")


def check_nucleus_size(logits, p: float, answer) -> CheckResult:
    """Exercise 3: how many tokens top-p (nucleus) filtering keeps for one codebook's logits.

    Args:
        logits: one codebook's logits ``[V]``.
        p: the nucleus mass, ``0 < p < 1``.
        answer: the number of tokens kept (an int).
    """
    if answer is None:
        return not_yet("the number of tokens the nucleus keeps (an int)")
    expected = int(torch.isfinite(top_p_filter(torch.as_tensor(logits).float(), p)).sum())
    try:
        got = int(answer)
    except (TypeError, ValueError, RuntimeError):
        return result(False, "", f"the answer must be a count, got {answer!r}.")
    return result(got == expected, f"Right: the {expected} most likely tokens are the smallest "
                  f"set whose probability adds up to at least {p}.",
                  "sort the probabilities from largest to smallest and count tokens until the "
                  "running sum first reaches p (that token is included).")


def check_temperature_for_entropy(logits, answer, fraction: float = 0.5) -> CheckResult:
    """Exercise 4: a temperature at which the entropy is at most ``fraction`` of its T = 1 value.

    Args:
        logits: one codebook's logits ``[V]`` (or ``[K, V]``: every codebook must satisfy it).
        answer: the temperature, a number in ``(0, 10]`` (GenerationConfig's range).
        fraction: the target ratio of entropies.
    """
    if answer is None:
        return not_yet("a temperature, e.g. 0.8")
    try:
        temperature = float(answer)
    except (TypeError, ValueError, RuntimeError):
        temperature = float("nan")
    if isinstance(answer, bool) or not 0 < temperature <= 10:
        return result(False, "", f"the temperature must be a number in (0, 10], got {answer!r}.")
    logits = torch.as_tensor(logits).float()
    ratio = (entropy(apply_temperature(logits, temperature)) / entropy(logits)).max().item()
    return result(ratio <= fraction + 1e-6,
                  f"Right: at T = {temperature} the entropy is {ratio:.2f} of its value at T = 1 "
                  f"(target: at most {fraction}). Lower T, sharper distribution.",
                  f"at T = {temperature} the entropy is still {ratio:.2f} of its value at T = 1 "
                  f"(target: at most {fraction}); lower T sharpens, higher T flattens. Try a few "
                  "values with mg.entropy and mg.apply_temperature.")
