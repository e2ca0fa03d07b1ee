"""Checks for lecture 05 (latency): steps/s for real time, the KV-cache bytes, the bound.

The right answers come from the package itself (the frame rate and codebook delays of the
model, ``mg.decode_bound`` with a bandwidth given, so nothing is timed), so the checks hold
for the debug model on a CPU and for ``facebook/musicgen-small`` on Colab.
Solutions: ``mg.exercises.solution(5)``.
"""

from __future__ import annotations

import math

from ..metrics.bound import decode_bound
from ..patterns import codebook_delays
from .checks import CheckResult, as_number, model_of, not_yet, result

__all__ = ["check_realtime_steps", "check_kv_bytes", "check_bound"]





def _close(value, right, rel_tol=1e-3) -> bool:
    return value is not None and math.isclose(value, right, rel_tol=rel_tol)


def check_realtime_steps(model, seconds: float, answer) -> CheckResult:
    """Exercise 1: the decoder steps per second a ``seconds`` clip needs for RTF = 1.

    A clip of S frames takes ``S + max delay`` steps (the delay pattern), all in ``seconds``.

    Args:
        model: the loaded model or a ``mg.MusicGenerator``.
        seconds: length of the clip.
        answer: the student's steps per second.
    """
    if answer is None:
        return not_yet("the steps per second needed for real time")
    model = model_of(model)
    frames = max(1, round(seconds * model.frame_rate))
    delay = max(codebook_delays(model.num_codebooks, model.audio_channels))
    steps = frames + delay
    right = steps / seconds
    value = as_number(answer)
    if _close(value, model.frame_rate, 1e-9) and delay:
        return result(False, "", f"almost: {model.frame_rate} is the frame rate, but the delay "
                      f"pattern adds {delay} steps to every clip ({frames} frames -> {steps} "
                      "steps); divide the steps by the seconds.")
    return result(_close(value, right),
                  f"{right:.2f} steps/s = ({frames} frames + {delay} delay steps) / {seconds:g} s; "
                  "the decode and text encoding must fit in what is left.",
                  "count the steps (frames = seconds x model.frame_rate, plus the largest "
                  "codebook delay, mg.codebook_delays) and divide by the seconds of audio.")


def check_kv_bytes(model, batch_size: int, cache_len: int, answer) -> CheckResult:
    """Exercise 2: bytes of KV cache one step reads, with classifier-free guidance.

    Args:
        model: the loaded model or a ``mg.MusicGenerator``.
        batch_size: items generated together.
        cache_len: cached positions the step attends to.
        answer: the student's number of bytes.
    """
    if answer is None:
        return not_yet("the KV-cache bytes of one step")
    model = model_of(model)
    right = decode_bound(model, batch_size=batch_size, cache_len=cache_len,
                         bandwidth_gbs=1.0)["kv_bytes"]
    value = as_number(answer)
    if _close(value, right / 2, 1e-9):
        return result(False, "", "half of it: with classifier-free guidance every item runs "
                      "twice (with and without the prompt), so there are 2 x batch_size rows.")
    return result(_close(value, right, 1e-9),
                  f"{right} bytes = 2 (keys, values) x layers x {2 * batch_size} rows x heads x "
                  f"head dim x {cache_len} positions x bytes per number ({model.dtype}).",
                  "multiply 2 (keys and values) x layers x rows (2 x batch_size with CFG) x heads "
                  "x head dim x cached positions x bytes per number; read the sizes from "
                  "model.config.decoder and the dtype from model.dtype.")


def check_bound(model, batch_size: int, cache_len: int, bandwidth_gbs: float,
                answer) -> CheckResult:
    """Exercise 3: the most steps per second memory bandwidth allows (``mg.decode_bound``).

    Args:
        model: the loaded MusicGenModel (its dtype sets the bytes per weight).
        batch_size: items generated together.
        cache_len: cached positions the step attends to.
        bandwidth_gbs: memory bandwidth in GB/s (1 GB = 1e9 bytes).
        answer: the student's bound in steps per second.
    """
    if answer is None:
        return not_yet("the bound in steps per second")
    bound = decode_bound(model_of(model), batch_size=batch_size, cache_len=cache_len,
                         bandwidth_gbs=bandwidth_gbs)
    right, moved = bound["bound_steps_per_s"], bound["bytes_per_step"]
    value = as_number(answer)
    if value is not None and (_close(value, 1 / right, 1e-3) or _close(value, right / 1e9)
                              or _close(value, right * 1e9)):
        return result(False, "", "check the units: GB/s is 1e9 bytes per second, and the "
                      "answer is steps per second (bandwidth / bytes per step), not seconds.")
    return result(_close(value, right, 1e-2),
                  f"at most {right:.1f} steps/s = {bandwidth_gbs:g} GB/s / {moved / 1e6:.3f} MB "
                  "read per step (all decoder weights once, plus the KV cache of every row).",
                  "bytes per step = decoder weights (read once per step, whatever the batch) + "
                  "KV cache of every row; steps/s = bandwidth in bytes/s / bytes per step.")
