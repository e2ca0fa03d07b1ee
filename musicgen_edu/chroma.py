"""Chroma features of a reference melody, the conditioning input of MusicGen-melody.

Follows transformers ``models/musicgen_melody/feature_extraction_musicgen_melody.py``
(``MusicgenMelodyFeatureExtractor``) step by step and number for number, without torchaudio:
resample (torchaudio's Hann-windowed sinc, rolloff 0.945, width 24) -> mix to mono -> cut to
30 s -> zero-pad to at least ``n_fft`` -> power spectrogram (``torchaudio...Spectrogram`` defaults,
via ``torch.stft``) -> librosa chroma filter bank -> max-normalise -> one-hot on the loudest
pitch class. audiocraft's ``modules/chroma.py::ChromaExtractor`` is the original design.

Shapes: ``[B, C, T]`` waveforms (batch, channels, samples), ``[B, frames, 12]`` chroma.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import AudioError, check_int, check_range

__all__ = ["ChromaConfig", "chroma_features", "null_chroma", "PITCH_CLASSES"]

# Chroma bin order: bin 0 is C, bin 9 is A.
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")



@dataclass
class ChromaConfig:
    """Settings of the chroma extractor; defaults are ``MusicgenMelodyFeatureExtractor``'s."""

    sample_rate: int = 32000  # Hz the STFT runs at (transformers `sampling_rate`); input resampled
    n_fft: int = 16384  # STFT size = window length, ~0.5 s at 32 kHz: fine pitch resolution
    hop_length: int = 4096  # samples between frames: 32000 / 4096 ~ 7.8 chroma frames per second
    n_chroma: int = 12  # pitch classes per octave, bin 0 = C (transformers `num_chroma`)
    chunk_length: int | None = 30  # seconds kept; transformers cuts the rest (None: keep all)
    rolloff: float = 0.945  # resampler cutoff as a fraction of the lower Nyquist, as transformers
    lowpass_filter_width: int = 24  # resampler sinc half-width in zero crossings, as transformers
    argmax: bool = True  # one-hot loudest pitch class (transformers); False: max-normalised [0, 1]
    min_samples: int = 1  # shortest accepted input; < n_fft is zero-padded, as transformers does

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_chroma", "lowpass_filter_width",
                     "min_samples"):
            check_int(name, getattr(self, name), 1)
        if self.chunk_length is not None:
            check_range("chunk_length", self.chunk_length, 0, low_open=True,
                        hint="Use seconds > 0, or None to keep the whole input.")
        check_range("rolloff", self.rolloff, 0, 1, low_open=True)


@functools.lru_cache(maxsize=8)
def _chroma_filters(sample_rate: int, n_fft: int, n_chroma: int) -> np.ndarray:
    """librosa's chroma filter bank ``[n_chroma, n_fft // 2 + 1]`` float32, args as transformers.

    Each row is a Gaussian bump around every octave of one pitch class; columns are
    L2-normalised, then weighted by a Gaussian over octaves centred on 880 Hz (5 octaves above
    A0 = 27.5 Hz) with a half-width of 2 octaves, so ~220-3520 Hz dominates.
    """
    import librosa  # lazy: the package imports audio libraries on first use

    return librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma)


def _resample(wav: torch.Tensor, orig: int, new: int, rolloff: float,
              width_zc: int) -> torch.Tensor:
    """torchaudio.functional.resample (sinc_interp_hann) in plain torch, on the last axis.

    Worked idea: output sample j sits at input time j * orig / new; it is a Hann-windowed sinc
    sum over the inputs within ``width_zc`` zero crossings. Rates are reduced by their gcd, so
    the ``new`` output phases repeat every ``orig`` inputs: one conv1d with ``new`` kernels.
    """
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    base = min(orig, new) * rolloff  # cutoff below the lower Nyquist (anti-aliasing)
    width = math.ceil(width_zc * orig / base)  # kernel half-length in input samples
    idx = torch.arange(-width, width + orig, dtype=wav.dtype, device=wav.device)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=wav.dtype, device=wav.device)[:, None, None] / new + idx
    t = (t * base).clamp_(-width_zc, width_zc)  # [new, 1, taps] distance in zero crossings
    window = torch.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t) * window * (base / orig)
    shape = wav.shape
    flat = torch.nn.functional.pad(wav.reshape(-1, shape[-1]), (width, width + orig))
    out = torch.nn.functional.conv1d(flat[:, None], kernel, stride=orig)  # [N, new, steps]
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)  # interleave the phases
    target = math.ceil(new * shape[-1] / orig)
    return out[:, :target].reshape(*shape[:-1], -1)


