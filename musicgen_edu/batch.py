"""BatchRunner: many generations from a table or a parameter grid, resumable, locally or on Ray.

An experiment is a table: one row per clip, with a ``prompt``, any
:class:`~musicgen_edu.generator.GenerationConfig` field (``duration``, ``seed``,
``temperature``, ...) and an optional output ``name``. :class:`BatchRunner` validates every row
(bad rows are reported with their row number and reason; good rows still run), groups rows
that can share a batch (all settings equal except the seed, which is per item), generates each
group in the largest batch that fits (halving it on out-of-memory), and writes one
``<name>.wav`` per item plus a JSON-lines manifest, the format of NVIDIA NeMo / lhotse audio
manifests (one JSON object per clip: path, duration, fields).

Crash safety, step by step, per item::

    audio  -> .<name>.<item>.partial.wav    (save_audio: temp file + os.replace; then fsync)
    record -> manifest.jsonl                (one line appended, flushed and fsynced: the commit)
    rename .<name>.<item>.partial.wav -> <name>.wav

A re-run reads the manifest (ignoring a torn last line), skips items whose record says "ok"
(items are identified by a hash of prompt, settings, name and model), finishes a rename that a
crash interrupted, and regenerates the rest: nothing is lost or duplicated, even after
``kill -9``. A ``<name>.wav`` that the manifest does not explain came from elsewhere and is
never overwritten unless ``overwrite=True``.

The optional Ray executor (``executor="ray"``) follows Ray's actor-pool pattern
(``ray.util.ActorPool``): one actor per GPU (or ``num_workers`` CPU actors) loads the model
once; batches are dispatched to free actors; the driver alone writes files and the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

import numpy as np
import torch

from .errors import ConfigError, check_range
from .generator import GenerationConfig

if TYPE_CHECKING:  # pandas is imported lazily, when a table is built
    import pandas as pd

__all__ = ["BatchRunner", "grid", "load_rows", "read_manifest", "run_batch", "MANIFEST_NAME"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
SETTINGS = tuple(f.name for f in dataclasses.fields(GenerationConfig))  # every config field
COLUMNS = ("prompt", "name", *SETTINGS)                                  # what a row may hold
ALIASES = {"prompts": "prompt", "names": "name", "seeds": "seed", "durations": "duration"}
# "bool" / "int" / "float" per setting, read from the dataclass annotations ("int | None" -> int)
_KINDS = {f.name: next((k for k in ("bool", "int", "float") if k in str(f.type)), None)
          for f in dataclasses.fields(GenerationConfig)}
_RECORD_COLUMNS = ["row", "item", "name", "prompt", *SETTINGS, "model", "path", "audio_s",
                   "sample_rate", "status", "error", "batch", "finished_at"]


# ---------------------------------------------------------------- rows: grids, files, checks

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
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            source = pd.read_json(path, lines=True, dtype=False)
        else:
            source = pd.read_csv(path, keep_default_na=False, na_values=[""],
                                 dtype={"prompt": str, "name": str})
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
            value = float(value.strip())
        except ValueError:
            return value
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


@dataclass
class BatchItem:
    """One valid row, ready to run."""

    row: int                        # position in the input rows (0-based)
    item: str                       # stable id: hash of prompt, settings, name and model
    name: str                       # file stem: the audio goes to <output_dir>/<name>.wav
    prompt: str
    config: GenerationConfig        # validated settings; config.seed None = drawn at run time
    seed: int | None = None         # the seed used (set just before generating)

    def group(self) -> tuple:
        """Rows with equal groups can share one generate call (seeds are per item)."""
        return tuple(getattr(self.config, k) for k in SETTINGS if k != "seed")


def _parse_row(index: int, row, base: GenerationConfig, model: str) -> BatchItem:
    """Validate one row; raise ConfigError with the reason (no row number: the caller adds it)."""
    if not isinstance(row, Mapping):
        raise ConfigError(f"is a {type(row).__name__}, not a mapping of column -> value.")
    row = {ALIASES.get(k, k): v for k, v in row.items() if not _missing(v)}
    unknown = sorted(k for k in row if k not in COLUMNS)
    if unknown:
        raise ConfigError(f"unknown column(s) {unknown}; allowed: {list(COLUMNS)}.")
    prompt = row.get("prompt")
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt is missing or not text ({prompt!r}); every row needs one.")
    config = base.replace(**{k: _coerce(k, v) for k, v in row.items() if k in SETTINGS})
    name = str(row.get("name") or f"{index:03d}_{_slug(prompt)}")
    name = name[:-4] if name.lower().endswith(".wav") else name
    if (not name.strip() or name.startswith(".") or any(c in name for c in "/\\\0")
            or len(name) > 150):
        raise ConfigError(f"name={name!r} is not a usable file name (no '/', '\\', leading '.', "
                          "at most 150 characters).")
    payload = dict(prompt=prompt, name=name, model=model, **dataclasses.asdict(config))
    item = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return BatchItem(index, item, name, prompt, config)


# ---------------------------------------------------------------- the manifest

def _read_records(path: Path) -> dict[str, dict]:
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


def _frame(records: list[dict], output_dir: Path):
    """Records -> a DataFrame: timings flattened into columns, paths made absolute."""
    import pandas as pd

    rows = []
    for record in records:
        row = dict(record)
        row.update(row.pop("timings", None) or {})
        if row.get("path"):
            row["path"] = str(output_dir / row["path"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    first = _RECORD_COLUMNS + (["resumed"] if "resumed" in frame.columns else [])
    return frame.reindex(columns=first + [c for c in frame.columns if c not in first])


def read_manifest(output_dir) -> pd.DataFrame:
    """The finished items of a batch folder, one row per item (its latest record).

    Columns: ``row, item, name, prompt``, every GenerationConfig field (``seed`` = the seed
    used), ``model, path`` (absolute), ``audio_s`` (seconds written), ``sample_rate``,
    ``status`` ("ok" or "failed"), ``error``, ``batch`` (which generate call), ``finished_at``,
    then the timings (``rtf``, ``total_s``, ``batch_size``, ...).
    """
    output_dir = Path(output_dir)
    return _frame(list(_read_records(output_dir / MANIFEST_NAME).values()), output_dir)


class _Manifest:
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
        self.file.write((json.dumps(record) + "\n").encode())
        self._sync()

    def _sync(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------- generating one group

def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError)
                                    and "out of memory" in str(exc).lower())


def _generate_group(generator, items: list[BatchItem], batch_size: int) -> Iterator[tuple]:
    """Generate items that share settings, ``batch_size`` at a time, halving it on OOM.

    Yields ``(chunk, wav [B, C, T] or None, sample_rate, timings, error)`` per generate call;
    a chunk that fails (OOM even alone, or any other error) comes back with its reason.
    """
    start = 0
    while start < len(items):
        chunk = items[start:start + batch_size]
        settings = {k: v for k, v in dataclasses.asdict(chunk[0].config).items() if k != "seed"}
        try:
            out = generator.generate([it.prompt for it in chunk], seeds=[it.seed for it in chunk],
                                     progress=False, **settings)
        except Exception as exc:  # noqa: BLE001 - every failure is reported per row
            if _is_oom(exc) and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if _is_oom(exc) and len(chunk) > 1:
                batch_size = len(chunk) // 2          # back off and retry the same items
                log.warning("out of memory at batch size %d; retrying with %d.", len(chunk),
                            batch_size)
                continue
            reason = f"{type(exc).__name__}: {exc}"
            if _is_oom(exc):
                reason = (f"out of memory even at batch size 1 ({exc}); try a shorter duration, "
                          "a smaller model or another device.")
            yield chunk, None, 0, {}, reason
        else:
            timings = dict(out.timings, batch_size=len(chunk))
            yield chunk, out.wav, out.sample_rate, timings, None
        start += len(chunk)


class _RayWorker:
    """A Ray actor body: loads the model once, then generates batches sent by the driver."""

    def __init__(self, model: str, device: str, dtype, backend: str):
        from .generator import MusicGenerator

        self.generator = MusicGenerator(model, device=device, dtype=dtype, backend=backend,
                                        progress=False)

    def run(self, items: list[BatchItem], batch_size: int) -> list[tuple]:
        return [(chunk, None if wav is None else wav.numpy(), sr, timings, error)
                for chunk, wav, sr, timings, error in _generate_group(self.generator, items,
                                                                      batch_size)]


# ---------------------------------------------------------------- the runner

class BatchRunner:
    """Run a table of generations into a folder: ``<name>.wav`` per item + ``manifest.jsonl``.

    Example::

        runner = BatchRunner("debug", "runs/sweep", max_batch_size=8)
        rows = grid(prompts=["lo-fi piano", "epic drums"], temperature=[0.7, 1.0], seed=[0, 1],
                    duration=4)
        table = runner.run(rows)        # 8 clips in 2 batches (one per temperature)
        table = runner.run(rows)        # again: nothing regenerated, table.resumed all True

    Args:
        generator: a model name (``"debug"``, ``"facebook/musicgen-small"``), a loaded
            ``MusicGenModel``, or a ``MusicGenerator`` (anything with its ``generate``).
        output_dir: folder for the audio files and the manifest (created if missing).
        max_batch_size: the most items per generate call; halved automatically on OOM.
        executor: ``"local"`` (this process) or ``"ray"`` (needs ``pip install ray``).
        overwrite: replace audio files that the manifest does not attribute to these items.
        progress: show a tqdm bar over items.
        resume: skip items that an earlier run finished (False: regenerate them, which needs
            ``overwrite=True`` when their files exist).
        num_workers: Ray actors on CPU (default: one per GPU, or 1 without GPUs).
        device: where a model given by name is loaded ("auto", "cpu", "cuda", ...).
        dtype: its dtype ("auto", "float32", "bfloat16", ...).
        backend: the decoder backend ("native", "native-int8", "transformers").
        on_item: called with each item's manifest record right after it is committed.
    """

    def __init__(self, generator="debug", output_dir="batch_output", max_batch_size: int = 8,
                 executor: str = "local", overwrite: bool = False, progress: bool = True, *,
                 resume: bool = True, num_workers: int | None = None, device: str = "auto",
                 dtype="auto", backend: str = "native",
                 on_item: Callable[[dict], None] | None = None):
        from .models import MusicGenModel

        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
            raise ConfigError(f"max_batch_size must be a whole number of at least 1, got "
                              f"{max_batch_size!r}.")
        check_range("max_batch_size", max_batch_size, 1, None)
        if executor not in ("local", "ray"):
            raise ConfigError(f"executor={executor!r} is not available; choose 'local' or 'ray'.")
        if num_workers is not None:
            check_range("num_workers", num_workers, 1, None)
        if isinstance(generator, str):
            self.model_name, self._generator = generator, None
        elif isinstance(generator, MusicGenModel) or hasattr(generator, "generate"):
            self._generator = generator
            if isinstance(generator, MusicGenModel):
                from .generator import MusicGenerator
                self._generator = MusicGenerator(generator, backend=backend, progress=False)
            self.model_name = self._generator.model.name
        else:
            raise ConfigError(f"generator must be a model name, a MusicGenModel or a "
                              f"MusicGenerator, got {type(generator).__name__}.")
        self.output_dir = Path(output_dir)
        self.manifest_path = self.output_dir / MANIFEST_NAME
        self.max_batch_size = max_batch_size  # items per generate call, before OOM halving
        self.executor, self.num_workers = executor, num_workers
        self.overwrite, self.resume = overwrite, resume
        self.progress, self.on_item = progress, on_item
        self.device, self.dtype, self.backend = device, dtype, backend

    @property
    def generator(self):
        """The local MusicGenerator (loaded on first use)."""
        if self._generator is None:
            from .generator import MusicGenerator
            self._generator = MusicGenerator(self.model_name, device=self.device, dtype=self.dtype,
                                             backend=self.backend, progress=False)
        return self._generator

    def parse(self, rows) -> tuple[list[BatchItem], list[dict]]:
        """Validate rows: ``(items, invalid)``; each invalid entry names its row and reason."""
        base = getattr(self._generator, "config", None) or GenerationConfig()
        items, invalid, names = [], [], {}
        for index, row in enumerate(load_rows(rows)):
            try:
                item = _parse_row(index, row, base, self.model_name)
                if item.name in names:
                    raise ConfigError(f"name {item.name!r} is already used by row "
                                      f"{names[item.name]}; names must be unique.")
            except ConfigError as exc:
                prompt = row.get("prompt") if isinstance(row, Mapping) else None
                invalid.append(dict(row=index, prompt=prompt, status="invalid",
                                    error=f"row {index}: {exc}"))
                log.warning("row %d skipped: %s", index, exc)
                continue
            names[item.name] = index
            items.append(item)
        return items, invalid

    def run(self, rows) -> pd.DataFrame:
        """Generate every valid row not finished yet; return one table row per input row.

        Columns as in :func:`read_manifest`, plus ``resumed`` (True: finished by an earlier
        run and skipped). Invalid rows have ``status == "invalid"`` and the reason in ``error``.
        """
        items, invalid = self.parse(rows)
        manifest = _Manifest(self.manifest_path)  # locks the folder, cuts a torn last line
        try:
            records = self._recover(_read_records(self.manifest_path))
            done = {}
            if self.resume:
                done = {it.item: records[it.item] for it in items
                        if records.get(it.item, {}).get("status") == "ok"
                        and (self.output_dir / records[it.item]["path"]).is_file()}
            pending = [it for it in items if it.item not in done]
            self._check_targets(pending, records)
            rng = random.Random()  # seeds for rows without one; the global RNG is untouched
            for it in pending:
                it.seed = it.config.seed if it.config.seed is not None else rng.randrange(2**31)
            finished = [dict(done[it.item], row=it.row, resumed=True) for it in items
                        if it.item in done]
            if pending:
                finished += self._execute(pending, manifest)
        finally:
            manifest.close()
        finished += [dict(r, resumed=False) for r in invalid]
        frame = _frame(sorted(finished, key=lambda r: r["row"]), self.output_dir)
        return frame.reset_index(drop=True)

    # --- steps of run -----------------------------------------------------------------------
    def _recover(self, records: dict) -> dict:
        """Finish renames cut short by a crash; drop staged files no record vouches for."""
        for record in records.values():
            staged = self._staged(record["name"], record["item"])
            if (record.get("status") == "ok" and staged.is_file()
                    and not (self.output_dir / record["path"]).exists()):
                os.replace(staged, self.output_dir / record["path"])
        for stale in self.output_dir.glob(".*.partial.wav"):
            stale.unlink(missing_ok=True)
        return records

    def _staged(self, name: str, item: str) -> Path:
        return self.output_dir / f".{name}.{item}.partial.wav"

    def _check_targets(self, pending: list[BatchItem], records: dict) -> None:
        """Refuse to replace files an earlier run (or someone else) wrote, unless overwrite."""
        if self.overwrite:
            return
        owners = {r["name"]: r for r in records.values()}  # file stem -> its latest record
        problems = []
        for it in pending:
            target = self.output_dir / f"{it.name}.wav"
            owner = owners.get(it.name)
            if not target.exists() or (owner and owner["item"] == it.item and self.resume):
                continue  # nothing there, or this item's own file from a failed retry
            if owner is None:
                problems.append(f"'{target}' is not in {self.manifest_path.name}: it came from "
                                "elsewhere")
            elif owner["item"] != it.item:
                problems.append(f"'{target}' was written by an earlier run with other settings "
                                f"(item {owner['item']}; row {it.row} is item {it.item})")
            else:
                problems.append(f"'{target}' is finished (row {it.row}) and resume=False "
                                "(resume=True, --resume, keeps it)")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ConfigError("refusing to overwrite existing audio: " + "; ".join(problems[:5])
                              + more + ". Pass overwrite=True (--overwrite) to replace them, "
                              "or choose another output folder.")

    def _execute(self, pending: list[BatchItem], manifest: _Manifest) -> list[dict]:
        """Run the pending items group by group; write and commit each item as it arrives."""
        from tqdm.auto import tqdm

        groups: dict[tuple, list[BatchItem]] = {}
        for it in pending:
            groups.setdefault(it.group(), []).append(it)
        run = self._run_ray if self.executor == "ray" else self._run_local
        bar = tqdm(total=len(pending), desc="batch", unit="item", disable=not self.progress)
        written = []
        try:
            for batch, (chunk, wav, sr, timings, error) in enumerate(run(list(groups.values()))):
                for i, it in enumerate(chunk):
                    record = self._commit(manifest, it, None if wav is None else wav[i], sr,
                                          timings, error, batch)
                    written.append(dict(record, resumed=False))
                    bar.update(1)
                    if self.on_item is not None:
                        self.on_item(record)
        finally:
            bar.close()
        return written

    def _commit(self, manifest: _Manifest, it: BatchItem, wav, sample_rate: int, timings: dict,
                error: str | None, batch: int) -> dict:
        """Stage the audio, append the record (the commit), then move the audio into place."""
        from .audio import save_audio

        settings = dict(dataclasses.asdict(it.config), seed=it.seed)
        record = dict(row=it.row, item=it.item, name=it.name, prompt=it.prompt, **settings,
                      model=self.model_name, path=None, audio_s=None, sample_rate=None,
                      status="failed", error=error, batch=batch,
                      finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), timings=timings)
        if error is None:
            staged = save_audio(self._staged(it.name, it.item), wav, sample_rate)  # wav [C, T]
            with open(staged, "rb+") as f:
                os.fsync(f.fileno())
            record.update(path=f"{it.name}.wav", audio_s=wav.shape[-1] / sample_rate,
                          sample_rate=sample_rate, status="ok")
        manifest.append(record)
        if error is None:
            os.replace(staged, self.output_dir / record["path"])
        return record

    def _run_local(self, groups: list[list[BatchItem]]) -> Iterator[tuple]:
        for items in groups:
            yield from _generate_group(self.generator, items, self.max_batch_size)

    def _run_ray(self, groups: list[list[BatchItem]]) -> Iterator[tuple]:
        """One actor per GPU (or num_workers CPU actors); batches go to whichever is free."""
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise ConfigError("executor='ray' needs Ray: pip install 'musicgen-edu[ray]' (or "
                              "pip install ray), or use executor='local'.") from None
        if not ray.is_initialized():
            ray.init(include_dashboard=False)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
        workers = self.num_workers or gpus or 1
        # one GPU (or CPU) per actor; more actors than devices share them, so none waits forever
        options = ({"num_gpus": min(1.0, gpus / workers)} if gpus
                   else {"num_cpus": min(1.0, cpus / workers)})
        if self._generator is not None:  # rebuild the caller's generator in each actor
            model = self._generator.model
            spec = (model.name, "auto" if gpus else "cpu", model.dtype, self._backend_name())
        else:
            spec = (self.model_name, "auto" if gpus else self.device, self.dtype, self.backend)
        worker = ray.remote(**options)(_RayWorker)
        actors = [worker.remote(*spec) for _ in range(workers)]
        size = self.max_batch_size
        chunks = [items[i:i + size] for items in groups for i in range(0, len(items), size)]
        try:
            pool = ActorPool(actors)
            for results in pool.map_unordered(lambda actor, chunk: actor.run.remote(chunk, size),
                                              chunks):
                yield from results
        finally:
            for actor in actors:
                ray.kill(actor)

    def _backend_name(self) -> str:
        from .backends import BACKENDS

        backend = getattr(self._generator, "backend", None)
        return next((name for name, cls in BACKENDS.items()
                     if isinstance(cls, type) and type(backend) is cls), self.backend)


def run_batch(source, output_dir, model: str = "debug", resume: bool = True,
              max_batch_size: int = 8, executor: str = "local", overwrite: bool = False,
              progress: bool = True, **options) -> pd.DataFrame:
    """Run a CSV / DataFrame / list of rows into ``output_dir`` (what ``musicgen-edu batch`` does).

    Args:
        source: rows as accepted by :func:`load_rows` (a CSV path with a ``prompt`` column).
        output_dir: folder for ``<name>.wav`` files and ``manifest.jsonl``.
        model: model name for :func:`~musicgen_edu.models.load_model`.
        resume: skip items finished by an earlier run. ``False`` with finished items in the
            folder is refused unless ``overwrite=True`` (then they are regenerated).
        max_batch_size: the most items per generate call (halved on out-of-memory).
        executor: "local" or "ray".
        overwrite: replace audio files an earlier run or someone else wrote.
        progress: show a progress bar over items.
        **options: more BatchRunner settings (num_workers, device, dtype, backend, on_item).

    Returns:
        The results table of :meth:`BatchRunner.run`.
    """
    runner = BatchRunner(model, output_dir, max_batch_size=max_batch_size, executor=executor,
                         overwrite=overwrite, progress=progress, resume=resume, **options)
    return runner.run(source)
