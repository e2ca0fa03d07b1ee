"""Waveforms as arrays: checks, shape and rate, level, fades, crossfade and trim.

The signal functions of the course, on ``[T]`` / ``[C, T]`` arrays (``files.py`` reads and
writes files, ``display.py`` plays and plots); modelled on audiocraft
``audiocraft/data/audio_utils.py`` (``convert_audio``, ``normalize_audio``), simplified::

    checks     as_numpy, check_positive_int (files.py and display.py use them too)
    shape      to_mono, to_stereo, resample, duration_seconds
    level      peak_normalize, loudness (integrated LUFS, ITU-R BS.1770), loudness_normalize
    edits      fade_in, fade_out, crossfade (equal-power), trim_silence

Conventions (STYLE.md rule 5): a waveform ``wav`` is ``[T]`` (samples), ``[C, T]``
(channels, samples) or, where a docstring says so, ``[B, C, T]`` (batch, channels, samples).
Functions accept numpy arrays or torch tensors and give back the same kind (torch results land
on the input's device), always as float32. Torch inputs are detached: nothing here is
differentiable. Integer PCM arrays are refused (divide by 32768 first) so levels stay in [-1, 1].

Only numpy and torch are imported at the top; librosa and pyloudnorm are imported inside the
functions that need them so ``import musicgen_edu`` stays fast.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import AudioError, ConfigError, check_range

__all__ = ["as_numpy", "check_positive_int",
           "resample", "to_mono", "to_stereo", "duration_seconds", "peak_normalize", "loudness",
           "loudness_normalize", "fade_in", "fade_out", "crossfade", "trim_silence"]

_LOUDNESS_BLOCK_S = 0.4  # pyloudnorm's gating block: clips must be at least this long


# ---------------------------------------------------------------- checks (files.py and
# display.py use them too)

def as_numpy(wav, name: str = "wav", ndims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Return ``wav`` as a float32 numpy array after checking its type and rank.

    Args:
        wav: a numpy array or torch tensor of floats (a tensor is detached and moved to CPU).
        name: what to call it in an error message.
        ndims: the ranks allowed: 1 ``[T]``, 2 ``[C, T]``, 3 ``[B, C, T]``.

    Raises:
        AudioError: not an array, not floats (integer PCM: divide by 32768 first), or a
            rank outside ``ndims``.
    """
    arr = wav
    if isinstance(arr, torch.Tensor):  # bfloat16 has no numpy twin: go via float32
        arr = arr.detach().cpu()
        arr = (arr.float() if arr.is_floating_point() else arr).numpy()
    if not isinstance(arr, np.ndarray):
        raise AudioError(f"{name} must be a numpy array or torch tensor, got "
                         f"{type(wav).__name__}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"{name} has dtype {arr.dtype}; pass floats in [-1, 1], e.g. "
                         f"{name} / 32768 for 16-bit PCM.")
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim not in ndims:
        shapes = {1: "[T]", 2: "[C, T]", 3: "[B, C, T]"}
        allowed = " or ".join(shapes[d] for d in ndims)
        raise AudioError(f"{name} has shape {tuple(arr.shape)}; expected {allowed} "
                         f"(channels, samples).")
    return arr