def _as_batch(wav) -> torch.Tensor:
    """Any of ``[T]``, ``[C, T]``, ``[B, C, T]`` (torch or numpy) -> floating ``[B, C, T]``."""
    wav = wav if isinstance(wav, torch.Tensor) else torch.as_tensor(np.asarray(wav))
    if wav.ndim not in (1, 2, 3):
        raise AudioError(f"wav must be [T], [C, T] or [B, C, T], got shape {tuple(wav.shape)}. "
                         "Stack clips into one batch dimension first.")
    if wav.is_complex() or wav.dtype == torch.bool:
        raise AudioError(f"wav must hold real samples, got dtype {wav.dtype}.")
    if not wav.is_floating_point():
        wav = wav.float()  # ints are used as-is, like transformers (chroma ignores the scale)
    wav = wav.reshape((1,) * (3 - wav.ndim) + tuple(wav.shape))
    if wav.shape[-1] == 0 or wav.numel() == 0:
        raise AudioError(f"wav is empty: shape {tuple(wav.shape)}, length {wav.shape[-1]} samples; "
                         "pass at least one sample of audio per channel.")
    if not torch.isfinite(wav).all():
        raise AudioError("wav contains NaN or inf samples; clean or re-decode the audio.")
    return wav


def chroma_features(wav, sample_rate: int, config: ChromaConfig | None = None) -> torch.Tensor:
    """Chroma of a melody, exactly as ``MusicgenMelodyFeatureExtractor`` computes it.

    Args:
        wav: audio ``[T]``, ``[C, T]`` or ``[B, C, T]``, torch tensor or numpy array. Channels
            are averaged to mono (transformers' stereo handling).
        sample_rate: Hz of ``wav``; resampled to ``config.sample_rate`` when different.
        config: a ``ChromaConfig``; ``None`` means the transformers defaults.

    Returns:
        float32 ``[B, frames, n_chroma]`` with ``frames = 1 + max(L, n_fft) // hop_length``, where
        ``L`` is the resampled length cut to ``chunk_length`` seconds. With ``argmax`` each row
        is one-hot on its loudest pitch class (silence -> bin 0 = C). Example: a 440 Hz tone
        gives rows ``[0,0,0,0,0,0,0,0,0,1,0,0]`` (A); 30 s gives 235 frames, the model's
        ``chroma_length``.

    Raises:
        AudioError: wrong shape or dtype, empty, non-finite, or shorter than ``min_samples``.
        ConfigError: ``sample_rate`` is not a positive integer.
    """
    cfg = config or ChromaConfig()
    check_int("sample_rate", sample_rate, 1, hint="Pass the audio's rate in Hz, e.g. 32000.")
    wav = _as_batch(wav)  # [B, C, T]
    if wav.shape[-1] < cfg.min_samples:
        raise AudioError(f"wav has {wav.shape[-1]} samples, fewer than min_samples="
                         f"{cfg.min_samples}; pass a longer melody or lower min_samples.")

    # 1. Resample each channel to the model rate (in the input dtype), then float32.
    if int(sample_rate) != cfg.sample_rate:
        wav = _resample(wav, int(sample_rate), cfg.sample_rate, cfg.rolloff,
                        cfg.lowpass_filter_width)
    wav = wav.float()
    # 2. Mix to mono by averaging channels, cut to chunk_length seconds.  [B, C, T] -> [B, T]
    wav = wav.mean(dim=1)
    if cfg.chunk_length is not None:
        wav = wav[:, : int(cfg.chunk_length * cfg.sample_rate)]
    # 3. Zero-pad short input symmetrically (odd extra sample at the end) to one window.
    if wav.shape[-1] < cfg.n_fft:
        pad = cfg.n_fft - wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + pad % 2))
    # 4. Power spectrogram: periodic Hann, centred frames with reflect padding, divided by the
    #    window's L2 norm ("window" normalisation), |.|^2.  [B, T] -> [B, n_fft // 2 + 1, frames]
    window = torch.hann_window(cfg.n_fft, device=wav.device)
    spec = torch.stft(wav, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft,
                      window=window, center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True)
    spec /= window.pow(2.0).sum().sqrt()
    spec = spec.abs().pow(2.0)
    # 5. Fold frequencies onto pitch classes.  [B, F, frames] -> [B, n_chroma, frames]
    filters = _chroma_filters(cfg.sample_rate, cfg.n_fft, cfg.n_chroma)  # [n_chroma, F]
    filters = torch.from_numpy(filters).to(wav.device)
    chroma = torch.einsum("cf, ...ft->...ct", filters, spec)
    # 6. Divide each frame by its largest bin, then [B, frames, n_chroma].
    chroma = torch.nn.functional.normalize(chroma, p=float("inf"), dim=-2, eps=1e-6).transpose(1, 2)
    if not cfg.argmax:
        return chroma.contiguous()
    # 7. Keep only the loudest pitch class per frame (first one on ties).
    return torch.zeros_like(chroma).scatter_(-1, chroma.argmax(-1, keepdim=True), 1.0)


def null_chroma(batch: int, frames: int = 1, n_chroma: int = 12, *,
                dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The "no melody" chroma ``[batch, frames, n_chroma]``: every row one-hot on bin 0 (C).

    MusicgenMelodyForConditionalGeneration feeds this when no melody is given and as the
    unconditional half of classifier-free guidance (``null_audio_hidden_states[:, :, 0] = 1``).
    It equals the chroma of silence, since an all-zero frame's argmax is bin 0.
    """
    for name, value in (("batch", batch), ("frames", frames), ("n_chroma", n_chroma)):
        check_int(name, value, 1)
    out = torch.zeros(batch, frames, n_chroma, dtype=dtype, device=device)
    out[:, :, 0] = 1
    return out
