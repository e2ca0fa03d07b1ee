"""Uploaded files, checked before they become a job: a clip to continue or follow, a CSV table.

The routes that take them (``POST /v1/continue``, ``/v1/melody``, ``/v1/batch``; in
routes/generation.py) are multipart: ``file`` (the audio or the table) and ``request`` (JSON,
validated as the JSON routes' bodies are, :func:`request_json`). The checks, off the event
loop::

    type (415)          extension and content type: wav/flac/ogg/mp3 audio, or a CSV table
    saved atomically    uploads/<job id><ext>: never the client's file name
    audio               readable, at most max(max_duration, 30) s long, finite samples (422)
    table               1 to MAX_BATCH_ROWS rows of at most MAX_COLUMNS columns, every cell
                        up to MAX_PROMPT_CHARS characters and the rows up to max_body_bytes
                        as JSON; at least one valid row of BatchRunner (422 names the bad
                        ones); the rows, not the file, are stored with the job

The upload's size is bounded by ``max_upload_bytes`` (security.BodyLimit); the worker deletes
an audio upload when its job ends (``upload_retention_s``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from fastapi import HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..errors import ConfigError
from ..generation import MAX_PROMPT_CHARS
from .schemas import explain_validation
from .service import Service

__all__ = ["AUDIO_TYPES", "AUDIO_UPLOADS", "CSV_UPLOADS", "MAX_BATCH_ROWS", "MAX_COLUMNS",
           "read_audio", "save_upload", "request_json", "parse_table"]

AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg"}
# upload extension -> content types accepted for it (browsers send odd ones for CSV)
AUDIO_UPLOADS = {ext: ("audio/",) for ext in AUDIO_TYPES}
CSV_UPLOADS = {".csv": ("text/", "application/csv", "application/vnd.ms-excel")}
MAX_BATCH_ROWS = 1000               # rows of one batch table
MAX_COLUMNS = 64                    # columns of one batch table (settings + metadata)
MAX_NAME_CHARS = 100                # characters of a column name


def read_audio(path: Path, name: str | None, max_seconds: float):
    """Decode an uploaded clip (off the event loop); its length is checked before decoding.

    ``name`` is the client's file name, for messages only.
    """
    import soundfile as sf

    from ..audio import load_audio
    from ..errors import AudioError

    try:
        seconds = sf.info(str(path)).duration
    except Exception:
        raise AudioError(f"upload {name!r} is not readable audio; send wav, flac, ogg or mp3.") from None
    if seconds > max_seconds:
        raise ConfigError(f"upload {name!r} lasts {seconds:.1f} s; allowed: up to {max_seconds} s.")
    try:
        wav, sr = load_audio(path)                                    # [C, T], sample rate
    except AudioError:
        raise AudioError(f"upload {name!r} is not readable audio; send wav, flac, ogg or mp3.") from None
    if not np.isfinite(np.asarray(wav)).all():
        raise AudioError(f"upload {name!r} holds NaN or infinite samples; send finite audio.")
    return wav, sr


async def save_upload(storage: Path, file: UploadFile, job_id: str, kinds: dict) -> Path:
    """Save an uploaded file as uploads/<job id><ext> after checking its type (415)."""
    ext = Path(file.filename or "").suffix.lower()
    content_type = (file.content_type or "").split(";")[0].strip().lower()
    if ext not in kinds or not (content_type in ("application/octet-stream", "")
                                or content_type.startswith(kinds[ext])):
        raise HTTPException(415, f"upload {file.filename!r} ({content_type or 'no type'}) is not "
                            f"accepted here; send one of {sorted(kinds)}.")
    path = storage / "uploads" / f"{job_id}{ext}"
    await run_in_threadpool(_save_atomic, file.file, path)        # up to max_upload_bytes
    return path


def _save_atomic(source, path: Path) -> None:
    """Copy an open file to ``path`` through a temporary name (never a half-written upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    source.seek(0)
    with open(tmp, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    os.replace(tmp, path)


def request_json(text: str, schema):
    """The multipart ``request`` field, validated like a JSON body (422 with the same text)."""
    from pydantic import ValidationError

    try:
        return schema.model_validate_json(text or "{}")
    except ValidationError as exc:
        raise ConfigError(explain_validation(exc.errors())) from None


def _check_cells(rows: list, max_bytes: int) -> None:
    """Bound what a table stores with its job: columns, every cell (metadata and invalid rows
    too, which the job keeps for its manifest) and the rows' JSON size as a whole."""
    names = {k for r in rows if isinstance(r, dict) for k in r}
    if len(names) > MAX_COLUMNS or any(len(k) > MAX_NAME_CHARS for k in names):
        raise ConfigError(f"the table has {len(names)} columns (names up to "
                          f"{max(map(len, names), default=0)} characters); allowed: up to "
                          f"{MAX_COLUMNS} columns, names up to {MAX_NAME_CHARS} characters.")
    for index, row in enumerate(rows):
        for column, value in (row.items() if isinstance(row, dict) else ()):
            if isinstance(value, str) and len(value) > MAX_PROMPT_CHARS:
                raise ConfigError(f"row {index}, column {column!r:.40}: {len(value)} characters; "
                                  f"allowed: up to {MAX_PROMPT_CHARS} per cell.")
    size = len(json.dumps(rows, default=str))
    if size > max_bytes:
        raise ConfigError(f"the table's rows take {size} bytes as JSON; allowed: up to "
                          f"{max_bytes} (setting max_body_bytes). Split it into smaller tables.")


def parse_table(path: Path, model: str, svc: Service):
    """Read and check a batch table (off the event loop): ``(rows, items, invalid)``.

    Every cell that reaches the job store is JSON-safe: a non-finite number (an ``inf`` cell)
    is kept as its text, so the worker's BatchRunner reports that row invalid as this check did.
    """
    from ..batch import BatchRunner, load_rows

    rows = load_rows(path)
    if not 1 <= len(rows) <= MAX_BATCH_ROWS:
        raise ConfigError(f"the table has {len(rows)} rows; allowed: 1 to {MAX_BATCH_ROWS}.")
    _check_cells(rows, svc.settings.max_body_bytes)
    loaded = svc.pool.loaded().get(model)
    runner = BatchRunner(loaded if loaded is not None else model, svc.storage / "unused")
    items, invalid = runner.parse(rows)
    too_long = [f"row {it.row}: duration={it.config.duration} s is over this server's "
                f"max_duration={svc.settings.max_duration} s" for it in items
                if it.config.duration > svc.settings.max_duration]
    if too_long or not items:
        raise ConfigError("; ".join(too_long + [r["error"] for r in invalid][:10])
                          or "the table has no valid rows.")
    rows = [{k: (v if not isinstance(v, float) or math.isfinite(v) else repr(v))
             for k, v in r.items()} if isinstance(r, dict) else r for r in rows]
    return rows, items, invalid
