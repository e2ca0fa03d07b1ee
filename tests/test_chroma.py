"""Tests for musicgen_edu.chroma: reference parity with transformers, known answers, properties."""

from __future__ import annotations

import importlib
import importlib.machinery
import math
import sys
import types

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from musicgen_edu.chroma import PITCH_CLASSES, ChromaConfig, chroma_features, null_chroma
from musicgen_edu.errors import AudioError, ConfigError

SR = 32000
CFG = ChromaConfig()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tensors are tiny: one thread avoids oversubscription (5-10x slower) on busy runners."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tone(freqs, seconds=2.0, sr=SR, channels=1, amps=None):
    """Sum of sines ``[channels, T]`` float32 (channel c gets a small gain change)."""
    t = np.arange(int(seconds * sr)) / sr
    amps = amps or [1.0] * len(freqs)
    mono = sum(a * np.sin(2 * np.pi * f * t) for a, f in zip(amps, freqs)) / len(freqs)
    return np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def expected_frames(n_samples: int, sr: int, cfg: ChromaConfig = CFG) -> int:
    length = math.ceil(n_samples * cfg.sample_rate / sr)  # after resampling
    if cfg.chunk_length is not None:
        length = min(length, cfg.chunk_length * cfg.sample_rate)
    return 1 + max(length, cfg.n_fft) // cfg.hop_length


# ---------------------------------------------------------------------------------------------
# (1) Reference: transformers' MusicgenMelodyFeatureExtractor with a stand-in torchaudio
# ---------------------------------------------------------------------------------------------

class _NumpySpectrogram:
    """Stand-in for ``torchaudio.transforms.Spectrogram``, written from its documented meaning.

    float64 numpy: reflect-pad n_fft//2 per side, frame every hop, scipy's periodic Hann,
    ``np.fft.rfft``, divide by the window's L2 norm (``normalized=True``), ``|X|**power``.
    Shares no code with ``musicgen_edu.chroma`` (which uses ``torch.stft``).
    """

    def __init__(self, n_fft, win_length, hop_length, power, center, pad, normalized):
        assert (win_length, center, pad, normalized) == (n_fft, True, 0, True)
        self.n_fft, self.hop, self.power = n_fft, hop_length, power
        self.window = scipy.signal.get_window("hann", n_fft)  # periodic ("fftbins") Hann

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform.double().numpy()  # [..., T]
        n_frames = 1 + x.shape[-1] // self.hop
        half = self.n_fft // 2
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft, axis=-1)
        frames = frames[..., :: self.hop, :]
        spec = np.fft.rfft(frames[..., :n_frames, :] * self.window, axis=-1)
        spec = np.abs(spec / np.sqrt(np.sum(self.window**2))) ** self.power  # [..., frames, F]
        return torch.from_numpy(np.swapaxes(spec, -1, -2)).float()  # [..., F, frames]


def _numpy_resample(waveform: torch.Tensor, orig_freq, new_freq, rolloff=0.99,
                    lowpass_filter_width=6) -> torch.Tensor:
    """Stand-in for ``torchaudio.functional.resample`` from its documented formula (float64).

    y[j] = sum_i x[i] * s * sinc(u) * cos(pi u / 2w)^2 for |u| < w, with u = (i/o - j/n) * s*o
    on the gcd-reduced rates o, n, cutoff s = rolloff * min(o, n) / o, w = lowpass_filter_width;
    ``ceil(n * T / o)`` outputs. Evaluated directly per output sample, no polyphase conv.
    """
    g = math.gcd(orig_freq, new_freq)
    o, n = orig_freq // g, new_freq // g
    cutoff = rolloff * min(o, n)
    x = waveform.double().numpy()
    length = x.shape[-1]
    centre = np.arange(math.ceil(n * length / o)) * o / n  # output j in input-sample units
    reach = math.ceil(lowpass_filter_width * o / cutoff) + 1
    i = np.floor(centre)[:, None].astype(int) + np.arange(-reach, reach + 2)  # [out, taps]
    u = (i - centre[:, None]) / o * cutoff
    w = lowpass_filter_width
    h = np.where(np.abs(u) < w, np.sinc(u) * np.cos(np.pi * u / (2 * w)) ** 2, 0.0) * cutoff / o
    xi = np.where((i >= 0) & (i < length), x[..., np.clip(i, 0, length - 1)], 0.0)
    return torch.from_numpy((xi * h).sum(-1)).to(waveform.dtype)


