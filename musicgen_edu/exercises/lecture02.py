"""Checks for lecture 02 (prompts): text tokens, conditioning shapes, padding, CFG rows.

The right answers come from the model's own tokenizer and text encoder (``text.py``), so the
checks hold for edu-tiny and the debug models (ByT5 bytes) and the hub checkpoints (T5
SentencePiece).
Solutions: ``mg.exercises.solution(2)``.
"""

from __future__ import annotations

import numbers

from ..text import embed_prompts, tokenize_prompt
from .checks import CheckResult, result

__all__ = ["check_num_text_tokens", "check_embedding_shape", "check_padding", "check_cfg_rows"]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _shape(answer) -> tuple[int, ...] | None:
    """``answer`` as a tuple of ints (tuple, list, torch.Size), or None if it is not one."""
    try:
        shape = tuple(answer)
    except TypeError:
        return None
    return tuple(int(n) for n in shape) if all(_is_int(n) for n in shape) else None


def check_num_text_tokens(model, prompt: str, answer) -> CheckResult:
    """Is ``answer`` the number of tokens the text encoder reads for ``prompt`` (``</s>`` included)?

    Args:
        model: the loaded model (``mg.load_model``) or a ``mg.MusicGenerator``.
        prompt: the text prompt.
        answer: the predicted number of tokens.
    """
    right = len(tokenize_prompt(model, prompt))
    hint = ("Count the tokenizer's pieces, and do not forget the end-of-sequence token </s>. "
            "ByT5 (edu-tiny, debug models) makes one token per UTF-8 byte; T5 makes word pieces.")
    if _is_int(answer) and answer == right - 1:
        hint = "One short: the tokenizer appends </s> to every prompt."
    return result(_is_int(answer) and answer == right,
                  f"{prompt!r} is {right} tokens ({right - 1} + </s>).", hint)


def check_embedding_shape(model, prompts: list[str], answer) -> CheckResult:
    """Is ``answer`` the shape ``[B, L, D]`` of ``mg.embed_prompts(model, prompts)``'s states?"""
    states, _ = embed_prompts(model, prompts)
    right = tuple(states.shape)
    shape = _shape(answer)
    hint = ("B = number of prompts, L = tokens of the LONGEST prompt (the others are padded), "
            "D = the decoder width model.config.decoder.hidden_size (T5's states are projected).")
    if shape is not None and len(shape) == 3 and shape[:2] == right[:2] and shape[2] != right[2]:
        hint = ("B and L are right; D is the width after the projection to the decoder: "
                "model.config.decoder.hidden_size, not the T5 width.")
    return result(shape == right, f"{right[0]} prompt(s) -> states {list(right)}.",
                  hint)


def check_padding(model, prompts: list[str], answer) -> CheckResult:
    """Is ``answer`` the number of padding positions (mask == 0) in the batch's mask?"""
    _, mask = embed_prompts(model, prompts)
    right = int((mask == 0).sum())
    hint = ("Each prompt is padded up to the longest one: add up (longest - own length) over "
            "the prompts, lengths in tokens with </s>.")
    return result(_is_int(answer) and answer == right,
                  f"{right} padding positions in a mask of shape {list(mask.shape)}.", hint)


def check_cfg_rows(num_prompts: int, guidance_scale: float, answer) -> CheckResult:
    """Is ``answer`` the number of rows the decoder runs per step for text prompts?

    With classifier-free guidance (``guidance_scale > 1``) every prompt runs twice, conditioned
    and unconditioned (or on the negative prompt); ``guidance_scale = 1`` turns CFG off.
    """
    right = 2 * num_prompts if guidance_scale > 1 else num_prompts
    hint = ("With guidance_scale > 1, each prompt gets an unconditional copy in the same batch; "
            "with guidance_scale = 1 there is nothing to mix, so no copy.")
    return result(_is_int(answer) and answer == right,
                  f"{num_prompts} prompt(s) at guidance_scale={guidance_scale} -> {right} "
                  "decoder rows per step.", hint)
