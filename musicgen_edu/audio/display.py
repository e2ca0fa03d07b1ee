"""Audio in a notebook: players and plots (waveform, spectrogram) for ``[T]`` / ``[C, T]`` clips.

As audiocraft ``audiocraft/utils/notebook.py`` (``display_audio``): a helper a lecture calls in
one line (STYLE.md rule 8). IPython, matplotlib and librosa are imported inside the functions,
so ``import musicgen_edu`` works without a notebook.
"""

from __future__ import annotations

import numpy as np

from ..errors import AudioError
from .waveform import as_numpy, check_positive_int

__all__ = ["play", "plot_waveform", "plot_spectrogram"]


def play(wav, sample_rate: int, normalize: bool = False):
    """An ``IPython.display.Audio`` player for ``wav`` (as audiocraft's ``display_audio``).

    ``[T]`` / ``[C, T]`` gives one player. ``[B, C, T]`` gives a *list* of players, one per
    item; show them with ``for p in play(batch, sr): display(p)``. By default levels are kept
    as they are (clipped to [-1, 1]) so quiet audio sounds quiet; ``normalize=True`` lets the
    browser scale each clip to full volume.
    """
    sample_rate = check_positive_int("sample_rate", sample_rate)
    arr = as_numpy(wav, ndims=(1, 2, 3))
    if not np.isfinite(arr).all():
        raise AudioError("wav has NaN/inf samples; cannot play it. Check np.isfinite(wav).")
    from IPython.display import Audio  # lazy
    if arr.ndim == 3:
        return [play(item, sample_rate, normalize) for item in arr]  # item: [C, T]
    return Audio(np.clip(arr, -1.0, 1.0), rate=sample_rate, normalize=normalize)


def _new_axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # lazy; never plt.show(): notebooks render, Agg is safe
    _, ax = plt.subplots(figsize=(10, 3))
    return ax


def plot_waveform(wav, sample_rate: int, ax=None, title: str | None = None):
    """Plot amplitude against time, one line per channel; returns the matplotlib Axes.

    Args:
        wav: ``[T]`` or ``[C, T]`` (pick ``batch[0]`` from a ``[B, C, T]`` batch).
        sample_rate: samples per second (for the time axis).
        ax: an Axes to draw on, or ``None`` for a new figure.
        title: optional title.
    """
    sample_rate = check_positive_int("sample_rate", sample_rate)
    arr = as_numpy(wav)
    arr = arr[None] if arr.ndim == 1 else arr  # [C, T]
    ax = _new_axes(ax)
    times = np.arange(arr.shape[-1]) / sample_rate  # [T] seconds
    for c, channel in enumerate(arr):
        ax.plot(times, channel, linewidth=0.6, label=f"channel {c}")
    peak = float(np.abs(arr).max(initial=0.0))
    ax.set_ylim(-max(1.0, peak) * 1.05, max(1.0, peak) * 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    if arr.shape[0] > 1:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return ax


def plot_spectrogram(wav, sample_rate: int, ax=None, n_fft: int = 2048, hop_length: int = 512,
                     title: str | None = None):
    """Plot a log-magnitude spectrogram (dB relative to the loudest bin); returns the Axes.

    Channels are averaged first. Steps: STFT with a Hann window of ``n_fft`` samples every
    ``hop_length`` samples; magnitude; ``20*log10`` relative to the maximum (so 0 dB is the
    loudest bin, floored at -80 dB); draw frequency (Hz) against time (s).

    Args:
        wav: ``[T]`` or ``[C, T]``, at least ``n_fft`` samples.
        sample_rate: samples per second.
        ax: an Axes to draw on, or ``None`` for a new figure.
        n_fft: FFT size (frequency resolution ``sample_rate / n_fft`` Hz).
        hop_length: samples between frames (time resolution).
        title: optional title.
    """
    sample_rate = check_positive_int("sample_rate", sample_rate)
    n_fft = check_positive_int("n_fft", n_fft, hint="Use a power of two, e.g. 2048.")
    hop_length = check_positive_int("hop_length", hop_length, hint="Use e.g. n_fft // 4.")
    mono = as_numpy(wav)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono  # [T]
    if mono.shape[-1] < n_fft:
        raise AudioError(f"Clip has {mono.shape[-1]} samples, fewer than n_fft={n_fft}; "
                         f"pass a smaller n_fft (e.g. {max(16, mono.shape[-1] // 2)}).")
    import librosa  # lazy
    import librosa.display
    mag = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=hop_length))  # [F, frames]
    db = librosa.amplitude_to_db(mag, ref=np.max, top_db=80.0)
    ax = _new_axes(ax)
    mesh = librosa.display.specshow(db, sr=sample_rate, hop_length=hop_length, n_fft=n_fft,
                                    x_axis="time", y_axis="hz", ax=ax)
    ax.figure.colorbar(mesh, ax=ax, format="%+2.0f dB")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    if title:
        ax.set_title(title)
    return ax
