"""Tests for musicgen_edu/experiments.py (and `musicgen-edu experiments`): a notebook over
parameter sets, one CSV of results, finished runs not redone.

Executes notebooks (papermill, a fresh kernel per run), so it belongs to the notebook tier:
``pytest -m notebooks``; the pure helpers run everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from typer.testing import CliRunner

import musicgen_edu as mg
from musicgen_edu.cli import app
from musicgen_edu.experiments import TABLE_NAME, parameter_grid, parse_value, run_experiments

LECTURE = Path(__file__).resolve().parents[1] / "notebooks" / "06_experiments.ipynb"
KERNEL = "python3"
runner = CliRunner()


@pytest.fixture(scope="module")
def kernel():
    pytest.importorskip("papermill")
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().get_all_specs():
        pytest.skip(f"no Jupyter kernel named {KERNEL!r}; install one with "
                    "`python -m ipykernel install --user --name python3`")
    return KERNEL


@pytest.fixture(autouse=True)
def inline_backend(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # conftest's Agg would reach the kernel


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A two-cell notebook: fails for X <= 0, records 2 X and how often it ran."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('X = 1  # the value\nRESULTS_PATH = "r.json"  # output')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json, pathlib\nassert X > 0, f'X={X} must be positive'\n"
        "runs = pathlib.Path('count.txt'); runs.write_text(runs.read_text() + '.' "
        "if runs.exists() else '.')\n"
        "json.dump({'double': 2 * X, 'runs': len(runs.read_text())}, open(RESULTS_PATH, 'w'))")]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_parse_value_reads_json_or_keeps_text():
    assert parse_value("8") == 8 and parse_value("0.5") == 0.5
    assert parse_value('{"top_k": [50]}') == {"top_k": [50]}
    assert parse_value("facebook/musicgen-small") == "facebook/musicgen-small"


def test_parameter_grid_names_each_run_after_its_values():
    sets = parameter_grid(MAX_BATCH_SIZE=[1, 4], MODEL=["facebook/musicgen-small"])
    assert [s["name"] for s in sets] == ["MAX_BATCH_SIZE-1_MODEL-facebook-musicgen-small",
                                         "MAX_BATCH_SIZE-4_MODEL-facebook-musicgen-small"]
    assert sets[1]["MAX_BATCH_SIZE"] == 4
    with pytest.raises(mg.ConfigError, match="non-empty list"):
        parameter_grid(X=[])


def test_bad_run_names_and_missing_notebooks_are_refused_before_anything_runs(tmp_path, tiny):
    with pytest.raises(mg.ConfigError, match="must be unique"):
        run_experiments([{"name": "a"}, {"name": "a"}], tmp_path / "o", tiny)
    with pytest.raises(mg.ConfigError, match="'../x'"):
        run_experiments([{"name": "../x"}], tmp_path / "o", tiny)
    with pytest.raises(mg.ConfigError, match="not found"):
        run_experiments([{}], tmp_path / "o", tmp_path / "missing.ipynb")
    assert not (tmp_path / "o").exists()


@pytest.mark.notebooks
def test_two_parameter_sets_of_lecture_06_collected_in_one_table(kernel, tmp_path):
    common = {"MODEL": "debug", "DEVICE": "cpu", "DURATION": 0.2, "SEED": 3,
              "PROMPTS": ["calm piano", "fast drums"], "GRID": {"temperature": [0.5, 1.0]}}
    sets = [{"name": "one_at_a_time", "MAX_BATCH_SIZE": 1},
            {"name": "batched", "MAX_BATCH_SIZE": 8, "SEEDS": [3, 4]}]
    table = run_experiments(sets, tmp_path, LECTURE, common=common, kernel=kernel)
    assert list(table.run) == ["one_at_a_time", "batched"]
    assert list(table.status) == ["ok", "ok"], list(table.error)
    assert list(table.MAX_BATCH_SIZE) == [1, 8] and list(table.model) == ["debug", "debug"]
    assert list(table.num_items) == [2 * 2 * 2, 2 * 2 * 2]        # prompts x settings x seeds
    assert list(table.num_batches) == [8, 2]                      # 1 per clip / 1 per setting
    assert table.all_ok.all() and list(table.new_on_rerun) == [0, 0]
    assert list(table.seeds) == ["[3, 4]", "[3, 4]"] and (table.audio_s == 0.2).all()
    # the same seeds and settings give the same clips, whatever the batch size
    assert table.mean_rms[0] == pytest.approx(table.mean_rms[1], rel=1e-3)
    saved = pd.read_csv(tmp_path / TABLE_NAME)
    assert list(saved.run) == list(table.run) and list(saved.num_batches) == [8, 2]
    assert json.loads(saved.GRID[0]) == {"temperature": [0.5, 1.0]}
    for run in table.run:
        assert (tmp_path / run / "results.json").is_file()
        assert (tmp_path / run / "executed_06_experiments.ipynb").is_file()
        assert len(list((tmp_path / run / "audio").glob("*.wav"))) == 8


@pytest.mark.notebooks
def test_failing_runs_are_recorded_finished_runs_are_not_redone(kernel, tmp_path, tiny):
    out = tmp_path / "runs"
    table = run_experiments([{"X": 2}, {"X": -1}], out, tiny, kernel=kernel)
    assert list(table.run) == ["run00", "run01"] and list(table.status) == ["ok", "failed"]
    assert table.double[0] == 4 and pd.isna(table.double[1])
    assert "AssertionError: X=-1 must be positive" in table.error[1]
    assert (out / "run01" / "executed_tiny.ipynb").is_file()     # kept, to read the error
    again = run_experiments([{"X": 2}, {"X": 3}], out, tiny, kernel=kernel)
    assert list(again.resumed) == [True, False] and list(again.status) == ["ok", "ok"]
    assert list(again.runs) == [1, 1]     # run00 not redone; run01 (failed before counting) ran
    fresh = run_experiments([{"X": 2}], out, tiny, kernel=kernel, resume=False)
    assert list(fresh.runs) == [2] and not fresh.resumed[0]


@pytest.mark.notebooks
def test_experiments_command_grid_parameters_and_resume(kernel, tmp_path, tiny):
    out = tmp_path / "cli"
    args = ["experiments", str(tiny), "-o", str(out), "--grid", "X=1,-2", "-p",
            "RESULTS_PATH", "res.json", "--format", "csv"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output          # one failed run: exit code 1
    saved = pd.read_csv(out / TABLE_NAME)
    assert list(saved.run) == ["X-1", "X--2"] and list(saved.status) == ["ok", "failed"]
    assert list(saved.RESULTS_PATH) == ["res.json"] * 2 and saved.double[0] == 2
    ok = runner.invoke(app, ["experiments", str(tiny), "-o", str(out), "--grid", "X=1",
                             "-p", "RESULTS_PATH", "res.json"])
    assert ok.exit_code == 0 and "resumed" in ok.output
    bad = runner.invoke(app, ["experiments", str(tiny), "-o", str(out), "--grid", "X"])
    assert bad.exit_code == 2 and "KEY=V1,V2" in bad.output


@pytest.mark.notebooks
def test_experiments_command_as_a_subprocess(kernel, tmp_path, tiny):
    sets = tmp_path / "sets.json"
    sets.write_text('[{"name": "negative", "X": -3}]')
    proc = subprocess.run([sys.executable, "-m", "musicgen_edu", "experiments", str(tiny), "-o",
                           str(tmp_path / "sub"), "--sets", str(sets), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["run"] == "negative" and rows[0]["X"] == -3 and rows[0]["status"] == "failed"
