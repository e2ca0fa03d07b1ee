"""The MusicGen training step: teacher forcing over the delay pattern, one cross-entropy per codebook.

The model is trained the way it generates (Copet et al. 2023, sec. 2.2-2.3). Following audiocraft
``solvers/musicgen.py`` (``MusicGenSolver.run_step``, ``_compute_cross_entropy``) and
``models/lm.py`` (``LMModel.compute_predictions``):

    tokens [B, K, S] ─► delayed grid [B, K, S + D + 1]  (patterns.delay_pattern: BOS column,
                        codebook k shifted by its delay, the special token elsewhere)
    inputs  = grid[..., :-1]          what the decoder reads at each step (column c)
    targets = grid[..., 1:]           what it must predict (column c + 1)
    mask    = targets != special      the pattern's special positions are never predicted
                                      (they are written, not drawn, at generation time)
    logits  = decoder(inputs | caption)          [B, K, S + D, V]
    CE_k    = cross_entropy(logits[:, k][mask_k], targets[:, k][mask_k])   one per codebook
    loss    = mean_k CE_k                         (audiocraft averages the K losses)

The caption reaches the decoder as at generation time (``backends/transformers.py``,
``TransformersEncoders.encode_text``): T5 states (frozen; cached per caption), projected to the
decoder's width (``enc_to_dec_proj``, trained with the decoder in full fine-tuning), padding
zeroed. With probability ``caption_dropout`` an item's caption is replaced by the empty
condition that ``generate`` uses for the unconditional half of classifier-free guidance (zero
states, masked out), so the fine-tuned model still knows "no caption" (audiocraft's
``ClassifierFreeGuidanceDropout``).

transformers' ``MusicgenForCausalLM.forward(labels=...)`` computes the same sum of per-codebook
losses when given the delayed labels (``bench/train.py`` times the two side by side); this
file keeps the steps in view and reports each codebook's loss and accuracy.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..models import MusicGenModel
from ..patterns import delay_pattern

__all__ = ["StepResult", "delayed_inputs", "CaptionEncoder", "drop_captions", "decoder_logits",
           "training_step", "weighted_mean"]


@dataclass
class StepResult:
    """One forward pass: the loss to minimise and what to report about it."""

    loss: torch.Tensor              # scalar, mean of the K codebook losses (has a graph)
    codebook_loss: list[float]      # K cross-entropies, nats per token
    codebook_accuracy: list[float]  # K shares of targets that are the argmax, teacher-forced
    tokens: int                     # predicted (unmasked) targets in the batch


def delayed_inputs(tokens: torch.Tensor, special: int, audio_channels: int = 1):
    """Tokens ``[B, K, S]`` -> decoder inputs, targets and target mask, each ``[B, K, S + D]``.

    Example (K = 2, S = 3, special 9): the grid is ``[[9, 1, 2, 3, 9], [9, 9, 4, 5, 6]]``;
    inputs ``[[9, 1, 2, 3], [9, 9, 4, 5]]``, targets ``[[1, 2, 3, 9], [9, 4, 5, 6]]``, mask
    ``[[1, 1, 1, 0], [0, 1, 1, 1]]``.
    """
    grid = delay_pattern(tokens, special, audio_channels)             # [B, K, S + D + 1]
    targets = grid[..., 1:]
    return grid[..., :-1], targets, targets != special


class CaptionEncoder:
    """Captions -> the decoder's cross-attention input ``[B, L, D]`` and mask ``[B, L]``.

    The text encoder is frozen, so each caption's T5 states are computed once and kept (on the
    CPU; the ``MAX_CACHED`` most recently used captions); the projection to the decoder's width
    runs every step, with gradients when it trains. ``None`` is the empty condition (zero
    states, masked out), as in ``generate``.
    """

    MAX_CACHED = 4096        # captions kept (T5-base, 20-token captions: about 250 MB)

    def __init__(self, model: MusicGenModel):
        self.mg = model
        self.net: Any = model.model             # MusicgenForConditionalGeneration
        self.tokenizer: Any = model.tokenizer
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()      # caption -> [L, D_text]

    @torch.no_grad()
    def _text_states(self, caption: str) -> torch.Tensor:
        if caption in self.cache:
            self.cache.move_to_end(caption)
            return self.cache[caption]
        enc = self.tokenizer([caption], return_tensors="pt").to(self.mg.device)
        out = self.net.text_encoder(**enc).last_hidden_state[0].float().cpu()   # [L, D_text]
        self.cache[caption] = out
        if len(self.cache) > self.MAX_CACHED:
            self.cache.popitem(last=False)                               # the least recent
        return out

    def __call__(self, captions: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.mg.device
        states = [self._text_states(c) for c in captions if c is not None]
        length = max([s.shape[0] for s in states], default=1)
        width = self.net.config.text_encoder.hidden_size
        padded = torch.zeros(len(captions), length, width)
        mask = torch.zeros(len(captions), length, dtype=torch.long)
        given = iter(states)
        for i, caption in enumerate(captions):
            if caption is not None:
                s = next(given)
                padded[i, : s.shape[0]], mask[i, : s.shape[0]] = s, 1
        hidden = padded.to(dev, self.mg.dtype)
        if self.net.config.text_encoder.hidden_size != self.net.config.decoder.hidden_size:
            hidden = self.net.enc_to_dec_proj(hidden)                    # [B, L, D]
        mask = mask.to(dev)
        return hidden * mask[..., None].to(hidden.dtype), mask


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str | None]:
    """Replace each caption by ``None`` (the empty condition) with probability ``p``."""
    drop = torch.rand(len(captions), generator=generator) < p
    return [None if d else c for c, d in zip(captions, drop.tolist())]


def decoder_logits(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                   texts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder teacher-forced on tokens ``[B, K, S]`` under their captions (``None``:
    dropped): float32 logits ``[B, K, S + D, V]``, targets and target mask ``[B, K, S + D]``.
    The decoder is transformers' ``MusicgenForCausalLM`` (LoRA-wrapped or not)."""
    net: Any = model.model
    inputs, targets, mask = delayed_inputs(tokens.to(model.device), model.special_token,
                                           model.audio_channels)
    batch, num_codebooks, length = inputs.shape
    states, text_mask = captions(texts)
    out = net.decoder(input_ids=inputs.reshape(batch * num_codebooks, length),
                      encoder_hidden_states=states, encoder_attention_mask=text_mask)
    return out.logits.view(batch, num_codebooks, length, -1).float(), targets, mask


