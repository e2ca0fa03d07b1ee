"""EnCodec audio tokens: encode, decode, residual codebooks, and pictures of the delay pattern.

MusicGen never sees samples: EnCodec (Défossez et al. 2022, "High Fidelity Neural Audio
Compression") turns a waveform ``[B, C, T]`` into tokens ``[B, K, S]``, ``frame_rate`` (50)
frames per second, each frame one index per codebook. The K codebooks form a *residual vector
quantiser* (transformers ``EncodecModel`` / ``EncodecResidualVectorQuantizer``; audiocraft
``quantization/core_vq.py::ResidualVectorQuantization``): codebook 0 quantises the encoder's
latent coarsely, codebook 1 quantises what codebook 0 missed (the residual), and so on::

    residual = latent
    for k in range(K):
        tokens[k] = nearest codeword of codebook k to residual
        residual = residual - codebook_k[tokens[k]]
    decoded latent = sum of the chosen codewords (any first n of them give a coarser latent)

Decoding with only the first n codebooks therefore gives a coarser reconstruction
(:func:`decode_with_codebooks`, :func:`reconstruction_error`). transformers' quantiser decodes
as many layers as the codes have rows, so this is simply ``tokens[:, :n]``.

Stereo models (``musicgen-stereo-*``) encode left and right with the same mono EnCodec and
interleave the rows ``[L0, R0, L1, R1, ...]`` (K = 8); there ``n`` must be even, so that each
channel keeps the same number of codebooks.

The offline ``debug`` models' EnCodec has random weights: the codes and shapes are real, but
its reconstructions are noise and their errors mean nothing (use musicgen-small for that).

Everything goes through the backend's ``encode_audio`` / ``decode_audio``, the exact path that
``MusicGenerator.generate_continuation`` and generation use.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import AudioError, ConfigError
from .patterns import codebook_delays, delay_pattern

__all__ = ["encode_audio", "decode_tokens", "decode_with_codebooks", "reconstruction_error",
           "plot_delay_pattern", "plot_reconstruction", "plot_tokens"]


def _backend(model):
    from .backends import TransformersBackend  # lazy: backends import the model stack

    return TransformersBackend(model)


def _as_model_audio(model, wav, sample_rate: int) -> torch.Tensor:
    """``[T]``/``[C, T]``/``[B, C, T]`` at any rate -> ``[B, C_model, T]`` float32 at the model's
    rate, with channels mixed (mono models) or duplicated (stereo models) as the backend does."""
    from .audio import resample

    wav = torch.as_tensor(wav.detach().cpu() if isinstance(wav, torch.Tensor) else wav)
    if not wav.is_floating_point() or wav.dim() not in (1, 2, 3) or wav.shape[-1] == 0:
        raise AudioError(f"wav must be a non-empty float [T], [C, T] or [B, C, T] waveform, got "
                         f"shape {list(wav.shape)} and dtype {wav.dtype}.")
    wav = wav.float()
    while wav.dim() < 3:
        wav = wav.unsqueeze(0)                                       # [B, C, T]
    if not torch.isfinite(wav).all():
        raise AudioError("wav contains NaN or infinite samples.")
    if sample_rate != model.sample_rate:  # resample also checks that the rate is a valid one
        wav = torch.as_tensor(resample(wav.numpy(), sample_rate, model.sample_rate))
    if model.audio_channels == 1:
        return wav.mean(dim=1, keepdim=True)                         # mono mix
    return wav.repeat(1, 2, 1) if wav.shape[1] == 1 else wav[:, :2]  # left, right


def encode_audio(model, wav, sample_rate: int) -> torch.Tensor:
    """EnCodec-encode a waveform into tokens ``[B, K, S]``, ``S = ceil(T / hop)`` frames.

    Args:
        model: a loaded :class:`~musicgen_edu.models.MusicGenModel`.
        wav: ``[T]``, ``[C, T]`` or ``[B, C, T]`` floats (numpy or torch), any sample rate; it
            is resampled to ``model.sample_rate`` and mixed to the model's channels.
        sample_rate: the rate of ``wav`` in Hz.

    Returns:
        Long tensor ``[B, K, S]`` on the model's device, values in ``[0, codebook_size)``.

    Raises:
        AudioError: not a non-empty, finite float waveform of rank 1-3.
        ConfigError: ``sample_rate`` is not a positive whole number.
    """
    return _backend(model).encode_audio(_as_model_audio(model, wav, sample_rate))


def decode_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """EnCodec-decode tokens ``[B, K, S]`` into a float32 waveform ``[B, C, S * hop]`` (on CPU)."""
    return _backend(model).decode_audio(torch.as_tensor(tokens)).float().cpu()


def decode_with_codebooks(model, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """Decode with only the first ``n`` codebooks: 1 = coarse, K = the full decode.

    Residual quantisation adds one codeword per codebook, so dropping the last ones leaves a
    coarser latent (with trained weights: a duller, noisier sound). Stereo models interleave
    ``[L0, R0, L1, R1, ...]``, so there ``n`` must be even (both channels keep n / 2).

    Args:
        model: a loaded MusicGenModel.
        tokens: ``[B, K, S]`` codes, e.g. from :func:`encode_audio`.
        n: how many codebooks to keep, ``1 <= n <= K`` (stereo: 2, 4, ..., K).

    Returns:
        ``[B, C, S * hop]`` float32 waveform; ``n = K`` equals :func:`decode_tokens`.

    Raises:
        ConfigError: ``n`` is not an allowed number of codebooks.
    """
    num_codebooks, step = int(tokens.shape[1]), model.audio_channels
    allowed = list(range(step, num_codebooks + 1, step))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) not in allowed:
        what = f"an even number in [2, {num_codebooks}] (stereo pairs)" if step == 2 else \
            f"a whole number in [1, {num_codebooks}]"
        raise ConfigError(f"n={n!r} codebooks is out of range: these tokens have K="
                          f"{num_codebooks} codebooks, so n must be {what}; allowed: {allowed}.")
    return decode_tokens(model, tokens[:, : int(n)])


def reconstruction_error(model, wav, sample_rate: int, codebooks=None):
    """Encode once, decode with the first n codebooks for each n, and measure the error.

    The reference is ``wav`` at the model's rate and channels; the decode is trimmed to its
    length. ``mse`` is the mean squared sample error; ``snr_db = 10 log10(signal energy / error
    energy)`` (higher is better, 0 dB = the error is as loud as the music).

    Args:
        model: a loaded MusicGenModel.
        wav: ``[T]``, ``[C, T]`` or ``[B, C, T]`` at ``sample_rate``.
        sample_rate: the rate of ``wav`` in Hz.
        codebooks: the n values to try; default every allowed n (``1..K``, stereo ``2, 4, .., K``).

    Returns:
        pandas DataFrame with columns ``codebooks``, ``mse``, ``snr_db``, one row per n.
    """
    import pandas as pd  # lazy: only this function needs pandas

    reference = _as_model_audio(model, wav, sample_rate)                   # [B, C, T]
    tokens = _backend(model).encode_audio(reference)                       # [B, K, S]
    if codebooks is None:
        codebooks = range(model.audio_channels, tokens.shape[1] + 1, model.audio_channels)
    signal = float((reference.double() ** 2).sum())
    rows = []
    for n in codebooks:
        decoded = decode_with_codebooks(model, tokens, n)[..., : reference.shape[-1]]
        error = (decoded.double() - reference.double()) ** 2               # [B, C, T]
        noise = float(error.sum())
        snr = 10 * np.log10(max(signal, 1e-20) / max(noise, 1e-20))        # finite, even if silent
        rows.append({"codebooks": int(n), "mse": float(error.mean()), "snr_db": float(snr)})
    return pd.DataFrame(rows, columns=["codebooks", "mse", "snr_db"])


MIN_SNR_SPAN_DB = 6.0   # plot_reconstruction's y axis spans at least this (differences below
#                        a few dB are not audible; a smaller span would magnify noise)


def plot_delay_pattern(num_codebooks: int, frames: int, audio_channels: int = 1, ax=None):
    """Draw the delayed grid ``[K, frames + D + 1]``: frame numbers in cells, specials in grey.

    Cell (k, c) holds frame ``c - 1 - delay[k]`` of codebook k (see ``patterns.py``); each
    colour is one frame, so a frame's K tokens run down a diagonal (stereo: down pair steps).

    Args:
        num_codebooks: K rows (8 for stereo models).
        frames: S token frames to draw (keep it small, e.g. 6).
        audio_channels: 2 for stereo models (pairs share a delay).
        ax: a matplotlib Axes, or ``None`` for a new figure.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt  # lazy

    for name, value in (("num_codebooks", num_codebooks), ("frames", frames)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 1, e.g. 4.")
    if audio_channels not in (1, 2) or num_codebooks % audio_channels:
        raise ConfigError(f"audio_channels={audio_channels!r} must be 1 or 2 and divide "
                          f"num_codebooks={num_codebooks}.")
    index = torch.arange(frames).expand(1, num_codebooks, frames)         # [1, K, S] frame ids
    grid = delay_pattern(index, special=-1, audio_channels=audio_channels)[0].numpy()
    if ax is None:
        size = (max(5.0, 0.5 * grid.shape[1] + 2.5), 0.45 * num_codebooks + 1.2)  # inches
        _, ax = plt.subplots(figsize=size, constrained_layout=True)
    colours = np.ma.masked_less(grid, 0)                                  # specials: no colour
    ax.imshow(np.ones_like(grid), cmap="Greys", vmin=0, vmax=5, aspect="auto")  # grey backdrop
    ax.imshow(colours, cmap="viridis", vmin=0, vmax=max(frames - 1, 1), alpha=0.75, aspect="auto")
    for (k, c), value in np.ndenumerate(grid):
        ax.text(c, k, "S" if value < 0 else str(value), ha="center", va="center", fontsize=8,
                color="dimgray" if value < 0 else "black")
    delays = codebook_delays(num_codebooks, audio_channels)
    names = ([f"{'LR'[k % 2]}{k // 2}" for k in range(num_codebooks)] if audio_channels == 2
             else [str(k) for k in range(num_codebooks)])
    ax.set_yticks(range(num_codebooks), [f"{name} (delay {d})" for name, d in zip(names, delays)])
    ax.set_xticks(range(grid.shape[1]))
    ax.set_xlabel("decoder step (column); S = special token")
    ax.set_ylabel("codebook")
    ax.set_title(f"delay pattern: K={num_codebooks}, {frames} frames -> {grid.shape[1]} columns")
    return ax


def plot_tokens(tokens, ax=None, title: str | None = None):
    """Draw a ``[K, S]`` token grid: codebooks down, frames across, colour = token id.

    Both axes count whole things (codebooks, frames), so their ticks are whole numbers.

    Args:
        tokens: ``[K, S]`` codes of one item (e.g. ``generation.tokens[0]``).
        ax: a matplotlib Axes, or ``None`` for a new figure.
        title: the Axes title; default names the shape.

    Returns:
        The image (pass it to ``fig.colorbar`` for a token-id scale).
    """
    import matplotlib.pyplot as plt  # lazy
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(10, 2.5), constrained_layout=True)
    grid = np.asarray(tokens)
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="frame (S)", ylabel="codebook (K)",
           title=title or f"tokens [K, S] = {list(grid.shape)}")
    return image


