"""The training loop: fine-tune a MusicGen on captioned clips, resumably; the result loads like any model.

    Trainer(model, data, run_dir, TrainConfig(...)).fit()
      setup     a private copy of the model (the cached one others generate with is untouched),
                the dataset (data.py: encoded once into run_dir/tokens), what trains (lora.py),
                AdamW with warm-up then cosine decay, or everything back from the newest
                checkpoint (checkpoint.py)
      update    grad_accum forward passes of batch_size windows (objective.training_step, under
                bf16 autocast where the device supports it), any extra_loss() a subclass
                adds (contrast.py), gradient clipping, one step
      every N   a checkpoint, sample clips from fixed captions, the curves (report.py)
      end       run_dir/model: the fine-tuned MusicGen (LoRA merged), for load_model(path)

Run folder:  train_config.json (the settings and the base model), tokens/,
checkpoints/step_N.pt, log.csv, curves.png, samples/step_N/, model/ (and adapter/ with
``save_adapter``), result.json.

Data order: a permutation of the windows per epoch drawn from ``(seed, epoch)``; ``seen``
counts windows consumed, so a checkpoint stores one number for where the loader is. The same
seed gives the same run, and a resumed run the same weights, bit for bit on a CPU. Follows
audiocraft's ``solvers/musicgen.py`` / ``solvers/base.py`` (AdamW, cosine schedule with
warm-up, clipping, checkpoint + resume) in a form short enough to read in one sitting.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, TrainingError
from ..models import MusicGenModel, load_model
from .checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    write_atomic,
)
from .config import TrainConfig
from .data import TokenDataset, build_dataset
from .lora import ADAPTER_INFO, merge_lora, prepare_trainable, trainable_parameters
from .objective import CaptionEncoder, drop_captions, training_step, weighted_mean
from .report import TrainLog, plot_curves, save_samples

__all__ = ["Trainer", "TrainResult", "train"]


@dataclass
class TrainResult:
    """Where a finished run put things and how it ended."""

    run_dir: Path
    model_dir: Path                 # load_model(str(model_dir)) opens the fine-tuned model
    adapter_dir: Path | None        # the LoRA adapter alone (save_adapter), else None
    steps: int                      # optimizer updates done in all
    final: dict                     # the last log row: loss, accuracy_k, ...

    def log(self):
        """The run's log as a DataFrame (one row per update)."""
        return TrainLog(self.run_dir / "log.csv").rows()


