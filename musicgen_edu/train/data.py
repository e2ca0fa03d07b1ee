"""A training set from a folder of captioned audio: clips cut into windows, encoded once to tokens.

    folder or table ─► find_clips: (path, caption) pairs   captions.csv / .jsonl (path, caption),
                                                           or a sidecar per clip: clip.txt, or
                                                           audiocraft's clip.json {"description"}
                    ─► each clip: read, resample and mix to the model's rate and channels,
                       cut into windows of ``window`` s every ``hop`` s
                    ─► EnCodec (the model's own codec) ─► tokens [W, K, S], one shard per clip
                    ─► TokenDataset: every window with its caption

Encoding is the slow part and is done once: a clip's shard is named by the hash of its bytes
and of the settings that shape its tokens (model codec, rate, channels, window, hop), so a
second run, an interrupted run or a run with edited captions re-encodes nothing it already
has, and a changed file gets a new shard. Shards are written atomically (a temporary file,
then ``os.replace``). Captions are read from the table or sidecars each time, not stored in
the shards. Every bad clip (unreadable, silent, shorter than the window, too long, no
caption) is collected and reported together in one ``DataError``; the good ones are encoded
and kept first. audiocraft reads datasets the same way (``data/audio_dataset.py``: a manifest of
files, a JSON sidecar with ``description`` per clip, fixed-length segments).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio, save_audio
from ..codec import encode_audio
from ..errors import AudioError, ConfigError, DataError
from ..generation import check_text
from ..models import MusicGenModel
from .checkpoint import save_atomic, write_atomic

__all__ = ["Clip", "TokenDataset", "find_clips", "build_dataset", "write_dataset",
           "AUDIO_SUFFIXES", "TABLE_NAMES"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
TABLE_NAMES = ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl")
CAPTION_COLUMNS = ("caption", "description", "text")  # the first one present is used
MAX_CLIPS = 100_000                  # clips per dataset
MAX_CLIP_SECONDS = 3600.0            # a longer file is refused before it is read
SILENCE_PEAK = 1e-3                  # a clip whose peak is below this (-60 dBFS) is silent
ENCODE_BATCH = 8                     # windows per EnCodec call


@dataclass(frozen=True)
class Clip:
    """One audio file and what it sounds like."""

    path: Path
    caption: str


# --- where the clips and captions are ---------------------------------------------------------
def find_clips(source: str | Path) -> list[Clip]:
    """The captioned clips of ``source``: a table file, a folder holding one of
    :data:`TABLE_NAMES`, or a folder of audio files with sidecar captions. Raises DataError
    naming every problem (no clips, a column or caption missing, a listed file absent)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"training data '{source}' does not exist: give a folder of audio "
                        "files with captions, or a captions.csv / .jsonl table.")
    if source.is_file():
        return _from_table(source)
    tables = [source / name for name in TABLE_NAMES if (source / name).is_file()]
    return _from_table(tables[0]) if tables else _from_sidecars(source)


def _read_rows(table: Path) -> list[dict]:
    import pandas as pd

    try:
        frame = (pd.read_json(table, lines=True, dtype=False) if table.suffix == ".jsonl"
                 else pd.read_csv(table, dtype=str, keep_default_na=False))
    except ValueError as err:
        raise DataError(f"cannot read the table '{table}': {err}") from None
    return frame.to_dict("records")


def _from_table(table: Path) -> list[Clip]:
    if table.suffix not in (".csv", ".jsonl"):
        raise DataError(f"'{table}' is not a table: give a .csv or .jsonl file with columns "
                        "path and caption, or a folder.")
    rows = _read_rows(table)
    columns = list(rows[0]) if rows else []
    caption_column = next((c for c in CAPTION_COLUMNS if c in columns), None)
    if "path" not in columns or caption_column is None:
        raise DataError(f"'{table}' has columns {columns}; it needs 'path' and 'caption' "
                        f"(or one of {list(CAPTION_COLUMNS[1:])}).")
    clips, problems = [], []
    for i, row in enumerate(rows[:MAX_CLIPS + 1]):
        path = (table.parent / str(row["path"])).expanduser()
        caption = row[caption_column]
        if not path.is_file():
            problems.append(f"row {i + 1}: file '{path}' not found")
        elif (bad := _caption_problem(caption)) is not None:
            problems.append(f"row {i + 1} ('{path.name}'): {bad}")
        else:
            clips.append(Clip(path, str(caption).strip()))
    return _checked(clips, problems, f"the table '{table}'")


def _from_sidecars(folder: Path) -> list[Clip]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                   and p.is_file())
    if not files:
        raise DataError(f"no audio files in '{folder}' (looked for {', '.join(AUDIO_SUFFIXES)} "
                        f"and for a table named one of {list(TABLE_NAMES)}).")
    clips, problems = [], []
    for path in files[:MAX_CLIPS + 1]:
        caption = _sidecar_caption(path)
        bad = "no caption: add a .txt or .json sidecar" if caption is None \
            else _caption_problem(caption)
        if bad is not None:
            problems.append(f"'{path.name}': {bad}")
        else:
            clips.append(Clip(path, str(caption).strip()))
    return _checked(clips, problems, f"'{folder}'")


def _sidecar_caption(path: Path) -> str | None:
    text, meta = path.with_suffix(".txt"), path.with_suffix(".json")
    if text.is_file():
        return text.read_text(encoding="utf-8", errors="replace")
    if meta.is_file():
        try:
            return json.loads(meta.read_text(encoding="utf-8")).get("description")
        except (ValueError, AttributeError):
            return None
    return None


def _caption_problem(caption) -> str | None:
    try:
        check_text("caption", caption if isinstance(caption, str) else None)
    except ConfigError as err:
        return str(err)
    return None


