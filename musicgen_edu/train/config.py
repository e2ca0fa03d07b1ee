"""The settings of one fine-tuning run, checked like ``GenerationConfig``.

Every numeric field carries its allowed range in its metadata (``generation.ranged``), so the
CLI, the notebook's ``parameters`` cell and :class:`TrainConfig` itself check against the same
numbers; a bad value raises ``ConfigError`` naming it and the range. Defaults follow audiocraft's
MusicGen fine-tuning recipe where it has one (``config/solver/musicgen/default.yaml``:
AdamW, warm-up then cosine, clipping at 1.0; ``conditioner/text2music.yaml``: the caption is
dropped 30 % of the time, so the model also learns the unconditional distribution that
classifier-free guidance needs) and the usual LoRA settings of ``peft`` otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..generation import ranged, replace_fields, validate_fields

__all__ = ["TrainConfig", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast where the device runs it natively


@dataclass
class TrainConfig:
    """How to fine-tune. Steps count optimizer updates (each ``batch_size * grad_accum`` windows)."""

    steps: int = ranged(1000, 1, 10_000_000, integer=True)       # optimizer updates in all
    batch_size: int = ranged(4, 1, 1024, integer=True)           # windows per forward pass
    grad_accum: int = ranged(1, 1, 1024, integer=True, hint=(    # forward passes per update
        "The effective batch is batch_size * grad_accum."))
    learning_rate: float = ranged(1e-4, 0, 1, low_open=True, hint=(   # peak AdamW step size
        "Full fine-tuning uses about 1e-5 to 1e-4, LoRA about 1e-4 to 1e-3."))
    warmup_steps: int = ranged(100, 0, 10_000_000, integer=True)  # linear warm-up, then cosine
    weight_decay: float = ranged(0.01, 0, 1)                      # AdamW decoupled decay
    max_grad_norm: float = ranged(1.0, 0, 1e6, hint="0 turns clipping off.")  # clip threshold
    caption_dropout: float = ranged(0.3, 0, 1, hint=(             # P(caption -> the empty one)
        "Classifier-free guidance needs the unconditional model: audiocraft drops 30 %."))
    lora: bool = False              # train LoRA adapters (peft) instead of the whole decoder
    lora_rank: int = ranged(16, 1, 1024, integer=True)            # r: rank of each adapter
    lora_alpha: int = ranged(32, 1, 1_000_000, integer=True)     # adapter scale = alpha / r
    lora_dropout: float = ranged(0.0, 0, 1, high_open=True)      # dropout on the adapters' input
    window: float = ranged(10.0, 0, 30, low_open=True, hint=(     # seconds per training window
        "MusicGen was trained on 30 s windows; shorter ones train faster."))
    hop: float = ranged(10.0, 0, 600, low_open=True)              # seconds between window starts
    checkpoint_every: int = ranged(100, 1, 10_000_000, integer=True)  # updates between checkpoints
    keep_checkpoints: int = ranged(2, 1, 1000, integer=True)      # newest checkpoints kept
    seed: int = ranged(0, 0, 2**63 - 1, integer=True)             # data order, dropout, LoRA init
    precision: str = field(default="auto", metadata=dict(choices=PRECISIONS, hint=(
        "auto: bf16 autocast on GPUs that support it, fp32 elsewhere.")))  # compute precision
    sample_captions: tuple[str, ...] = field(default=(), metadata=dict(texts=True))  # () = first 2
    sample_seconds: float = ranged(4.0, 0, 30, low_open=True)     # length of checkpoint samples
    save_adapter: bool = False      # with lora: also save the adapter alone (peft format)

    def __post_init__(self):
        self.validate()

    def validate(self) -> TrainConfig:
        """Check every field; raise ConfigError naming the value and its allowed range."""
        validate_fields(self)
        if self.warmup_steps > self.steps:
            raise ConfigError(f"warmup_steps={self.warmup_steps} is more than steps={self.steps}; "
                              "allowed: 0 to steps.")
        return self

    def replace(self, **changes) -> TrainConfig:
        """A validated copy with some fields changed; unknown names raise ConfigError."""
        return replace_fields(self, "training", changes)

    def to_dict(self) -> dict:
        """JSON-ready settings (the run folder's ``train_config.json``)."""
        out = dataclasses.asdict(self)
        out["sample_captions"] = list(self.sample_captions)
        return out
