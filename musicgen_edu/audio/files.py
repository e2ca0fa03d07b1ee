"""Audio files in and out: load_audio and save_audio (atomic write), as audiocraft does.

Modelled on audiocraft `audiocraft/data/audio.py` (``audio_read`` / ``audio_write``),
simplified for teaching: ``load_audio`` reads any libsndfile format into a float32 ``[C, T]``
array (optionally resampled and mixed to mono); ``save_audio`` writes a temp file in the same
folder and ``os.replace``-s it onto the target, so a crash never leaves half a file.

The signal functions (shape, rate, level, fades, ...) live in ``waveform.py`` and the players
and plots in ``display.py``, beside this file; import them from the package
(``musicgen_edu.audio``) or use the flat API (``mg.fade_in``, ``mg.play``). soundfile is
imported inside the functions that need it so ``import musicgen_edu`` stays fast.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from ..errors import AudioError
from .waveform import as_numpy, check_positive_int, resample, to_mono

__all__ = ["load_audio", "save_audio"]

# extension -> (libsndfile format, subtype); 16-bit PCM like audiocraft's default.
_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
            "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}


def load_audio(path, sample_rate: int | None = None,
               mono: bool = False) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile (wav, flac, ogg, mp3 and the rest of libsndfile).

    Args:
        path: the file to read.
        sample_rate: resample to this rate if given (``None`` keeps the file's rate).
        mono: average the channels into one.

    Returns:
        ``(wav, sample_rate)`` with ``wav`` a float32 numpy array ``[C, T]`` in [-1, 1].

    Raises:
        AudioError: the file is missing, a folder, empty (0 bytes or 0 frames), not audio or in
            a format libsndfile cannot read; the message names the path.
    """
    import soundfile as sf  # lazy: keeps `import musicgen_edu` light
    path = Path(path)
    if sample_rate is not None:
        sample_rate = check_positive_int("sample_rate", sample_rate)
    if not path.exists():
        raise AudioError(f"Audio file not found: '{path}'. Check the path and the working "
                         f"folder ({Path.cwd()}).")
    if path.is_dir():
        raise AudioError(f"'{path}' is a folder, not an audio file.")
    if path.stat().st_size == 0:
        raise AudioError(f"Audio file '{path}' is empty (0 bytes); write it again.")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except sf.SoundFileError as exc:
        raise AudioError(f"Cannot read '{path}' as audio ({exc}). Is it really an audio "
                         f"file? Supported: wav, flac, ogg, mp3 and other libsndfile "
                         f"formats; convert others with ffmpeg.") from exc
    if data.shape[0] == 0:
        raise AudioError(f"Audio file '{path}' has 0 frames (a header but no samples).")
    wav = np.ascontiguousarray(data.T)  # [T, C] -> [C, T]
    if mono:
        wav = to_mono(wav)  # [1, T]
    if sample_rate is not None and sample_rate != file_sr:
        wav, file_sr = resample(wav, file_sr, sample_rate), sample_rate
    return wav, int(file_sr)


def save_audio(path, wav, sample_rate: int, format: str | None = None,
               overwrite: bool = True) -> Path:
    """Write ``wav`` (``[T]`` or ``[C, T]``) to wav / flac / ogg / mp3, atomically.

    Steps: validate; clip to [-1, 1] with ``np.clip`` (silently: 16-bit and lossy encoders
    cannot store louder samples, and clipping quietly is better than wrapping around; call
    ``peak_normalize`` first if you want no clipping at all); write to a hidden temp file in
    the same folder; then ``os.replace`` it onto ``path``. A crash mid-write therefore never
    leaves a half-written file under ``path``. With ``overwrite=False`` the final step is
    ``os.link``, which fails instead of replacing an existing file. Missing parent folders
    are created. wav and flac are 16-bit PCM (audiocraft's default), ogg is Vorbis.

    Args:
        path: where to write; the extension picks the format unless ``format`` is given.
        wav: float waveform ``[T]`` or ``[C, T]``, finite and non-empty.
        sample_rate: samples per second, a positive int.
        format: ``"wav"``, ``"flac"``, ``"ogg"`` or ``"mp3"``, overriding the extension.
        overwrite: replace an existing file (default) or raise ``AudioError``.

    Returns:
        The path written, as a ``Path``.
    """
    import soundfile as sf  # lazy: keeps `import musicgen_edu` light
    path = Path(path)
    sample_rate = check_positive_int("sample_rate", sample_rate)
    arr = as_numpy(wav)
    if arr.ndim == 1:
        arr = arr[None]  # [T] -> [1, T]
    if arr.shape[-1] == 0:
        raise AudioError(f"wav has shape {tuple(arr.shape)}: no samples to write to '{path}'.")
    if arr.shape[0] > 8 and arr.shape[0] > arr.shape[1]:
        raise AudioError(f"wav has shape {tuple(arr.shape)}, which looks like [T, C]; "
                         f"save_audio wants [C, T]: pass wav.T.")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise AudioError(f"wav has {bad} NaN/inf samples; cannot write '{path}'. Find where "
                         f"they appear (np.isfinite) or use np.nan_to_num.")
    # Pick the format from `format` or the extension.
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in _FORMATS:
        raise AudioError(f"Unknown audio format {fmt!r} for '{path}'; use one of "
                         f"{sorted(_FORMATS)} (as the extension or format=...).")
    sf_format, subtype = _FORMATS[fmt]
    if sf_format not in sf.available_formats():
        raise AudioError(f"This libsndfile ({sf.__libsndfile_version__}) cannot write "
                         f"{sf_format}; save as .wav or .flac instead (then convert with "
                         f"ffmpeg if you need {fmt}).")
    exists = f"'{path}' already exists; pass overwrite=True to replace it."
    if not overwrite and path.exists():
        raise AudioError(exists)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(arr, -1.0, 1.0).T  # clip, then [C, T] -> [T, C] for soundfile
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        sf.write(str(tmp), data, sample_rate, format=sf_format, subtype=subtype)
        if overwrite:
            os.replace(tmp, path)  # atomic on POSIX and Windows (same folder)
        else:
            try:
                os.link(tmp, path)  # atomic "create only if absent"; tmp removed below
            except FileExistsError:
                raise
            except OSError:  # no hard links (FAT, some cloud mounts): check, then replace
                if path.exists():
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
    except FileExistsError:  # another writer created `path` after our check
        raise AudioError(exists) from None
    except sf.SoundFileError as exc:
        reason = str(exc).replace(str(tmp), str(path))  # don't show the temp name
        raise AudioError(f"Could not write '{path}' as {fmt} at {sample_rate} Hz with "
                         f"{arr.shape[0]} channel(s): {reason} Try .wav, or a standard rate "
                         f"(mp3 allows 8000-48000 Hz, 1-2 channels).") from exc
    finally:
        tmp.unlink(missing_ok=True)  # already gone after os.replace
    return path
