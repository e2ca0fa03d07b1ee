"""``audio_write`` and ``audio_read`` as in audiocraft ``audiocraft/data/audio.py``.

``audio_write(stem_name, wav, sample_rate, ...)`` normalizes with ``normalize_audio``
(``audio_utils.py``: peak by default, or clip / rms / loudness), adds the format's suffix to
``stem_name`` and writes the file with :func:`musicgen_edu.audio.save_audio` (soundfile,
16-bit PCM for wav and flac, atomic: a failed write leaves no half-written file), returning the
path. Formats: wav, mp3, ogg, flac (whatever libsndfile on this machine writes). audiocraft
passes ``mp3_rate``/``ogg_rate`` to its encoder; libsndfile picks the bitrate itself, so here
they are checked but do not change the file (see ``docs/audiocraft.md``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import AudioError, ConfigError, check_range
from .audio_utils import normalize_audio

__all__ = ["audio_write", "audio_read", "FORMATS"]

FORMATS = ("wav", "mp3", "ogg", "flac")   # audio_write's `format` values


def audio_read(filepath, seek_time: float = 0.0, duration: float = -1.0,
               pad: bool = False) -> tuple[torch.Tensor, int]:
    """Read ``duration`` seconds (``-1``: to the end) from ``seek_time`` of an audio file:
    ``(wav [C, T] float32, sample_rate)``; ``pad`` zero-pads a short read to ``duration``."""
    from ...audio import load_audio

    check_range("seek_time", seek_time, 0, None)
    wav, sr = load_audio(filepath)                      # [C, T] numpy, the file's rate
    wav = torch.from_numpy(wav)
    start = int(seek_time * sr)
    wav = wav[:, start:] if duration <= 0 else wav[:, start: start + int(duration * sr)]
    if pad and duration > 0:
        wav = torch.nn.functional.pad(wav, (0, int(duration * sr) - wav.shape[-1]))
    return wav, sr


def audio_write(stem_name: str | Path, wav: torch.Tensor, sample_rate: int,
                format: str = "wav", mp3_rate: int = 320, ogg_rate: int | None = None,
                normalize: bool = True, strategy: str = "peak", peak_clip_headroom_db: float = 1,
                rms_headroom_db: float = 18, loudness_headroom_db: float = 14,
                loudness_compressor: bool = False, log_clipping: bool = True,
                make_parent_dir: bool = True, add_suffix: bool = True) -> Path:
    """Normalize ``wav`` and write it to ``stem_name`` + ``.format``; return the path.

    ``normalize``, ``strategy``, ``peak_clip_headroom_db``, ``rms_headroom_db``,
    ``loudness_headroom_db``, ``loudness_compressor`` and ``log_clipping`` go to
    :func:`~musicgen_edu.audiocraft_api.data.audio_utils.normalize_audio` (peak to -1 dBFS by
    default).

    Args:
        stem_name: the file name without extension (the suffix is added when ``add_suffix``).
        wav: float audio ``[C, T]`` or ``[T]`` (write a batch item by item: ``wav[i]``).
        sample_rate: Hz.
        format: ``"wav"`` (16-bit PCM), ``"mp3"``, ``"ogg"`` or ``"flac"``.
        mp3_rate: kbps for mp3 (checked; libsndfile chooses the bitrate).
        ogg_rate: kbps for ogg, or None (checked; libsndfile chooses the bitrate).
        normalize: see ``normalize_audio``.
        strategy: ``"peak"``, ``"clip"``, ``"rms"``, ``"loudness"`` or ``"none"``.
        peak_clip_headroom_db: headroom of ``peak`` and ``clip``, dB below full scale.
        rms_headroom_db: RMS target of ``rms``, dB below full scale.
        loudness_headroom_db: ``loudness`` aims at ``-loudness_headroom_db`` LUFS.
        loudness_compressor: ``tanh`` soft clipping after loudness normalization.
        log_clipping: report on stderr when ``rms``/``loudness`` still clip.
        make_parent_dir: create missing parent folders; if False they must exist.
        add_suffix: append ``.format`` to ``stem_name``.

    Returns:
        The ``Path`` written.
    """
    from ...audio import save_audio

    if not isinstance(wav, torch.Tensor) or not wav.dtype.is_floating_point:
        raise AudioError(f"wav must be a floating-point torch.Tensor, got "
                         f"{getattr(wav, 'dtype', type(wav).__name__)}; use wav.float().")
    if wav.dim() == 1:
        wav = wav[None]                                  # [T] -> [1, T]
    elif wav.dim() > 2:
        raise AudioError(f"Input wav should be at most 2 dimensions [C, T], got shape "
                         f"{list(wav.shape)}; write one item at a time: wav[i].")
    if not wav.isfinite().all():
        raise AudioError(f"wav has NaN/inf samples; cannot write '{stem_name}'.")
    if format not in FORMATS:
        raise ConfigError(f"Invalid format {format!r}; choose one of {list(FORMATS)}.")
    check_range("mp3_rate", mp3_rate, 0, None, low_open=True)
    if ogg_rate is not None:
        check_range("ogg_rate", ogg_rate, 0, None, low_open=True)
    wav = normalize_audio(wav.detach().float().cpu(), normalize, strategy, peak_clip_headroom_db,
                          rms_headroom_db, loudness_headroom_db, loudness_compressor,
                          log_clipping=log_clipping, sample_rate=sample_rate,
                          stem_name=str(stem_name))
    path = Path(str(stem_name) + (f".{format}" if add_suffix else ""))
    if not make_parent_dir and not path.parent.is_dir():
        raise AudioError(f"folder '{path.parent}' does not exist and make_parent_dir=False; "
                         "create it or pass make_parent_dir=True.")
    return save_audio(path, wav.numpy(), sample_rate, format=format)
