"""The batch manifest: one JSON line per finished clip, appended and fsynced, read back on resume.

The format of NVIDIA NeMo / lhotse audio manifests (one JSON object per clip: path, duration,
fields). :class:`~musicgen_edu.batch.runner.BatchRunner` appends a record after the clip's audio is
safely on disk; that append is the commit point of the item::

    {"row": 0, "item": "3f2a...", "name": "piano", "prompt": "lo-fi piano", "duration": 4.0,
     "seed": 0, ..., "model": "debug", "path": "piano.wav", "audio_s": 4.0, "status": "ok",
     "error": null, "batch": 0, "finished_at": "...", "timings": {...}, "metadata": {"id": 7}}

A crash mid-append leaves a torn last line without ``"\\n"``: readers ignore it and the next
writer cuts it off before appending. One writer per folder (a POSIX ``flock``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .table import SETTINGS

if TYPE_CHECKING:  # pandas is imported lazily, when a table is built
    import pandas as pd

__all__ = ["read_manifest", "read_records", "records_frame", "Manifest", "MANIFEST_NAME",
           "RECORD_COLUMNS"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
RECORD_COLUMNS = ["row", "item", "name", "prompt", *SETTINGS, "model", "path", "audio_s",
                  "sample_rate", "status", "error", "batch", "finished_at"]


def read_records(path: Path) -> dict[str, dict]:
    """item id -> its last record. A torn last line (a crash mid-append) is ignored."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number < len(lines):  # a complete line that is broken: say so
                log.warning("%s: line %d is not valid JSON; ignored.", path, number)
            continue                 # the last line without "\n": a torn append
        if isinstance(record, dict) and "item" in record:
            records[record["item"]] = record
    return records


def records_frame(records: list[dict], output_dir: Path) -> pd.DataFrame:
    """Records -> a DataFrame: paths made absolute, metadata and timings flattened into columns.

    Column order: :data:`RECORD_COLUMNS`, ``resumed`` (if present), the metadata columns, the
    timings. A metadata column whose name a record column already uses (``status``,
    ``model``, ...) becomes ``meta_<name>``.
    """
    import pandas as pd

    rows, meta_columns = [], []
    for record in records:
        row = dict(record)
        timings = row.pop("timings", None) or {}
        taken = {*RECORD_COLUMNS, *record, *timings, "resumed"}
        for key, value in (row.pop("metadata", None) or {}).items():
            column = f"meta_{key}" if key in taken else key
            meta_columns.append(column)
            row[column] = value
        row.update(timings)
        if row.get("path"):
            row["path"] = str(output_dir / row["path"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    first = RECORD_COLUMNS + (["resumed"] if "resumed" in frame.columns else [])
    first += [c for c in dict.fromkeys(meta_columns) if c not in first]
    return frame.reindex(columns=first + [c for c in frame.columns if c not in first])


def read_manifest(output_dir) -> pd.DataFrame:
    """The finished items of a batch folder, one row per item (its latest record).

    Columns: ``row, item, name, prompt``, every GenerationConfig field (``seed`` = the seed
    used), ``model, path`` (absolute), ``audio_s`` (seconds written), ``sample_rate``,
    ``status`` ("ok" or "failed"), ``error``, ``batch`` (which generate call), ``finished_at``,
    then the rows' metadata columns (``id``, ``notes``, ...) and the timings (``rtf``,
    ``total_s``, ``batch_size``, ...).
    """
    output_dir = Path(output_dir)
    return records_frame(list(read_records(output_dir / MANIFEST_NAME).values()), output_dir)


class Manifest:
    """Append-only writer: one JSON line per item, flushed and fsynced (the commit point)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+b")
        try:
            import fcntl  # POSIX: one writer per folder
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            self.file.close()
            raise ConfigError(f"another BatchRunner is writing to '{path.parent}'; wait for it "
                              "or choose another output folder.") from None
        self.file.seek(0)
        data = self.file.read()
        if data and not data.endswith(b"\n"):  # a torn last line: cut it off before appending
            self.file.truncate(data.rfind(b"\n") + 1)
            self._sync()

    def append(self, record: dict) -> None:
        """Write one record as a JSON line and wait until it is on disk."""
        self.file.write((json.dumps(record) + "\n").encode())
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        """Close the file (and release the folder's lock)."""
        self.file.close()
