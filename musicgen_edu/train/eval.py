"""Simple estimators that judge a clip's attributes by ear, in numpy (edu-tiny's evaluation).

Each answers one attribute of :mod:`musicgen_edu.train.synth` from the audio alone, so a model
trained on those captions can be asked "did you play what the prompt said?"::

    tempo       estimate_bpm: the onset envelope (positive spectral flux of a log STFT), its
                autocorrelation, the shortest period between 50 and 200 bpm nearly as strong
                as the strongest (the synth puts one onset on every beat) -> "fast" at
                110 bpm and above
    mode        pitch_class_profile (STFT energy folded onto 12 pitch classes) correlated with
                the 24 rotations of two key profiles -> the best one's mode: Krumhansl-
                Kessler's (mode_class), or profiles learned from labelled clips
                (:class:`KeyProfiles`: the synth's chords weigh the scale differently)
    register    weighted_pitch: per frame the lowest strong pitch between 200 Hz and 2 kHz,
                energy-weighted over the clip -> "high" at MIDI 64 and above
    instrument  spectral features (octave-band envelope, flatness, decay, sustain) -> the
                instrument of the nearest labelled clip (:class:`NearestNeighbour`)

The thresholds sit between the synth's two settings (66-84 vs 140-168 bpm; MIDI 45 vs 76).
Krumhansl & Kessler, "Tracing the dynamic changes in perceived tonal organization" (1982),
for the key profiles; Bello et al., "A tutorial on onset detection in music signals" (2005),
for spectral flux.
"""

from __future__ import annotations

import numpy as np

__all__ = ["estimate_bpm", "tempo_class", "pitch_class_profile", "mode_class",
           "weighted_pitch", "register_class", "spectral_features", "NearestNeighbour",
           "KeyProfiles"]

KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
FAST_BPM, HIGH_MIDI = 110.0, 64.0


def _stft(wav: np.ndarray, sr: int, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
    """Magnitudes ``[frames, n_fft // 2 + 1]`` of a Hann-windowed STFT of ``wav [T]``."""
    wav = np.asarray(wav, dtype=np.float64).reshape(-1)
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    frames = np.lib.stride_tricks.sliding_window_view(wav, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=-1))


def estimate_bpm(wav: np.ndarray, sr: int, hop: int = 256) -> float:
    """The beat tempo in bpm (50-200) from the onset envelope's autocorrelation."""
    mag = np.log1p(100 * _stft(wav, sr, n_fft=1024, hop=hop))
    flux = np.maximum(np.diff(mag, axis=0), 0).sum(axis=1)
    flux = flux - flux.mean()
    ac = np.correlate(flux, flux, mode="full")[len(flux) - 1:]
    fps = sr / hop
    lags = np.arange(int(fps * 60 / 200), min(len(ac) - 1, int(fps * 60 / 50)) + 1)
    if len(lags) == 0:
        return float("nan")
    # the shortest period nearly as strong as the strongest: a kick-snare pattern repeats every
    # two beats, so its two-beat period can win, and the beat is the period within it
    best = lags[np.argmax(ac[lags] >= 0.6 * ac[lags].max())]
    return float(60 * fps / best)


def tempo_class(wav: np.ndarray, sr: int) -> str:
    return "fast" if estimate_bpm(wav, sr) >= FAST_BPM else "slow"


def pitch_class_profile(wav: np.ndarray, sr: int) -> np.ndarray:
    """STFT energy between 60 Hz and 2 kHz folded onto 12 pitch classes (C = 0), summing to 1."""
    power = _stft(wav, sr, n_fft=8192, hop=2048) ** 2
    freqs = np.fft.rfftfreq(8192, 1 / sr)
    band = (freqs >= 60) & (freqs <= 2000)
    classes = np.round(12 * np.log2(freqs[band] / 440.0) + 69).astype(int) % 12
    profile = np.bincount(classes, weights=power[:, band].sum(axis=0), minlength=12)
    return profile / max(profile.sum(), 1e-12)


def mode_class(wav: np.ndarray, sr: int) -> str:
    """``"major"`` or ``"minor"``: the mode of the key profile that fits best."""
    profile = pitch_class_profile(wav, sr)
    scores = {(mode, tonic): np.corrcoef(profile, np.roll(template, tonic))[0, 1]
              for mode, template in (("major", KK_MAJOR), ("minor", KK_MINOR))
              for tonic in range(12)}
    return max(scores, key=lambda key: scores[key])[0]