@pytest.fixture
def reference_extractor(monkeypatch):
    """transformers' extractor, with the stand-in torchaudio injected only for this test."""
    # Import first: transformers probes (and caches) torchaudio availability at import time.
    # (import_module: the lazy parent package hides this submodule when torchaudio is missing)
    fem = importlib.import_module("transformers.models.musicgen_melody."
                                  "feature_extraction_musicgen_melody")

    fake = types.ModuleType("torchaudio")
    fake.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    fake.transforms = types.SimpleNamespace(Spectrogram=_NumpySpectrogram)
    fake.functional = types.SimpleNamespace(resample=_numpy_resample)
    monkeypatch.setitem(sys.modules, "torchaudio", fake)
    # its module-level `import torchaudio` was skipped, so set the name it uses:
    monkeypatch.setattr(fem, "torchaudio", fake, raising=False)
    return fem.MusicgenMelodyFeatureExtractor()


def _noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


REFERENCE_CASES = {  # name: (wav [B, C, T], sample_rate)
    "a4_sine": (tone([440.0])[None], SR),
    "c_major_chord": (tone([261.63, 329.63, 392.0], amps=[1.0, 0.8, 0.6])[None], SR),
    "noise": (_noise((1, 1, 2 * SR)), SR),
    "stereo_melody": (np.concatenate([tone([293.66], 1.5, channels=2),
                                      tone([349.23], 1.5, channels=2)], -1)[None], SR),
    "batch_of_2_stereo": (np.stack([tone([196.0, 246.94], 2, channels=2),
                                    _noise((2, 2 * SR), 1)]), SR),
    "shorter_than_n_fft": (_noise((1, 1, 9601), 5), SR),  # odd padding length
    "longer_than_30s": (_noise((1, 1, 31 * SR), 2), SR),
    "44.1kHz_chord": (tone([220.0, 277.18, 329.63], 1, sr=44100, channels=2)[None], 44100),
    "48kHz_noise": (_noise((2, 1, 48000), 3), 48000),
}


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_matches_transformers_extractor(reference_extractor, name):
    wav, sr = REFERENCE_CASES[name]
    want = reference_extractor(torch.from_numpy(wav), sampling_rate=sr,
                               return_tensors="pt")["input_features"]
    got = chroma_features(wav, sr)
    assert got.shape == want.shape == (wav.shape[0], expected_frames(wav.shape[-1], sr), 12)
    assert got.dtype == torch.float32
    # One-hot rows: allclose with zero tolerance, i.e. the same pitch class on every frame.
    torch.testing.assert_close(got, want.float(), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_normalised_chroma_matches_independent_pipeline(name):
    """Before the argmax: stand-in resample + spectrogram, transformers' own filter bank, float64.

    float32 vs float64 differ by < 1e-6 here; a symmetric instead of periodic Hann window
    already moves values by > 2e-5, so the tolerance below separates the two.
    """
    from transformers.audio_utils import chroma_filter_bank

    wav, sr = REFERENCE_CASES[name]
    x = torch.from_numpy(wav).double()
    if sr != SR:
        x = _numpy_resample(x, sr, SR, rolloff=0.945, lowpass_filter_width=24)
    x = x.mean(1)[:, : 30 * SR]  # mono, first 30 s
    if x.shape[-1] < 16384:  # centre in one zero-padded window, odd sample at the end
        pad = 16384 - x.shape[-1]
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))
    spec = _NumpySpectrogram(16384, 16384, 4096, 2, True, 0, True)(x).double().numpy()
    filters = chroma_filter_bank(num_frequency_bins=16384, num_chroma=12, sampling_rate=SR,
                                 tuning=0)
    raw = np.einsum("cf,bft->btc", filters, spec)
    want = raw / np.maximum(raw.max(-1, keepdims=True), 1e-6)
    got = chroma_features(wav, sr, ChromaConfig(argmax=False)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# (2) Known answers
# ---------------------------------------------------------------------------------------------

def test_a4_is_pitch_class_a():
    chroma = chroma_features(tone([440.0], 4.0), SR)  # [C, T] input
    winners = chroma[0].argmax(-1)
    assert PITCH_CLASSES[9] == "A"
    assert (winners == 9).float().mean() >= 0.9


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_a4_survives_resampling(sr):
    winners = chroma_features(tone([440.0], 1.0, sr=sr)[0], sr)[0].argmax(-1)  # [T] input
    assert (winners == 9).float().mean() >= 0.9


def test_c_major_triad_frames_are_c_e_or_g():
    chroma = chroma_features(tone([261.63, 329.63, 392.0], 3.0), SR)[0]
    assert torch.all(chroma.sum(-1) == 1)
    allowed = {PITCH_CLASSES.index(p) for p in ("C", "E", "G")}
    assert set(chroma.argmax(-1).tolist()) <= allowed


@pytest.mark.parametrize("n_samples,sr", [(1, SR), (16383, SR), (16384, SR), (SR, SR),
                                          (4096 * 10 + 7, SR), (30 * SR, SR), (40 * SR, SR),
                                          (44100, 44100), (12345, 16000)])
def test_frames_formula(n_samples, sr):
    chroma = chroma_features(np.zeros((2, 1, n_samples), np.float32) + 0.1, sr)
    assert chroma.shape == (2, expected_frames(n_samples, sr), 12)
    if n_samples >= 30 * SR:
        assert chroma.shape[1] == 235  # MusicgenMelodyConfig.chroma_length


def test_input_layouts_and_types_agree():
    wav = tone([330.0, 440.0], 1.5)  # [1, T]
    ref = chroma_features(wav, SR)
    for same in (wav[0], wav[None], torch.from_numpy(wav), wav.astype(np.float64),
                 (wav * 20000).astype(np.int16)):
        torch.testing.assert_close(chroma_features(same, SR), ref, rtol=0, atol=0)


def test_no_truncation_and_soft_chroma_options():
    wav = _noise((1, 1, 31 * SR), 4)
    assert chroma_features(wav, SR, ChromaConfig(chunk_length=None)).shape[1] == 1 + 31 * SR // 4096
    soft = chroma_features(tone([440.0]), SR, ChromaConfig(argmax=False))
    assert soft.min() >= 0 and torch.allclose(soft.amax(-1), torch.ones(1))


def test_null_chroma_is_one_hot_on_c_and_equals_silence():
    null = null_chroma(2, frames=3)
    assert null.shape == (2, 3, 12) and null.dtype == torch.float32
    assert torch.all(null[..., 0] == 1) and torch.all(null[..., 1:] == 0)
    silence = chroma_features(np.zeros((2, 1, SR)), SR)
    torch.testing.assert_close(silence, null_chroma(2, silence.shape[1]))
    with pytest.raises(ConfigError, match="batch"):
        null_chroma(0)
    with pytest.raises(ConfigError, match="frames"):
        null_chroma(1, frames=1.5)


@pytest.mark.parametrize("wav,match", [(np.zeros(0), "length 0"), (np.zeros((2, 0)), "length 0"),
                                       (np.zeros((1, 1, 1, 8)), r"\(1, 1, 1, 8\)"),
                                       (np.array([0.0, np.nan] * 10), "NaN"),
                                       (np.zeros(8, complex), "complex")])
def test_bad_audio_raises_audio_error(wav, match):
    with pytest.raises(AudioError, match=match):
        chroma_features(wav, SR)


def test_too_short_for_min_samples_names_the_length():
    with pytest.raises(AudioError, match="1000 samples.*min_samples=16384"):
        chroma_features(np.ones(1000), SR, ChromaConfig(min_samples=16384))


@pytest.mark.parametrize("sr", [0, -8000, 44100.5, "32000", True])
def test_bad_sample_rate_raises_config_error(sr):
    with pytest.raises(ConfigError, match="sample_rate"):
        chroma_features(np.ones(100), sr)


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="hop_length"):
        ChromaConfig(hop_length=0)
    with pytest.raises(ConfigError, match="chunk_length"):
        ChromaConfig(chunk_length=0)