def _like(arr: np.ndarray, ref):
    """Give ``arr`` back in the kind of ``ref``: torch tensor on ref's device, or numpy."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if isinstance(ref, torch.Tensor):
        return torch.from_numpy(arr).to(ref.device)
    return arr


def _number(value):
    """numpy scalars -> Python numbers, so ``check_range`` accepts ``np.float32(0.5)``."""
    return value.item() if isinstance(value, (np.integer, np.floating)) else value


def check_positive_int(name: str, value,
                       hint: str = "Use e.g. 32000 (MusicGen) or 44100.") -> int:
    """Return ``value`` as an int if it is a positive whole number (sample rates, FFT sizes).

    Accepts numpy scalars and whole floats (``32000.0``); raises ConfigError naming ``name``
    and ``hint`` otherwise.
    """
    value = _number(value)
    check_range(name, value, 0, low_open=True, hint=hint)
    if value != int(value):
        raise ConfigError(f"{name}={value!r} must be a whole number; e.g. {int(round(value))}.")
    return int(value)


def _n_samples(seconds, sample_rate: int, name: str = "seconds") -> int:
    """Validate ``seconds >= 0`` and convert to a sample count (rounded)."""
    seconds = _number(seconds)
    check_range(name, seconds, 0, hint="Pass a duration in seconds, e.g. 0.5.")
    return int(round(seconds * sample_rate))


# ---------------------------------------------------------------- shape and rate

def duration_seconds(wav, sample_rate: int) -> float:
    """Length of ``wav`` (``[T]``, ``[C, T]`` or ``[B, C, T]``) in seconds: ``T / sample_rate``."""
    sample_rate = check_positive_int("sample_rate", sample_rate)
    return as_numpy(wav, ndims=(1, 2, 3)).shape[-1] / sample_rate


def to_mono(wav):
    """Average the channels: ``[C, T] -> [1, T]``, ``[B, C, T] -> [B, 1, T]``; ``[T]`` unchanged."""
    arr = as_numpy(wav, ndims=(1, 2, 3))
    if arr.ndim == 1:
        return _like(arr.copy(), wav)  # copy: never hand back a view of the caller's data
    return _like(arr.mean(axis=-2, keepdims=True), wav)  # mean over C


def to_stereo(wav):
    """Duplicate a mono signal into two channels.

    ``[T] -> [2, T]``, ``[1, T] -> [2, T]``, ``[B, 1, T] -> [B, 2, T]``; stereo is returned as
    is. More than two channels is refused (mix down with ``to_mono`` first, then duplicate).
    """
    arr = as_numpy(wav, ndims=(1, 2, 3))
    if arr.ndim == 1:
        arr = arr[None]  # [T] -> [1, T]
    channels = arr.shape[-2]
    if channels > 2:
        raise AudioError(f"to_stereo got {channels} channels (shape {tuple(arr.shape)}); only "
                         f"mono or stereo can become stereo. Call to_mono(wav) first.")
    reps = [1] * arr.ndim
    reps[-2] = 2 // channels  # 1 channel -> repeat twice, 2 channels -> keep
    return _like(np.tile(arr, reps), wav)


def resample(wav, orig_sr: int, target_sr: int):
    """Change the sample rate with librosa (soxr, high quality), along the last axis.

    The length becomes ``ceil(T * target_sr / orig_sr)``; pitch is kept (a 440 Hz tone stays
    440 Hz). Accepts ``[T]``, ``[C, T]`` or ``[B, C, T]``.

    Args:
        wav: the waveform.
        orig_sr: its current sample rate in Hz.
        target_sr: the wanted sample rate in Hz (MusicGen uses 32000).

    Returns:
        The resampled waveform, same kind as ``wav``.
    """
    orig_sr = check_positive_int("orig_sr", orig_sr)
    target_sr = check_positive_int("target_sr", target_sr)
    arr = as_numpy(wav, ndims=(1, 2, 3))
    if orig_sr == target_sr:
        return _like(arr.copy(), wav)
    import librosa  # lazy: slow import
    out = librosa.resample(arr, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq",
                           axis=-1)
    return _like(out, wav)


# ---------------------------------------------------------------- level

def peak_normalize(wav, peak_db: float = -1.0):
    """Scale so the largest absolute sample is ``peak_db`` dBFS (``-1.0`` -> 0.891).

    ``[T]`` and ``[C, T]`` are scaled as one clip (channels keep their balance); for
    ``[B, C, T]`` each item gets its own gain. Silent input is returned unchanged.

    Args:
        wav: the waveform.
        peak_db: target peak in dB relative to full scale, ``<= 0``.
    """
    peak_db = _number(peak_db)
    check_range("peak_db", peak_db, None, 0.0, hint="0 dBFS is full scale; -1.0 is usual.")
    arr = as_numpy(wav, ndims=(1, 2, 3))
    axes = (-2, -1) if arr.ndim == 3 else None
    peak = np.abs(arr).max(axis=axes, keepdims=arr.ndim == 3)  # scalar or [B, 1, 1]
    target = 10.0 ** (peak_db / 20.0)  # dB -> linear amplitude
    gain = np.where(peak > 0, target / np.maximum(peak, 1e-12), 1.0)
    return _like(arr * gain, wav)


def _loudness_input(wav, sample_rate) -> tuple[np.ndarray, int]:
    """Shared checks for loudness functions; returns ``[T, C]`` float64 for pyloudnorm."""
    sample_rate = check_positive_int("sample_rate", sample_rate)
    arr = as_numpy(wav)
    arr2 = arr[None] if arr.ndim == 1 else arr  # [C, T]
    seconds = arr2.shape[-1] / sample_rate
    if arr2.shape[-1] < _LOUDNESS_BLOCK_S * sample_rate:
        raise AudioError(f"Clip is {seconds:.3f} s long; integrated loudness needs at least "
                         f"{_LOUDNESS_BLOCK_S} s (one 400 ms block). Use a longer clip or "
                         f"peak_normalize.")
    return arr2.T.astype(np.float64), sample_rate


def loudness(wav, sample_rate: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770, K-weighted, gated) via pyloudnorm.

    Streaming services aim near -14 LUFS; a full-scale 1 kHz sine is about -3 LUFS. Silence
    gives ``-inf``. Accepts ``[T]`` or ``[C, T]`` lasting at least 0.4 s.
    """
    data, sample_rate = _loudness_input(wav, sample_rate)  # [T, C]
    import pyloudnorm  # lazy
    with np.errstate(divide="ignore"):  # log10(0) -> -inf for silence
        return float(pyloudnorm.Meter(sample_rate).integrated_loudness(data))


