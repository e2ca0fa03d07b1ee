"""Checks for lecture 08 (evaluation): a sine at a target loudness, FAD by hand, FAD's rows.

The right answers come from the package itself: the student's sine is measured with
``mg.loudness`` (BS.1770, as ``mg.describe`` does), the Fréchet distance is
``mg.frechet_distance``, and the embedding rows are counted by running the model's own EnCodec
encoder (``mg.encodec_embeddings``), so the checks hold for edu-tiny and the debug models on a
CPU and for ``facebook/musicgen-small`` on Colab. Solutions: ``mg.exercises.solution(8)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..audio import loudness
from ..metrics.fad import encodec_embeddings, frechet_distance
from .checks import CheckResult, as_number, model_of, not_yet, result

__all__ = ["check_embedding_rows", "check_fad", "check_sine_amplitude"]

FULL_SCALE_SINE_LUFS = -3.01  # BS.1770's calibration: a full-scale 1 kHz sine (the lecture's fact)


def _close(value, right, abs_tol) -> bool:
    return value is not None and math.isclose(value, right, rel_tol=0, abs_tol=abs_tol)


def check_sine_amplitude(target_lufs: float, answer, sample_rate: int = 32000) -> CheckResult:
    """Exercise 1: the amplitude of a 1 kHz sine that measures ``target_lufs``.

    The answer is checked by measuring: 4 s of ``answer * sin(2 pi 1000 t)`` through
    ``mg.loudness``, which must land within 0.25 LU of the target.

    Args:
        target_lufs: the loudness to reach, e.g. -23 (EBU R128).
        answer: the student's amplitude (1.0 = full scale).
        sample_rate: Hz of the test sine.
    """
    if answer is None:
        return not_yet("the amplitude of the sine (a number between 0 and 1)")
    value = as_number(answer)
    if value is None or not 0 < value <= 1:
        return result(False, "", f"{answer!r} is no amplitude: give one number in (0, 1], the "
                      "peak of the sine (1.0 = full scale); a level in dB becomes an amplitude "
                      "with 10 ** (dB / 20).")
    t = np.arange(4 * sample_rate) / sample_rate                     # 4 s of time stamps
    measured = loudness(value * np.sin(2 * np.pi * 1000 * t), sample_rate)
    if _close(measured, target_lufs + FULL_SCALE_SINE_LUFS, 0.25):
        return result(False, "", f"almost: amplitude {value:.4g} measures {measured:.2f} LUFS, "
                      "3 LU too quiet. A full-scale sine is -3.01 LUFS, not 0: the amplitude is "
                      "10 ** ((target - (-3.01)) / 20).")
    return result(_close(measured, target_lufs, 0.25),
                  f"amplitude {value:.4g} measures {measured:.2f} LUFS: -3.01 LUFS at full scale "
                  f"+ 20 log10({value:.4g}) = {FULL_SCALE_SINE_LUFS + 20 * math.log10(value):.2f}.",
                  f"amplitude {value:.4g} measures {measured:.2f} LUFS, not {target_lufs:g}. "
                  "Loudness follows 20 log10(amplitude) from the full-scale sine's -3.01 LUFS "
                  "(amplitude, not power: 20, not 10).")


def check_fad(mu_a, cov_a, mu_b, cov_b, answer) -> CheckResult:
    """Exercise 2: the Fréchet distance between two Gaussians, by hand.

    ``FAD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b))``; for diagonal
    covariances ``sqrtm`` is the element-wise square root.

    Args:
        mu_a: mean ``[D]`` of the first set.
        cov_a: covariance ``[D, D]`` of the first set.
        mu_b: mean ``[D]`` of the second set.
        cov_b: covariance ``[D, D]`` of the second set.
        answer: the student's distance.
    """
    if answer is None:
        return not_yet("the Fréchet distance (one number)")
    right = frechet_distance(mu_a, cov_a, mu_b, cov_b)
    means = float(np.sum((np.asarray(mu_a, float) - np.asarray(mu_b, float)) ** 2))
    value = as_number(answer)
    if _close(value, means, 1e-6) and not _close(right, means, 1e-6):
        return result(False, "", f"{value:g} is only the mean term |mu_a - mu_b|^2; add the "
                      "covariance term tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b)).")
    if _close(value, math.sqrt(right), 1e-6) and not _close(right, math.sqrt(right), 1e-6):
        return result(False, "", f"{value:g} is the square root of it: FAD (like FID) is the "
                      "squared distance, with no square root at the end.")
    return result(_close(value, right, 1e-6 * max(1.0, right)),
                  f"FAD = {means:g} (means) + {right - means:g} (covariances) = {right:g}.",
                  "add |mu_a - mu_b|^2 and tr(S_a) + tr(S_b) - 2 tr(sqrtm(S_a S_b)); with "
                  "diagonal covariances sqrtm(S_a S_b) is the square root of each diagonal "
                  "product.")


def check_embedding_rows(model, num_clips: int, duration: float, answer) -> CheckResult:
    """Exercise 3: rows of ``mg.encodec_embeddings(gen, clips, per_frame=True)``.

    Counted by running the model's EnCodec encoder on a silent clip as long as ``generate``
    makes for ``duration`` seconds (its frames x samples per frame): every clip gives one row
    per codec frame.

    Args:
        model: the loaded model or a ``mg.MusicGenerator``.
        num_clips: clips in the set (the lecture: ``NUM_SEEDS`` per temperature).
        duration: seconds per clip.
        answer: the student's number of rows.
    """
    if answer is None:
        return not_yet("the number of embedding rows")
    model = model_of(model)
    frames = max(1, round(duration * model.frame_rate))               # what generate makes
    samples = frames * round(model.sample_rate / model.frame_rate)
    silent = np.zeros((1, samples), dtype=np.float32)                 # [C, T]
    per_clip, dim = encodec_embeddings(model, silent, model.sample_rate, per_frame=True).shape
    right = num_clips * per_clip
    value = as_number(answer)
    if _close(value, num_clips, 0) and right != num_clips:
        return result(False, "", f"{num_clips} is one row per clip (per_frame=False, the time "
                      "average); per_frame=True keeps every codec frame of every clip.")
    if _close(value, per_clip, 0) and right != per_clip:
        return result(False, "", f"{per_clip} rows is one clip; the set has {num_clips}.")
    enough = ("more than D, so the covariance can be full rank" if right > dim else
              "not more than D, so the covariance is singular: use more clips or longer ones")
    return result(_close(value, right, 0),
                  f"{right} rows = {num_clips} clips x {per_clip} frames (model.frame_rate "
                  f"{model.frame_rate} x {duration:g} s), each of D={dim}: {enough}.",
                  "count the codec frames: model.frame_rate per second of audio, for every clip "
                  "(frames, not samples).")
