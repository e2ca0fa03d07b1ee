"""Turning one decoder step's logits into tokens: CFG, temperature, top-k, top-p, sampling.

Every backend's decoder loop calls these functions, and lecture 04 calls them one by one to
plot the distribution before and after each filter. They reproduce transformers' logits
processors bit for bit (``ClassifierFreeGuidanceLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper`` in ``generation/logits_process.py``) so that our
loop generates exactly what ``model.generate`` generates under the same seed; audiocraft's
``utils/utils.py::sample_top_k / sample_top_p`` compute the same distributions.

Order of operations for one step (logits ``[B, K, V]``: batch, codebooks, vocabulary):

    1. classifier-free guidance   l = l_uncond + scale * (l_cond - l_uncond)
    2. temperature                l = l / T
    3. top-k                      keep the k largest logits, the rest -> -inf
    4. top-p (nucleus)            keep the smallest set whose probability mass >= p
    5. softmax + multinomial      one draw per (item, codebook), each item with its own RNG
"""

from __future__ import annotations

import torch

__all__ = ["classifier_free_guidance", "apply_temperature", "top_k_filter", "top_p_filter",
           "process_logits", "sample_tokens"]

NEG_INF = -float("inf")


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Push the conditional logits away from the unconditional (or negative-prompt) ones.

    ``scale = 1`` returns ``cond``; MusicGen's default is 3 (Ho & Salimans 2022; MusicGen sec. 4).
    """
    return uncond + (cond - uncond) * scale


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature: < 1 sharpens the distribution, > 1 flattens it."""
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of the last dimension; ``k = 0`` keeps all."""
    if k <= 0:
        return logits
    k = min(k, logits.shape[-1])
    kth_largest = torch.topk(logits, k)[0][..., -1, None]
    return logits.masked_fill(logits < kth_largest, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filter: keep the most likely tokens until their mass reaches ``p``.

    ``p <= 0`` or ``p >= 1`` keeps all (0 is audiocraft's "off"). Works on any leading shape.
    """
    if p <= 0.0 or p >= 1.0:
        return logits
    flat = logits.reshape(-1, logits.shape[-1])
    sorted_logits, sorted_idx = torch.sort(flat, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)                        # the unlikely tail
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)  # back to vocabulary order
    return flat.masked_fill(remove, NEG_INF).reshape(logits.shape)


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 0.0) -> torch.Tensor:
    """Steps 2-4 above, in transformers' order, on float32 logits ``[..., V]``."""
    logits = logits.float()
    if temperature != 1.0:
        logits = apply_temperature(logits, temperature)
    logits = top_k_filter(logits, top_k)
    return top_p_filter(logits, top_p)


def sample_tokens(logits: torch.Tensor, generators: list[torch.Generator] | None = None,
                  greedy: bool = False) -> torch.Tensor:
    """Draw one token per row from processed logits ``[B, K, V]`` -> tokens ``[B, K]``.

    Args:
        logits: processed logits, -inf where filtered out.
        generators: one ``torch.Generator`` per batch item (per-item seeds); ``None`` uses
            torch's global RNG for the whole batch in one draw, like transformers.
        greedy: take the argmax instead of sampling (no randomness consumed).
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    batch, num_codebooks, vocab = probs.shape
    if generators is None:
        return torch.multinomial(probs.reshape(-1, vocab), 1).view(batch, num_codebooks)
    draws = [torch.multinomial(probs[b], 1, generator=generators[b]) for b in range(batch)]
    return torch.stack([d[:, 0] for d in draws])  # [B, K]
