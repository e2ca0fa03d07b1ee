"""Tests for musicgen_edu/audio/: file I/O, levels, edits and notebook helpers."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen_edu.audio import (
    crossfade,
    duration_seconds,
    fade_in,
    fade_out,
    load_audio,
    loudness,
    loudness_normalize,
    peak_normalize,
    play,
    plot_spectrogram,
    plot_waveform,
    resample,
    save_audio,
    to_mono,
    to_stereo,
    trim_silence,
)
from musicgen_edu.errors import AudioError, ConfigError

SR = 16000


def sine(freq=440.0, seconds=1.0, sr=SR, amp=0.5, channels=None):
    """A sine ``[T]`` (or ``[C, T]`` when channels is given), float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    wav = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wav if channels is None else np.stack([wav * (1 - 0.3 * c) for c in range(channels)])


def peak_freq(wav, sr):
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(spectrum)]


# ---------------------------------------------------------------- files

@pytest.mark.parametrize("ext, tol", [("wav", 1e-4), ("flac", 1e-4), ("ogg", 0.05)])
def test_round_trip(tmp_path, ext, tol):
    wav = sine(channels=2)
    path = save_audio(tmp_path / f"x.{ext}", wav, SR)
    assert path == tmp_path / f"x.{ext}"
    back, sr = load_audio(path)
    assert sr == SR and back.dtype == np.float32 and back.shape == wav.shape
    assert np.abs(back - wav).max() < tol


def test_round_trip_mono_1d_and_torch(tmp_path):
    save_audio(tmp_path / "m.wav", torch.from_numpy(sine()), SR)
    back, sr = load_audio(tmp_path / "m.wav")
    assert back.shape == (1, SR) and isinstance(back, np.ndarray)


def test_mp3_round_trip_or_clear_error(tmp_path):
    wav = sine(channels=2)
    if "MP3" in sf.available_formats():
        save_audio(tmp_path / "x.mp3", wav, SR)
        back, sr = load_audio(tmp_path / "x.mp3")
        assert sr == SR and back.shape[0] == 2 and abs(back.shape[1] - SR) < 2000
        assert abs(peak_freq(back[0], sr) - 440) < 5
    else:
        with pytest.raises(AudioError, match=r"(?s)MP3.*wav.*flac"):
            save_audio(tmp_path / "x.mp3", wav, SR)


def test_mp3_unavailable_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})
    with pytest.raises(AudioError, match=r"(?s)MP3.*\.wav.*\.flac"):
        save_audio(tmp_path / "x.mp3", sine(), SR)
    assert list(tmp_path.iterdir()) == []


def test_load_resample_and_mono(tmp_path):
    save_audio(tmp_path / "s.wav", sine(channels=2), SR)
    wav, sr = load_audio(tmp_path / "s.wav", sample_rate=8000, mono=True)
    assert sr == 8000 and wav.shape == (1, 8000)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save_audio(tmp_path / "a.wav", sine(), SR)
    save_audio(tmp_path / "a.wav", sine(amp=0.1), SR)  # overwrite=True replaces
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]
    assert np.abs(load_audio(tmp_path / "a.wav")[0]).max() == pytest.approx(0.1, abs=1e-3)


def test_overwrite_false_does_not_clobber(tmp_path):
    target = tmp_path / "keep.wav"
    save_audio(target, sine(amp=0.5), SR)
    before = target.read_bytes()
    with pytest.raises(AudioError, match=r"keep\.wav.*overwrite=True"):
        save_audio(target, sine(amp=0.1), SR, overwrite=False)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]
    save_audio(tmp_path / "new.wav", sine(), SR, overwrite=False)  # fine when absent


def test_overwrite_false_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported")
    monkeypatch.setattr("musicgen_edu.audio.files.os.link", no_links)
    save_audio(tmp_path / "a.wav", sine(), SR, overwrite=False)  # falls back to os.replace
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_overwrite_race_is_caught(tmp_path, monkeypatch):
    target = tmp_path / "race.wav"
    real_write = sf.write
    def write_then_someone_else_creates(*args, **kwargs):
        real_write(*args, **kwargs)
        target.write_bytes(b"theirs")  # appears between our check and our link
    monkeypatch.setattr(sf, "write", write_then_someone_else_creates)
    with pytest.raises(AudioError, match="race.wav"):
        save_audio(target, sine(), SR, overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["race.wav"]


def test_save_failure_leaves_no_temp(tmp_path):
    with pytest.raises(AudioError, match="x.mp3"):
        save_audio(tmp_path / "x.mp3", sine(), 12345)  # mp3 cannot encode 12345 Hz
    assert list(tmp_path.iterdir()) == []


def test_save_clips_and_creates_parents(tmp_path):
    path = save_audio(tmp_path / "sub" / "loud.flac", sine(amp=3.0), SR)
    assert np.abs(load_audio(path)[0]).max() <= 1.0


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 0), np.float32), "no samples"),
    (np.array([0.0, np.nan], np.float32), "NaN"),
    (np.zeros((SR, 2), np.float32), r"\[T, C\]"),
    (np.zeros(10, np.int16), "int16"),
])
def test_save_rejects_bad_arrays(tmp_path, bad, match):
    with pytest.raises(AudioError, match=match):
        save_audio(tmp_path / "x.wav", bad, SR)


