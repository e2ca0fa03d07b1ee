"""Tests for musicgen_edu/batch/: rows, grouping, manifest, resume, crash safety, OOM, Ray."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.batch import MANIFEST_NAME, BatchRunner, grid, load_rows, read_manifest, run_batch

D = 0.2  # seconds per clip: 10 frames of the debug model


class Spy:
    """Wraps a MusicGenerator: records each generate call; fakes CUDA OOM above ``oom_above``."""

    def __init__(self, gen, oom_above: int | None = None):
        self.gen, self.model, self.config = gen, gen.model, gen.config
        self.oom_above, self.calls = oom_above, []

    def generate(self, prompts, **kwargs):
        self.calls.append(dict(prompts=list(prompts), seeds=list(kwargs["seeds"]),
                               temperature=kwargs["temperature"], duration=kwargs["duration"]))
        if self.oom_above is not None and len(prompts) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.gen.generate(prompts, **kwargs)


def lines(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / MANIFEST_NAME).read_text().splitlines()]


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------- rows

def test_grid_is_the_cartesian_product_in_keyword_order():
    rows = grid(prompts=["a", "b"], temperature=[0.5, 1.0], seed=3, duration=[D])
    assert rows == [dict(prompt="a", temperature=0.5, seed=3, duration=D),
                    dict(prompt="a", temperature=1.0, seed=3, duration=D),
                    dict(prompt="b", temperature=0.5, seed=3, duration=D),
                    dict(prompt="b", temperature=1.0, seed=3, duration=D)]
    assert grid(prompt="one prompt, not letters") == [{"prompt": "one prompt, not letters"}]
    with pytest.raises(mg.ConfigError, match="axis 'seed' is empty"):
        grid(prompts=["a"], seed=[])
    with pytest.raises(mg.ConfigError, match="given twice"):
        grid(prompts=["a"], prompt=["b"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(), min_size=1, max_size=4), min_size=1, max_size=4))
def test_grid_property_size_order_and_uniqueness(axes):
    names = [f"axis{i}" for i in range(len(axes))]
    rows = grid(**dict(zip(names, axes)))
    assert len(rows) == int(np.prod([len(a) for a in axes]))
    # position of each row's values in its axis: increasing lexicographically, last axis fastest
    index = [tuple(axes[i].index(r[n]) for i, n in enumerate(names)) for r in rows]
    if all(len(set(a)) == len(a) for a in axes):
        assert index == sorted(index) and len(set(index)) == len(index)
    assert grid(**dict(zip(names, axes))) == rows  # deterministic


def test_load_rows_from_csv_dataframe_and_lists(tmp_path):
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt,seed,temperature,name,use_sampling\n"
                   "lo-fi piano,1,0.5,001,true\n"
                   "None,,,,\n")
    rows = load_rows(csv)
    assert rows == [dict(prompt="lo-fi piano", seed=1, temperature=0.5, name="001",
                         use_sampling=True),
                    dict(prompt="None")]  # only empty cells are missing; "001" stays text
    assert type(rows[0]["seed"]) is int
    frame = pd.DataFrame([dict(prompt="a", seed=1), dict(prompt="b")])  # seed NaN in row 1
    assert load_rows(frame) == [dict(prompt="a", seed=1), dict(prompt="b")]
    assert type(load_rows(frame)[0]["seed"]) is int  # 1.0 from a NaN-holed column -> 1
    assert load_rows(["a", {"prompt": "b"}]) == [{"prompt": "a"}, {"prompt": "b"}]
    with pytest.raises(mg.ConfigError, match="not found"):
        load_rows(tmp_path / "missing.csv")
    with pytest.raises(mg.ConfigError, match="single dict"):
        load_rows({"prompt": "a"})


def test_bad_rows_reported_with_row_and_reason_while_good_rows_run(gen, tmp_path):
    rows = [dict(prompt="good one", duration=D, seed=0),
            dict(duration=D),                                    # 1: no prompt
            dict(prompt="   ", duration=D),                      # 2: empty prompt
            dict(prompt="hot", duration=D, temperature=-1),      # 3: out of range
            dict(prompt="x", duration=D, temprature=0.5),        # 4: a misspelt setting
            dict(prompt="x", duration=D, top_k=2.5),             # 5: not an integer
            dict(prompt="good two", duration="0.2", seed="5", name="two"),  # CSV-ish strings
            dict(prompt="dup", duration=D, name="two"),          # 7: name taken by row 6
            dict(prompt="x", duration=D, name="../escape")]      # 8: not a file name
    table = BatchRunner(gen, tmp_path, progress=False).run(rows)
    assert list(table.row) == list(range(9))
    assert list(table.status) == ["ok"] + ["invalid"] * 5 + ["ok"] + ["invalid"] * 2
    errors = dict(zip(table.row, table.error))
    assert errors[1].startswith("row 1: prompt is missing")
    assert errors[2].startswith("row 2: prompt is missing")
    assert "row 3: temperature=-1" in errors[3] and "(0, 10]" in errors[3]
    assert "row 4: unknown column(s) 'temprature' (did you mean 'temperature'?)" in errors[4]
    assert "row 5: top_k must be an integer" in errors[5]
    assert "row 7: name 'two' is already used by row 6" in errors[7]
    assert "row 8: name='../escape'" in errors[8]
    ok = table[table.status == "ok"]
    assert list(ok.name) == ["000_good-one", "two"] and list(ok.seed) == [0, 5]
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["000_good-one.wav", "two.wav"]
    assert [r["item"] for r in lines(tmp_path)] == list(ok.item)  # invalid rows: no record


def test_extra_columns_are_carried_through_as_metadata_with_one_notice(gen, tmp_path, caplog):
    """A class spreadsheet: `id`, `notes`, `output` and `status` are not settings; they ride along."""
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("id,prompt,duration,seed,notes,output,status\n"
                     "7,lo-fi piano,0.2,1,for Monday,a.wav,todo\n"
                     "8,drums,0.2,2,,b.wav,done\n"
                     "9,,0.2,3,no prompt,c.wav,todo\n")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="musicgen_edu.batch"):
        table = BatchRunner(gen, out, progress=False).run(sheet)
    notices = [r.getMessage() for r in caplog.records if "metadata" in r.getMessage()]
    assert len(notices) == 1 and "['id', 'notes', 'output', 'status']" in notices[0]
    assert list(table.status) == ["ok", "ok", "invalid"]
    assert list(table.id) == [7, 8, 9] and list(table.output) == ["a.wav", "b.wav", "c.wav"]
    assert table.notes[0] == "for Monday" and pd.isna(table.notes[1])   # an empty cell: no value
    assert list(table.meta_status) == ["todo", "done", "todo"]          # "status" is taken
    cols = list(table.columns)
    assert cols.index("id") > cols.index("finished_at") and cols.index("id") < cols.index("rtf")
    records = lines(out)
    assert [r["metadata"] for r in records] == [
        {"id": 7, "notes": "for Monday", "output": "a.wav", "status": "todo"},
        {"id": 8, "output": "b.wav", "status": "done"}]
    assert list(read_manifest(out).id) == [7, 8]
    # metadata is not part of an item's identity: new notes resume, and show the new notes
    sheet.write_text(sheet.read_text().replace("for Monday", "for Tuesday"))
    again = BatchRunner(gen, out, progress=False).run(sheet)
    assert list(again.resumed[:2]) == [True, True] and again.notes[0] == "for Tuesday"
    assert len(lines(out)) == 2


@pytest.mark.parametrize("column,guess", [("topk", "top_k"), ("temprature", "temperature"),
                                          ("Seed", "seed"), ("top-p", "top_p"),
                                          ("durration", "duration"), ("promt", "prompt")])
def test_a_misspelt_setting_is_rejected_with_did_you_mean(gen, tmp_path, column, guess):
    rows = [{"prompt": "x", "duration": D, column: 1}, {"prompt": "y", "duration": D}]
    table = BatchRunner(gen, tmp_path, progress=False).run(rows)
    assert list(table.status) == ["invalid", "ok"]
    assert f"{column!r} (did you mean {guess!r}?)" in table.error[0]


def test_split_columns_keeps_settings_flags_typos_and_keeps_the_rest():
    from musicgen_edu.batch.table import split_columns

    assert split_columns(["prompt", "seeds", "id", "topk", "notes", "student", "Temperature"]) \
        == (["id", "notes", "student"], {"topk": "top_k", "Temperature": "temperature"})


# ---------------------------------------------------------------- batches

def test_rows_sharing_settings_share_a_batch_with_per_item_seeds(gen, tmp_path):
    rows = (grid(prompts=["a", "b", "c", "d", "e"], temperature=1.0, seed=10, duration=D)
            + grid(prompts=["f", "g"], temperature=0.5, seeds=[1], duration=D))
    rows[1]["seed"] = 11  # seeds are per item: no new group
    spy = Spy(gen)
    table = BatchRunner(spy, tmp_path, max_batch_size=4, progress=False).run(rows)
    assert [len(c["prompts"]) for c in spy.calls] == [4, 1, 2]
    assert [c["temperature"] for c in spy.calls] == [1.0, 1.0, 0.5]
    assert spy.calls[0]["seeds"] == [10, 11, 10, 10] and spy.calls[2]["prompts"] == ["f", "g"]
    assert list(table.batch) == [0, 0, 0, 0, 1, 2, 2]
    assert list(table.batch_size) == [4, 4, 4, 4, 1, 2, 2]
    assert (table.status == "ok").all() and (table.audio_s == D).all()
    # a batch item is the clip generated alone with its seed (16-bit files: 1 LSB tolerance)
    alone = gen.generate("b", duration=D, seed=11).wav[0].numpy()
    saved, sr = mg.load_audio(table.path[1])
    assert sr == gen.sample_rate and saved.shape == alone.shape
    np.testing.assert_allclose(saved, alone, atol=2 / 32768)


def test_out_of_memory_halves_the_batch_and_finishes(gen, tmp_path):
    spy = Spy(gen, oom_above=2)
    rows = grid(prompts=list("abcde"), seed=0, duration=D)
    table = BatchRunner(spy, tmp_path, max_batch_size=8, progress=False).run(rows)
    assert [len(c["prompts"]) for c in spy.calls] == [5, 2, 2, 1]  # 5 fails, then halves
    assert (table.status == "ok").all() and len(list(tmp_path.glob("*.wav"))) == 5


def test_out_of_memory_at_batch_size_one_is_reported_and_retried_later(gen, tmp_path):
    rows = grid(prompts=["a", "b"], seed=0, duration=D)
    table = BatchRunner(Spy(gen, oom_above=0), tmp_path, max_batch_size=2, progress=False).run(rows)
    assert list(table.status) == ["failed", "failed"]
    assert table.error[0].startswith("out of memory even at batch size 1")
    assert [r["status"] for r in lines(tmp_path)] == ["failed", "failed"]
    assert not list(tmp_path.glob("*.wav"))
    again = BatchRunner(Spy(gen), tmp_path, progress=False).run(rows)  # failed items rerun
    assert list(again.status) == ["ok", "ok"] and not again.resumed.any()
    assert len(read_manifest(tmp_path)) == 2 and (read_manifest(tmp_path).status == "ok").all()


# ---------------------------------------------------------------- manifest and resume

def test_manifest_records_params_paths_and_timings(gen, tmp_path, caplog):
    rows = grid(prompts=["calm lo-fi piano"], top_k=[50], seed=[3], duration=[D])
    BatchRunner(gen, tmp_path, progress=False).run(rows)
    (record,) = lines(tmp_path)
    assert record["prompt"] == "calm lo-fi piano" and record["top_k"] == 50
    assert record["seed"] == 3 and record["model"] == "debug" and record["status"] == "ok"
    assert record["path"] == "000_calm-lo-fi-piano.wav" and record["audio_s"] == D
    assert len(record["item"]) == 16 and record["timings"]["batch_size"] == 1
    assert record["timings"]["rtf"] > 0
    frame = read_manifest(tmp_path)
    assert frame.path[0] == str(tmp_path / "000_calm-lo-fi-piano.wav") and frame.rtf[0] > 0
    assert read_manifest(tmp_path / "nothing").empty
    with open(tmp_path / MANIFEST_NAME, "a") as f:  # a broken line in the middle: said, skipped
        f.write("not json\n" + json.dumps(dict(record, status="failed")) + "\n")
    with caplog.at_level("WARNING", logger="musicgen_edu.batch"):
        assert list(read_manifest(tmp_path).status) == ["failed"]  # the latest record wins
    assert "line 2 is not valid JSON" in caplog.text


def test_one_runner_per_folder(gen, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / MANIFEST_NAME, "ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(mg.ConfigError, match="another BatchRunner is writing"):
            BatchRunner(gen, tmp_path, progress=False).run([dict(prompt="a", duration=D)])
    assert not list(tmp_path.glob("*.wav"))


def test_rerun_regenerates_nothing(gen, tmp_path):
    rows = grid(prompts=["a", "b"], temperature=[0.5, 1.0], seed=[0], duration=[D])
    first = BatchRunner(gen, tmp_path, progress=False).run(rows)
    before, manifest = mtimes(tmp_path), (tmp_path / MANIFEST_NAME).read_bytes()
    spy = Spy(gen)
    second = BatchRunner(spy, tmp_path, progress=False).run(rows)
    assert spy.calls == [] and second.resumed.all() and not first.resumed.any()
    assert mtimes(tmp_path) == before and (tmp_path / MANIFEST_NAME).read_bytes() == manifest
    assert list(second.item) == list(first.item) and list(second.path) == list(first.path)
    # a deleted file is regenerated; a new row only adds its own line
    Path(first.path[0]).unlink()
    third = BatchRunner(spy, tmp_path, progress=False).run(rows + [dict(prompt="c", duration=D)])
    assert list(third.resumed) == [False, True, True, True, False]
    assert len(lines(tmp_path)) == 6 and len(read_manifest(tmp_path)) == 5


def test_random_seeds_are_drawn_once_and_recorded(gen, tmp_path):
    rows = [dict(prompt="a", duration=D), dict(prompt="b", duration=D)]
    first = BatchRunner(gen, tmp_path, progress=False).run(rows)
    assert all(isinstance(s, (int, np.integer)) for s in first.seed)
    second = BatchRunner(gen, tmp_path, progress=False).run(rows)
    assert second.resumed.all() and list(second.seed) == list(first.seed)


def test_resume_false_refuses_finished_items_unless_overwrite(gen, tmp_path):
    rows = [dict(prompt="a", duration=D, seed=0)]
    run_batch(rows, tmp_path, progress=False)
    with pytest.raises(mg.ConfigError, match="resume=False"):
        run_batch(rows, tmp_path, resume=False, progress=False)
    again = run_batch(rows, tmp_path, resume=False, overwrite=True, progress=False)
    assert not again.resumed.any() and len(lines(tmp_path)) == 2
    assert len(read_manifest(tmp_path)) == 1


def test_refuses_to_overwrite_foreign_files(gen, tmp_path):
    foreign = tmp_path / "mine.wav"
    mg.save_audio(foreign, np.zeros((1, 100), np.float32), 32000)
    rows = [dict(prompt="a", duration=D, seed=0, name="mine"), dict(prompt="b", duration=D)]
    with pytest.raises(mg.ConfigError, match=r"mine\.wav' is not in manifest\.jsonl"):
        BatchRunner(gen, tmp_path, progress=False).run(rows)
    assert not (tmp_path / MANIFEST_NAME).read_bytes()  # refused before any work
    assert mg.load_audio(foreign)[0].shape == (1, 100)
    # overwrite=True replaces it
    table = BatchRunner(gen, tmp_path, progress=False, overwrite=True).run(rows)
    assert (table.status == "ok").all() and mg.load_audio(foreign)[0].shape[-1] == 6400
    # same name, other settings: the file came from an earlier run, also refused
    rows[0]["seed"] = 1
    with pytest.raises(mg.ConfigError, match="earlier run with other settings"):
        BatchRunner(gen, tmp_path, progress=False).run(rows)


CRASH_SCRIPT = """
import os, sys
from musicgen_edu.batch import BatchRunner, grid
out, kill_after = sys.argv[1], int(sys.argv[2])
done = []
def hook(record):
    done.append(record["item"])
    if len(done) == kill_after:  # a torn append, then SIGKILL: nothing gets to clean up
        with open(os.path.join(out, "manifest.jsonl"), "ab") as f:
            f.write(b'{"item": "torn", "prom')
        os.kill(os.getpid(), 9)
