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
MusicGen that ``load_model(folder)`` opens on every backend, the native one included. Asked to,
a run also saves the adapter alone (peft's format: a few MB instead of the whole model);
:func:`load_adapter` puts it back on its base model.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from ..models import MusicGenModel

__all__ = ["LORA_TARGETS", "prepare_trainable", "trainable_parameters", "merge_lora",
           "load_adapter", "ADAPTER_INFO"]

ADAPTER_INFO = "musicgen_edu.json"   # beside peft's files: which base model the adapter is for

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]   # decoder modules


@contextlib.contextmanager
def _peft_quiet():
    """peft asks transformers a question transformers 5 deprecates: not the student's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        yield


def prepare_trainable(model: MusicGenModel, lora: bool, rank: int = 16, alpha: int = 32,
                      dropout: float = 0.0) -> Any:
    """Freeze what does not train and, with ``lora``, add the adapters; returns the ``peft``
    model wrapping the decoder (``None`` for full fine-tuning). The decoder module stays
    ``model.model.decoder``: ``peft`` swaps its projections for adapter layers in place."""
    net: Any = model.model                       # MusicgenForConditionalGeneration
    net.requires_grad_(False)
    if not lora:
        net.decoder.requires_grad_(True)
        if hasattr(net, "enc_to_dec_proj"):
            net.enc_to_dec_proj.requires_grad_(True)
        return None
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=LORA_TARGETS, bias="none")
    with _peft_quiet():
        return get_peft_model(net.decoder, config)  # adapters trainable, the rest frozen


def trainable_parameters(model: MusicGenModel) -> dict[str, nn.Parameter]:
    """Name -> parameter of everything that trains (what a checkpoint stores)."""
    return {n: p for n, p in model.model.named_parameters() if p.requires_grad}


def merge_lora(model: MusicGenModel, peft_model: Any) -> None:
    """Fold the adapters into the decoder's weights and remove them: ``model`` is a plain
    MusicGen again (the same logits, up to float rounding)."""
    net: Any = model.model
    net.decoder = peft_model.merge_and_unload()


def load_adapter(adapter_dir: str | Path, base: str | MusicGenModel | None = None,
                 device: str = "auto") -> MusicGenModel:
    """The base model with a saved adapter merged in: the same weights as the run's merged
    ``model/`` folder. ``base`` defaults to the model the adapter was trained on (recorded in
    the adapter folder's ``musicgen_edu.json``); the cached base model is not changed."""
    import copy
    import dataclasses
    import json

    from peft import PeftModel

    from ..errors import ModelLoadError
    from ..models import load_model

    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"'{folder}' holds no LoRA adapter (adapter_config.json); a run "
                             "saves one with save_adapter=True.")
    if base is None:
        info = folder / ADAPTER_INFO
        if not info.is_file():
            raise ModelLoadError(f"'{folder}' does not say which model it adapts; pass base=.")
        base = json.loads(info.read_text(encoding="utf-8"))["base_model"]
    loaded = base if isinstance(base, MusicGenModel) else load_model(base, device=device,
                                                                     dtype="float32")
    model = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model), extra={},
                                name=str(folder))
    net: Any = model.model
    with _peft_quiet():
        merge_lora(model, PeftModel.from_pretrained(net.decoder, str(folder)))
    model.model.eval()
    return model
