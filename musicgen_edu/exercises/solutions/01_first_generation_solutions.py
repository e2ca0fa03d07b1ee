"""Solutions to the exercises of lecture 01 (first generation).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. Everything is read from the model, so they hold for any checkpoint.
"""

import musicgen_edu as mg


def solve_token_shape(model, duration):
    """``out.tokens`` is [B, K, S]: 1 prompt, K codebooks, frame_rate frames per second."""
    frames = round(duration * model.frame_rate)
    return (1, model.num_codebooks, frames)


def solve_wav_shape(model, duration):
    """``out.wav`` is [B, C, T]: every token frame decodes to sample_rate // frame_rate samples."""
    frames = round(duration * model.frame_rate)
    samples_per_frame = model.sample_rate // model.frame_rate  # 640 for MusicGen
    return (1, model.audio_channels, frames * samples_per_frame)


def solve_decoder_steps(model, duration):
    """One step per frame, plus the largest codebook delay (K - 1 mono, K/2 - 1 stereo)."""
    frames = round(duration * model.frame_rate)
    delays = mg.codebook_delays(model.num_codebooks, model.audio_channels)
    return frames + max(delays)


def solve_rtf(out):
    """Real-time factor: seconds of compute per second of audio."""
    return out.timings["total_s"] / out.duration
