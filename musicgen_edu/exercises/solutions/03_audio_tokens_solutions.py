"""Solutions to lecture 03's exercises (audio tokens: EnCodec, codebooks, delay pattern).

Each ``solve_*`` function returns the answer that ``mg.exercises.check_*`` accepts; they read
every number from the model, so they hold for edu-tiny, the debug models and musicgen-small.
"""

import math

import torch

import musicgen_edu as mg


def solve_samples_per_frame(model):
    """Exercise 1: samples per token frame = sample rate / frame rate (edu-tiny: 16000 / 50 =
    320; musicgen: 32000 / 50 = 640)."""
    return model.sample_rate // model.frame_rate


def solve_token_bitrate(model):
    """Exercise 2: bits per second = K codebooks x log2(codebook size) bits x frames per second.

    MusicGen mono: 4 x 11 x 50 = 2200 bit/s (2.2 kbit/s), against 512,000 bit/s of 16-bit PCM.
    """
    codebook_size = model.config.audio_encoder.codebook_size  # 256: 8 bits, 2048: 11
    return model.num_codebooks * math.log2(codebook_size) * model.frame_rate


def solve_grid_columns(model, duration):
    """Exercise 3: columns = 1 start column + frames + the largest delay."""
    frames = round(duration * model.frame_rate)
    delays = mg.codebook_delays(model.num_codebooks, model.audio_channels)
    return 1 + frames + max(delays)


def my_undelay(grid, frames, delays):
    """Exercise 4: row k holds frame f at column 1 + delays[k] + f; cut each row and stack."""
    rows = [grid[:, k, 1 + d: 1 + d + frames] for k, d in enumerate(delays)]
    return torch.stack(rows, dim=1)  # [B, K, frames]


def solve_undelay_function(model):
    """Exercise 4: the function to pass to ``check_undelay_function``."""
    return my_undelay
