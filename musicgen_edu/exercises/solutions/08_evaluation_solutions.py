"""Solutions to the exercises of lecture 08 (evaluation: loudness, FAD, embeddings).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. Only the lecture's facts are used: a full-scale 1 kHz sine measures
-3.01 LUFS, FAD's formula, and EnCodec's frame rate read from the model.
"""

import numpy as np


def solve_sine_amplitude(target_lufs):
    """Exercise 1: loudness = -3.01 LUFS + 20 log10(amplitude), solved for the amplitude."""
    return 10 ** ((target_lufs - (-3.01)) / 20)


def solve_fad(mu_a, var_a, mu_b, var_b):
    """Exercise 2: diagonal covariances (given as their diagonals), so sqrtm is element-wise."""
    mu_a, var_a, mu_b, var_b = (np.asarray(x, dtype=float) for x in (mu_a, var_a, mu_b, var_b))
    means = np.sum((mu_a - mu_b) ** 2)                               # |mu_a - mu_b|^2
    covariances = np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))  # the trace terms
    return float(means + covariances)


def solve_embedding_rows(model, num_clips, duration):
    """Exercise 3: per_frame=True keeps every codec frame (frame_rate per second) of every clip."""
    return num_clips * round(duration * model.frame_rate)