# ---------------------------------------------------------------------------------------------
# (3) Property: any finite input at least n_fft long gives one-hot rows of the right shape
# ---------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_samples=st.integers(CFG.n_fft, CFG.n_fft + 6 * CFG.hop_length),
       sr=st.sampled_from([16000, 32000, 44100, 48000]),
       batch=st.integers(1, 2), channels=st.integers(1, 2),
       kind=st.sampled_from(["noise", "sine", "silence", "dc", "impulse"]),
       scale=st.floats(1e-6, 1e4), seed=st.integers(0, 2**32 - 1))
def test_property_one_hot_rows(n_samples, sr, batch, channels, kind, scale, seed):
    rng = np.random.default_rng(seed)
    shape = (batch, channels, n_samples)
    wav = {"noise": lambda: rng.standard_normal(shape),
           "sine": lambda: np.sin(2 * np.pi * rng.uniform(30, 8000) * np.arange(n_samples) / sr
                                  + np.zeros(shape)),
           "silence": lambda: np.zeros(shape),
           "dc": lambda: np.ones(shape),
           "impulse": lambda: np.eye(1, n_samples, rng.integers(n_samples))[None] + np.zeros(shape),
           }[kind]() * scale
    chroma = chroma_features(wav.astype(np.float32), sr)
    assert chroma.shape == (batch, expected_frames(n_samples, sr), 12)
    assert chroma.dtype == torch.float32
    assert torch.all((chroma == 0) | (chroma == 1))
    assert torch.all(chroma.sum(-1) == 1)
