"""How a text prompt becomes what MusicGen's decoder listens to (lecture 02).

MusicGen conditions on text with a frozen T5 encoder (Copet et al. 2023, sec. 2.3): the
tokenizer cuts the prompt into token ids (T5's SentencePiece pieces for the hub checkpoints,
UTF-8 bytes for the ByT5 tokenizer of the offline debug models, both ending with ``</s>``),
T5 turns them into states ``[B, L, D_t5]``, and a linear ``enc_to_dec_proj`` maps them to the
decoder width ``D`` (when the widths differ). Padding positions are zeroed and masked out, so
the decoder's cross-attention ignores them. This follows transformers'
``MusicgenForConditionalGeneration._prepare_text_encoder_kwargs_for_generation`` and is
computed here through the generator's own backend (``TransformersBackend.encode_text``), so
these functions show exactly what :class:`~musicgen_edu.generator.MusicGenerator` feeds the
decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .backends import TransformersBackend
from .errors import ConfigError
from .models import as_model

__all__ = ["tokenize_prompt", "embed_prompts", "prompt_similarity"]


def _check_prompt(prompt, index: int | None = None, allow_none: bool = False) -> None:
    """Prompts are non-empty strings (``None`` too where the null condition is allowed)."""
    if prompt is None and allow_none:
        return
    if not isinstance(prompt, str) or not prompt.strip():
        name = "prompt" if index is None else f"prompt {index}"
        extra = ", or None for the null condition" if allow_none else ""
        raise ConfigError(f"{name} is {prompt!r}; prompts must be non-empty strings{extra}, "
                          "e.g. 'calm lo-fi piano'.")


def tokenize_prompt(model, prompt: str) -> list[tuple[int, str]]:
    """The tokenizer's view of a prompt: ``(token id, piece)`` pairs, ``</s>`` included.

    Pieces are the tokenizer's own strings (``convert_ids_to_tokens``): SentencePiece pieces
    such as ``"▁piano"`` for T5 (``▁`` marks a preceding space), single bytes for ByT5, where
    a non-ASCII character takes several tokens (its UTF-8 bytes, shown as Latin-1 characters).
    ``model.tokenizer.convert_tokens_to_string(pieces)`` rejoins them into the prompt.

    Example (debug model, ByT5: id = byte + 3)::

        >>> tokenize_prompt(mg.load_model("debug"), "lo-fi")
        [(111, 'l'), (114, 'o'), (48, '-'), (105, 'f'), (108, 'i'), (1, '</s>')]
    """
    model = as_model(model)
    _check_prompt(prompt)
    ids = model.tokenizer(prompt)["input_ids"]
    return list(zip(ids, model.tokenizer.convert_ids_to_tokens(ids)))


def embed_prompts(model, prompts: str | Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """What the decoder cross-attends to for a batch of prompts: states and padding mask.

    The states are the T5 encoder output already projected to the decoder width and with
    padding zeroed (the backend's ``Conditioning``), i.e. exactly what the decoder sees; the raw
    T5 width is ``model.config.text_encoder.hidden_size``. A ``None`` prompt gives the null
    condition that classifier-free guidance runs beside every prompt: all-zero states, mask 0.

    Melody models prepend their conditioning to the decoder input instead of cross-attending:
    the states are then ``[chroma_length frames of the null melody; text states]`` and the mask
    is all ones, because the decoder attends to every prefix position (padding is only zeroed).

    Args:
        model: a loaded model (``mg.load_model``) or a ``mg.MusicGenerator``.
        prompts: one prompt or a list; ``None`` items give the null condition.

    Returns:
        ``states`` ``[B, L, D]`` float32 on the CPU (L = longest prompt in tokens, D = decoder
        width) and ``mask`` ``[B, L]`` long (1 = a real token, 0 = padding).
    """
    model = as_model(model)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ConfigError("prompts is empty; pass a string or a list of at least one prompt.")
    for i, prompt in enumerate(prompts):
        _check_prompt(prompt, i, allow_none=True)
    cond = TransformersBackend(model).encode_text(prompts)
    states = cond.states.float().cpu()                        # [B, L, D]
    if cond.mask is None:  # melody prefix: no mask, every position is attended
        return states, torch.ones(states.shape[:2], dtype=torch.long)
    return states, cond.mask.long().cpu()                     # [B, L]


def prompt_similarity(model, a: str, b: str) -> float:
    """Cosine similarity of two prompts' mean-pooled embeddings, in ``[-1, 1]``.

    Each prompt's states (:func:`embed_prompts`) are averaged over its real tokens (the mask),
    then compared by angle. With the real checkpoints related prompts score higher; the debug
    models have random weights, so their numbers mean nothing musically. For melody models the
    shared null-melody prefix is left out, so only the text is compared.
    """
    model = as_model(model)
    _check_prompt(a, 0)
    _check_prompt(b, 1)
    states, mask = embed_prompts(model, [a, b])
    if model.is_melody:  # drop the shared melody prefix and use the text padding mask
        enc = model.tokenizer([a, b], padding=True, return_tensors="pt")
        states, mask = states[:, -enc["attention_mask"].shape[1]:], enc["attention_mask"]
    weights = mask[..., None].float()                         # [2, L, 1]
    pooled = (states * weights).sum(1) / weights.sum(1)       # [2, D]
    return float(torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0))
