"""``musicgen-edu train``: a run from the shell, resume, Ctrl-C, bad input, options from TrainConfig."""

import dataclasses
import importlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import types
import typing

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import musicgen_edu as mg
from musicgen_edu.cli import app
from musicgen_edu.train import TrainConfig, Trainer, TrainResult, build_dataset, write_dataset

runner = CliRunner()
SR = 32000
CAPTIONS = ["warm analog bass", "glassy bells", "dusty vinyl piano", "bright brass stabs",
            "soft flute", "punchy kick drum loop", "airy choir pads", "nervous string ostinato"]
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# a tiny run: 1 s windows of 8 clips, few updates of 2 windows, short samples
SMALL = ["--batch-size", "2", "--warmup-steps", "1", "--window", "1.0", "--hop", "1.0",
         "--sample-seconds", "0.2", "--learning-rate", "3e-3", "--no-progress"]


def invoke(*args: str, **kwargs):
    """Run ``musicgen-edu ARGS`` in-process, with wide lines (messages are not wrapped)."""
    return runner.invoke(app, list(args), env={"COLUMNS": "300"}, **kwargs)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 clips of 1 s with distinct captions: a square-wave note each, one pitch per clip."""
    t = np.arange(SR) / SR
    clips = [(0.5 * np.sign(np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t))
              * np.exp(-3 * (t % 0.25))).astype(np.float32)[None] for i in range(8)]
    return write_dataset(tmp_path_factory.mktemp("clips"), clips, SR, CAPTIONS)


@pytest.fixture(scope="module")
def tokens(data, tmp_path_factory):
    """The clips encoded once for 1 s windows (shards are named by content and settings, so a
    run whose tokens/ holds them encodes nothing: the tests spend their seconds training)."""
    folder = tmp_path_factory.mktemp("tokens")
    build_dataset(data, mg.load_model("debug", device="cpu", dtype="float32"), folder, 1.0, 1.0,
                  progress=False)
    return folder


@pytest.fixture
def run(tokens, tmp_path):
    """A new run folder with the encoded clips in place."""
    shutil.copytree(tokens, tmp_path / "run" / "tokens")
    return tmp_path / "run"


def options() -> dict:
    return {p.name: p for p in typer.main.get_command(app).commands["train"].params}


# ---------------------------------------------------------------- a run, resume, Ctrl-C

def test_train_writes_a_model_that_loads_and_generates(data, run, tmp_path):
    result = invoke("train", str(data), "-m", "debug", "-o", str(run), "--steps", "3", *SMALL)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "for 3 updates" in text and "accuracy per codebook" in text
    model_dir = (run / "model").resolve()
    assert f"model: {model_dir}" in text
    assert f"musicgen-edu generate 'airy choir pads' -m {model_dir}" in text
    assert json.loads((run / "result.json").read_text())["steps"] == 3
    model = mg.load_model(str(model_dir), device="cpu")
    assert model.source == "local" and model.num_codebooks == 4
    # the printed command works: generate takes the folder as its model
    out = tmp_path / "x.wav"
    played = invoke("generate", "airy choir pads", "-m", str(model_dir), "-d", "0.2", "-o",
                    str(out), "--no-progress", "--seed", "1")
    assert played.exit_code == 0, played.output
    assert mg.load_audio(out)[0].shape == (1, 6400)


def test_resume_continues_and_an_existing_run_needs_it(data, run):
    args = ["train", str(data), "-o", str(run), *SMALL, "--checkpoint-every", "3", "--json"]
    assert invoke(*args, "--steps", "3").exit_code == 0
    config = (run / "train_config.json").read_bytes()
    again = invoke(*args, "--steps", "3")
    assert again.exit_code == 2
    assert "holds a run already" in flat(again.output) and "--resume" in again.output
    assert "Traceback" not in again.output
    assert (run / "train_config.json").read_bytes() == config          # nothing was changed
    more = invoke(*args, "--steps", "5", "--resume")
    assert more.exit_code == 0, more.output
    summary = json.loads(more.stdout)
    assert summary["steps"] == 5 and summary["resumed_from"] == 3
    assert summary["model_dir"] == str((run / "model").resolve())
    assert len(summary["accuracy"]) == 4 and all(0 <= a <= 1 for a in summary["accuracy"])
    assert list(TrainResult(run, run / "model", None, 5, {}).log()["step"]) == [
        1, 2, 3, 4, 5]


def test_resume_takes_the_runs_own_settings_unless_given(data, run):
    """``--resume --steps N`` alone continues a run started with other options (here LoRA, a
    learning rate and a seed); an option given again that differs is still refused."""
    args = ["train", str(data), "-o", str(run), *SMALL, "--checkpoint-every", "3", "--json"]
    first = invoke(*args, "--steps", "3", "--lora", "--learning-rate", "0.002", "--seed", "4")
    assert first.exit_code == 0, first.output
    more = invoke("train", str(data), "-o", str(run), "--resume", "--steps", "5", "--json")
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["steps"] == 5
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["lora"] is True and saved["learning_rate"] == 0.002 and saved["steps"] == 5
    other = invoke("train", str(data), "-o", str(run), "--resume", "--steps", "6",
                   "--seed", "5")
    assert other.exit_code == 2 and "['seed']" in flat(other.output)


def test_ctrl_c_keeps_the_checkpoint_and_says_resume(data, run, monkeypatch):
    update, calls = Trainer.update, []

    def interrupted_at_three(self):
        calls.append(self.step)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return update(self)
    monkeypatch.setattr(Trainer, "update", interrupted_at_three)
    args = ["train", str(data), "-o", str(run), "--steps", "3", "--checkpoint-every", "2", *SMALL]
    stopped = invoke(*args)
    assert stopped.exit_code == 130
    text = flat(stopped.output)
    assert "interrupted (Ctrl-C)" in text and "step_000002.pt" in text and "--resume" in text
    monkeypatch.undo()
    resumed = invoke(*args, "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["resumed_from"] == 2


# ---------------------------------------------------------------- bad input: exit 2, one message

@pytest.mark.parametrize("args,fragments", [
    (["--learning-rate", "5"], ["learning_rate=5.0", "(0, 1]"]),
    (["--lora-dropout", "1"], ["lora_dropout=1.0", "[0, 1)"]),
    (["--precision", "fp16"], ["'fp16'", "auto"]),
    (["--steps", "10", "--warmup-steps", "50"], ["warmup_steps=50", "steps=10"]),
])
def test_bad_settings_print_the_value_and_range_and_write_nothing(data, tmp_path, args,
                                                                   fragments):
    run = tmp_path / "run"
    result = invoke("train", str(data), "-o", str(run), "--no-progress", *args)
    assert result.exit_code == 2
    text = flat(result.output)
    assert text.startswith("error:") and "Traceback" not in result.output
    assert all(f in text for f in fragments), text
    assert not run.exists()


def test_bad_data_and_model_are_one_message(data, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("train", str(empty), "-o", str(tmp_path / "a"), "--no-progress")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"no audio files in '{empty}'" in flat(result.output)
    missing = invoke("train", str(tmp_path / "nope"), "-o", str(tmp_path / "b"))
    assert missing.exit_code == 2 and "does not exist" in flat(missing.output)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = invoke("train", str(data), "-m", "nope/not-a-model", "-o", str(tmp_path / "c"),
                   "--no-progress")
    assert model.exit_code == 2 and "nope/not-a-model" in model.output
    assert "Traceback" not in model.output


def test_a_bad_setting_in_a_real_process_is_exit_2_without_traceback(data, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "musicgen_edu", "train", str(data), "-o",
                           str(tmp_path / "run"), "--learning-rate", "5"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "learning_rate=5.0 is out of range; allowed: (0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- options from TrainConfig

def test_help_lists_every_trainconfig_field():
    result = invoke("train", "--help")
    assert result.exit_code == 0, result.output
    params = options()
    assert FIELDS.keys() <= params.keys()
    for name in FIELDS:
        flag = params[name].opts[0]
        assert flag in result.output, flag
    assert params["lora"].opts == ["--lora"] and params["lora"].is_flag
    assert params["save_adapter"].opts == ["--save-adapter"] and params["save_adapter"].is_flag
    assert params["sample_captions"].opts == ["--sample-caption"] and params["sample_captions"].multiple


def test_option_defaults_types_and_ranges_are_trainconfigs():
    params = options()
    command = typing.get_type_hints(sys.modules["musicgen_edu.cli.train"].train)
    config = typing.get_type_hints(TrainConfig)
    for name, field in FIELDS.items():
        option, limits = params[name], field.metadata
        if isinstance(field.default, tuple):                     # a repeatable option
            assert tuple(option.default) == field.default, name
            assert typing.get_args(command[name])[0] == typing.get_args(config[name])[0], name
        else:
            assert option.default == field.default, name
            assert command[name] == config[name], name          # an int field parses ints
        if "low" in limits:
            low, high = ("(" if limits["low_open"] else "["), (")" if limits["high_open"] else "]")
            assert f"Allowed: {low}{limits['low']}, {limits['high']}{high}" in option.help, name
        if limits.get("hint"):
            assert limits["hint"] in option.help, name


def test_with_no_options_the_trainer_gets_trainconfig(data, tmp_path, monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, model, data, run_dir, config, **kwargs):
            seen.update(model=model, config=config, **kwargs)
            raise mg.ConfigError("recorded")
    monkeypatch.setattr(sys.modules["musicgen_edu.train"], "Trainer", Recorder)
    result = invoke("train", str(data), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2 and "recorded" in result.output
    assert seen == dict(model="debug", config=TrainConfig(), resume=False, device="auto",
                        progress=True)


def test_a_changed_default_or_range_reaches_the_option(monkeypatch):
    """Nothing is hard-coded: change a field's default and range, rebuild the command file,
    and the option follows."""
    module = sys.modules["musicgen_edu.cli.train"]
    steps = FIELDS["steps"]
    monkeypatch.setattr(steps, "default", 77)
    monkeypatch.setattr(steps, "metadata", types.MappingProxyType(
        {**steps.metadata, "high": 500, "hint": "A new hint."}))
    try:
        rebuilt = importlib.reload(module)
        option = inspect.signature(rebuilt.train).parameters["steps"].default
        assert option.default == 77
        assert "Allowed: [1, 500]. A new hint." in option.help
    finally:
        monkeypatch.undo()
        importlib.reload(module)
