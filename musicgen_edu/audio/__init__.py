"""Audio: files in and out, signal functions on waveforms, players and plots for notebooks.

One concept in three files; ``files.py`` and ``display.py`` import ``waveform.py``, which
imports neither::

    files.py     load_audio, save_audio (atomic write)               audiocraft data/audio.py
    display.py   play, plot_waveform, plot_spectrogram (notebooks)   audiocraft utils/notebook.py
    waveform.py  checks, shape and rate, level, fades, crossfade,    audiocraft data/audio_utils.py
                 trim on [T] / [C, T]

This file states the package's public API: every name below is public where it lives, and the
flat API (``mg.load_audio``, ``mg.fade_in``, ``mg.play``) re-exports the student-facing ones.
soundfile, librosa, pyloudnorm, matplotlib and IPython are imported inside the functions that
need them, so ``import musicgen_edu`` stays fast.
"""

from .display import play, plot_spectrogram, plot_waveform
from .files import load_audio, save_audio
from .waveform import (
    as_numpy,
    check_positive_int,
    crossfade,
    duration_seconds,
    fade_in,
    fade_out,
    loudness,
    loudness_normalize,
    peak_normalize,
    resample,
    to_mono,
    to_stereo,
    trim_silence,
)

__all__ = [
    # files (files.py)
    "load_audio", "save_audio",
    # signal functions (waveform.py)
    "as_numpy", "check_positive_int", "resample", "to_mono", "to_stereo", "duration_seconds",
    "peak_normalize", "loudness", "loudness_normalize", "fade_in", "fade_out", "crossfade",
    "trim_silence",
    # players and plots (display.py)
    "play", "plot_waveform", "plot_spectrogram",
]
