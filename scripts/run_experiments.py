"""Run lecture 06 over several parameter sets with papermill and collect the results in one CSV.

A parameter set is a dict of the lecture's parameters (``MODEL``, ``DURATION``, ``GRID``,
``MAX_BATCH_SIZE``, ...) plus an optional ``name``. Each run gets its own folder
``<output>/<name>/`` holding the executed notebook, its audio and manifest (``OUTPUT_DIR``)
and its results file (``RESULTS_PATH``). The table ``<output>/experiments.csv`` has one row per
run: ``run``, ``status``, ``error``, the parameters as set (UPPERCASE columns) and the values
the lecture recorded (lowercase columns); lists and dicts are stored as JSON text. A run that
fails is recorded with its error and the others still run. Running the same command again
resumes: each lecture run skips the clips its manifest already holds.

This is the recommenders-team "parameterised notebook" pattern (papermill ``parameters`` cell
+ a results file per run), as in ``tests/test_notebooks.py``::

    python scripts/run_experiments.py -o runs                       # DEFAULT_SETS (batch sizes)
    python scripts/run_experiments.py -o runs --sets sets.json      # a JSON list of dicts
    python scripts/run_experiments.py -o runs -p MODEL facebook/musicgen-small -p DURATION 8
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LECTURE = Path(__file__).resolve().parents[1] / "notebooks" / "06_experiments.ipynb"
TABLE_NAME = "experiments.csv"

# The built-in comparison: how the cost per clip changes with the batch size.
DEFAULT_SETS = [
    {"name": "batch1", "MAX_BATCH_SIZE": 1},
    {"name": "batch4", "MAX_BATCH_SIZE": 4},
    {"name": "batch8", "MAX_BATCH_SIZE": 8},
]


def parse_value(text: str):
    """Command-line values: JSON when it parses ("8" -> 8, "[0, 1]" -> [0, 1]), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _cell(value):
    """A table cell: numbers, text and bools as they are; lists, dicts and None as JSON."""
    return value if isinstance(value, (str, int, float, bool)) else json.dumps(value)


def run_experiments(parameter_sets: list[dict], output_dir, notebook=LECTURE,
                    common: dict | None = None, kernel: str = "python3"):
    """Execute ``notebook`` once per parameter set; return (and save) the results table.

    Args:
        parameter_sets: one dict of notebook parameters per run, with an optional ``"name"``
            (default ``run00``, ``run01``, ...; names must be unique and file-name safe).
        output_dir: where the run folders and ``experiments.csv`` go (created if missing).
        notebook: the lecture to run (default: ``notebooks/06_experiments.ipynb``).
        common: parameters for every run (a set's own values win), e.g. ``{"MODEL": "debug"}``.
        kernel: the Jupyter kernel name.

    Returns:
        A pandas DataFrame with one row per run, also written to ``output_dir/experiments.csv``.
    """
    import pandas as pd
    import papermill as pm

    output_dir = Path(output_dir)
    runs = []
    for i, params in enumerate(parameter_sets):
        params = {**(common or {}), **params}
        name = str(params.pop("name", f"run{i:02d}"))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in [r[0] for r in runs]:
            raise ValueError(f"parameter set {i}: name {name!r} must be unique and use only "
                             "letters, digits, '_', '.', '-'.")
        runs.append((name, params))
    rows = []
    for name, params in runs:
        run_dir = output_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        params.setdefault("OUTPUT_DIR", "audio")           # relative to the run folder
        params.setdefault("RESULTS_PATH", "results.json")
        results_path = run_dir / params["RESULTS_PATH"]
        results_path.unlink(missing_ok=True)               # never report a stale result
        row = {"run": name, "status": "ok", "error": ""}
        try:
            pm.execute_notebook(str(notebook), str(run_dir / f"executed_{Path(notebook).name}"),
                                parameters=params, cwd=str(run_dir), kernel_name=kernel,
                                progress_bar=False, request_save_on_cell_execute=False)
            results = json.loads(results_path.read_text())
        except Exception as exc:  # noqa: BLE001 - record the failure, run the other sets
            error = f"{exc.ename}: {exc.evalue}" if hasattr(exc, "ename") else repr(exc)
            row.update(status="failed", error=error)
            results = {}
        row.update({k: _cell(v) for k, v in params.items()})
        row.update({k: _cell(v) for k, v in results.items()})
        rows.append(row)
        print(f"{name}: {row['status']} {row['error']}".rstrip(), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(output_dir / TABLE_NAME, index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="folder for the runs and experiments.csv")
    parser.add_argument("--sets", type=Path, help="a JSON file: a list of parameter dicts "
                        "(default: batch sizes 1, 4 and 8)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="a parameter for every run "
                        "(VALUE is JSON if it parses, else text), e.g. -p DURATION 2")
    parser.add_argument("--notebook", type=Path, default=LECTURE, help="the lecture to run")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    args = parser.parse_args(argv)
    sets = DEFAULT_SETS
    if args.sets is not None:
        sets = json.loads(args.sets.read_text())
        if not isinstance(sets, list) or not all(isinstance(s, dict) for s in sets):
            parser.error(f"{args.sets} must hold a JSON list of objects (one per run)")
    common = {name: parse_value(value) for name, value in args.parameter}
    table = run_experiments(sets, args.output, args.notebook, common, args.kernel)
    print(f"wrote {args.output / TABLE_NAME} ({len(table)} runs)")
    return 0 if (table.status == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
