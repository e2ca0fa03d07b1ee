"""Tests for scripts/run_experiments.py: lecture 06 over parameter sets, one CSV of results.

Executes notebooks (papermill, a fresh kernel per run), so it belongs to the notebook tier:
``pytest -m notebooks``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

pytestmark = pytest.mark.notebooks

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_experiments.py"
KERNEL = "python3"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("run_experiments", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kernel(script):
    pytest.importorskip("papermill")
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().get_all_specs():
        pytest.skip(f"no Jupyter kernel named {KERNEL!r}; install one with "
                    "`python -m ipykernel install --user --name python3`")
    return KERNEL


@pytest.fixture(autouse=True)
def inline_backend(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # conftest's Agg would reach the kernel


def test_parse_value_reads_json_or_keeps_text(script):
    assert script.parse_value("8") == 8 and script.parse_value("0.5") == 0.5
    assert script.parse_value('{"top_k": [50]}') == {"top_k": [50]}
    assert script.parse_value("facebook/musicgen-small") == "facebook/musicgen-small"


def test_bad_run_names_are_refused_before_anything_runs(script, tmp_path):
    with pytest.raises(ValueError, match="must be unique"):
        script.run_experiments([{"name": "a"}, {"name": "a"}], tmp_path)
    with pytest.raises(ValueError, match="'../x'"):
        script.run_experiments([{"name": "../x"}], tmp_path)
    assert not list(tmp_path.iterdir())


def test_two_parameter_sets_of_lecture_06_collected_in_one_table(script, kernel, tmp_path):
    common = {"MODEL": "debug", "DEVICE": "cpu", "DURATION": 0.2, "SEED": 3,
              "PROMPTS": ["calm piano", "fast drums"], "GRID": {"temperature": [0.5, 1.0]}}
    sets = [{"name": "one_at_a_time", "MAX_BATCH_SIZE": 1},
            {"name": "batched", "MAX_BATCH_SIZE": 8, "SEEDS": [3, 4]}]
    table = script.run_experiments(sets, tmp_path, common=common, kernel=kernel)
    assert list(table.run) == ["one_at_a_time", "batched"]
    assert list(table.status) == ["ok", "ok"], list(table.error)
    assert list(table.MAX_BATCH_SIZE) == [1, 8] and list(table.model) == ["debug", "debug"]
    assert list(table.num_items) == [2 * 2 * 2, 2 * 2 * 2]        # prompts x settings x seeds
    assert list(table.num_batches) == [8, 2]                      # 1 per clip / 1 per setting
    assert table.all_ok.all() and list(table.new_on_rerun) == [0, 0]
    assert list(table.seeds) == ["[3, 4]", "[3, 4]"] and (table.audio_s == 0.2).all()
    # the same seeds and settings give the same clips, whatever the batch size
    assert table.mean_rms[0] == pytest.approx(table.mean_rms[1], rel=1e-3)
    saved = pd.read_csv(tmp_path / script.TABLE_NAME)
    assert list(saved.run) == list(table.run) and list(saved.num_batches) == [8, 2]
    assert json.loads(saved.GRID[0]) == {"temperature": [0.5, 1.0]}
    for run in table.run:
        assert (tmp_path / run / "results.json").is_file()
        assert len(list((tmp_path / run / "audio").glob("*.wav"))) == 8


def test_a_failing_run_is_recorded_and_the_others_still_run(script, kernel, tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('X = 1  # the value\nRESULTS_PATH = "r.json"  # output')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "import json\nassert X > 0, f'X={X} must be positive'\n"
        "json.dump({'double': 2 * X}, open(RESULTS_PATH, 'w'))")]
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nb, notebook)
    table = script.run_experiments([{"X": 2}, {"X": -1}], tmp_path / "runs", notebook=notebook,
                                   kernel=kernel)
    assert list(table.run) == ["run00", "run01"] and list(table.status) == ["ok", "failed"]
    assert table.double[0] == 4 and pd.isna(table.double[1])
    assert "AssertionError: X=-1 must be positive" in table.error[1]
    sets = tmp_path / "sets.json"
    sets.write_text('[{"name": "negative"}]')
    assert script.main(["-o", str(tmp_path / "cli"), "--sets", str(sets), "--notebook",
                        str(notebook), "-p", "X", "-3"]) == 1  # a failed run: exit code 1
    saved = pd.read_csv(tmp_path / "cli" / script.TABLE_NAME)
    assert list(saved.run) == ["negative"] and list(saved.X) == [-3]
