"""Checkpoints that resume a run exactly: what trains, the optimizer, the schedule, the RNGs, the data.

A checkpoint is one file, ``checkpoints/step_000100.pt``, written to a temporary name and
moved into place (``os.replace`` is atomic), so a run killed at any moment leaves either the
old set of checkpoints or the new one, never half a file. It holds:

    trainable   the parameters that train (the decoder, or only the LoRA adapters)
    optimizer   AdamW's moments and step counts
    scheduler   where the warm-up/cosine schedule is
    rng         torch's global generator (model dropout) and the caption-dropout generator
    seen        windows consumed so far: the data order is a pure function of the seed and
                the epoch, so this one number puts the loader back where it was

Everything is tensors, numbers and strings, so it loads with ``torch.load(weights_only=True)``:
a checkpoint file cannot run code. Resuming from it continues with the same arithmetic as a run
never stopped (tests/test_train.py kills a run with SIGKILL and compares the weights bitwise).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["save_checkpoint", "latest_checkpoint", "load_checkpoint", "capture_rng",
           "restore_rng", "save_atomic", "write_atomic"]

NAME = re.compile(r"step_(\d{6,})\.pt$")


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, then move it into place: every file a
    run writes (checkpoints, shards, tables, the log, the plot) is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`write_atomic`)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def capture_rng(caption_generator: torch.Generator) -> dict:
    """The random states the loop draws from (the loop uses no numpy or Python randomness)."""
    state = {"torch": torch.get_rng_state(), "captions": caption_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict, caption_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    caption_generator.set_state(state["captions"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(folder: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as ``folder/step_<step>.pt``; delete all but the ``keep`` newest."""
    path = folder / f"step_{step:06d}.pt"
    save_atomic({"step": step, **state}, path)
    for old in sorted(_checkpoints(folder))[:-keep]:
        old[1].unlink(missing_ok=True)
    return path


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    return [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.search(p.name))]


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder`` (temporary files are never picked)."""
    found = sorted(_checkpoints(folder))
    return found[-1][1] if found else None


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)
