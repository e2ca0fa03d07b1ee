"""Evaluate audio files: descriptors, CLAP text-audio score and FAD, one table row per file.

What ``musicgen-edu evaluate`` prints, as a library call; it only combines the other metrics
modules (lecture 08), it measures nothing itself::

    files --load_audio--> clips --describe--------------------> loudness, peak, centroid,
                                                                tempo, key, ... per file
                                 --clap_score(prompt, clip)---> clap_score per file
                                 --embeddings (CLAP or EnCodec)--+
    reference folder --load_audio--> embeddings ----------------+--fad--> one FAD for the set

FAD compares two *sets*, so it is one number, repeated in every row's ``fad`` column. With the
offline ``clap="random"`` model the CLAP numbers are meaningless: the table says so in
``clap_meaningful`` and ``df.attrs["warning"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..models import DEFAULT_MODEL
from .clap import DEFAULT_CLAP, clap_embeddings, clap_score, load_clap
from .descriptors import describe
from .fad import encodec_embeddings, fad

__all__ = ["evaluate_files", "read_prompts", "AUDIO_SUFFIXES"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what a reference folder contributes


def read_prompts(csv_path, files: Sequence) -> list[str]:
    """The prompt of each file from a CSV with columns ``file`` and ``prompt``.

    A row matches a file by its path as given or by its file name (``piano.wav``).
    """
    import pandas as pd

    path = Path(csv_path)
    if not path.is_file():
        raise ConfigError(f"prompts file '{path}' not found; pass a CSV with columns file,prompt.")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"file", "prompt"} <= set(table.columns):
        raise ConfigError(f"prompts file '{path.name}' has columns {list(table.columns)}; it "
                          "needs 'file' and 'prompt'.")
    by_file = {}
    for file, text in zip(table["file"], table["prompt"]):
        by_file[file] = by_file[Path(file).name] = text
    missing = [str(f) for f in files if str(f) not in by_file and Path(f).name not in by_file]
    if missing:
        raise ConfigError(f"prompts file '{path.name}' has no row for {missing[:5]}; add a row "
                          "(file,prompt) per file.")
    return [by_file.get(str(f), by_file.get(Path(f).name)) for f in files]


def _clips(files: Sequence) -> list[tuple[np.ndarray, int]]:
    from ..audio import load_audio

    return [load_audio(f) for f in files]             # (wav [C, T], sample_rate) per file


def _embed(clips, embedding: str, clap, model) -> np.ndarray:
    """One CLAP embedding per clip, or every EnCodec frame of every clip: ``[N, D]``."""
    if embedding == "clap":
        return np.concatenate([clap_embeddings(wav, sr, clap) for wav, sr in clips])
    return np.concatenate([encodec_embeddings(model, wav, sr, per_frame=True)
                           for wav, sr in clips])


def evaluate_files(files: Sequence, prompts: Sequence[str] | str | None = None,
                   reference=None, clap: str = DEFAULT_CLAP, embedding: str = "clap",
                   model=DEFAULT_MODEL, device: str = "auto"):
    """Measure audio files: one row per file (descriptors, CLAP score, FAD).

    Args:
        files: audio file paths (anything ``mg.load_audio`` reads).
        prompts: ``None`` (no CLAP score), one text for every file, or one per file.
        reference: a folder of reference clips (``.wav``, ``.flac``, ``.ogg``, ``.mp3``):
            adds the FAD of the files against them (at least 2 clips in each set).
        clap: the CLAP model for scores and ``embedding="clap"``: a hub id (network once) or
            ``"random"`` (offline; meaningless numbers, flagged).
        embedding: FAD embedding, ``"clap"`` (one per clip) or ``"encodec"`` (every 20 ms
            frame of MusicGen's EnCodec encoder, from ``model``; works with few clips).
        model: the MusicGen model whose EnCodec embeds for ``embedding="encodec"``.
        device: where CLAP and EnCodec run.

    Returns:
        DataFrame: ``file``, the :func:`~musicgen_edu.metrics.descriptors.describe` columns,
        then ``prompt, clap_score, clap_meaningful`` (with prompts) and ``fad`` (with a
        reference). ``df.attrs`` holds ``clap_model``, ``meaningful``, ``warning``,
        ``fad_embedding`` and ``reference_files``.
    """
    import pandas as pd

    files = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not files:
        raise ConfigError("no files to evaluate; pass one or more audio files.")
    if embedding not in ("clap", "encodec"):
        raise ConfigError(f"embedding={embedding!r} is not available; choose 'clap' or 'encodec'.")
    if isinstance(prompts, str):
        prompts = [prompts] * len(files)
    if prompts is not None and len(prompts) != len(files):
        raise ConfigError(f"got {len(prompts)} prompts for {len(files)} files; give one prompt "
                          "for all files, or one per file.")
    clips = _clips(files)
    table = pd.DataFrame([{"file": str(f), **describe(wav, sr)}
                          for f, (wav, sr) in zip(files, clips)])
    attrs = {}
    needs_clap = prompts is not None or (reference is not None and embedding == "clap")
    clap_model = load_clap(clap, device=device) if needs_clap else None
    if clap_model is not None:
        attrs.update(clap_model=clap_model.name, meaningful=clap_model.meaningful,
                     warning=clap_model.warning)
    if prompts is not None:
        with warnings.catch_warnings():   # the random model warns per call; attrs say it once
            warnings.simplefilter("ignore", UserWarning)
            scores = [float(clap_score(p, wav, sr, clap_model)["score"].iloc[0])
                      for p, (wav, sr) in zip(prompts, clips)]
        table["prompt"], table["clap_score"] = list(prompts), scores
        table["clap_meaningful"] = clap_model.meaningful
    if reference is not None:
        folder = Path(reference)
        refs = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES) \
            if folder.is_dir() else []
        if len(refs) < 2 or (embedding == "clap" and len(files) < 2):
            raise ConfigError(f"FAD compares two sets: got {len(files)} file(s) and {len(refs)} "
                              f"reference clip(s) in '{folder}'; give at least 2 of each (with "
                              "one file, use --embedding encodec, which uses every frame).")
        if embedding == "encodec" and isinstance(model, str):
            from ..models import load_model
            model = load_model(model, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            table["fad"] = fad(_embed(clips, embedding, clap_model, model),
                               _embed(_clips(refs), embedding, clap_model, model))
        attrs.update(fad_embedding=embedding, reference_files=len(refs))
    table.attrs.update(attrs)
    return table
