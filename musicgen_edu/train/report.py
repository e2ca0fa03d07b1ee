"""What a run leaves to look at: a CSV log per update, a loss-curve plot, sample clips.

    run/log.csv              step, loss, lr, grad_norm, seconds, loss_k / accuracy_k per codebook
    run/curves.png           loss and per-codebook accuracy against the step
    run/samples/step_N/      a few clips generated from fixed captions at each checkpoint

The log is rewritten to the last checkpoint's step when a run resumes (the updates after it
are done again, so their rows would otherwise appear twice).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..models import MusicGenModel
from .checkpoint import write_atomic

__all__ = ["TrainLog", "plot_curves", "save_samples"]


class TrainLog:
    """Rows of ``log.csv``, one per optimizer update, appended as they come."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> pd.DataFrame:
        return pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame()

    def truncate(self, step: int) -> None:
        """Keep the rows up to ``step`` (a resumed run redoes the updates after it)."""
        rows = self.rows()
        if len(rows):
            kept = rows[rows["step"] <= step]
            write_atomic(self.path, lambda tmp: kept.to_csv(tmp, index=False))

    def append(self, row: dict) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


def plot_curves(log: pd.DataFrame, path: Path | None = None):
    """Loss (left) and per-codebook teacher-forced accuracy (right) against the step."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(log["step"], log["loss"], color="black", label="mean")
    for col in [c for c in log.columns if c.startswith("loss_")]:
        left.plot(log["step"], log[col], alpha=0.5, label=col.replace("loss_", "codebook "))
    left.set(xlabel="update", ylabel="cross-entropy (nats/token)", title="training loss",
             ylim=(0, None))
    for col in [c for c in log.columns if c.startswith("accuracy_")]:
        right.plot(log["step"], log[col], label=col.replace("accuracy_", "codebook "))
    right.set(xlabel="update", ylabel="accuracy", title="teacher-forced token accuracy",
              ylim=(0, 1.02))
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
    return fig


def save_samples(model: MusicGenModel, captions: list[str], folder: Path, seconds: float,
                 seed: int) -> list[Path]:
    """Generate one clip per caption with the model as it is now and save them in ``folder``.

    Runs on the transformers backend (adapters in place), in eval mode, and leaves every
    random state as it found it, so a run with samples trains exactly as one without.
    """
    from ..generator import MusicGenerator

    net, was_training = model.model, model.model.training
    py, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            net.eval()
            out = MusicGenerator(model, backend="transformers").generate(
                captions, duration=seconds, seed=seed, progress=False)
    finally:
        net.train(was_training)
        random.setstate(py)
        np.random.set_state(np_state)
    folder.mkdir(parents=True, exist_ok=True)
    return out.save(folder / "sample.wav", overwrite=True)
