"""Experiments: one lecture notebook run over many parameter sets with papermill, one results table.

The recommenders-team "parameterised notebook" pattern (a papermill ``parameters`` cell plus a
results file per run), as ``tests/test_notebooks.py`` runs the lectures. The path of one run::

    parameter set {"name": "batch4", "MAX_BATCH_SIZE": 4}  (+ common parameters)
      -> <output>/batch4/run.json exists with status "ok" and the same parameters? skip it
      -> papermill: <output>/batch4/executed_<notebook>.ipynb, run in <output>/batch4/
      -> the notebook writes RESULTS_PATH (results.json); the run's record -> run.json
      -> one row of <output>/experiments.csv: run, status, error, resumed, PARAMETERS, results

Parameters are UPPERCASE columns, recorded values lowercase ones; lists and dicts are stored as
JSON text. A failing run is recorded with its error and the others still run; running the same
command again redoes only the runs that did not finish (as :class:`~musicgen_edu.batch.BatchRunner`
skips finished items). ``musicgen-edu experiments`` is the command line of this module::

    musicgen-edu experiments notebooks/06_experiments.ipynb -o runs \\
        -p MODEL debug -p DURATION 2 --grid MAX_BATCH_SIZE=1,4,8
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path

from .errors import ConfigError

__all__ = ["run_experiments", "parameter_grid", "parse_value", "TABLE_NAME", "RUN_RECORD"]

TABLE_NAME = "experiments.csv"   # the results table, one row per run, in the output folder
RUN_RECORD = "run.json"          # a finished run's record, in its own folder
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def parse_value(text: str):
    """Command-line values: JSON when it parses ("8" -> 8, "[0, 1]" -> [0, 1]), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cell(value):
    """A table cell: numbers, text and bools as they are; lists, dicts and None as JSON."""
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


def _slug(value) -> str:
    """A parameter value as part of a run name: ``-0.5 -> "-0.5"``, ``"a b" -> "a-b"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.") or "x"


def parameter_grid(**axes) -> list[dict]:
    """Parameter sets for every combination of the axes, each named after its values.

    Example::

        parameter_grid(MAX_BATCH_SIZE=[1, 4], DURATION=[2])
        # [{'name': 'MAX_BATCH_SIZE-1_DURATION-2', 'MAX_BATCH_SIZE': 1, 'DURATION': 2},
        #  {'name': 'MAX_BATCH_SIZE-4_DURATION-2', 'MAX_BATCH_SIZE': 4, 'DURATION': 2}]
    """
    for key, values in axes.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"grid axis {key!r} needs a non-empty list of values, got "
                              f"{values!r}; e.g. --grid {key}=1,4,8.")
    sets = []
    for combo in itertools.product(*axes.values()):
        params = dict(zip(axes, combo))
        name = "_".join(f"{k}-{_slug(v)}" for k, v in params.items())[:120]
        sets.append({"name": name, **params})
    return sets


def _runs(parameter_sets: list[dict], common: dict | None) -> list[tuple[str, dict]]:
    """``(name, parameters)`` per set, names checked before anything runs."""
    if not isinstance(parameter_sets, (list, tuple)) or not all(
            isinstance(s, dict) for s in parameter_sets):
        raise ConfigError("parameter_sets must be a list of dicts (one per run), e.g. "
                          "[{'name': 'batch1', 'MAX_BATCH_SIZE': 1}].")
    runs: list[tuple[str, dict]] = []
    for i, params in enumerate(parameter_sets):
        params = {**(common or {}), **params}
        name = str(params.pop("name", f"run{i:02d}"))
        if not _NAME.fullmatch(name) or name in [n for n, _ in runs]:
            raise ConfigError(f"parameter set {i}: name {name!r} must be unique and use only "
                              "letters, digits, '_', '.', '-' (starting with a letter or digit).")
        params.setdefault("OUTPUT_DIR", "audio")           # relative to the run folder
        params.setdefault("RESULTS_PATH", "results.json")
        runs.append((name, params))
    return runs


def _finished(run_dir: Path, params: dict) -> dict | None:
    """The record of an earlier run of these exact parameters that finished, else None."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    same = json.dumps(record.get("parameters"), sort_keys=True) == json.dumps(params, sort_keys=True)
    return record if record.get("status") == "ok" and same else None


def _execute(notebook: Path, run_dir: Path, params: dict, kernel: str) -> dict:
    """Run the notebook once in ``run_dir``; the run's record (status, error, results)."""
    import papermill as pm

    results_path = run_dir / params["RESULTS_PATH"]
    results_path.unlink(missing_ok=True)                   # never report a stale result
    record = {"status": "ok", "error": "", "parameters": params, "results": {}}
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook), str(run_dir / f"executed_{notebook.name}"),
                            parameters=params, cwd=str(run_dir), kernel_name=kernel,
                            progress_bar=False, request_save_on_cell_execute=False)
        record["results"] = json.loads(results_path.read_text())
    except Exception as exc:
        error = f"{exc.ename}: {exc.evalue}" if hasattr(exc, "ename") else repr(exc)
        record.update(status="failed", error=error)
    record.update(seconds=round(time.perf_counter() - start, 3),
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tmp = run_dir / f".{RUN_RECORD}.tmp"                    # atomic: a crash leaves no half file
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, run_dir / RUN_RECORD)
    return record


def run_experiments(parameter_sets: list[dict], output_dir, notebook, common: dict | None = None,
                    kernel: str = "python3", resume: bool = True, on_run=None):
    """Execute ``notebook`` once per parameter set; return (and save) the results table.

    Args:
        parameter_sets: one dict of notebook parameters per run, with an optional ``"name"``
            (default ``run00``, ``run01``, ...; names must be unique and file-name safe).
        output_dir: where the run folders and ``experiments.csv`` go (created if missing).
        notebook: the notebook to run, e.g. ``notebooks/06_experiments.ipynb``; it must have a
            ``parameters`` cell and write its results as JSON to ``RESULTS_PATH``.
        common: parameters for every run (a set's own values win), e.g. ``{"MODEL": "debug"}``.
        kernel: the Jupyter kernel name.
        resume: skip runs whose folder records a finished run of the same parameters (False:
            run everything again).
        on_run: called with ``(name, record)`` after each run (or skip), e.g. to print progress.

    Returns:
        A pandas DataFrame with one row per run (``run, status, error, resumed``, the
        parameters, the recorded values), also written to ``output_dir/experiments.csv``.
    """
    import pandas as pd

    notebook = Path(notebook)
    if not notebook.is_file():
        raise ConfigError(f"notebook '{notebook}' not found; pass the path of a lecture, e.g. "
                          "notebooks/06_experiments.ipynb.")
    runs = _runs(parameter_sets, common)
    output_dir = Path(output_dir)
    rows = []
    for name, params in runs:
        run_dir = output_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        record = _finished(run_dir, params) if resume else None
        resumed = record is not None
        if record is None:
            record = _execute(notebook, run_dir, params, kernel)
        row = {"run": name, "status": record["status"], "error": record["error"],
               "resumed": resumed}
        row.update({k: _cell(v) for k, v in params.items()})
        row.update({k: _cell(v) for k, v in record["results"].items()})
        rows.append(row)
        if on_run is not None:
            on_run(name, dict(record, resumed=resumed))
    table = pd.DataFrame(rows)
    table.to_csv(output_dir / TABLE_NAME, index=False)
    return table