def cpu_runs_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16
    autocast converts to and from float32 around every matmul."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class Trainer:
    """Fine-tune ``model`` on ``data`` into ``run_dir`` (see the module docstring).

    Args:
        model: a model name or folder for ``load_model``, or a loaded ``MusicGenModel``
            (copied: the original is not changed).
        data: a folder of captioned clips or a table (``data.find_clips``), or a ``TokenDataset``.
        run_dir: the run folder; it must be new or empty unless ``resume``.
        config: the settings (``TrainConfig``).
        resume: continue from the newest checkpoint in ``run_dir``.
        device: where to train (``"auto"``: cuda > mps > cpu).
        progress: show progress bars (default: yes).
    """

    def __init__(self, model: str | MusicGenModel, data, run_dir: str | Path,
                 config: TrainConfig | None = None, *, resume: bool = False,
                 device: str = "auto", progress: bool | None = None):
        self.config = (config or TrainConfig()).validate()
        self.run_dir, self.progress = Path(run_dir), progress
        base_name = model.name if isinstance(model, MusicGenModel) else str(model)
        self._check_run_dir(resume, base_name)           # before anything is written
        if isinstance(model, MusicGenModel):             # copied: others may generate with it
            self.model = dataclasses.replace(model, model=copy.deepcopy(model.model), extra={})
        else:                                            # a private copy, not the cached one
            self.model = load_model(model, device=device, dtype="float32", cache=False)
        if self.model.is_melody:
            raise ConfigError(f"{self.model.name!r} is a melody model; training covers "
                              "text-to-music models (debug, random-*, facebook/musicgen-small/"
                              "medium/large).")
        self.net: Any = self.model.model                 # MusicgenForConditionalGeneration
        self.data = data if isinstance(data, TokenDataset) else build_dataset(
            data, self.model, self.run_dir / "tokens", self.config.window, self.config.hop,
            progress=progress)
        cfg = self.config
        if cfg.precision == "bf16" and self.model.device.type == "cpu" and not cpu_runs_bf16():
            warnings.warn("precision='bf16' on a CPU without native bf16 (AVX-512 BF16 or AMX): "
                          "autocast emulates it, many times slower than 'fp32' (bench/README.md"
                          "); use precision='fp32' or 'auto'.", stacklevel=2)
        torch.manual_seed(cfg.seed)                      # LoRA's initial A matrices
        self.peft = prepare_trainable(self.model, cfg.lora, cfg.lora_rank, cfg.lora_alpha,
                                      cfg.lora_dropout)
        self.params = trainable_parameters(self.model)
        self.optimizer = torch.optim.AdamW(self.params.values(), lr=cfg.learning_rate,
                                           weight_decay=cfg.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, cfg.warmup_steps,
                                                         cfg.steps)
        self.captions = CaptionEncoder(self.model)
        self.caption_rng = torch.Generator().manual_seed(cfg.seed + 1)   # caption dropout
        self.step, self.seen = 0, 0
        self.log = TrainLog(self.run_dir / "log.csv")
        self.resumed_from = self._resume() if resume else None
        self._order: tuple[int, torch.Tensor] = (-1, torch.empty(0))   # (epoch, permutation)
        saved = json.dumps({**cfg.to_dict(), "base_model": self.model.name,
                            **self.extra_settings()}, indent=2)
        write_atomic(self.run_dir / "train_config.json",
                     lambda tmp: Path(tmp).write_text(saved, encoding="utf-8"))

    # --- setup ---------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, base_name: str) -> None:
        saved = self.run_dir / "train_config.json"
        if not resume:
            if latest_checkpoint(self.run_dir / "checkpoints") is not None or saved.exists():
                raise ConfigError(f"'{self.run_dir}' holds a run already; pass resume=True "
                                  "(--resume) to continue it, or choose a new folder. Nothing "
                                  "was changed.")
        elif saved.exists():
            before = json.loads(saved.read_text(encoding="utf-8"))
            now = {**self.config.to_dict(), "base_model": base_name, **self.extra_settings()}
            changed = sorted(k for k in set(now) | set(before)     # one side may lack a key
                             if k != "steps" and before.get(k) != now.get(k))
            if changed:
                raise ConfigError(f"resuming '{self.run_dir}' with other settings: {changed} "
                                  f"were {[before.get(k) for k in changed]}, now "
                                  f"{[now.get(k) for k in changed]}; only steps may change on "
                                  "resume: resume with the same settings, or use a new folder.")
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _resume(self) -> int | None:
        path = latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            return None                                  # nothing saved yet: start afresh
        state = load_checkpoint(path, self.model.device)
        missing = set(self.params) ^ set(state["trainable"])
        if missing:
            raise ConfigError(f"checkpoint '{path}' does not match this model and settings "
                              f"(parameters differ: {sorted(missing)[:3]}...).")
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                self.params[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.caption_rng)
        self.step, self.seen = int(state["step"]), int(state["seen"])
        self.log.truncate(self.step)
        return self.step

    # --- one update ----------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, list[str]]:
        """The next ``batch_size`` windows in the seeded order: tokens ``[B, K, S]``, captions."""
        n, items = len(self.data), []
        for _ in range(self.config.batch_size):
            epoch, index = divmod(self.seen, n)
            if self._order[0] != epoch:
                self._order = (epoch, torch.randperm(n, generator=torch.Generator().manual_seed(
                    self.config.seed * 1_000_003 + epoch)))
            items.append(self.data[int(self._order[1][index])])
            self.seen += 1
        return torch.stack([t for t, _ in items]), [c for _, c in items]

    def autocast(self):
        """bf16 autocast where the settings and device ask for it, else nothing."""
        cfg, dev = self.config, self.model.device
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda"
                                           and torch.cuda.is_bf16_supported())
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(dev.type, dtype=torch.bfloat16)

    def update(self) -> dict:
        """One optimizer update; returns its log row."""
        cfg, start = self.config, time.perf_counter()
        self.net.decoder.train()
        results = []
        for _ in range(cfg.grad_accum):
            tokens, texts = self._batch()
            with self.autocast():
                result = training_step(self.model, self.captions, tokens,
                                       drop_captions(texts, cfg.caption_dropout, self.caption_rng))
            (result.loss / cfg.grad_accum).backward()
            results.append((result, 1 / cfg.grad_accum))
        extra, extra_report = self.extra_loss()
        if extra is not None:
            extra.backward()
        norm = torch.nn.utils.clip_grad_norm_(
            self.params.values(), cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        if not torch.isfinite(norm):                     # nothing non-finite reaches the weights
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(f"the gradient norm is {norm.item()} at update {self.step + 1}; "
                                f"the weights were not changed. Start a new run with a lower "
                                f"learning_rate (now {cfg.learning_rate}).")
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        report = weighted_mean(results)                  # loss, then loss_k / accuracy_k
        return {"step": self.step, "loss": report.pop("loss"), "lr": lr,
                "grad_norm": norm.item(), "seconds": time.perf_counter() - start, **report,
                **extra_report}

    def extra_loss(self) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A further term of each update's loss and what to log about it, computed after the
        windows' passes and before clipping: none here (``contrast.ContrastTrainer`` adds
        the caption contrast)."""
        return None, {}

    def extra_settings(self) -> dict:
        """The settings of ``extra_loss``, saved in ``train_config.json`` beside the
        ``TrainConfig`` and checked on resume like it: none here."""
        return {}

    @torch.no_grad()
    def evaluate(self, batch_size: int = 16) -> dict:
        """Teacher-forced loss and accuracy per codebook over the whole dataset, in eval mode
        (no dropout) with every caption: what the model has learned, measured the same way
        each time. Returns ``{"loss": mean, "loss_k": ..., "accuracy_k": ...}``."""
        net, was_training = self.model.model, self.model.model.training
        net.eval()
        results = []
        try:
            for i in range(0, len(self.data), batch_size):
                items = [self.data[j] for j in range(i, min(i + batch_size, len(self.data)))]
                result = training_step(self.model, self.captions,
                                       torch.stack([t for t, _ in items]), [c for _, c in items])
                results.append((result, len(items) / len(self.data)))
        finally:
            net.train(was_training)
        return weighted_mean(results)

    # --- the run -------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """Save the state, the curves and sample clips at the current step."""
        cfg = self.config
        path = save_checkpoint(self.run_dir / "checkpoints", self.step, {
            "trainable": {n: p.detach() for n, p in self.params.items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(self.caption_rng), "seen": self.seen}, cfg.keep_checkpoints)
        rows = self.log.rows()
        if len(rows):
            plot_curves(rows, self.run_dir / "curves.png")
        captions = list(cfg.sample_captions) or sorted(set(self.data.captions))[:2]
        save_samples(self.model, captions, self.run_dir / "samples" / f"step_{self.step:06d}",
                     cfg.sample_seconds, cfg.seed)
        return path

    def fit(self) -> TrainResult:
        """Train to ``config.steps`` updates (from where a resumed run stopped), then save."""
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="update",
                   disable=self.progress is False)
        row: dict = {}
        while self.step < cfg.steps:
            row = self.update()
            self.log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.checkpoint()
        bar.close()
        return self.save(row or self.log.rows().iloc[-1].to_dict())

    def save(self, final: dict) -> TrainResult:
        """Write ``run_dir/model`` (LoRA merged) and, if asked, ``run_dir/adapter``."""
        adapter = None
        if self.peft is not None and self.config.save_adapter:
            adapter = self.run_dir / "adapter"
            self.peft.save_pretrained(str(adapter))
            (adapter / ADAPTER_INFO).write_text(json.dumps({"base_model": self.model.name}),
                                                encoding="utf-8")
        if self.peft is not None:
            merge_lora(self.model, self.peft)
            self.peft = None
        model_dir = self.run_dir / "model"
        tmp = self.run_dir / ".model-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.net.save_pretrained(str(tmp))
        tokenizer: Any = self.model.tokenizer
        tokenizer.save_pretrained(str(tmp))
        old = self.run_dir / ".model-old"
        if model_dir.exists():
            os.replace(model_dir, old)
        os.replace(tmp, model_dir)
        shutil.rmtree(old, ignore_errors=True)
        result = TrainResult(self.run_dir, model_dir, adapter, self.step, final)
        summary = json.dumps({"model_dir": str(model_dir), "adapter_dir": adapter and str(adapter),
                              "steps": self.step, "final": final, "base_model": self.model.name},
                             indent=2, default=float)
        write_atomic(self.run_dir / "result.json",
                     lambda tmp: Path(tmp).write_text(summary, encoding="utf-8"))
        return result


def train(data, model: str | MusicGenModel = "debug", run_dir: str | Path = "runs/fine-tune", *,
          resume: bool = False, device: str = "auto", progress: bool | None = None,
          **settings) -> TrainResult:
    """Fine-tune ``model`` on ``data`` (see :class:`Trainer`); ``settings`` are
    :class:`TrainConfig` fields, e.g. ``train("clips/", "debug", "runs/a", steps=200, lora=True)``."""
    config = TrainConfig().replace(**settings)
    return Trainer(model, data, run_dir, config, resume=resume, device=device,
                   progress=progress).fit()
