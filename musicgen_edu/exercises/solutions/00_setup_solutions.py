"""Solutions to the exercises of lecture 00 (set-up and a first clip).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. Everything is read from the model, so they hold for any checkpoint.
"""

import math


def solve_same_seed(gen, out):
    """Exercise 1: the same prompt, duration and seed again give the same tokens."""
    return gen.generate(out.prompts[0], duration=out.duration, seed=out.seeds[0])


def solve_clip_tokens(model, seconds):
    """Exercise 5a: frame_rate frames per second, each with one token per codebook."""
    frames = round(seconds * model.frame_rate)
    return model.num_codebooks * frames


def solve_token_bytes(model, seconds):
    """Exercise 5b: log2(codebook size) bits per token (8 for 256 codewords, 11 for 2048), 8 per byte."""
    bits_per_token = math.log2(model.config.audio_encoder.codebook_size)
    return solve_clip_tokens(model, seconds) * bits_per_token / 8
