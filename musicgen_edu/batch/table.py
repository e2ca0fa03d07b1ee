"""Batch tables: rows from a parameter grid, a CSV/JSONL file or a DataFrame, checked into items.

An experiment is a table, one row per clip (see :class:`~musicgen_edu.batch.runner.BatchRunner`)::

    prompt               duration  seed  temperature  name    id   notes      <- columns
    lo-fi piano          4         0     0.7          piano   s12  for Monday

Every column is one of three kinds:

* a **setting**: ``prompt``, ``name`` or a :class:`~musicgen_edu.generation.GenerationConfig`
  field (``duration``, ``seed``, ``top_k``, ...); plural aliases (``prompts``, ``seeds``,
  ``names``, ``durations``) are accepted;
* a **misspelt setting**: a name close to one (``topk``, ``temprature``, ``Seed``; found with
  ``difflib.get_close_matches``, as Python's own "did you mean" does). Its rows are rejected
  with the likely setting named, because silently ignoring a typo would run the wrong experiment;
* anything else (``id``, ``notes``, ``student``, the columns of a class spreadsheet) is
  **metadata**: carried through untouched to the manifest and the results table.

Only numpy at the top; pandas is imported when a file or DataFrame is read.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..generation import GenerationConfig, check_text

__all__ = ["grid", "load_rows", "split_columns", "BatchItem", "SETTINGS", "COLUMNS", "ALIASES"]

SETTINGS = tuple(f.name for f in dataclasses.fields(GenerationConfig))  # every config field
COLUMNS = ("prompt", "name", *SETTINGS)                                  # what a row may set
ALIASES = {"prompts": "prompt", "names": "name", "seeds": "seed", "durations": "duration"}
# "bool" / "int" / "float" per setting, read from the dataclass annotations ("int | None" -> int)
_KINDS = {f.name: next((k for k in ("bool", "int", "float") if k in str(f.type)), None)
          for f in dataclasses.fields(GenerationConfig)}
_CLOSE = 0.75  # difflib similarity above which an unknown column is taken for a misspelt setting


# ---------------------------------------------------------------- making rows

def grid(**axes) -> list[dict]:
    """The cartesian product of parameter axes, as rows (last axis varies fastest).

    Example::

        grid(prompts=["piano", "drums"], temperature=[0.7, 1.0], seed=0)
        # [{'prompt': 'piano', 'temperature': 0.7, 'seed': 0},
        #  {'prompt': 'piano', 'temperature': 1.0, 'seed': 0},
        #  {'prompt': 'drums', 'temperature': 0.7, 'seed': 0},
        #  {'prompt': 'drums', 'temperature': 1.0, 'seed': 0}]

    Args:
        **axes: column -> list of values (a single value, or a string, is one value). Plural
            names ``prompts``, ``seeds``, ``names``, ``durations`` become ``prompt``, ...

    Returns:
        One dict per combination, in a deterministic order (keyword order, then value order).
    """
    keys, values = [], []
    for key, value in axes.items():
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            value = [value]
        value = list(value)
        if not value:
            raise ConfigError(f"grid axis {key!r} is empty; give it at least one value.")
        key = ALIASES.get(key, key)
        if key in keys:
            raise ConfigError(f"grid axis {key!r} is given twice (plural and singular?).")
        keys.append(key)
        values.append(value)
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def load_rows(source) -> list[dict]:
    """Rows from a CSV (or ``.jsonl``) path, a pandas DataFrame, a list of dicts or of prompts.

    Missing cells (empty in a CSV, NaN in a DataFrame) are left out of the row, so the setting
    falls back to its default. Only empty CSV cells count as missing (a prompt "None" stays).
    Settings get their types where that is lossless ("250" or 250.0 -> 250, "true" -> True).
    """
    import pandas as pd  # lazy: pandas only when a table is used

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"rows file '{path}' not found; pass a CSV path with a 'prompt' "
                              "column, a DataFrame, or a list of rows or prompts.")
        try:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                source = pd.read_json(path, lines=True, dtype=False)
            else:
                source = pd.read_csv(path, keep_default_na=False, na_values=[""],
                                     dtype={"prompt": str, "name": str})
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"rows file '{path.name}' cannot be read as "
                              f"{'JSON lines' if path.suffix.lower() in ('.jsonl', '.ndjson') else 'CSV'}"
                              f" ({reason}); save it as UTF-8 with a header row such as "
                              "'prompt,duration,seed'.") from None
    if isinstance(source, pd.DataFrame):
        source = source.to_dict("records")
    if isinstance(source, Mapping):
        raise ConfigError("rows must be a list of dicts (one per clip), a DataFrame or a CSV "
                          "path; got a single dict. Wrap it in a list.")
    rows = []
    for row in source:
        if isinstance(row, str):
            row = {"prompt": row}
        if isinstance(row, Mapping):
            row = {str(k): _coerce(str(k), _scalar(v)) for k, v in row.items()
                   if not _missing(v)}
        rows.append(row)  # anything else is reported as a bad row by BatchRunner.run
    return rows


def _scalar(value):
    """numpy scalars -> Python values (JSON and GenerationConfig want plain ints and floats)."""
    return value.item() if isinstance(value, np.generic) else value


def _missing(value) -> bool:
    return (value is None or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def _coerce(name: str, value):
    """Turn CSV-ish values into the setting's type: "250" / 250.0 -> 250, "true" -> True.

    Anything that does not convert is returned as is, so GenerationConfig rejects it with its
    own message (which names the value and the allowed range).
    """
    kind = _KINDS.get(name)
    if isinstance(value, str) and kind == "bool":
        return {"true": True, "1": True, "yes": True,
                "false": False, "0": False, "no": False}.get(value.strip().lower(), value)
    if isinstance(value, str) and kind in ("int", "float"):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        if not math.isfinite(number):   # "nan", "inf": refused by name, never a silent default
            return value
        value = number
    if kind == "bool" and type(value) in (int, float) and value in (0, 1):
        return bool(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "float" and type(value) is int:
        return float(value)
    return value


def _slug(text: str, width: int = 40) -> str:
    """'Calm lo-fi piano!' -> 'calm-lo-fi-piano' (file-name safe, at most ``width`` chars)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:width].strip("-") or "clip"


