"""Training the small codec (codec.py) on clips, resumably, keeping the best checkpoint.

One run, step by step (:class:`CodecTrainer`)::

    steps [0, warmup)        autoencoder only: encoder -> decoder, no quantiser, so the
                             latents spread out before any codebook is drawn from them
    step warmup              k-means over the encoder's outputs on a few batches -> codebooks
    steps [warmup, ...)      through the residual VQ; a share of batches (quantizer_dropout)
                             with a random 1..Q codebooks; every ``restart_every`` steps, rarely
                             used codes restart on latents of the batch
    every ``eval_every``     held-out SI-SNR (all Q codebooks and each n_q), code use per
                             codebook, mel distance -> log.csv; the best by SI-SNR -> best.pt
    every ``save_every``     a checkpoint (weights + buffers, optimiser, step, RNG, best so
                             far), written atomically; ``fit`` resumes from the newest

``decoder_only`` goes on from a trained codec (``init``, e.g. ``import_encodec`` of a shipped
edu-tiny) with its encoder and codebooks frozen: no warm-up, k-means or restarts, so every
code stays what it was (a language model trained on them is untouched) and only the decoder
learns to play them back better.

Batches are random 1 s crops of the clips, drawn from one seeded torch generator that the
checkpoint carries, so a resumed run takes the crops an uninterrupted one would have taken.
The issue's probe is why: the autoencoder plateaus, quantised SI-SNR rises for tens of minutes
and then may fall (no learning-rate decay) — keep the best, not the last; a cosine decay
to 10 % over ``total_steps`` is built in here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_atomic,
    save_checkpoint,
    write_atomic,
)
from .codec import Codec, CodecConfig, multiscale_mel_loss, si_snr_db

__all__ = ["CodecTrainer"]


class CodecTrainer:
    """Train a :class:`Codec` on ``clips`` (1-D float arrays at ``config.sample_rate``).

    Args:
        config: the codec (:class:`CodecConfig`).
        clips: training clips, each at least ``crop_s`` long.
        held_out: clips for the evaluation (whole, cut to a multiple of the hop).
        run_dir: where checkpoints/, best.pt and log.csv go.
        batch_size: crops per step.
        crop_s: their length (s).
        learning_rate: Adam's rate, decayed (cosine) to 10 % over ``total_steps``.
        betas: Adam's moment decays (EnCodec's GAN setting (0.5, 0.9) by default).
        warmup_steps: autoencoder-only steps before the k-means.
        total_steps: the schedule's length.
        restart_every: steps between dead-code restarts.
        seed: the crops and the codec's initial weights.
        init: a trained codec to start from, trained in place (``None``: new weights of
            ``seed``).
        decoder_only: train ``init``'s decoder alone (encoder and codebooks frozen); the
            log starts with ``init``'s evaluation at step 0, and ``best.pt`` is written only
            when an update beats it.
    """

    def __init__(self, config: CodecConfig, clips: list[np.ndarray], held_out: list[np.ndarray],
                 run_dir: str | Path, *, batch_size: int = 16, crop_s: float = 1.0,
                 learning_rate: float = 3e-4, betas: tuple[float, float] = (0.5, 0.9),
                 warmup_steps: int = 300,
                 total_steps: int = 20_000, restart_every: int = 25, seed: int = 0,
                 init: Codec | None = None, decoder_only: bool = False):
        if decoder_only and init is None:
            raise ValueError("decoder_only trains a trained codec's decoder: pass init.")
        self.config, self.run_dir = config, Path(run_dir)
        hop = int(np.prod(config.upsampling_ratios))
        self.crop = int(crop_s * config.sample_rate) // hop * hop
        self.clips = [torch.as_tensor(c, dtype=torch.float32) for c in clips
                      if len(c) >= self.crop]
        if not self.clips:
            raise ValueError(f"no clip is {crop_s} s long or more; give longer clips.")
        self.held_out = torch.stack([torch.as_tensor(c[: len(c) // hop * hop], dtype=torch.float32)
                                     for c in held_out])[:, None]           # [H, 1, T]
        self.batch_size, self.total, self.decoder_only = batch_size, total_steps, decoder_only
        self.warmup = 0 if decoder_only else warmup_steps
        self.restart_every = restart_every
        self.model = init if init is not None else Codec(config, seed=seed)
        if decoder_only:                    # the codes stay: no gradient reaches the encoder
            self.model.encoder.requires_grad_(False)
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trained, lr=learning_rate, betas=betas)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * min(s, total_steps)
                                                                / total_steps)))
        self.crops = torch.Generator().manual_seed(seed)
        self.step, self.best = 0, -math.inf
        self.rows: list[dict] = []                     # the log: one row per evaluation

    # --- one step -----------------------------------------------------------------------------
    def batch(self) -> torch.Tensor:
        """``[B, 1, crop]`` random crops (from the run's own generator)."""
        picks = torch.randint(len(self.clips), (self.batch_size,), generator=self.crops)
        out = []
        for i in picks.tolist():
            clip = self.clips[i]
            start = int(torch.randint(len(clip) - self.crop + 1, (1,), generator=self.crops))
            out.append(clip[start:start + self.crop])
        return torch.stack(out)[:, None]

    def update(self) -> dict[str, float]:
        """One optimisation step (warm-up, k-means at its end, then quantised)."""
        model, cfg = self.model.train(), self.config
        if self.decoder_only:               # frozen: no EMA codebook updates either
            model.encoder.eval()
            model.rvq.eval()
        elif self.step == self.warmup:
            self._kmeans()
        wav = self.batch()
        n_q = None
        if self.step >= self.warmup:
            drop = torch.rand((), generator=self.crops) < cfg.quantizer_dropout
            n_q = int(torch.randint(1, cfg.codebooks + 1, (), generator=self.crops)) if drop \
                else cfg.codebooks
        recon, commit, _ = model(wav, n_q)
        mel = multiscale_mel_loss(wav, recon, cfg.sample_rate)
        snr = si_snr_db(wav, recon).mean()
        loss = mel - cfg.si_snr_weight * snr + cfg.commit_weight * commit
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: the loss is {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trained, 10.0)
        self.optimizer.step()
        self.schedule.step()
        restarted = 0
        if n_q is not None and not self.decoder_only and self.step % self.restart_every == 0:
            with torch.no_grad():
                z = model.latents(wav).transpose(1, 2).reshape(-1, cfg.hidden_size)
            restarted = model.rvq.restart_dead(z, cfg.dead_after, seed=self.step)
        self.step += 1
        return dict(step=self.step, loss=loss.item(), mel=mel.item(), si_snr_db=snr.item(),
                    n_q=n_q or 0, grad_norm=float(norm), restarted=restarted)

    @torch.no_grad()
    def _kmeans(self, batches: int = 8) -> None:
        z = torch.cat([self.model.latents(self.batch()).transpose(1, 2).reshape(
            -1, self.config.hidden_size) for _ in range(batches)])
        self.model.rvq.kmeans_init(z, seed=self.step)

    # --- evaluation, checkpoints ----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out SI-SNR (dB) with 1..Q codebooks (and without the quantiser before the
        k-means), mel distance, and the share of codes used in each codebook."""
        model, cfg, wav = self.model.eval(), self.config, self.held_out
        row: dict[str, float] = {"step": self.step}
        if self.step <= self.warmup and not self.decoder_only:
            recon, _, _ = model(wav, None)
            row["eval_si_snr_db"] = si_snr_db(wav, recon).mean().item()
        else:
            codes = model.encode(wav)                                       # [H, Q, S]
            for n in range(1, cfg.codebooks + 1):
                row[f"eval_si_snr_db_q{n}"] = si_snr_db(wav, model.decode(codes[:, :n])).mean().item()
            row["eval_si_snr_db"] = row[f"eval_si_snr_db_q{cfg.codebooks}"]
            recon = model.decode(codes)
            for q in range(cfg.codebooks):
                row[f"used_q{q + 1}"] = codes[:, q].unique().numel() / cfg.codebook_size
        row["eval_mel"] = multiscale_mel_loss(wav, recon, cfg.sample_rate).item()
        return row

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "crops": self.crops.get_state(),
                "best": self.best, "config": vars(self.config)}

    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``run_dir/checkpoints`` (False: none)."""
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            return False
        saved = load_checkpoint(path, torch.device("cpu"))
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.crops.set_state(saved["crops"])
        self.step, self.best = saved["step"], saved["best"]
        log = self.run_dir / "log.csv"
        self.rows = pd.read_csv(log).to_dict("records") if log.is_file() else []
        return True

    def fit(self, steps: int, eval_every: int = 100, save_every: int = 100,
            keep: int = 2) -> pd.DataFrame:
        """Run until ``steps`` steps are done in all (a new trainer resumes first from the
        newest checkpoint), evaluating and saving as it goes; returns the log (also
        ``run_dir/log.csv``). Called again on the same trainer, it goes on from memory."""
        if self.step == 0:
            self.resume()
        if self.decoder_only and self.step == 0 and not self.rows:   # where it starts from:
            start = self.evaluate()                 # best.pt only if a step beats it
            self.best = start["eval_si_snr_db"]
            self.rows.append(start)
        while self.step < steps:
            row = self.update()
            if self.step % eval_every == 0 or self.step == steps:
                row |= self.evaluate()
                if self.step > self.warmup and row["eval_si_snr_db"] > self.best:
                    self.best = row["eval_si_snr_db"]
                    save_atomic({"step": self.step, "model": self.model.state_dict(),
                                 "config": vars(self.config), "eval": row},
                                self.run_dir / "best.pt")
                self.rows.append(row)
                write_atomic(self.run_dir / "log.csv",
                             lambda tmp: pd.DataFrame(self.rows).to_csv(tmp, index=False))
            if self.step % save_every == 0 or self.step == steps:
                save_checkpoint(self.run_dir / "checkpoints", self.step, self.state(), keep)
        return pd.DataFrame(self.rows)
