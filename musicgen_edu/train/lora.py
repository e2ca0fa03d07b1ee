"""What trains: the whole decoder, or LoRA adapters on its projections (through ``peft``).

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a weight
``W [out, in]`` and learns ``W + (alpha / r) * B @ A`` with ``A [r, in]``, ``B [out, r]`` and
``B`` starting at zero, so training starts from the model as it was and touches a few percent
of the parameters. ``peft`` (Hugging Face) implements it; we put adapters on every projection of
the decoder's attention (self and cross: ``q_proj, k_proj, v_proj, out_proj``) and MLP
(``fc1, fc2``), as cog-musicgen's and musicgen-dreamboothing's trainers do.

The text encoder (T5) and the codec (EnCodec) never train; full fine-tuning trains the decoder
and the projection from T5's width to the decoder's (``enc_to_dec_proj``), as audiocraft trains
the LM with its conditioner's output projection.

Saving merges the adapters into the weights (``merge_and_unload``): the result is a plain
MusicGen that ``load_model(folder)`` opens on every backend, the native one included.
"""

from __future__ import annotations

import warnings

from torch import nn

from ..models import MusicGenModel

__all__ = ["LORA_TARGETS", "prepare_trainable", "trainable_parameters", "merge_lora"]

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]   # decoder modules


def prepare_trainable(model: MusicGenModel, lora: bool, rank: int = 16, alpha: float = 32.0,
                      dropout: float = 0.0) -> nn.Module | None:
    """Freeze what does not train and, with ``lora``, add the adapters; returns the ``peft``
    model wrapping the decoder (``None`` for full fine-tuning). The decoder module stays
    ``model.model.decoder``: ``peft`` swaps its projections for adapter layers in place."""
    net = model.model
    net.requires_grad_(False)
    if not lora:
        net.decoder.requires_grad_(True)
        if hasattr(net, "enc_to_dec_proj"):
            net.enc_to_dec_proj.requires_grad_(True)
        return None
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=LORA_TARGETS, bias="none")
    with warnings.catch_warnings():   # peft asks transformers a deprecated question; not ours
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        return get_peft_model(net.decoder, config)  # adapters trainable, the rest frozen


def trainable_parameters(model: MusicGenModel) -> dict[str, nn.Parameter]:
    """Name -> parameter of everything that trains (what a checkpoint stores)."""
    return {n: p for n, p in model.model.named_parameters() if p.requires_grad}


def merge_lora(model: MusicGenModel, peft_model: nn.Module) -> None:
    """Fold the adapters into the decoder's weights and remove them: ``model`` is a plain
    MusicGen again (the same logits, up to float rounding)."""
    model.model.decoder = peft_model.merge_and_unload()
