"""One generate call as the decoding loop sees it: the job, its decoder windows, its progress.

``generator.MusicGenerator`` validates a call into a :class:`Job` (prompts, seeds, settings),
decodes it window by window (:func:`plan_windows`, :class:`Window`) and reports each step to a
:class:`Progress`; the loop itself is in ``generator.py``.

Long form: MusicGen's decoder sees at most ``max_duration`` seconds (30 s: its window). A
longer clip is made window by window, as audiocraft ``models/genmodel.py::_generate_tokens``
does: each window starts ``extend_stride`` seconds after the previous one and is prompted with
that window's last ``window - stride`` frames, so the music carries on across the seam. A
continuation's audio prompt is the first window's prompt. With a 30 s window and an 18 s
stride:

    output frames: 0 ......... 18 s ........ 30 s ........ 48 s
    window 0:      [prompt? | generated ......]
    window 1:                 [prompt (12 s)  | generated .....]
    window 2:                                 [prompt (12 s)  | generated ...]

:func:`plan_windows` lays the windows out (:class:`WindowPlan`); a :class:`Window` is the one
being decoded: its delayed grid (``patterns.py``), filled column by column by
``generator.MusicGenerator``, and which of its frames are new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .generation import GenerationConfig
from .patterns import build_delay_grid, undelay

__all__ = ["Job", "Progress", "WindowPlan", "plan_windows", "Window"]


@dataclass(frozen=True)
class WindowPlan:
    """Where one decoder window sits in the output."""

    offset: int                     # output frame where the window starts
    frames: int                     # frames it yields once undelayed, prompt included
    prompt_frames: int              # its first frames are given, not generated


def plan_windows(total_frames: int, window_frames: int, stride_frames: int,
                 prompt_frames: int = 0) -> list[WindowPlan]:
    """The windows that make ``total_frames`` output frames: one, or sliding ones for long form.

    Args:
        total_frames: F, frames in the final output, prompt included.
        window_frames: the most frames one window holds (the model's window).
        stride_frames: how far each window starts after the previous one (``0 < stride <
            window`` when there is more than one window).
        prompt_frames: frames of a continuation's audio prompt (the first window's prompt).

    Example: ``plan_windows(100, 40, 25)`` gives windows at offsets 0, 25, 50 and 75 of 40, 40,
    40 and 25 frames, each after the first prompted with 15 frames.
    """
    plan, offset, prompt = [], 0, prompt_frames
    while True:
        frames = min(total_frames - offset, window_frames)
        plan.append(WindowPlan(offset, frames, prompt))
        if offset + frames >= total_frames:
            return plan
        prompt, offset = frames - stride_frames, offset + stride_frames


@dataclass
class Window:
    """The decoder window being filled: its delayed grid and which of its frames are new."""

    grid: torch.Tensor              # [B, K, frames + D + 1] delayed tokens, column by column
    prompt_len: int                 # P: its first frames are given (a prompt), not generated
    frames: int                     # frames it yields once undelayed, prompt included

    @classmethod
    def open(cls, prompt: torch.Tensor, frames: int, special: int,
             audio_channels: int) -> Window:
        """A window of ``frames`` frames whose first ones are ``prompt`` ``[B, K, P]``; the
        rest of its grid is ``patterns.UNKNOWN`` until decoded."""
        grid = build_delay_grid(prompt, frames, special, audio_channels)
        return cls(grid, prompt.shape[-1], frames)

    def tokens(self, audio_channels: int) -> torch.Tensor:
        """The window's frames ``[B, K, frames]``, undelayed (prompt included)."""
        return undelay(self.grid, self.frames, audio_channels)


class Progress:
    """tqdm.auto bar and/or a ``callback(step, total)`` over all decoder steps."""

    def __init__(self, total: int, show: bool, callback: Callable[[int, int], None] | None):
        self.total, self.done, self.callback, self.bar = total, 0, callback, None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="generating", unit="step", leave=False)

    def update(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclass
class Job:
    """Everything one call needs, prepared and validated before any decoding starts."""

    prompts: list                   # B prompts (None = unconditional)
    negatives: list                 # B negative prompts (None = null condition)
    config: GenerationConfig
    seeds: list[int]
    generators: list[torch.Generator]  # per-item RNGs of the "reference" sampler
    seed_tensor: torch.Tensor       # [B] int64 seeds of the "counter" sampler, on the device
    total_frames: int               # F: frames in the final output, prompt included
    step: int = 0                   # decoder steps so far, all windows (the counter's clock)
    prompt_tokens: torch.Tensor | None = None  # [B, K, P] continuation prompt
    chroma: torch.Tensor | None = None         # [B, frames, 12] melody features
    chroma_rate: float = 0.0        # chroma frames per second
    finished: list = field(default_factory=list)  # token chunks [B, K, *] already final
    window: Window | None = None    # the window being decoded (streaming reads it)
    first_step_s: float | None = None