def loudness_normalize(wav, sample_rate: int, target_lufs: float = -14.0):
    """Apply one gain so the integrated loudness becomes ``target_lufs``.

    No limiter is applied: loud targets can push peaks above 1.0 (``save_audio`` clips them,
    ``peak_normalize`` afterwards avoids that). Silent input is returned unchanged.

    Args:
        wav: ``[T]`` or ``[C, T]``, at least 0.4 s long.
        sample_rate: samples per second.
        target_lufs: wanted loudness, in ``[-70, 0]`` LUFS.
    """
    target_lufs = _number(target_lufs)
    check_range("target_lufs", target_lufs, -70.0, 0.0, hint="-14 (streaming) or -23 (EBU R128).")
    current = loudness(wav, sample_rate)
    arr = as_numpy(wav)
    if not np.isfinite(current):  # silence: nothing to scale
        return _like(arr.copy(), wav)
    gain = 10.0 ** ((target_lufs - current) / 20.0)  # LU difference -> linear gain
    return _like(arr * gain, wav)


# ---------------------------------------------------------------- edits

def _ramp(n: int, shape: str) -> np.ndarray:
    """Rising gain curve of ``n`` samples from exactly 0 to exactly 1."""
    if shape not in ("linear", "cosine"):
        raise ConfigError(f"shape={shape!r} is not a fade shape; use 'linear' or 'cosine'.")
    x = np.linspace(0.0, 1.0, n, dtype=np.float64)
    # cosine = equal power: sin(x*pi/2)**2 + cos(x*pi/2)**2 == 1 during a crossfade
    return (x if shape == "linear" else np.sin(0.5 * np.pi * x)).astype(np.float32)


def _fade(wav, sample_rate, seconds, shape, rising: bool):
    sample_rate = check_positive_int("sample_rate", sample_rate)
    n = _n_samples(seconds, sample_rate)
    arr = as_numpy(wav, ndims=(1, 2, 3)).copy()
    length = arr.shape[-1]
    if n > length:
        raise ConfigError(f"fade of {seconds} s ({n} samples) is longer than the clip "
                          f"({length} samples = {length / sample_rate:.3f} s); use a shorter "
                          f"fade.")
    ramp = _ramp(n, shape)
    if rising:
        arr[..., :n] *= ramp  # first n samples go 0 -> 1
    elif n:
        arr[..., length - n:] *= ramp[::-1]  # last n samples go 1 -> 0
    return _like(arr, wav)