def training_step(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                  texts: list[str | None]) -> StepResult:
    """Teacher-forced loss of a batch: tokens ``[B, K, S]`` with their captions (``None``:
    dropped), one cross-entropy per codebook over its unmasked targets."""
    logits, targets, mask = decoder_logits(model, captions, tokens, texts)   # [B, K, S + D, V]
    num_codebooks = logits.shape[1]
    losses, accuracy = [], []
    for k in range(num_codebooks):
        picked, wanted = logits[:, k][mask[:, k]], targets[:, k][mask[:, k]]   # [n, V], [n]
        losses.append(F.cross_entropy(picked, wanted))
        accuracy.append((picked.argmax(-1) == wanted).float().mean().item())
    loss = torch.stack(losses).mean()
    return StepResult(loss, [x.item() for x in losses], accuracy, int(mask.sum()))


def weighted_mean(results: list[tuple[StepResult, float]]) -> dict[str, float]:
    """Several passes as one report: ``{"loss": mean of the K codebook losses, "loss_k": ...,
    "accuracy_k": ...}``, each the average over ``(result, weight)`` pairs whose weights sum
    to 1 (an update's accumulated passes, or the batches of an evaluation)."""
    out: dict[str, float] = {}
    for result, weight in results:
        for k, (loss, acc) in enumerate(zip(result.codebook_loss, result.codebook_accuracy)):
            out[f"loss_{k}"] = out.get(f"loss_{k}", 0.0) + loss * weight
            out[f"accuracy_{k}"] = out.get(f"accuracy_{k}", 0.0) + acc * weight
    k = len(results[0][0].codebook_loss)
    return {"loss": sum(out[f"loss_{i}"] for i in range(k)) / k, **out}
