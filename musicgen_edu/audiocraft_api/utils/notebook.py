"""``display_audio``, as in audiocraft ``audiocraft/utils/notebook.py``: one player per item.

Built on :func:`musicgen_edu.audio.play` (IPython's ``Audio``), imported lazily so the module
loads without IPython.
"""

from __future__ import annotations

import torch

from ...errors import AudioError

__all__ = ["display_audio"]


def display_audio(samples: torch.Tensor, sample_rate: int) -> None:
    """Show one audio player per item of ``samples`` ``[B, C, T]`` (or ``[C, T]``).

    As audiocraft does, the browser scales each clip to full volume (``Audio(normalize=True)``).
    """
    from IPython.display import display

    from ...audio import play

    if not isinstance(samples, torch.Tensor) or samples.dim() not in (2, 3):
        raise AudioError(f"samples must be a [B, C, T] or [C, T] tensor, got "
                         f"{getattr(samples, 'shape', type(samples).__name__)}.")
    samples = samples.detach().cpu()
    if samples.dim() == 2:
        samples = samples[None]                   # [C, T] -> [1, C, T]
    for audio in samples:                         # audio: [C, T]
        display(play(audio.numpy(), sample_rate, normalize=True))
