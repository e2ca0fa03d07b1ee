"""Caption contrast: make the decoder read a word that the likelihood alone lets it ignore.

Why (issue #30, the mode): teacher forcing scores each token given the caption *and* the
tokens before it. Once the first notes sound, the scale is in the context, so the caption's
"major"/"minor" saves almost no loss (+0.0002 nats per token when swapped) and a small decoder
never learns to read it; at generation time nothing else sets the first notes, and the mode
comes out at chance. This term asks for the reading directly::

    heads      fresh synth clips of ``seconds`` every update (synth.py, never repeated, so
               the gap cannot be learned clip by clip), encoded by the model's own codec
    gap_i      = CE(head_i | swapped caption_i) - CE(head_i | caption_i)
               nats per token, mean over the K codebooks' targets (objective.item_losses)
    loss       = weight * mean_i relu(margin - gap_i)  +  head_weight * CE(heads | captions)

The hinge pushes only where the true caption does not yet win by ``margin``; the swapped
caption differs in one word (``swap_mode``: "in A minor" <-> "in A major"), so the only way
to win is to make the tokens depend on that word. It is the two-caption form of a contrastive
conditioning loss: like a classifier over captions made from the generative model's own
likelihoods (e.g. "Your Diffusion Model is Secretly a Zero-Shot Classifier", Li et al. 2023),
trained rather than read out.

``ContrastTrainer`` is ``train.Trainer`` with this term added to every update (the CE on the
training windows, checkpoints and exact resume are the Trainer's; the heads of update ``n``
are drawn from seed ``seed + n``, so a resumed run draws the same ones).

On edu-tiny (docs/edu_tiny.md) it does what it asks, not yet what it is for: the decoder comes
to read the word (the swap's teacher-forced gap on held-out clip starts grows from about 0 to
the margin), while its sampled clips still play the mode at chance: reading a word is not yet
keeping a scale through a clip that a 4.7 M decoder samples at 2.4 nats per token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..generation import ranged, validate_fields
from ..models import MusicGenModel
from .checkpoint import write_atomic
from .config import TrainConfig
from .edu_tiny import synth_token_dataset
from .loop import Trainer
from .objective import CaptionEncoder, decoder_logits

__all__ = ["ContrastConfig", "ContrastTrainer", "swap_mode", "item_losses", "caption_contrast"]


@dataclass
class ContrastConfig:
    """The caption-contrast term's settings (the rest of the run is a ``TrainConfig``)."""

    weight: float = ranged(1.0, 0, 100)          # of the hinge, beside the windows' CE (weight 1)
    margin: float = ranged(0.1, 0, 10)           # nats per token the true caption must win by
    heads: int = ranged(16, 1, 1024, integer=True)   # fresh synth clips per update
    seconds: float = ranged(1.0, 0.5, 30)        # length of each (the clip's start; synth.render)
    head_weight: float = ranged(1.0, 0, 100)     # of the heads' own CE (true captions)
    seed: int = ranged(1000, 0, 2**62, integer=True)     # heads of update n: synth seed + n

    def __post_init__(self):
        validate_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)


def swap_mode(caption: str) -> str:
    """``"... in A minor, ..."`` <-> ``"... in A major, ..."``; a caption naming neither is an
    error (the contrast would compare a caption with itself)."""
    if " major" in caption:
        return caption.replace(" major", " minor")
    if " minor" in caption:
        return caption.replace(" minor", " major")
    raise ConfigError(f"caption {caption!r} names no mode ('major' or 'minor') to swap.")


def item_losses(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                texts: list[str | None]) -> torch.Tensor:
    """Teacher-forced cross-entropy of each item, ``[B]`` nats per token (the mean over all
    K codebooks' unmasked targets): ``objective.training_step`` item by item."""
    logits, targets, mask = decoder_logits(model, captions, tokens, texts)   # [B, K, S + D, V]
    ce = F.cross_entropy(logits.permute(0, 3, 1, 2), targets.masked_fill(~mask, 0),
                         reduction="none")                              # [B, K, S + D]
    return (ce * mask).sum((1, 2)) / mask.sum((1, 2))


def caption_contrast(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                     texts: list[str], margin: float) -> tuple[torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
    """Tokens ``[B, K, S]`` under their captions and under ``swap_mode`` of them: returns the
    hinge ``mean relu(margin - gap)``, the mean CE under the true captions (both with graphs)
    and the gaps ``[B]`` (detached)."""
    true = item_losses(model, captions, tokens, list(texts))
    other = item_losses(model, captions, tokens, [swap_mode(t) for t in texts])
    gap = other - true
    return F.relu(margin - gap).mean(), true.mean(), gap.detach()


class ContrastTrainer(Trainer):
    """``Trainer`` whose every update adds the caption-contrast term on fresh synth heads.

    ``ContrastTrainer(model, data, run_dir, train_config, contrast=ContrastConfig(...))``;
    the log gains ``contrast`` (the hinge), ``head_loss`` and ``gap`` (mean, nats per token).
    """

    SAVED = "contrast_config.json"                 # beside train_config.json in run_dir

    def __init__(self, model, data, run_dir: str | Path, config: TrainConfig | None = None, *,
                 contrast: ContrastConfig | None = None, **kwargs):
        self.contrast = contrast or ContrastConfig()
        saved, now = Path(run_dir) / self.SAVED, self.contrast.to_dict()
        if kwargs.get("resume") and saved.is_file():  # checked before anything loads
            before = json.loads(saved.read_text(encoding="utf-8"))
            changed = sorted(k for k in now if before.get(k) != now[k])
            if changed:
                raise ConfigError(f"resuming '{run_dir}' with other contrast settings: "
                                  f"{changed} were {[before.get(k) for k in changed]}.")
        super().__init__(model, data, run_dir, config, **kwargs)
        write_atomic(saved, lambda tmp: Path(tmp).write_text(json.dumps(now, indent=2),
                                                             encoding="utf-8"))

    def extra_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.contrast
        with torch.no_grad():                      # the codec is frozen: tokens only
            heads = synth_token_dataset(self.model, cfg.heads, cfg.seconds,
                                        seed=cfg.seed + self.step, batch=cfg.heads)
        tokens = torch.stack([w.long() for w in heads.windows])          # [H, K, S]
        with self._autocast():
            hinge, head_loss, gap = caption_contrast(self.model, self.captions, tokens,
                                                     list(heads.captions), cfg.margin)
        loss = cfg.weight * hinge + cfg.head_weight * head_loss
        return loss, {"contrast": hinge.item(), "head_loss": head_loss.item(),
                      "gap": gap.mean().item()}