def weighted_pitch(wav: np.ndarray, sr: int) -> float:
    """The part's pitch in MIDI: per STFT frame, the lowest bin between 200 Hz and 2 kHz with
    at least 30 % of the frame's peak magnitude there (above kick and bass; the fundamental of
    a high part, the second harmonic of a low one), then the energy-weighted mean over frames."""
    mag = _stft(wav, sr, n_fft=4096, hop=1024)
    freqs = np.fft.rfftfreq(4096, 1 / sr)
    band = (freqs >= 200) & (freqs <= 2000)
    mag, freqs = mag[:, band], freqs[band]
    peak = mag.max(axis=1)
    voiced = peak > 1e-3 * peak.max()                  # frames with something to hear
    lowest = np.argmax(mag[voiced] >= 0.3 * peak[voiced, None], axis=1)
    midi = 12 * np.log2(freqs[lowest] / 440.0) + 69
    weights = peak[voiced] ** 2
    return float((weights * midi).sum() / max(weights.sum(), 1e-12))


def register_class(wav: np.ndarray, sr: int) -> str:
    return "high" if weighted_pitch(wav, sr) >= HIGH_MIDI else "low"


def spectral_features(wav: np.ndarray, sr: int) -> np.ndarray:
    """What tells a struck, a plucked, a blown and a buzzing tone apart, as one vector: the
    spectral envelope (log energy in 10 octave-wide bands from 60 Hz, relative to the total),
    flatness, and how the energy moves after onsets (median decay in dB per frame, sustain:
    median / max frame energy in dB)."""
    power = _stft(wav, sr, n_fft=2048, hop=512) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(2048, 1 / sr)
    edges = 60.0 * 2.0 ** np.arange(11)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
                      for lo, hi in zip(edges[:-1], edges[1:])], axis=1) + 1e-12
    envelope = 10 * np.log10(bands.sum(axis=0) / bands.sum())
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    energy = 10 * np.log10(power.sum(axis=1))
    slope = np.diff(energy)
    decay = np.median(slope[slope < 0]) if (slope < 0).any() else 0.0
    return np.concatenate([envelope, [10 * np.log10(np.median(flatness)), decay,
                                      np.median(energy) - energy.max()]])


class NearestNeighbour:
    """The label of the nearest labelled clip (standardised ``features(wav, sr)``; the synth's
    own clips as the examples): ``judge.fit(wavs, labels, sr).predict(wav, sr)``. One class
    sounds different in a low and a high register, with and without drums: its examples form
    several clusters, which a neighbour follows and a class mean would blur."""

    def __init__(self, features=spectral_features):
        self.features = features

    def fit(self, wavs, labels, sr: int) -> NearestNeighbour:
        feats = np.stack([self.features(w, sr) for w in wavs])
        self.mean, self.std = feats.mean(axis=0), feats.std(axis=0) + 1e-9
        self.examples, self.labels = (feats - self.mean) / self.std, list(labels)
        return self

    def predict(self, wav: np.ndarray, sr: int) -> str:
        z = (self.features(wav, sr) - self.mean) / self.std
        return self.labels[int(np.argmin(((self.examples - z) ** 2).sum(axis=1)))]


class KeyProfiles:
    """Major and minor key profiles learned from labelled clips (each clip's pitch-class
    profile rotated to C, averaged per mode), used like Krumhansl-Kessler's: the mode of the
    best-correlating of the 24 rotations. ``KeyProfiles().fit(wavs, modes, tonics, sr)``."""

    def fit(self, wavs, modes, tonics, sr: int) -> KeyProfiles:
        rotated = [np.roll(pitch_class_profile(w, sr), -t) for w, t in zip(wavs, tonics)]
        self.templates = {m: np.mean([r for r, mode in zip(rotated, modes) if mode == m], axis=0)
                          for m in sorted(set(modes))}
        return self

    def predict(self, wav: np.ndarray, sr: int) -> str:
        profile = pitch_class_profile(wav, sr)
        scores = {(m, t): np.corrcoef(profile, np.roll(template, t))[0, 1]
                  for m, template in self.templates.items() for t in range(12)}
        return max(scores, key=lambda key: scores[key])[0]
