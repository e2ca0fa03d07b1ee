"""Caption contrast: make the decoder read a word that the likelihood alone lets it ignore.

Why: teacher forcing scores each token given the caption *and* the tokens before it. Once the
first notes sound, a word such as the mode ("major"/"minor") is audible in the context, so it
saves almost no loss and a small decoder never learns to read it; at generation time nothing
but the caption sets the first notes. This term asks for the reading directly::

    heads      fresh synth clips of ``seconds`` every update (synth.py; never repeated, so the
               gap cannot be learned clip by clip), tokens [B, K, S] from the model's codec
    gap_ij     = CE(span j of head_i | swapped caption_i) - CE(span j of head_i | caption_i)
               nats per token, mean over the K codebooks' targets (span_losses); a head's
               frames cut into ``spans`` equal runs (1: the whole head is one span)
    loss       = weight * mean_ij relu(margin - gap_ij)  +  head_weight * CE(heads | captions)

The hinge pushes only where the true caption does not yet win by ``margin``; the swapped
caption differs in one word (``swap_mode``: "in A minor" <-> "in A major"), so the only way to
win is to make the tokens depend on that word. One span lets the gap sit where it is cheapest
(the first notes); a hinge per span asks for it all along the head, at every new note. It is
the two-caption form of a contrastive conditioning loss: a classifier over captions made from
the generative model's own likelihoods (as in "Your Diffusion Model is Secretly a Zero-Shot
Classifier", Li et al. 2023), trained rather than read out. Both passes run without dropout,
so the gap is the captions' difference, not two dropout draws'.

``ContrastTrainer`` is ``train.Trainer`` with this term as its ``extra_loss`` (added once per
update, whatever ``grad_accum``); the CE on the training windows, checkpoints and exact resume
are the Trainer's. The heads of update ``n`` come from synth seed ``seed + n``, so a resumed
run draws the same ones, and the settings go into ``train_config.json`` (``extra_settings``),
so a run is resumed only with the same ones. What it did on edu-tiny: docs/edu_tiny.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..generation import ranged, validate_fields
from ..models import MusicGenModel
from .data import TokenDataset
from .edu_tiny import synth_token_dataset
from .loop import Trainer
from .objective import CaptionEncoder, decoder_logits

__all__ = ["ContrastConfig", "ContrastTrainer", "Contrast", "swap_mode", "item_losses",
           "span_losses", "caption_contrast", "MAX_HEAD_SECONDS"]

MAX_HEAD_SECONDS = 256.0      # heads x seconds per update: the audio rendered and scored twice
MODE_WORD = re.compile(r"\b(major|minor)\b")


@dataclass
class ContrastConfig:
    """The caption contrast's settings (the rest of the run is a ``TrainConfig``)."""

    weight: float = ranged(1.0, 0, 100)          # of the hinge, beside the windows' CE (weight 1)
    margin: float = ranged(0.1, 0, 10)           # nats per token the true caption must win by
    heads: int = ranged(16, 1, 1024, integer=True)   # fresh synth clips per update
    seconds: float = ranged(1.0, 0.5, 30)        # each one's length (synth.render: >= 0.5 s)
    head_weight: float = ranged(1.0, 0, 100)     # of the heads' own CE under their captions
    spans: int = ranged(1, 1, 60, integer=True)  # hinges per head: its frames in equal runs
    seed: int = ranged(1000, 0, 2**62, integer=True)     # heads of update n: synth seed + n

    def __post_init__(self):
        validate_fields(self)
        if self.heads * self.seconds > MAX_HEAD_SECONDS:
            raise ConfigError(f"heads x seconds = {self.heads} x {self.seconds} = "
                              f"{self.heads * self.seconds:g} s of audio per update; allowed: at "
                              f"most {MAX_HEAD_SECONDS:g}. Use fewer or shorter heads.")

    def to_dict(self) -> dict:
        return asdict(self)

    def check_frames(self, frame_rate: float) -> int:
        """A head's frames ``S`` at the codec's ``frame_rate`` (frames/s).

        Raises:
            ConfigError: more spans than frames (an empty span: a loss of 0 / 0).
        """
        frames = math.ceil(self.seconds * frame_rate)
        if self.spans > frames:
            raise ConfigError(f"spans={self.spans}: a head of {self.seconds} s has {frames} "
                              f"frames; allowed: 1 to {frames} spans.")
        return frames


def swap_mode(caption: str) -> str:
    """``"... in A minor, ..."`` <-> ``"... in A major, ..."``.

    Raises:
        ConfigError: the caption does not name exactly one mode as a word (none, or two:
            the swap would compare a caption with itself or change the wrong word).
    """
    found = MODE_WORD.findall(caption)
    if len(found) != 1:
        raise ConfigError(f"caption {caption!r} names {len(found)} modes ('major'/'minor' as "
                          "words); the contrast needs exactly one. Use synth.py's captions.")
    return MODE_WORD.sub(lambda m: "minor" if m.group(1) == "major" else "major", caption)


