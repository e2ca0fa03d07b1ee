"""Checks for lecture 00 (set-up and a first clip): same seed, tokens per clip, their bytes.

Every right answer is computed from the model itself (frame rate, codebooks, codebook size,
channels), so the checks hold for edu-tiny, the debug models and for ``facebook/musicgen-small`` (or a
stereo model) on Colab. Solutions: ``mg.exercises.solution(0)``.
"""

from __future__ import annotations

import math

import torch

from ..generation import Generation
from ..models import MusicGenModel
from .checks import CheckResult, as_number, model_of, not_yet, result

__all__ = ["check_same_seed", "check_clip_tokens", "check_token_bytes"]





def _tokens(model: MusicGenModel, seconds: float) -> int:
    """Tokens in a clip of ``seconds``: K codebooks x the token frames, as the generator counts."""
    return model.num_codebooks * max(1, round(seconds * model.frame_rate))


def check_same_seed(original: Generation, answer) -> CheckResult:
    """Exercise 1: ``answer`` is a second clip with the same prompt, duration and seed.

    Args:
        original: the lecture's ``out``.
        answer: the :class:`Generation` of the student's second run.
    """
    if answer is None:
        return not_yet("a second Generation: gen.generate(PROMPT, duration=DURATION, seed=SEED)")
    if not isinstance(answer, Generation):
        return result(False, "", "the answer must be what gen.generate returns (a Generation), "
                      f"got {type(answer).__name__}.")
    if answer is original:
        return result(False, "", "that is the same object as out; generate a second clip and "
                      "compare the two.")
    if answer.seeds != original.seeds:
        return result(False, "", f"your clip used seed(s) {answer.seeds}, out used "
                      f"{original.seeds}: pass seed=SEED to compare like with like.")
    if answer.prompts != original.prompts or answer.tokens.shape != original.tokens.shape:
        return result(False, "", f"your clip has prompt(s) {answer.prompts} and tokens "
                      f"{tuple(answer.tokens.shape)}; out has {original.prompts} and "
                      f"{tuple(original.tokens.shape)}: keep PROMPT and DURATION the same.")
    same = torch.equal(answer.tokens, original.tokens)
    return result(same, f"Right: seed {answer.seeds[0]} gives the same {answer.tokens.numel()} "
                  "tokens again, so the same clip. A seed fixes every random draw of sampling; "
                  "another seed draws other tokens.",
                  "same seed and prompt but other tokens: check the other settings "
                  "(temperature, top_k, guidance_scale, model) and the device.")


def check_clip_tokens(model, seconds: float, answer) -> CheckResult:
    """Exercise 5a: how many tokens does MusicGen produce for a clip of ``seconds``?

    Args:
        model: the loaded model (``mg.load_model``) or a ``mg.MusicGenerator``.
        seconds: length of the clip.
        answer: the student's number of tokens (all codebooks).
    """
    if answer is None:
        return not_yet(f"the number of tokens in a {seconds:g} s clip")
    model = model_of(model)
    frames = _tokens(model, seconds) // model.num_codebooks
    right = _tokens(model, seconds)
    value = as_number(answer)
    if value == frames:
        return result(False, "", f"{frames} is the number of token frames; every frame holds "
                      f"one token per codebook (K = model.num_codebooks).")
    return result(value == right,
                  f"{right} tokens: {seconds:g} s x {model.frame_rate} frames/s = {frames} "
                  f"frames, each with K = {model.num_codebooks} tokens.",
                  "multiply the frames (seconds x model.frame_rate) by the codebooks per frame "
                  "(model.num_codebooks).")


def check_token_bytes(model, seconds: float, answer) -> CheckResult:
    """Exercise 5b: how many bytes do the tokens of a ``seconds`` clip take, packed tightly?

    Each token picks one of ``codebook_size`` codewords, so it needs ``log2(codebook_size)``
    bits (8 for edu-tiny's 256 codewords, 11 for 2048).

    Args:
        model: the loaded model (``mg.load_model``) or a ``mg.MusicGenerator``.
        seconds: length of the clip.
        answer: the student's number of bytes.
    """
    if answer is None:
        return not_yet(f"the bytes that the tokens of a {seconds:g} s clip take")
    model = model_of(model)
    codebook_size = int(model.config.audio_encoder.codebook_size)
    bits = _tokens(model, seconds) * math.log2(codebook_size)
    right = bits / 8
    pcm = 2 * round(seconds * model.sample_rate) * model.audio_channels  # 16-bit samples
    value = as_number(answer)
    if value is not None and math.isclose(value, bits, rel_tol=1e-6):
        return result(False, "", f"{bits:.0f} is the number of bits; a byte has 8.")
    return result(value is not None and math.isclose(value, right, rel_tol=1e-3),
                  f"{right:.0f} bytes = {_tokens(model, seconds)} tokens x "
                  f"log2({codebook_size}) = {math.log2(codebook_size):g} bits / 8; 16-bit audio "
                  f"at {model.sample_rate} Hz takes {pcm} bytes, {pcm / right:.0f}x more.",
                  "bits per token = log2(codebook size) "
                  "(model.config.audio_encoder.codebook_size); multiply by the number of "
                  "tokens and divide by 8 bits per byte.")
