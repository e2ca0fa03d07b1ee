"""Checks for lecture 01 (first generation): token and waveform shapes, decoder steps, RTF.

Every right answer is computed from the model itself (frame rate, codebooks, channels,
codebook delays), so the checks hold for edu-tiny, the debug models and every hub checkpoint.
Solutions: ``mg.exercises.solution(1)``.
"""

from __future__ import annotations

import math
import numbers

from ..models import MusicGenModel
from ..patterns import codebook_delays
from .checks import CheckResult, result

__all__ = ["check_token_shape", "check_wav_shape", "check_decoder_steps", "check_rtf"]


def _model(model) -> MusicGenModel:
    """A MusicGenModel, also when a MusicGenerator is passed."""
    return model if isinstance(model, MusicGenModel) else model.model


def _shape(answer) -> tuple[int, ...] | None:
    """``answer`` as a tuple of ints (tuple, list, torch.Size), or None if it is not one."""
    try:
        shape = tuple(answer)
    except TypeError:
        return None
    if not all(_is_int(n) for n in shape):
        return None
    return tuple(int(n) for n in shape)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _frames(model: MusicGenModel, duration: float) -> int:
    """Token frames in ``duration`` seconds, as the generator counts them."""
    return max(1, round(duration * model.frame_rate))


def check_token_shape(model, duration: float, answer) -> CheckResult:
    """Is ``answer`` the shape ``[B, K, S]`` of ``out.tokens`` for one prompt of ``duration`` s?

    Args:
        model: the loaded model (``mg.load_model``) or a ``mg.MusicGenerator``.
        duration: seconds of audio asked for.
        answer: the predicted shape, e.g. ``(1, 4, 400)`` (a tuple, list or torch.Size).
    """
    model = _model(model)
    right = (1, model.num_codebooks, _frames(model, duration))
    shape = _shape(answer)
    hint = (f"Give a shape like (B, K, S) for {duration} s: B = 1 prompt, K = model.num_codebooks "
            f"codebooks, S = duration x model.frame_rate frames.")
    if shape is not None and len(shape) == 2 and shape == right[1:]:
        hint = "Almost: out.tokens also has a batch dimension first, [B, K, S]."
    elif shape is not None and len(shape) == 3 and shape[2] != right[2]:
        hint = (f"Check S: the model makes model.frame_rate = {model.frame_rate} token frames "
                f"per second.")
    return result(shape == right, f"{duration} s -> tokens {list(right)} "
                  f"({model.frame_rate} frames/s x {model.num_codebooks} codebooks).", hint)


def check_wav_shape(model, duration: float, answer) -> CheckResult:
    """Is ``answer`` the shape ``[B, C, T]`` of ``out.wav`` for one prompt of ``duration`` s?

    ``T`` is frames x samples per frame (``sample_rate // frame_rate``), not a rounded
    ``duration x sample_rate``: the audio is decoded from whole token frames.
    """
    model = _model(model)
    hop = model.sample_rate // model.frame_rate
    right = (1, model.audio_channels, _frames(model, duration) * hop)
    shape = _shape(answer)
    hint = (f"Give a shape like (B, C, T): B = 1, C = model.audio_channels, T = token frames x "
            f"{hop} samples per frame (sample_rate // frame_rate).")
    return result(shape == right, f"{duration} s -> wav {list(right)} at {model.sample_rate} Hz.",
                  hint)


def check_decoder_steps(model, duration: float, answer) -> CheckResult:
    """Is ``answer`` the number of decoder steps (``out.timings["steps"]``) for ``duration`` s?

    Steps = frames + the largest codebook delay (``K - 1`` for mono; stereo codebooks share
    delays in pairs), see ``mg.codebook_delays``.
    """
    model = _model(model)
    delays = codebook_delays(model.num_codebooks, model.audio_channels)
    frames = _frames(model, duration)
    right = frames + max(delays)
    ok = _is_int(answer) and answer == right
    hint = ("One step per token frame, plus the extra steps the delay pattern needs to finish "
            "the last codebook: max(mg.codebook_delays(model.num_codebooks, "
            "model.audio_channels)).")
    if _is_int(answer) and answer == frames:
        hint = "That counts the frames only; the delayed codebooks need a few more steps."
    return result(ok, f"{duration} s = {frames} frames + {max(delays)} delay steps = {right} "
                  "decoder steps.", hint)


def check_rtf(out, answer) -> CheckResult:
    """Is ``answer`` the real-time factor of a run: compute seconds / audio seconds (1% slack)?

    Args:
        out: the ``Generation`` of the run (its ``timings`` and ``duration`` are used).
        answer: the student's RTF, a number.
    """
    total, duration = out.timings["total_s"], out.duration
    right = total / duration
    ok = _is_number(answer) and math.isclose(answer, right, rel_tol=0.01)
    hint = ("RTF = seconds of compute / seconds of audio: out.timings['total_s'] divided by "
            "out.duration. Below 1 means faster than real time.")
    if not ok and _is_number(answer) and math.isclose(answer, 1 / right, rel_tol=0.01):
        hint = "Upside down: divide compute time by audio time, not the other way round."
    return result(ok, f"RTF = {total:.3f} s / {duration:.2f} s = {right:.3f}.", hint)