def plot_reconstruction(df, ax=None):
    """Plot ``snr_db`` against the number of codebooks kept, each point labelled with its MSE.

    Args:
        df: the result of :func:`reconstruction_error` (a DataFrame or a list of dicts).
        ax: a matplotlib Axes, or ``None`` for a new figure.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt  # lazy

    rows = df.to_dict("records") if hasattr(df, "to_dict") else list(df)
    n = [r["codebooks"] for r in rows]
    snr = [r["snr_db"] for r in rows]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    ax.plot(n, snr, "o-")
    for r in rows:
        ax.annotate(f"mse {r['mse']:.2g}", (r["codebooks"], r["snr_db"]), fontsize=8,
                    textcoords="offset points", xytext=(0, 6), ha="center")
    ax.set_xticks(n)
    ax.margins(x=0.1, y=0.25)
    low, high = min(snr), max(snr)
    if high - low < MIN_SNR_SPAN_DB:     # a flat curve must look flat, not auto-scaled to a cliff
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_SNR_SPAN_DB / 2, middle + MIN_SNR_SPAN_DB / 2)
    ax.set_xlabel("codebooks used for decoding (first n)")
    ax.set_ylabel("SNR (dB), higher is better")
    ax.set_title("reconstruction error vs codebooks")
    return ax