@pytest.mark.parametrize("rate", [0, -8000, 44100.5, "44100", True])
def test_save_rejects_bad_sample_rate(tmp_path, rate):
    with pytest.raises(ConfigError, match=repr(rate) if not isinstance(rate, bool) else "True"):
        save_audio(tmp_path / "x.wav", sine(), rate)


def test_save_unknown_format(tmp_path):
    with pytest.raises(AudioError, match="aiff"):
        save_audio(tmp_path / "x.aiff", sine(), SR)
    save_audio(tmp_path / "noext", sine(), SR, format="flac")
    assert sf.info(str(tmp_path / "noext")).format == "FLAC"


def _make_bad(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.wav"
    if kind == "directory":
        (tmp_path / "folder.wav").mkdir()
        return tmp_path / "folder.wav"
    path = tmp_path / {"empty": "e.wav", "text": "notes.wav", "zero_frames": "z.wav",
                       "unsupported": "x.xyz"}[kind]
    if kind == "text":
        path.write_text("this is not audio\n" * 20)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_frames":
        sf.write(str(path), np.zeros((0, 1), np.float32), SR)
    else:
        path.write_bytes(bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "zero_frames",
                                  "unsupported"])
def test_bad_files_raise_audio_error_with_path(tmp_path, kind):
    path = _make_bad(tmp_path, kind)
    with pytest.raises(AudioError) as info:
        load_audio(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)  # AudioError is also a ValueError


# ---------------------------------------------------------------- shape and rate

@pytest.mark.parametrize("target", [8000, 22050, 32000])
def test_resample_length_and_pitch(target):
    wav = sine(seconds=1.0)
    out = resample(wav, SR, target)
    assert out.shape == (int(np.ceil(SR * target / SR)),) and out.dtype == np.float32
    assert abs(peak_freq(out, target) - 440) < 2


def test_resample_torch_batch_keeps_kind():
    batch = torch.from_numpy(np.stack([sine(channels=2)] * 3))  # [B, C, T]
    out = resample(batch, SR, 8000)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (3, 2, 8000)


def test_mono_stereo_shapes():
    stereo = sine(channels=2)
    assert to_mono(stereo).shape == (1, SR)
    np.testing.assert_allclose(to_mono(stereo)[0], stereo.mean(0), atol=1e-6)
    assert to_mono(sine()).shape == (SR,)
    assert to_stereo(sine()).shape == (2, SR)
    assert to_stereo(sine()[None]).shape == (2, SR)
    np.testing.assert_array_equal(to_stereo(stereo), stereo)
    assert tuple(to_stereo(torch.zeros(4, 1, 100)).shape) == (4, 2, 100)
    assert tuple(to_mono(torch.zeros(4, 2, 100)).shape) == (4, 1, 100)
    with pytest.raises(AudioError, match="3 channels"):
        to_stereo(np.zeros((3, 100), np.float32))


def test_duration_seconds():
    assert duration_seconds(np.zeros((2, 48000), np.float32), 32000) == pytest.approx(1.5)
    with pytest.raises(ConfigError):
        duration_seconds(np.zeros(10, np.float32), 0)


# ---------------------------------------------------------------- level

@pytest.mark.parametrize("peak_db", [0.0, -1.0, -6.0])
def test_peak_normalize_hits_peak(peak_db):
    out = peak_normalize(sine(amp=0.1, channels=2), peak_db)
    assert np.abs(out).max() == pytest.approx(10 ** (peak_db / 20), rel=1e-5)
    assert np.abs(peak_normalize(np.zeros(10, np.float32))).max() == 0.0
    with pytest.raises(ConfigError, match="peak_db=3"):
        peak_normalize(sine(), 3.0)


def test_peak_normalize_batch_per_item():
    batch = torch.from_numpy(np.stack([sine(amp=0.1, channels=2), sine(amp=0.7, channels=2)]))
    out = peak_normalize(batch, -1.0)
    assert torch.allclose(out.abs().amax(dim=(1, 2)), torch.full((2,), 10 ** (-1 / 20)))


def test_loudness_normalize_sine_to_minus_20():
    wav = sine(freq=1000, seconds=2.0, amp=0.05)
    out = loudness_normalize(wav, SR, target_lufs=-20.0)
    assert loudness(out, SR) == pytest.approx(-20.0, abs=0.5)
    assert isinstance(loudness_normalize(torch.from_numpy(wav), SR, -20.0), torch.Tensor)


def test_loudness_silence_and_short_clip():
    silent = np.zeros((2, SR), np.float32)
    assert loudness(silent, SR) == float("-inf")
    np.testing.assert_array_equal(loudness_normalize(silent, SR), silent)
    with pytest.raises(AudioError, match=r"0\.250 s"):
        loudness_normalize(sine(seconds=0.25), SR)
    with pytest.raises(ConfigError, match="target_lufs"):
        loudness_normalize(sine(), SR, target_lufs=5.0)


