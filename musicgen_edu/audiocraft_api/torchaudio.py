"""The one ``torchaudio`` function audiocraft's MusicGen demo calls, ``load``, on our audio
files code (soundfile), so the demo runs without torchaudio: write
``from musicgen_edu.audiocraft_api import torchaudio`` where it says ``import torchaudio``.

Follows torchaudio's ``torchaudio.load`` return convention: ``(wav [C, T] float32, sample_rate)``.
"""

from __future__ import annotations

import torch

from .data.audio import audio_read

__all__ = ["load"]


def load(filepath) -> tuple[torch.Tensor, int]:
    """Read a whole audio file: ``(wav [C, T] float32 in [-1, 1], sample_rate)``."""
    return audio_read(filepath)
