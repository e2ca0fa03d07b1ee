"""Solutions to the exercises of lecture 05 (latency).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. Everything is read from the model, so they hold for any checkpoint.
"""

import torch

import musicgen_edu as mg


def solve_realtime_steps(model, seconds):
    """Exercise 1: (frames + the largest codebook delay) steps must fit in ``seconds``."""
    frames = round(seconds * model.frame_rate)
    steps = frames + max(mg.codebook_delays(model.num_codebooks, model.audio_channels))
    return steps / seconds


def solve_kv_bytes(model, batch_size, cache_len):
    """Exercise 2: keys and values x layers x rows (2 per item with CFG) x heads x head dim x
    cached positions x bytes per number."""
    dec = model.config.decoder
    head_dim = dec.hidden_size // dec.num_attention_heads
    dtype_bytes = torch.empty((), dtype=model.dtype).element_size()
    rows = 2 * batch_size
    return (2 * dec.num_hidden_layers * rows * dec.num_attention_heads * head_dim * cache_len
            * dtype_bytes)


def solve_bound(model, batch_size, cache_len, bandwidth_gbs):
    """Exercise 3: every decoder weight once plus the KV cache, at the memory's bandwidth."""
    weight_bytes = mg.decode_bound(model, cache_len=cache_len, bandwidth_gbs=bandwidth_gbs)[
        "weight_bytes"]                                     # counted by the package, once a step
    bytes_per_step = weight_bytes + solve_kv_bytes(model, batch_size, cache_len)
    return bandwidth_gbs * 1e9 / bytes_per_step