# ---------------------------------------------------------------- settings, typos, metadata

@functools.lru_cache(maxsize=1024)   # split_columns runs per row: one difflib search per name
def _close_setting(column: str) -> str | None:
    """The setting an unknown column name most likely means, or None (then it is metadata).

    Example: ``"topk" -> "top_k"``, ``"Temprature" -> "temperature"``, ``"notes" -> None``.
    """
    names = [*COLUMNS, *ALIASES]
    plain = re.sub(r"[\s-]+", "_", column.strip().lower())
    match = difflib.get_close_matches(plain, names, n=1, cutoff=_CLOSE)
    return ALIASES.get(match[0], match[0]) if match else None


def split_columns(columns: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Sort column names that are not settings: ``(metadata, {misspelt: likely setting})``.

    Example::

        split_columns(["prompt", "id", "topk", "notes"])
        # (['id', 'notes'], {'topk': 'top_k'})
    """
    metadata, misspelt = [], {}
    for column in dict.fromkeys(columns):
        if column in COLUMNS or column in ALIASES:
            continue
        guess = _close_setting(column)
        if guess is None:
            metadata.append(column)
        else:
            misspelt[column] = guess
    return metadata, misspelt


def _json_value(value):
    """Metadata as JSON can hold it: numbers, text, bools and None as they are, else text."""
    value = _scalar(value)
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)


# ---------------------------------------------------------------- one checked row

@dataclass
class BatchItem:
    """One valid row, ready to run."""

    row: int                        # position in the input rows (0-based)
    item: str                       # stable id: hash of prompt, settings, name and model
    name: str                       # file stem: the audio goes to <output_dir>/<name>.wav
    prompt: str
    config: GenerationConfig        # validated settings; config.seed None = drawn at run time
    seed: int | None = None         # the seed used (set just before generating)
    metadata: dict = field(default_factory=dict)  # the row's other columns, carried through

    def group(self) -> tuple:
        """Rows with equal groups can share one generate call (seeds are per item)."""
        return tuple(getattr(self.config, k) for k in SETTINGS if k != "seed")


def metadata_of(row) -> dict:
    """The metadata columns of a row (for reporting a row that is invalid)."""
    if not isinstance(row, Mapping):
        return {}
    metadata, _ = split_columns(ALIASES.get(k, k) for k in row)
    return {k: _json_value(row[k]) for k in metadata if k in row}


def parse_row(index: int, row, base: GenerationConfig, model: str, tokenizer=None) -> BatchItem:
    """Validate one row; raise ConfigError with the reason (no row number: the caller adds it).

    The prompt is bounded as every text is (``generation.check_text``: characters, valid
    Unicode, and tokens when the model's ``tokenizer`` is given).

    Metadata columns do not enter the item id: editing a note never regenerates a clip.
    """
    if not isinstance(row, Mapping):
        raise ConfigError(f"is a {type(row).__name__}, not a mapping of column -> value.")
    row = {ALIASES.get(k, k): v for k, v in row.items() if not _missing(v)}
    metadata, misspelt = split_columns(row)
    if misspelt:
        guesses = ", ".join(f"{k!r} (did you mean {v!r}?)" for k, v in misspelt.items())
        raise ConfigError(f"unknown column(s) {guesses}; settings are {list(COLUMNS)}. Rename "
                          "the column; other names (id, notes, ...) are kept as metadata.")
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt is missing or not text ({prompt!r:.80}); every row needs one.")
    check_text("prompt", prompt, tokenizer)
    config = base.replace(**{k: _coerce(k, v) for k, v in row.items() if k in SETTINGS})
    name = str(row.get("name") or f"{index:03d}_{_slug(prompt)}")
    name = name[:-4] if name.lower().endswith(".wav") else name
    if (not name.strip() or name.startswith(".") or any(c in name for c in "/\\\0")
            or len(name) > 150):
        raise ConfigError(f"name={name!r} is not a usable file name (no '/', '\\', leading '.', "
                          "at most 150 characters).")
    payload = dict(prompt=prompt, name=name, model=model, **dataclasses.asdict(config))
    item = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return BatchItem(index, item, name, prompt, config,
                     metadata={k: _json_value(row[k]) for k in metadata})