# ---------------------------------------------------------------- edits

@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_fades_start_end_at_zero_and_monotone(shape):
    const = np.full((2, SR), 0.5, np.float32)
    up = fade_in(const, SR, 0.25, shape=shape)
    down = fade_out(const, SR, 0.25, shape=shape)
    assert np.all(up[:, 0] == 0) and np.all(down[:, -1] == 0)
    assert np.all(np.diff(up, axis=-1) >= 0) and np.all(np.diff(down, axis=-1) <= 0)
    assert np.all(up[:, SR // 4:] == 0.5) and np.all(down[:, :-SR // 4] == 0.5)
    np.testing.assert_array_equal(fade_in(const, SR, 0.0), const)


def test_fade_errors():
    with pytest.raises(ConfigError, match="triangle"):
        fade_in(sine(), SR, 0.1, shape="triangle")
    with pytest.raises(ConfigError, match="longer than the clip"):
        fade_out(sine(seconds=0.5), SR, 1.0)


def test_crossfade_length_and_continuity():
    a, b = np.full((2, SR), 0.5, np.float32), np.full((2, SR // 2), 0.5, np.float32)
    out = crossfade(a, b, SR, 0.1)
    overlap = int(0.1 * SR)
    assert out.shape == (2, SR + SR // 2 - overlap)
    np.testing.assert_array_equal(out[:, :SR - overlap], a[:, :SR - overlap])
    np.testing.assert_array_equal(out[:, SR:], b[:, overlap:])
    assert np.abs(np.diff(out, axis=-1)).max() < 0.01  # no click at either edge of the join
    assert np.all(out >= 0.5 - 1e-6)  # equal power: correlated constants bump up, never dip
    middle = out[:, SR - overlap + overlap // 2]  # gains cos(pi/4) + sin(pi/4) = sqrt(2)
    np.testing.assert_allclose(middle, 0.5 * np.sqrt(2), atol=0.01)
    with pytest.raises(AudioError, match="same channels"):
        crossfade(a, sine(), SR, 0.1)


def test_crossfade_too_long_names_both_lengths():
    with pytest.raises(ConfigError, match=r"(?s)1600 samples.*800 samples"):
        crossfade(np.zeros(1600, np.float32), np.zeros(800, np.float32), SR, 0.2)


def test_trim_silence_removes_padding():
    pad = np.zeros(SR // 2, np.float32)
    wav = np.concatenate([pad, sine(seconds=1.0), pad])
    out = trim_silence(torch.from_numpy(np.stack([wav, wav])), SR)
    assert isinstance(out, torch.Tensor)
    assert abs(out.shape[-1] - SR) <= 0.03 * SR  # within ~3 hops of the true edges
    np.testing.assert_array_equal(trim_silence(pad, SR), pad)  # all silence: unchanged


# ---------------------------------------------------------------- notebook helpers

def test_plots_return_axes():
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    ax = plot_waveform(sine(channels=2), SR, title="wave")
    assert isinstance(ax, Axes) and ax.get_title() == "wave" and len(ax.lines) == 2
    fig, given_ax = plt.subplots()
    assert plot_spectrogram(torch.from_numpy(sine()), SR, ax=given_ax) is given_ax
    with pytest.raises(AudioError, match="n_fft"):
        plot_spectrogram(sine(seconds=0.01), SR)
    plt.close("all")


def test_play_returns_audio():
    from IPython.display import Audio
    player = play(sine(channels=2), SR)
    assert isinstance(player, Audio)
    info = sf.info(io.BytesIO(player.data))  # the embedded WAV keeps rate and channels
    assert info.samplerate == SR and info.channels == 2 and info.frames == SR
    players = play(torch.from_numpy(np.stack([sine(channels=2)] * 2)), SR)
    assert len(players) == 2 and all(isinstance(p, Audio) for p in players)


# ---------------------------------------------------------------- properties

@settings(max_examples=30, deadline=None)
@given(seconds=st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False))
def test_negative_fade_seconds_always_config_error(seconds):
    for fn in (fade_in, fade_out):
        with pytest.raises(ConfigError, match="seconds"):
            fn(np.ones(100, np.float32), SR, seconds)


@settings(max_examples=40, deadline=None)
@given(la=st.integers(1, 400), lb=st.integers(1, 400), frac=st.floats(0, 1))
def test_crossfade_length_formula(la, lb, frac):
    overlap = int(frac * min(la, lb))
    out = crossfade(np.ones(la, np.float32), np.ones(lb, np.float32), SR, overlap / SR)
    assert out.shape == (la + lb - overlap,)


@settings(max_examples=30, deadline=None)
@given(rate=st.one_of(st.integers(max_value=0), st.floats(max_value=0, allow_nan=False)))
def test_non_positive_sample_rates_rejected(rate):
    with pytest.raises(ConfigError):
        resample(np.ones(100, np.float32), rate, SR)