rows = grid(prompts=["a", "b", "c"], seed=[0, 1], duration=[0.2])
BatchRunner("debug", out, max_batch_size=4, progress=False, on_item=hook, device="cpu").run(rows)
"""


def test_crash_with_sigkill_then_resume_loses_and_duplicates_nothing(gen, tmp_path):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_SCRIPT), str(tmp_path), "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    raw = (tmp_path / MANIFEST_NAME).read_bytes()
    assert raw.endswith(b'"prom') and len(read_manifest(tmp_path)) == 3  # torn line ignored
    rows = grid(prompts=["a", "b", "c"], seed=[0, 1], duration=[D])
    spy = Spy(gen)
    table = BatchRunner(spy, tmp_path, max_batch_size=4, progress=False, device="cpu").run(rows)
    assert list(table.resumed) == [True] * 3 + [False] * 3 and (table.status == "ok").all()
    assert sum(len(c["prompts"]) for c in spy.calls) == 3  # only the missing items ran
    records = lines(tmp_path)  # every line parses again: the torn tail was cut off
    assert sorted(r["item"] for r in records) == sorted(table.item) and len(records) == 6
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == sorted(f"{n}.wav" for n in table.name)
    assert not list(tmp_path.glob(".*"))  # no staged or temporary files left


def test_a_rename_cut_short_by_a_crash_is_finished_without_regenerating(gen, tmp_path):
    rows = [dict(prompt="a", duration=D, seed=0)]
    first = BatchRunner(gen, tmp_path, progress=False).run(rows)
    final = Path(first.path[0])
    staged = tmp_path / f".{first.name[0]}.{first.item[0]}.partial.wav"
    os.replace(final, staged)  # state between "record committed" and "file moved into place"
    (tmp_path / ".other.0123456789abcdef.partial.wav").write_bytes(b"half")  # never committed
    spy = Spy(gen)
    again = BatchRunner(spy, tmp_path, progress=False).run(rows)
    assert spy.calls == [] and again.resumed.all() and final.is_file()
    assert not list(tmp_path.glob(".*"))


def test_run_batch_on_a_csv(tmp_path):
    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt,duration,seed\nlo-fi piano,0.2,0\nepic drums,0.2,1\n")
    table = run_batch(csv, tmp_path / "out", model="debug", progress=False, device="cpu")
    assert list(table.name) == ["000_lo-fi-piano", "001_epic-drums"]
    assert (table.status == "ok").all() and list(table.seed) == [0, 1]
    assert run_batch(csv, tmp_path / "out", model="debug", progress=False,
                     device="cpu").resumed.all()


def test_runner_settings_are_checked():
    with pytest.raises(mg.ConfigError, match="max_batch_size"):
        BatchRunner("debug", "x", max_batch_size=0)
    with pytest.raises(mg.ConfigError, match="executor='dask'"):
        BatchRunner("debug", "x", executor="dask")
    with pytest.raises(mg.ConfigError, match="model name, a MusicGenModel"):
        BatchRunner(42, "x")


# ---------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="executor='ray' needs the ray extra: "
                                            "pip install 'musicgen-edu[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_matches_local_on_cpu(ray_cluster, gen, tmp_path):
    rows = grid(prompts=["a", "b", "c"], temperature=[0.5, 1.0], seed=[4], duration=[D])
    table = BatchRunner("debug", tmp_path / "ray", max_batch_size=2, executor="ray",
                        num_workers=2, progress=False, device="cpu").run(rows)
    assert (table.status == "ok").all() and len(lines(tmp_path / "ray")) == 6
    assert sorted(table.batch_size) == [1, 1, 2, 2, 2, 2]
    local = BatchRunner(gen, tmp_path / "local", max_batch_size=2, progress=False).run(rows)
    assert list(local.item) == list(table.item)  # same model name, same ids
    for ray_path, local_path in zip(table.path, local.path):
        np.testing.assert_allclose(mg.load_audio(ray_path)[0], mg.load_audio(local_path)[0],
                                   atol=2 / 32768)
    again = BatchRunner("debug", tmp_path / "ray", executor="ray", progress=False).run(rows)
    assert again.resumed.all() and len(lines(tmp_path / "ray")) == 6


class FakeRay(types.ModuleType):
    """The part of Ray that batch/ray.py uses, in this process: actors are plain objects."""

    def __init__(self, gpus: int = 0):
        super().__init__("ray")
        self.gpus, self.specs, self.options, self.killed = gpus, [], [], 0
        self.util = types.ModuleType("ray.util")
        self.util.ActorPool = FakePool

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0, **({"GPU": float(self.gpus)} if self.gpus else {})}

    def remote(self, **options):
        self.options.append(options)
        fake = self

        def wrap(cls):
            class Handle:
                def __init__(self, spec):
                    fake.specs.append(spec)
                    body = cls(dataclasses.replace(spec, device="cpu"))   # no GPU here
                    self.run = types.SimpleNamespace(remote=body.run)
            return types.SimpleNamespace(remote=Handle)
        return wrap

    def kill(self, actor):
        self.killed += 1


class FakePool:
    def __init__(self, actors):
        self.actors = actors

    def map_unordered(self, fn, values):
        return (fn(self.actors[i % len(self.actors)], v) for i, v in enumerate(values))


@pytest.mark.parametrize("gpus", [0, 2])
def test_ray_executor_gets_the_runners_model_and_matches_local(gpus, gen, tmp_path,
                                                               monkeypatch):
    """Without Ray installed: actors are built from a WorkerSpec and run batch/group.py's code."""
    from musicgen_edu.batch.ray import WorkerSpec

    fake = FakeRay(gpus)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.util", fake.util)
    rows = grid(prompts=["a", "b", "c"], seed=[4], duration=[D])
    table = BatchRunner(gen, tmp_path / "ray", max_batch_size=2, executor="ray", num_workers=2,
                        progress=False).run(rows)
    device = "auto" if gpus else "cpu"
    assert fake.specs == [WorkerSpec("debug", device, gen.model.dtype, "native")] * 2
    assert fake.options == [{"num_gpus": 1.0} if gpus else {"num_cpus": 1.0}]
    assert fake.killed == 2 and (table.status == "ok").all()
    assert sorted(table.batch_size) == [1, 2, 2]
    local = BatchRunner(gen, tmp_path / "local", max_batch_size=2, progress=False).run(rows)
    for ray_path, local_path in zip(table.path, local.path):
        np.testing.assert_array_equal(mg.load_audio(ray_path)[0], mg.load_audio(local_path)[0])


@pytest.mark.parametrize("cell,column", [("nan", "duration"), ("nan", "temperature"),
                                         ("inf", "extend_stride"), ("-inf", "top_p")])
def test_non_finite_cells_are_refused_by_name_never_defaulted(tmp_path, cell, column):
    """A cell reading nan or inf is a value, not an empty cell: the row is invalid and its error
    names the column, instead of the setting silently falling back to its default."""
    path = tmp_path / "t.csv"
    path.write_text(f"prompt,{column}\na,{cell}\n")
    items, invalid = BatchRunner("debug", tmp_path / "out").parse(path)
    assert items == [] and len(invalid) == 1
    assert column in invalid[0]["error"], invalid[0]["error"]
