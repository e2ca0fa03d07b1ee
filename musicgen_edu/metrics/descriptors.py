"""Audio descriptors of a clip: level, clipping, silence, timbre, tempo and key, one row per clip.

What each number is and which standard or library it follows:

    loudness_lufs    integrated loudness, ITU-R BS.1770 (K-weighted, gated), pyloudnorm via
                     ``musicgen_edu.audio.waveform.loudness``; NaN for clips under 0.4 s, -inf for silence
    peak_dbfs        largest sample, dB relative to full scale (1.0 = 0 dBFS)
    true_peak_dbtp   the peak of the signal *between* samples too: 4x oversampled with a
                     polyphase filter (``scipy.signal.resample_poly``) as in ITU-R BS.1770-4
                     Annex 2. A sine at a quarter of the sample rate with phase 45 degrees has
                     samples at +-0.707 (-3 dBFS) but a true peak of 0 dBTP. The filter's
                     ringing at the clip's two ends is skipped (see ``true_peak``)
    clipping_ratio   fraction of samples in *flat tops*: runs of >= ``clip_run`` consecutive
                     samples with ``|x| >= clip_level`` (a clean full-scale sine only touches
                     the top and scores ~0; a sine clipped by 6 dB scores ~2/3)
    silence_ratio    fraction of frames (``n_fft`` samples every ``hop_length``) of the mono
                     mix whose RMS is below ``silence_db`` dBFS (absolute, default -60 dBFS;
                     a full-scale sine has an RMS of -3 dBFS)
    centroid_hz, bandwidth_hz, flatness
                     librosa spectral centroid (the spectrum's centre of mass), bandwidth
                     (its spread around the centroid) and flatness (0 = pure tone, 1 = white
                     noise), averaged over the frames that are not silent
    tempo_bpm        librosa.beat.beat_track on the onset-strength envelope (hop ``tempo_hop``,
                     8 ms at 32 kHz so one frame of lag is < 2 BPM at 120 BPM); NaN if no beat
    beat_strength    pulse clarity in [-1, 1]: the onset envelope's normalised
                     autocorrelation one beat period apart. ~0.7 for a click track, ~0.1 for
                     noise, ~0 for a steady tone, whose "tempo" is then meaningless (a beat
                     tracker always returns some number: read the two together)
    key, key_score   Krumhansl-Schmuckler key finding: the clip's summed chroma
                     (``librosa.feature.chroma_cqt``) is correlated (Pearson) with the 24
                     rotations of the Krumhansl-Kessler major and minor profiles; the best one
                     names the key ("A minor") and its correlation is the score (1 = perfect)

Timbre, tempo and key use the mono mix (channels averaged); level and clipping use every
channel. All of these describe *audio*, not *music quality*: a clip can be loud, in key and at
a steady tempo and still be bad, and the offline "debug" model's noise has a "key" too.

Only numpy at the top; librosa, scipy, pyloudnorm and pandas are imported inside the functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..audio import as_numpy, check_positive_int, loudness
from ..errors import AudioError, ConfigError, check_range

__all__ = ["DescriptorSettings", "describe", "describe_batch", "as_clips", "true_peak",
           "clipping_ratio", "beat_strength", "estimate_key", "KEY_NAMES",
           "MAJOR_PROFILE", "MINOR_PROFILE"]

KEY_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (Krumhansl 1990, table 4.1)
MAJOR_PROFILE = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
MINOR_PROFILE = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
_MIN_LOUDNESS_S = 0.4  # one BS.1770 gating block


@dataclass
class DescriptorSettings:
    """How :func:`describe` measures. The defaults suit music at 32-48 kHz."""

    n_fft: int = 2048               # samples per analysis frame (64 ms at 32 kHz), > 0
    hop_length: int = 512           # samples between frames (16 ms at 32 kHz), > 0
    silence_db: float = -60.0       # frames with RMS below this (dBFS) are silent, -120..0
    clip_level: float = 0.9999      # |sample| at or above this is at full scale, 0 < level <= 1
    clip_run: int = 3               # consecutive full-scale samples that make a flat top, >= 1
    oversample: int = 4             # true-peak oversampling factor (BS.1770: 4), >= 1
    tempo_hop: int = 256            # samples between onset-strength frames (8 ms at 32 kHz), > 0

    def __post_init__(self):
        for name in ("n_fft", "hop_length", "tempo_hop", "oversample", "clip_run"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a whole number >= 1.")
        check_range("silence_db", self.silence_db, -120.0, 0.0, hint="-60 is usual.")
        check_range("clip_level", self.clip_level, 0.0, 1.0, low_open=True,
                    hint="0.9999 means 'at full scale'.")


# ------------------------------------------------------------------ inputs

def as_clips(wavs, sample_rate: int | None = None) -> tuple[list[np.ndarray], int, dict]:
    """Normalise what the metrics accept into a list of ``[C, T]`` float32 clips.

    Args:
        wavs: a :class:`~musicgen_edu.generator.Generation` (its ``wav [B, C, T]``), a
            ``[B, C, T]`` array/tensor (B clips), a ``[C, T]`` or ``[T]`` one (one clip), or a
            list of ``[T]`` / ``[C, T]`` clips (lengths may differ).
        sample_rate: Hz; optional for a Generation (must then match its rate).

    Returns:
        ``(clips, sample_rate, info)`` where ``info`` holds ``prompts`` and ``seeds`` for a
            Generation and is empty otherwise.

    Raises:
        AudioError: no clips, an empty or non-finite clip, or a wrong rank.
        ConfigError: a missing or invalid sample rate.
    """
    info: dict = {}
    if hasattr(wavs, "wav") and hasattr(wavs, "sample_rate"):  # a Generation
        given = None if sample_rate is None else check_positive_int("sample_rate", sample_rate)
        if given is not None and given != wavs.sample_rate:
            raise ConfigError(f"sample_rate={sample_rate} but the Generation is at "
                              f"{wavs.sample_rate} Hz; leave sample_rate out for a Generation.")
        sample_rate = wavs.sample_rate
        info = dict(prompts=list(wavs.prompts), seeds=list(wavs.seeds))
        wavs = wavs.wav
    if sample_rate is None:
        raise ConfigError("sample_rate is required for raw audio (e.g. 32000 for MusicGen); only "
                          "a Generation carries its own.")
    sample_rate = check_positive_int("sample_rate", sample_rate)
    if isinstance(wavs, (list, tuple)):
        clips = [as_numpy(w, f"wavs[{i}]") for i, w in enumerate(wavs)]
    else:
        arr = as_numpy(wavs, "wavs", ndims=(1, 2, 3))
        clips = list(arr) if arr.ndim == 3 else [arr]  # [B, C, T] -> B x [C, T]
    clips = [c[None] if c.ndim == 1 else c for c in clips]  # [T] -> [1, T]
    if not clips:
        raise AudioError("no clips given; pass a Generation, a [B, C, T] array or a list of clips.")
    for i, clip in enumerate(clips):
        if clip.shape[-1] == 0:
            raise AudioError(f"clip {i} has shape {tuple(clip.shape)}: no samples.")
        if not np.isfinite(clip).all():
            raise AudioError(f"clip {i} has NaN/inf samples; check np.isfinite(wav).")
    return clips, sample_rate, info


# ------------------------------------------------------------------ the pieces

def _db(value: float) -> float:
    """Linear amplitude -> dB (0 -> -inf)."""
    return 20.0 * float(np.log10(value)) if value > 0 else float("-inf")


def true_peak(clip: np.ndarray, oversample: int = 4) -> float:
    """Largest ``|x|`` of ``clip [C, T]`` after ``oversample``-times polyphase upsampling.

    The interpolation filter rings where the clip starts or stops abruptly (a step from or to
    the silence around it), which is not part of the signal: the oversampled values within
    the filter's half length of each end (10 input samples, 0.3 ms at 32 kHz) are skipped
    there, and the sample peak covers the edges.
    """
    from scipy.signal import resample_poly  # lazy

    peak = float(np.abs(clip).max())
    edge = 10 * oversample              # resample_poly's default half length, upsampled samples
    if oversample > 1 and clip.shape[-1] > 2 * 10:  # the waveform between samples (BS.1770-4)
        up = resample_poly(clip.astype(np.float64), oversample, 1, axis=-1)  # [C, T * up]
        peak = max(peak, float(np.abs(up[:, edge:-edge]).max()))
    return peak


def clipping_ratio(clip: np.ndarray, level: float = 0.9999, run: int = 3) -> float:
    """Fraction of samples of ``clip [C, T]`` in runs of >= ``run`` samples with |x| >= level."""
    total = 0
    for channel in np.abs(clip) >= level:             # [T] booleans per channel
        edges = np.diff(np.concatenate([[0], channel.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = ends - starts                         # lengths of full-scale runs
        total += int(lengths[lengths >= run].sum())
    return total / clip.size


def beat_strength(onset: np.ndarray, period: float) -> float:
    """Pulse clarity: normalised autocorrelation of ``onset [frames]`` at one beat ``period``.

    The largest value of ``autocorr(onset - mean) / autocorr[0]`` within +-5 % of the period
    (in frames). 1 = onsets repeat exactly every beat; ~0 = no pulse at this tempo (a steady
    tone, noise); NaN when the clip is shorter than about one beat.
    """
    import librosa  # lazy

    ac = librosa.autocorrelate(onset - onset.mean())                  # [frames]
    lo, hi = int(np.floor(0.95 * period)), int(np.ceil(1.05 * period))
    if ac[0] <= 0 or lo < 1 or hi >= len(ac):
        return float("nan")
    return float(ac[lo:hi + 1].max() / ac[0])


def estimate_key(mono: np.ndarray, sample_rate: int) -> tuple[str | None, float]:
    """Krumhansl-Schmuckler key of ``mono [T]``: ("C major", correlation) or (None, nan)."""
    import librosa  # lazy

    # CQT from C1 (32.7 Hz) up by whole octaves, at most 7, staying under Nyquist with margin
    octaves = int(np.clip(np.floor(np.log2(sample_rate / 2 / (32.7 * 1.1))), 1, 7))
    with warnings.catch_warnings():  # librosa's CQT warns about its own short low-octave frames
        warnings.simplefilter("ignore", UserWarning)
        chroma = librosa.feature.chroma_cqt(y=mono, sr=sample_rate, n_octaves=octaves)  # [12, F]
    profile = chroma.sum(axis=1)                                    # [12] pitch-class weight
    if not np.isfinite(profile).all() or profile.std() == 0:
        return None, float("nan")
    best = (None, -np.inf)
    for mode, template in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):                         # rotate the profile to every tonic
            r = np.corrcoef(profile, np.roll(template, tonic))[0, 1]
            if r > best[1]:
                best = (f"{KEY_NAMES[tonic]} {mode}", float(r))
    return best


# ------------------------------------------------------------------ one clip, many clips

def describe(wav, sample_rate: int, settings: DescriptorSettings | None = None) -> dict:
    """Measure one clip (see the module docstring for every field).

    Example (known answers, tested)::

        t = np.arange(32000 * 2) / 32000
        describe(0.5 * np.sin(2 * np.pi * 440 * t), 32000)["centroid_hz"]   # ~440

    Args:
        wav: ``[T]`` or ``[C, T]`` float waveform (numpy or torch), finite and non-empty.
        sample_rate: Hz.
        settings: a :class:`DescriptorSettings`; ``None`` uses the defaults.

    Returns:
        A dict (one table row): ``duration_s, channels, loudness_lufs, peak_dbfs,
            true_peak_dbtp, clipping_ratio, silence_ratio, centroid_hz, bandwidth_hz, flatness,
            tempo_bpm, beat_strength, key, key_score``.
    """
    import librosa  # lazy

    s = settings or DescriptorSettings()
    sample_rate = check_positive_int("sample_rate", sample_rate)
    if hasattr(wav, "wav") or getattr(wav, "ndim", 0) == 3 or isinstance(wav, (list, tuple)):
        raise AudioError("describe takes one clip [T] or [C, T]; use describe_batch for a "
                         "Generation, a [B, C, T] batch or a list of clips.")
    clip = as_clips(wav, sample_rate)[0][0]                            # [C, T]
    mono = clip.mean(axis=0)                                           # [T]
    row = dict(duration_s=clip.shape[-1] / sample_rate, channels=clip.shape[0])

    # Level: integrated loudness, sample peak, true peak, clipping (every channel).
    long_enough = clip.shape[-1] >= _MIN_LOUDNESS_S * sample_rate
    row["loudness_lufs"] = loudness(clip, sample_rate) if long_enough else float("nan")
    row["peak_dbfs"] = _db(float(np.abs(clip).max()))
    row["true_peak_dbtp"] = _db(true_peak(clip, s.oversample))
    row["clipping_ratio"] = clipping_ratio(clip, s.clip_level, s.clip_run)

    # Silence: frame RMS of the mono mix against an absolute threshold.
    frames = dict(n_fft=s.n_fft, hop_length=s.hop_length)
    rms = librosa.feature.rms(y=mono, frame_length=s.n_fft, hop_length=s.hop_length)[0]
    with np.errstate(divide="ignore"):
        loud = 20 * np.log10(rms) >= s.silence_db                     # [frames] not silent
    row["silence_ratio"] = float(1.0 - loud.mean())

    # Timbre: spectral shape averaged over the frames that are not silent.
    mag = np.abs(librosa.stft(mono, **frames))                        # [F, frames]
    spectral = dict(
        centroid_hz=librosa.feature.spectral_centroid(S=mag, sr=sample_rate, **frames)[0],
        bandwidth_hz=librosa.feature.spectral_bandwidth(S=mag, sr=sample_rate, **frames)[0],
        flatness=librosa.feature.spectral_flatness(S=mag, **frames)[0])
    for name, values in spectral.items():
        row[name] = float(values[loud].mean()) if loud.any() else float("nan")

    # Rhythm: tempo from the onset envelope; beat strength = how periodic it is at that tempo.
    onset = librosa.onset.onset_strength(y=mono, sr=sample_rate, hop_length=s.tempo_hop)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset, sr=sample_rate,
                                           hop_length=s.tempo_hop)
    tempo = float(np.atleast_1d(tempo)[0])
    has_beats = len(beats) > 0 and tempo > 0
    row["tempo_bpm"] = tempo if has_beats else float("nan")
    row["beat_strength"] = (beat_strength(onset, 60.0 / tempo * sample_rate / s.tempo_hop)
                            if has_beats else float("nan"))

    # Key: Krumhansl-Schmuckler on the summed chroma (skipped for silence).
    row["key"], row["key_score"] = (estimate_key(mono, sample_rate) if loud.any()
                                    else (None, float("nan")))
    return row


def describe_batch(wavs, sample_rate: int | None = None,
                   settings: DescriptorSettings | None = None):
    """:func:`describe` every clip; one ``pandas.DataFrame`` row per clip.

    Args:
        wavs: a ``Generation`` (adds ``prompt`` and ``seed`` columns), a ``[B, C, T]`` array or
            tensor, or a list of ``[T]`` / ``[C, T]`` clips.
        sample_rate: Hz (leave out for a Generation).
        settings: a :class:`DescriptorSettings`.

    Returns:
        DataFrame indexed by ``clip`` (0..B-1).
    """
    import pandas as pd  # lazy

    clips, sample_rate, info = as_clips(wavs, sample_rate)
    rows = []
    for i, clip in enumerate(clips):
        row = {"prompt": info["prompts"][i], "seed": info["seeds"][i]} if info else {}
        rows.append({**row, **describe(clip, sample_rate, settings)})
    return pd.DataFrame(rows).rename_axis("clip")
