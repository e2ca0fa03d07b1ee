"""BatchRunner: many generations from a table or a parameter grid, resumable, locally or on Ray.

An experiment is a table: one row per clip, with a ``prompt``, any
:class:`~musicgen_edu.generation.GenerationConfig` field (``duration``, ``seed``,
``temperature``, ...), an optional output ``name`` and any other columns as metadata
(``table.py`` reads and checks rows). :class:`BatchRunner` validates every row (bad rows
are reported with their row number and reason; good rows still run), groups rows that can
share a batch (all settings equal except the seed, which is per item), generates each group in
the largest batch that fits (halving it on out-of-memory; ``group.py``), and writes one
``<name>.wav`` per item plus a JSON-lines manifest (``manifest.py``). Tables and
manifests are read with :func:`~musicgen_edu.batch.table.grid`,
:func:`~musicgen_edu.batch.table.load_rows` and :func:`~musicgen_edu.batch.manifest.read_manifest`
(``mg.grid``, ``mg.load_rows``, ``mg.read_manifest``).

The path of one item::

    row -> parse_row (checked settings, metadata) -> group by settings -> generate (a batch)
        -> audio  -> .<name>.<item>.partial.wav    (save_audio: temp file + os.replace; fsync)
        -> record -> manifest.jsonl                (one line appended and fsynced: the commit)
        -> rename .<name>.<item>.partial.wav -> <name>.wav

A re-run reads the manifest (ignoring a torn last line), skips items whose record says "ok"
(items are identified by a hash of prompt, settings, name and model), finishes a rename that a
crash interrupted, and regenerates the rest: nothing is lost or duplicated, even after
``kill -9``. A ``<name>.wav`` that the manifest does not explain came from elsewhere and is
never overwritten unless ``overwrite=True``. ``executor="ray"`` spreads the batches over Ray
actors (``ray.py``); the driver alone writes files and the manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, check_range
from ..generation import GenerationConfig
from ..models import DEFAULT_MODEL
from .group import generate_group
from .manifest import MANIFEST_NAME, Manifest, read_records, records_frame
from .ray import WorkerSpec, run_on_ray
from .table import BatchItem, load_rows, metadata_of, parse_row, split_columns

if TYPE_CHECKING:  # pandas is imported lazily, when a table is built
    import pandas as pd

__all__ = ["BatchRunner", "run_batch"]

log = logging.getLogger(__name__)


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
        callback: passed to every local ``generate`` call as ``callback(step, total)``
            (progress; raising a ``BaseException`` there stops the run, as the service's
            cancel does). Not sent to Ray actors.
    """

    def __init__(self, generator=DEFAULT_MODEL, output_dir="batch_output", max_batch_size: int = 8,
                 executor: str = "local", overwrite: bool = False, progress: bool = True, *,
                 resume: bool = True, num_workers: int | None = None, device: str = "auto",
                 dtype="auto", backend: str = "native",
                 on_item: Callable[[dict], None] | None = None,
                 callback: Callable[[int, int], None] | None = None):
        from ..models import MusicGenModel

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
                from ..generator import MusicGenerator
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
        self.progress, self.on_item, self.callback = progress, on_item, callback
        self.device, self.dtype, self.backend = device, dtype, backend

    @property
    def generator(self):
        """The local MusicGenerator (loaded on first use)."""
        if self._generator is None:
            from ..generator import MusicGenerator
            self._generator = MusicGenerator(self.model_name, device=self.device, dtype=self.dtype,
                                             backend=self.backend, progress=False)
        return self._generator

    def parse(self, rows) -> tuple[list[BatchItem], list[dict]]:
        """Validate rows: ``(items, invalid)``; each invalid entry names its row and reason.

        Columns that are neither settings nor misspelt settings are kept as each item's
        ``metadata``, with one warning naming them (see ``table.split_columns``).
        """
        base = getattr(self._generator, "config", None) or GenerationConfig()
        tokenizer = self._generator.model.tokenizer if self._generator is not None else None
        items, invalid, names = [], [], {}
        rows = load_rows(rows)
        metadata, _ = split_columns(k for row in rows if isinstance(row, Mapping) for k in row)
        if metadata:
            log.warning("column(s) %s are not settings; carried through to the manifest and "
                        "the results table as metadata.", metadata)
        for index, row in enumerate(rows):
            try:
                item = parse_row(index, row, base, self.model_name, tokenizer)
                if item.name in names:
                    raise ConfigError(f"name {item.name!r} is already used by row "
                                      f"{names[item.name]}; names must be unique.")
            except ConfigError as exc:
                prompt = row.get("prompt") if isinstance(row, Mapping) else None
                invalid.append(dict(row=index, prompt=prompt, status="invalid",
                                    error=f"row {index}: {exc}", metadata=metadata_of(row)))
                log.warning("row %d skipped: %s", index, exc)
                continue
            names[item.name] = index
            items.append(item)
        return items, invalid

    def run(self, rows) -> pd.DataFrame:
        """Generate every valid row not finished yet; return one table row per input row.

        Columns as in :func:`~musicgen_edu.batch.manifest.read_manifest`, plus ``resumed``
        (True: finished by an earlier run and skipped). Invalid rows have
        ``status == "invalid"`` and the reason in ``error``.
        """
        items, invalid = self.parse(rows)
        manifest = Manifest(self.manifest_path)  # locks the folder, cuts a torn last line
        try:
            records = self._recover(read_records(self.manifest_path))
            done = self.finished(items, records) if self.resume else {}
            pending = [it for it in items if it.item not in done]
            self._check_targets(pending, records)
            rng = random.Random()  # seeds for rows without one; the global RNG is untouched
            for it in pending:
                it.seed = it.config.seed if it.config.seed is not None else rng.randrange(2**31)
            finished = [dict(done[it.item], row=it.row, metadata=it.metadata, resumed=True)
                        for it in items if it.item in done]        # today's notes, not old ones
            if pending:
                finished += self._execute(pending, manifest)
        finally:
            manifest.close()
        finished += [dict(r, resumed=False) for r in invalid]
        frame = records_frame(sorted(finished, key=lambda r: r["row"]), self.output_dir)
        return frame.reset_index(drop=True)

    # --- steps of run -----------------------------------------------------------------------
    def finished(self, items: list[BatchItem], records: dict) -> dict[str, dict]:
        """Item id -> its manifest record, for the ``items`` an earlier run finished: status
        ``"ok"`` and the file still in the output folder. What a resumed run skips."""
        return {it.item: records[it.item] for it in items
                if records.get(it.item, {}).get("status") == "ok"
                and (self.output_dir / records[it.item]["path"]).is_file()}

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

    def _execute(self, pending: list[BatchItem], manifest: Manifest) -> list[dict]:
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

    def _commit(self, manifest: Manifest, it: BatchItem, wav, sample_rate: int, timings: dict,
                error: str | None, batch: int) -> dict:
        """Stage the audio, append the record (the commit), then move the audio into place."""
        from ..audio import save_audio

        settings = dict(dataclasses.asdict(it.config), seed=it.seed)
        record = dict(row=it.row, item=it.item, name=it.name, prompt=it.prompt, **settings,
                      model=self.model_name, path=None, audio_s=None, sample_rate=None,
                      status="failed", error=error, batch=batch,
                      finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), timings=timings,
                      metadata=it.metadata)
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
            yield from generate_group(self.generator, items, self.max_batch_size, self.callback)

    def _run_ray(self, groups: list[list[BatchItem]]) -> Iterator[tuple]:
        yield from run_on_ray(groups, self._worker_spec(), self.max_batch_size,
                              self.num_workers)

    def _worker_spec(self) -> WorkerSpec:
        """What each Ray actor loads: this runner's model, dtype and backend."""
        if self._generator is None:
            return WorkerSpec(self.model_name, self.device, self.dtype, self.backend)
        from ..backends import BACKENDS

        # rebuild the caller's generator: its model, its dtype and its backend's registry name
        model, backend = self._generator.model, getattr(self._generator, "backend", None)
        name = next((name for name, cls in BACKENDS.items()
                     if isinstance(cls, type) and type(backend) is cls), self.backend)
        return WorkerSpec(model.name, "cpu", model.dtype, name)


def run_batch(source, output_dir, model: str = DEFAULT_MODEL, resume: bool = True,
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
