"""Checks for lecture 03 (audio tokens: EnCodec, codebooks and the delay pattern).

Every check computes the right answer from the model with the package itself, so the same
exercise works with edu-tiny, the debug models and ``facebook/musicgen-small`` (or a stereo model).
Solutions: ``mg.exercises.solution(3)``.
"""

from __future__ import annotations

import math

import torch

from ..patterns import codebook_delays, delay_pattern, undelay
from .checks import CheckResult, result

__all__ = ["check_samples_per_frame", "check_token_bitrate", "check_grid_columns",
           "check_undelay_function"]


def _as_number(answer):
    """The answer as a float, or None when it is not a single number (None, text, arrays...)."""
    if isinstance(answer, bool):
        return None
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


def check_samples_per_frame(model, answer) -> CheckResult:
    """Exercise 1: how many audio samples does one EnCodec token frame cover?

    Args:
        model: the loaded MusicGenModel of the lecture.
        answer: the student's number of samples per frame.
    """
    hop = model.sample_rate // model.frame_rate
    value = _as_number(answer)
    return result(value == hop,
                  f"{hop} samples per frame: {model.sample_rate} Hz / {model.frame_rate} frames/s "
                  f"= {1000 / model.frame_rate:.0f} ms of audio per token frame.",
                  "Divide the model's sample rate by its frame rate (model.sample_rate, "
                  "model.frame_rate).")


def check_token_bitrate(model, answer) -> CheckResult:
    """Exercise 2: bits per second that MusicGen's tokens carry (all K codebooks).

    Each token picks one of ``codebook_size`` codewords, so it carries ``log2(codebook_size)``
    bits; there are K tokens per frame and ``frame_rate`` frames per second.

    Args:
        model: the loaded MusicGenModel.
        answer: the student's bitrate in bits per second.
    """
    codebook_size = int(model.config.audio_encoder.codebook_size)
    bits = model.num_codebooks * math.log2(codebook_size) * model.frame_rate
    value = _as_number(answer)
    pcm = 16 * model.sample_rate * model.audio_channels
    return result(value is not None and math.isclose(value, bits, rel_tol=1e-6),
                  f"{bits:.0f} bit/s = K={model.num_codebooks} x log2({codebook_size}) bits x "
                  f"{model.frame_rate} frames/s: {pcm / bits:.0f}x smaller than 16-bit PCM.",
                  "bits per token = log2(codebook size); multiply by the codebooks per frame "
                  "and by the frames per second. Answer in bits per second, not kbit/s.")


def check_grid_columns(model, duration: float, answer) -> CheckResult:
    """Exercise 3: columns of the delayed grid for ``duration`` seconds of audio.

    The decoder reads column 0 (the start column) and predicts one new column per step, so a
    clip takes ``columns - 1 = frames + largest delay`` decoder steps.

    Args:
        model: the loaded MusicGenModel.
        duration: seconds of audio.
        answer: the student's number of columns.
    """
    frames = round(duration * model.frame_rate)
    delays = codebook_delays(model.num_codebooks, model.audio_channels)
    columns = frames + max(delays) + 1
    value = _as_number(answer)
    return result(value == columns,
                  f"{columns} columns: 1 start column + {frames} frames + {max(delays)} for the "
                  f"largest delay; the decoder fills them in {columns - 1} steps.",
                  "Count the frames (duration x frame rate), add the largest delay "
                  "(mg.codebook_delays) and the start (BOS) column.")


def check_undelay_function(model, fn) -> CheckResult:
    """Exercise 4: ``fn(grid, frames, delays)`` must undo the delay pattern like ``mg.undelay``.

    The check builds a random batch of tokens, delays it with ``mg.delay_pattern`` and compares
    ``fn``'s answer with the original tokens.

    Args:
        model: the loaded MusicGenModel (gives K, the channels and the special token).
        fn: the student's function ``(grid [B, K, S + D + 1], frames S, delays list) ->
            tokens [B, K, S]``.
    """
    hint = ("Row k of the grid holds frame f at column 1 + delays[k] + f: cut `frames` columns "
            "out of every row and stack the rows on dim 1 (torch.stack).")
    if not callable(fn):
        return result(False, "", f"Pass a function, got {type(fn).__name__}. {hint}")
    channels, frames = model.audio_channels, 7
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, model.special_token, (2, model.num_codebooks, frames),
                           generator=generator)                            # [B, K, S]
    grid = delay_pattern(tokens, model.special_token, channels)           # [B, K, S + D + 1]
    delays = codebook_delays(model.num_codebooks, channels)
    try:
        answer = fn(grid.clone(), frames, delays)
        if answer is None:
            return result(False, "", f"Your function returned None. {hint}")
        ok = torch.equal(torch.as_tensor(answer), undelay(grid, frames, channels))
    except Exception as err:  # a student's bug is a "not yet", never a crash
        return result(False, "", f"Your function raised {type(err).__name__}: {err}. {hint}")
    return result(ok, f"Your function undoes the delay pattern for K={model.num_codebooks} "
                      f"(delays {delays}).", f"The tokens do not match yet. {hint}")