def _checked(clips: list[Clip], problems: list[str], where: str) -> list[Clip]:
    if len(clips) + len(problems) > MAX_CLIPS:
        raise DataError(f"{where} lists more than {MAX_CLIPS} clips; split it into smaller sets.")
    if problems:
        raise DataError(f"{len(problems)} clip(s) in {where} cannot be used:\n  "
                        + "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
    if not clips:
        raise DataError(f"{where} lists no clips.")
    return clips


# --- clips -> token shards ----------------------------------------------------------------
def _settings(model: MusicGenModel, window: float, hop: float) -> dict:
    """What shapes a clip's tokens; part of each shard's name."""
    codec = model.config.audio_encoder
    return {"codec": codec.to_json_string(use_diff=False), "channels": model.audio_channels,
            "window": window, "hop": hop, "version": 1}


def _shard_name(path: Path, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32] + ".pt"


def _windows(clip: Clip, model: MusicGenModel, window: float, hop: float) -> torch.Tensor:
    """The clip at the model's rate, cut into windows ``[W, C, T]`` (the codec mixes the
    channels to the model's)."""
    import soundfile as sf

    try:
        seconds = sf.info(str(clip.path)).duration
    except (sf.SoundFileError, RuntimeError) as err:
        raise AudioError(f"cannot read it as audio ({err})") from None
    if seconds > MAX_CLIP_SECONDS:
        raise AudioError(f"it lasts {seconds:.0f} s; allowed: up to {MAX_CLIP_SECONDS:.0f} s "
                         "per file (cut it into shorter files)")
    if seconds < window:
        raise AudioError(f"it lasts {seconds:.2f} s, shorter than the window={window} s "
                         "(use a shorter window or a longer clip)")
    wav, sr = load_audio(clip.path, sample_rate=model.sample_rate)       # [C, T]
    if not np.isfinite(wav).all():
        raise AudioError("it holds NaN or infinite samples")
    if np.abs(wav).max() < SILENCE_PEAK:
        raise AudioError(f"it is silent (peak {np.abs(wav).max():.1e}, below -60 dBFS)")
    size, step = round(window * sr), round(hop * sr)
    starts = range(0, wav.shape[1] - size + 1, step)
    return torch.from_numpy(np.stack([wav[:, s: s + size] for s in starts]))


def _encode(model: MusicGenModel, windows: torch.Tensor) -> torch.Tensor:
    """Windows ``[W, C, T]`` -> tokens ``[W, K, S]`` (int16: the vocabulary is < 32768)."""
    parts = [encode_audio(model, windows[i: i + ENCODE_BATCH], model.sample_rate).cpu()
             for i in range(0, len(windows), ENCODE_BATCH)]
    return torch.cat(parts).to(torch.int16)


class TokenDataset(torch.utils.data.Dataset):
    """Every window of every clip: ``dataset[i]`` is ``(tokens [K, S] int64, caption)``."""

    def __init__(self, windows: list[torch.Tensor], captions: list[str], sources: list[str]):
        self.windows, self.captions, self.sources = windows, captions, sources

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.windows[index].long(), self.captions[index]

    @property
    def frames(self) -> int:
        """S: token frames per window."""
        return int(self.windows[0].shape[-1])


def build_dataset(source: str | Path, model: MusicGenModel, tokens_dir: str | Path,
                  window: float = 10.0, hop: float = 10.0,
                  progress: bool | None = None) -> TokenDataset:
    """Encode ``source``'s clips (see :func:`find_clips`) into ``tokens_dir`` and load them.

    Clips encoded before (same bytes, same settings) are not encoded again. Raises
    DataError naming every bad clip, after the good ones are encoded and saved.
    """
    from tqdm.auto import tqdm

    clips = find_clips(source)
    out = Path(tokens_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(model, window, hop)
    windows, captions, sources, problems = [], [], [], []
    for clip in tqdm(clips, desc="encoding clips", unit="clip", disable=progress is False):
        shard = out / _shard_name(clip.path, settings)
        if not shard.exists():
            try:
                save_atomic({"tokens": _encode(model, _windows(clip, model, window, hop)),
                              "source": str(clip.path), "settings": settings}, shard)
            except AudioError as err:
                problems.append(f"'{clip.path}': {err}")
                continue
        tokens = torch.load(shard, weights_only=True)["tokens"]         # [W, K, S]
        windows.extend(tokens)
        captions.extend([clip.caption] * len(tokens))
        sources.extend([str(clip.path)] * len(tokens))
    if problems:
        kept = len(clips) - len(problems)
        raise DataError(f"{len(problems)} of {len(clips)} clips cannot be used ({kept} encoded "
                        f"and kept in '{out}'; fix or remove these, then run again):\n  "
                        + "\n  ".join(problems[:20]))
    return TokenDataset(windows, captions, sources)


def write_dataset(folder: str | Path, wavs, sample_rate: int, captions: list[str]) -> Path:
    """Write clips ``[C, T]`` (or ``[T]``) as ``clip_000.wav, ...`` and ``captions.csv`` into
    ``folder``: the layout :func:`find_clips` reads (lecture 10 builds its dataset this way)."""
    import pandas as pd

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(wavs) != len(captions):
        raise DataError(f"got {len(wavs)} clips but {len(captions)} captions; give one each.")
    names = [f"clip_{i:03d}.wav" for i in range(len(wavs))]
    for name, wav in zip(names, wavs, strict=True):
        save_audio(folder / name, wav, sample_rate, overwrite=True)
    table = pd.DataFrame({"path": names, "caption": captions})
    write_atomic(folder / "captions.csv", lambda tmp: table.to_csv(tmp, index=False))
    return folder
