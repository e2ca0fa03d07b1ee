"""Audio descriptors (metrics/descriptors.py) against signals whose answers are known.

Tolerances, and why:
* centroid of a 440 Hz sine: +-10 Hz (Hann-window leakage is symmetric in bins, not in Hz);
* tempo of a 120 BPM click track: +-2 BPM (the issue's bound; one 8 ms lag step is ~2 BPM);
* loudness of a -20 LUFS tone: +-0.5 LU. The tone is built from BS.1770's own calibration
  (a 0 dBFS 1 kHz sine in one channel reads -3.01 LUFS), not with loudness_normalize;
* silence ratio of half-silent audio: 0.5 +- 0.03 (frames straddling the edge);
* true peak: +-0.05 dB, for a full-scale sine (also one that stops mid-cycle) and for the
  inter-sample-peak sine.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen_edu.errors import AudioError, ConfigError
from musicgen_edu.metrics.descriptors import (
    DescriptorSettings,
    as_clips,
    clipping_ratio,
    describe,
    describe_batch,
    estimate_key,
)

SR = 32000


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR, phase: float = 0.0):
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def click_track(bpm: float, seconds: float, sr: int = SR) -> np.ndarray:
    """Decaying 1 kHz clicks of 20 ms, one every 60 / bpm seconds."""
    wav = np.zeros(round(seconds * sr), np.float32)
    click = tone(1000, 0.02, 0.8, sr) * np.exp(-np.arange(round(0.02 * sr)) / (0.004 * sr))
    for start in np.arange(0, seconds - 0.02, 60.0 / bpm):
        i = round(start * sr)
        wav[i:i + len(click)] += click
    return wav


def triads(chords, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """One chord per second; each note a sine (MIDI numbers)."""
    hz = lambda m: 440.0 * 2 ** ((m - 69) / 12)  # noqa: E731
    return np.concatenate([sum(tone(hz(m), seconds, 0.2, sr) for m in chord) for chord in chords])


# ------------------------------------------------------------------ the known answers

def test_sine_centroid_is_its_frequency():
    row = describe(tone(440, 2.0), SR)
    assert abs(row["centroid_hz"] - 440) < 10, row["centroid_hz"]
    assert row["flatness"] < 0.01           # a pure tone is as un-flat as it gets
    assert row["bandwidth_hz"] < 100


def test_click_track_at_120_bpm():
    row = describe(click_track(120, 8.0), SR)
    assert abs(row["tempo_bpm"] - 120) <= 2, row["tempo_bpm"]
    assert row["beat_strength"] > 0.5        # a clear pulse: onsets repeat every beat
    steady = describe(tone(1000, 4.0), SR)    # a steady tone has a "tempo", but no pulse
    assert abs(steady["beat_strength"]) < 0.1, steady["beat_strength"]


def test_click_track_at_100_bpm_away_from_the_trackers_prior():
    assert abs(describe(click_track(100, 8.0), SR)["tempo_bpm"] - 100) <= 2


def test_minus_20_lufs_tone_measures_minus_20():
    amp = 10 ** ((-20 + 3.01) / 20)          # BS.1770: 0 dBFS 1 kHz sine = -3.01 LUFS
    row = describe(tone(1000, 3.0, amp), SR)
    assert abs(row["loudness_lufs"] + 20) <= 0.5, row["loudness_lufs"]


def test_half_silent_audio_has_silence_ratio_one_half():
    wav = np.concatenate([tone(440, 2.0), np.zeros(2 * SR, np.float32)])
    row = describe(wav, SR)
    assert abs(row["silence_ratio"] - 0.5) <= 0.03, row["silence_ratio"]
    assert abs(row["centroid_hz"] - 440) < 10   # silent frames do not drag the mean down


def test_c_major_triads_are_in_c_major():
    c, f, g = [60, 64, 67], [65, 69, 72], [67, 71, 74]   # I - IV - V - I
    key, score = estimate_key(triads([c, f, g, c]), SR)
    assert key == "C major" and score > 0.7, (key, score)
    assert describe(triads([c, f, g, c]), SR)["key"] == "C major"


def test_a_minor_triads_are_in_a_minor():
    am, dm, e = [57, 60, 64], [62, 65, 69], [64, 68, 71]  # i - iv - V - i (harmonic minor)
    assert estimate_key(triads([am, dm, e, am]), SR)[0] == "A minor"


def test_true_peak_of_a_full_scale_sine_is_0_dbtp():
    for freq in (440, 441.3):   # 441.3 Hz stops mid-cycle: the filter's edge ringing is skipped
        row = describe(tone(freq, 1.0, 1.0), SR)
        assert abs(row["true_peak_dbtp"]) <= 0.05, (freq, row["true_peak_dbtp"])


def test_true_peak_finds_the_peak_between_samples():
    # fs/4 at 45 degrees: samples are +-0.707 (-3 dBFS) but the waveform reaches 1.0
    row = describe(tone(SR / 4, 1.0, 1.0, phase=np.pi / 4), SR)
    assert abs(row["peak_dbfs"] + 3.01) < 0.01
    assert abs(row["true_peak_dbtp"]) <= 0.05, row["true_peak_dbtp"]


def test_clipping_ratio_of_a_clipped_sine():
    clipped = np.clip(tone(440, 1.0, 2.0), -1, 1)   # |2 sin| >= 1 on 2/3 of the cycle
    assert abs(describe(clipped, SR)["clipping_ratio"] - 2 / 3) < 0.01
    assert describe(tone(440, 1.0, 1.0), SR)["clipping_ratio"] == 0.0  # touches, not clipped
    assert describe(tone(440, 1.0, 0.5), SR)["clipping_ratio"] == 0.0


# ------------------------------------------------------------------ edges and tables

def test_silence_and_very_short_clips():
    row = describe(np.zeros(SR, np.float32), SR)
    assert row["loudness_lufs"] == -np.inf and row["silence_ratio"] == 1.0
    assert np.isnan(row["centroid_hz"]) and row["key"] is None and np.isnan(row["tempo_bpm"])
    assert np.isnan(describe(tone(440, 0.2), SR)["loudness_lufs"])  # under one 0.4 s block


def test_stereo_and_torch_inputs_agree_with_mono_numpy():
    mono = tone(440, 1.0)
    a = describe(mono, SR)
    b = describe(torch.from_numpy(np.stack([mono, mono])), SR)
    assert b["channels"] == 2 and abs(a["centroid_hz"] - b["centroid_hz"]) < 1e-3
    assert b["loudness_lufs"] == pytest.approx(a["loudness_lufs"] + 3.01, abs=0.05)


def test_describe_batch_of_a_generation(gen):
    out = gen.generate(["lo-fi piano", "rock"], duration=1.0, seed=3)
    df = describe_batch(out)
    assert list(df.index) == [0, 1] and df.index.name == "clip"
    assert df["prompt"].tolist() == ["lo-fi piano", "rock"] and df["seed"].tolist() == [3, 4]
    for col in ("loudness_lufs", "true_peak_dbtp", "centroid_hz", "silence_ratio", "key"):
        assert col in df
    assert (df["true_peak_dbtp"] >= df["peak_dbfs"] - 1e-6).all()  # true peak >= sample peak
    raw = describe_batch(out.wav, out.sample_rate)           # same audio, no prompt/seed columns
    pd.testing.assert_frame_equal(raw, df.drop(columns=["prompt", "seed"]))


def test_inputs_are_checked():
    with pytest.raises(AudioError, match="describe_batch"):
        describe(np.zeros((2, 1, SR), np.float32), SR)
    with pytest.raises(ConfigError, match="sample_rate is required"):
        as_clips(np.zeros(10, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        describe(np.full(SR, np.nan, np.float32), SR)
    with pytest.raises(ConfigError, match="silence_db"):
        DescriptorSettings(silence_db=10.0)
    with pytest.raises(ConfigError, match="n_fft"):
        DescriptorSettings(n_fft=0)
    clips, sr, info = as_clips([np.zeros(5, np.float32), np.zeros((2, 7), np.float32)], 8000)
    assert [c.shape for c in clips] == [(1, 5), (2, 7)] and sr == 8000 and info == {}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=1, max_size=200),
       st.integers(1, 5))
def test_clipping_ratio_is_a_fraction_and_ignores_quiet_audio(samples, run):
    x = np.asarray(samples, np.float32)[None]
    ratio = clipping_ratio(x, 0.9999, run)
    assert 0.0 <= ratio <= 1.0
    assert ratio <= float((np.abs(x) >= 0.9999).mean())     # only full-scale samples count
    assert clipping_ratio(x * 0.5 / max(1.0, float(np.abs(x).max())), 0.9999, run) == 0.0