def fade_in(wav, sample_rate: int, seconds: float, shape: str = "linear"):
    """Fade in over the first ``seconds``: the first sample becomes exactly 0.

    Args:
        wav: ``[T]``, ``[C, T]`` or ``[B, C, T]``.
        sample_rate: samples per second.
        seconds: fade length, ``0 <= seconds <=`` clip length.
        shape: ``"linear"`` (gain rises in a straight line) or ``"cosine"`` (equal power,
            ``sin(x * pi / 2)``, sounds smoother).
    """
    return _fade(wav, sample_rate, seconds, shape, rising=True)


def fade_out(wav, sample_rate: int, seconds: float, shape: str = "linear"):
    """Fade out over the last ``seconds``: the last sample becomes exactly 0.

    Same arguments as :func:`fade_in`.
    """
    return _fade(wav, sample_rate, seconds, shape, rising=False)


def crossfade(a, b, sample_rate: int, seconds: float):
    """Join ``a`` then ``b``, overlapping the end of ``a`` with the start of ``b``.

    Equal-power curves (``cos`` out, ``sin`` in) keep the loudness steady across the join for
    uncorrelated music. Result length is ``len(a) + len(b) - overlap`` samples::

        a: aaaaaaaaaaa\\
        b:          /bbbbbbbbbbb
                    |overlap|

    Args:
        a: first clip, ``[T]`` or ``[C, T]``.
        b: second clip, same number of channels as ``a``.
        sample_rate: samples per second of both.
        seconds: overlap length; must fit inside both clips.

    Returns:
        The joined clip, same kind as ``a``.
    """
    sample_rate = check_positive_int("sample_rate", sample_rate)
    x, y = as_numpy(a, "a"), as_numpy(b, "b")
    if x.shape[:-1] != y.shape[:-1]:
        raise AudioError(f"a has shape {tuple(x.shape)} and b has {tuple(y.shape)}; they need "
                         f"the same channels. Use to_stereo / to_mono on one of them.")
    overlap = _n_samples(seconds, sample_rate)
    la, lb = x.shape[-1], y.shape[-1]
    if overlap > min(la, lb):
        raise ConfigError(f"crossfade of {seconds} s ({overlap} samples) is longer than a "
                          f"({la} samples) or b ({lb} samples); use seconds <= "
                          f"{min(la, lb) / sample_rate:.3f}.")
    ramp = _ramp(overlap, "cosine")  # [overlap], 0 -> 1
    fade_out_curve = ramp[::-1]  # cos(x*pi/2), 1 -> 0
    mixed = x[..., la - overlap:] * fade_out_curve + y[..., :overlap] * ramp
    return _like(np.concatenate([x[..., :la - overlap], mixed, y[..., overlap:]], axis=-1), a)


def trim_silence(wav, sample_rate: int, top_db: float = 60.0):
    """Cut leading and trailing silence with ``librosa.effects.trim``.

    A frame is silence when its RMS is more than ``top_db`` below the loudest frame (frames are
    40 ms long with a 10 ms hop, so edges are accurate to about 10 ms). An all-zero clip is
    returned unchanged.

    Args:
        wav: ``[T]`` or ``[C, T]`` (channels are trimmed together).
        sample_rate: samples per second.
        top_db: threshold below the peak, in dB, ``> 0``.
    """
    sample_rate = check_positive_int("sample_rate", sample_rate)
    top_db = _number(top_db)
    check_range("top_db", top_db, 0, low_open=True, hint="60 keeps quiet tails; 30 cuts more.")
    arr = as_numpy(wav)
    if not np.any(arr):
        return _like(arr.copy(), wav)
    import librosa  # lazy
    frame = max(2, int(round(0.040 * sample_rate)))  # 40 ms analysis frames
    trimmed, _ = librosa.effects.trim(arr, top_db=top_db, frame_length=frame,
                                      hop_length=max(1, frame // 4))
    return _like(trimmed.copy(), wav)  # copy: trim returns a view of the input