def span_losses(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                texts: list[str | None], spans: int = 1) -> torch.Tensor:
    """Teacher-forced cross-entropy of each item, span by span.

    Args:
        tokens: ``[B, K, S]`` codebook tokens; texts: their ``B`` captions (``None``: dropped).
        spans: the delayed grid's S + D positions are cut into this many equal runs
            (``torch.tensor_split``); the decoder is causal, so a span's loss depends on
            nothing after it.

    Returns:
        ``[B, spans]`` nats per token, each the mean over its unmasked targets of all K
        codebooks.
    """
    logits, targets, mask = decoder_logits(model, captions, tokens, texts)   # [B, K, S + D, V]
    if not 1 <= spans <= mask.shape[-1]:         # each of the S + D positions has a target
        raise ConfigError(f"spans={spans}: the delayed grid of these tokens has "
                          f"{mask.shape[-1]} positions; allowed: 1 to {mask.shape[-1]} spans.")
    ce = F.cross_entropy(logits.permute(0, 3, 1, 2), targets.masked_fill(~mask, 0),
                         reduction="none") * mask                       # [B, K, S + D]
    sums = [c.sum((1, 2)) for c in torch.tensor_split(ce, spans, dim=-1)]
    counts = [m.sum((1, 2)) for m in torch.tensor_split(mask, spans, dim=-1)]
    return torch.stack(sums, 1) / torch.stack(counts, 1)                 # [B, spans]


def item_losses(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                texts: list[str | None]) -> torch.Tensor:
    """``[B]``: each item's loss, the mean over all its unmasked targets
    (``objective.training_step`` item by item): :func:`span_losses` with one span."""
    return span_losses(model, captions, tokens, texts)[:, 0]


class Contrast(NamedTuple):
    hinge: torch.Tensor       # scalar, mean relu(margin - gap) (has a graph)
    head_loss: torch.Tensor   # scalar, mean CE under the true captions (has a graph)
    gap: torch.Tensor         # [B, spans], CE swapped - CE true, nats per token (detached)


def caption_contrast(model: MusicGenModel, captions: CaptionEncoder, tokens: torch.Tensor,
                     texts: list[str], margin: float, spans: int = 1) -> Contrast:
    """Tokens ``[B, K, S]`` scored under their captions and under ``swap_mode`` of them, in
    ``spans`` runs of frames each (:func:`span_losses`).

    Returns:
        :class:`Contrast`: the hinge (mean over items and spans), the mean CE under the true
        captions (of the spans' means), the gaps.
    """
    true = span_losses(model, captions, tokens, list(texts), spans)
    other = span_losses(model, captions, tokens, [swap_mode(t) for t in texts], spans)
    gap = other - true
    return Contrast(F.relu(margin - gap).mean(), true.mean(), gap.detach())


class ContrastTrainer(Trainer):
    """``Trainer`` whose every update adds the caption contrast on fresh synth heads.

    ``ContrastTrainer(model, data, run_dir, train_config, contrast=ContrastConfig(...))``;
    the log gains ``contrast`` (the hinge), ``head_loss`` and ``gap`` (mean, nats per token).
    """

    def __init__(self, model, data, run_dir, config=None, *,
                 contrast: ContrastConfig | None = None, **kwargs):
        self.contrast = contrast or ContrastConfig()     # before the Trainer checks run_dir
        self.contrast.check_frames(model.frame_rate)
        super().__init__(model, data, run_dir, config, **kwargs)

    def extra_settings(self) -> dict:
        return {"contrast": self.contrast.to_dict()}

    def heads(self, step: int) -> TokenDataset:
        """The fresh synth clips of update ``step``: tokens ``[K, S]`` with their captions."""
        cfg = self.contrast
        with torch.no_grad():                            # the codec is frozen: tokens only
            return synth_token_dataset(self.model, cfg.heads, cfg.seconds,
                                       seed=cfg.seed + step, batch=cfg.heads)

    def extra_loss(self) -> tuple[torch.Tensor | None, dict[str, float]]:
        cfg, heads = self.contrast, self.heads(self.step)
        tokens = torch.stack([w.long() for w in heads.windows])          # [B, K, S]
        decoder = self.net.decoder
        decoder.eval()                                   # no dropout: one draw for both passes
        try:
            with self.autocast():
                out = caption_contrast(self.model, self.captions, tokens, list(heads.captions),
                                       cfg.margin, cfg.spans)
        finally:
            decoder.train()
        loss = cfg.weight * out.hinge + cfg.head_weight * out.head_loss
        return loss, {"contrast": out.hinge.item(), "head_loss": out.head_loss.item(),
                      "gap": out.gap.mean().item()}
