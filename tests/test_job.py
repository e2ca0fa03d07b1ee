"""job.py: the windows a long clip is decoded in, and the window being filled."""

from __future__ import annotations

import torch

from musicgen_edu.job import Window, WindowPlan, plan_windows
from musicgen_edu.patterns import UNKNOWN


def test_windows_slide_by_the_stride_and_are_prompted_with_the_overlap():
    assert plan_windows(100, 40, 25) == [WindowPlan(0, 40, 0), WindowPlan(25, 40, 15),
                                         WindowPlan(50, 40, 15), WindowPlan(75, 25, 15)]
    assert plan_windows(30, 40, 25, prompt_frames=5) == [WindowPlan(0, 30, 5)]   # one window
    plan = plan_windows(1500, 1500, 900)
    assert plan == [WindowPlan(0, 1500, 0)]                   # exactly the window: no sliding


def test_a_window_gives_back_its_prompt_and_marks_the_rest_unknown():
    prompt = torch.arange(2 * 4 * 3).view(2, 4, 3)            # [B, K, P]
    window = Window.open(prompt, frames=5, special=2048, audio_channels=1)
    assert window.prompt_len == 3 and window.grid.shape == (2, 4, 5 + 3 + 1)
    tokens = window.tokens(audio_channels=1)                 # [B, K, frames]
    assert torch.equal(tokens[..., :3], prompt)
    assert (tokens[..., 3:] == UNKNOWN).all()
