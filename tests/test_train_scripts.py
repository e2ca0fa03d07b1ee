"""The training scripts' flags (scripts/train_codec.py, scripts/train_edu_tiny.py): a bad
value stops a script before any work starts, with the flag, the value and the allowed range
(argparse's exit status 2), and a missing file or folder is named, not a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.train.codec import Codec, CodecConfig

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run_script(name: str, argv: list[str], monkeypatch, capsys) -> tuple[object, str]:
    """Run ``scripts/name`` as ``__main__`` with ``argv``; its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--clips", "0"], "--clips=0 is out of range; allowed: [1, 100000]"),
    (["--batch-size", "0"], "--batch-size=0 is out of range; allowed: [1, 1024]"),
    (["--seconds", "0.5"], "--seconds=0.5 is out of range; allowed: [1.0, 60.0]"),
    (["--clips", "20000", "--seconds", "60"], "--clips x --seconds=1200000.0 is out of range"),
    (["--lr", "0"], "--lr=0.0 is out of range; allowed: (0.0, 1.0]"),
    (["--betas", "0.5", "nan"], "--betas=nan is not a finite number; allowed: [0.0, 1.0)"),
    (["--quantizer-dropout", "1.5"], "--quantizer-dropout=1.5 is out of range; allowed: [0.0, 1.0]"),
    (["--minutes", "inf"], "--minutes=inf is not a finite number"),
])
def test_train_codec_refuses_a_bad_number_before_any_work(argv, says, tmp_path, monkeypatch,
                                                          capsys):
    code, err = run_script("train_codec.py", [*argv, "--run-dir", str(tmp_path / "run")],
                           monkeypatch, capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "run").exists()                       # nothing started


def test_train_codec_init_names_a_folder_without_edu_tiny_json(tmp_path, monkeypatch, capsys):
    code, err = run_script("train_codec.py", ["--init", str(tmp_path), "--run-dir",
                                              str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and f"--init '{tmp_path}': no edu_tiny.json there" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, says", [
    (["lm", "--steps", "-1"], "--steps=-1 is out of range; allowed: [1, 10000000]"),
    (["lm", "--seconds", "31"], "--seconds=31.0 is out of range; allowed: (0.0, 30.0]"),
    (["grade", "--per-attribute", "0"], "--per-attribute=0 is out of range"),
    (["grade", "--seed", "-3"], "--seed=-3 is out of range"),
    (["grade", "--prompt-seconds", "5"], "--prompt-seconds=5.0 is out of range; allowed: "
                                         "(0.0, 5.0)"),
    (["grade", "--prompt-seconds", "nan"], "--prompt-seconds=nan is not a finite number"),
    (["grade", "--prompt-seconds", "one"], "--prompt-seconds: invalid float value: 'one'"),
    (["lm", "--contrast-weight", "-1"], "--contrast-weight=-1.0 is out of range; allowed: "
                                        "[0.0, 100.0]"),
    (["lm", "--contrast-margin", "nan"], "--contrast-margin=nan is not a finite number"),
    (["lm", "--contrast-heads", "0"], "--contrast-heads=0 is out of range; allowed: [1, 1024]"),
    (["lm", "--contrast-seconds", "0.2"], "--contrast-seconds=0.2 is out of range; allowed: "
                                          "[0.5, 30.0]"),
    (["lm", "--contrast-weight", "1", "--contrast-heads", "64", "--contrast-seconds", "5"],
     "--contrast-heads x --contrast-seconds=320.0 is out of range; allowed: [0.0, 256.0]"),
    (["lm", "--contrast-margin", "0.2"], "--contrast-margin only act with --contrast-weight "
                                         "above 0 (now 0)"),
    (["lm", "--contrast-spans", "0"], "--contrast-spans=0 is out of range; allowed: [1, 60]"),
    (["lm", "--contrast-seed", "-1"], "--contrast-seed=-1 is out of range; allowed: [0, "),
    (["lm", "--contrast-seed", "7"], "--contrast-seed only act with --contrast-weight above 0"),
    (["lm", "--contrast-spans", "5"], "--contrast-spans only act with --contrast-weight "
                                      "above 0 (now 0)"),
    (["lm", "--codec", "no/such/best.pt"], "--codec 'no/such/best.pt': no such file or folder"),
    (["lm", "--init", "no/such/folder"], "--init 'no/such/folder': no such file or folder"),
])
def test_train_edu_tiny_refuses_a_bad_flag_before_any_work(argv, says, tmp_path, monkeypatch,
                                                           capsys):
    code, err = run_script("train_edu_tiny.py", [*argv, "--run-dir", str(tmp_path / "run")],
                           monkeypatch, capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "run").exists()


def test_more_contrast_spans_than_a_head_has_frames_stop_lm_before_the_run_folder(
        tmp_path, monkeypatch, capsys):
    """The bound is the model's frame rate (50/s): 0.5 s heads have 25 frames."""
    monkeypatch.chdir(SCRIPTS.parent)
    argv = ["lm", "--init", "musicgen_edu/weights/edu-tiny", "--run-dir", str(tmp_path / "run"),
            "--contrast-weight", "1", "--contrast-seconds", "0.5", "--contrast-spans", "26"]
    code, _ = run_script("train_edu_tiny.py", argv, monkeypatch, capsys)
    assert "--contrast-spans / --contrast-seconds: spans=26: a head of 0.5 s has 25 frames; " \
           "allowed: 1 to 25 spans." == str(code)
    assert not (tmp_path / "run").exists()


def test_calibrate_codec_wants_a_decoder_run_checkpoint(tmp_path, monkeypatch, capsys):
    stray = tmp_path / "best.pt"                    # no init.json beside it: not --init's run
    stray.write_bytes(b"")
    code, _ = run_script("train_edu_tiny.py", ["calibrate", "--codec", str(stray), "--run-dir",
                                               str(tmp_path / "run")], monkeypatch, capsys)
    assert "has no init.json beside it" in str(code) and str(stray) in str(code)
    assert not (tmp_path / "run").exists()



def test_calibrate_codec_wants_the_updates_its_run_started_from(tmp_path, monkeypatch, capsys):
    (tmp_path / "init.json").write_text('{"from": "x", "output_gain": -1.2}')   # older format
    (tmp_path / "best.pt").write_bytes(b"")         # refused before it is read
    code, _ = run_script("train_edu_tiny.py", ["calibrate", "--codec", str(tmp_path / "best.pt"),
                                               "--run-dir", str(tmp_path / "run")],
                         monkeypatch, capsys)
    assert "does not say how many decoder-only updates" in str(code)


def test_calibrate_codec_refuses_the_decoder_already_shipped(tmp_path, monkeypatch, capsys):
    shipped = mg.shipped_model_info("edu-tiny")["codec"]["decoder"]    # its run, step, start
    monkeypatch.chdir(tmp_path)                     # its checkpoint path, relative, made here
    path = Path(shipped["checkpoint"])
    path.parent.mkdir(parents=True)
    (path.parent / "init.json").write_text(json.dumps(shipped["started_from"]))
    config = CodecConfig.from_dict(mg.shipped_model_info("edu-tiny")["codec_config"])
    torch.save({"step": shipped["step"], "model": Codec(config).state_dict(),
                "config": vars(config), "eval": {}}, path)
    code, _ = run_script("train_edu_tiny.py", ["calibrate", "--codec", str(path), "--run-dir",
                                               "run"], monkeypatch, capsys)
    assert f"(step {shipped['step']}) is the decoder already shipped" in str(code)
    assert not Path("run").exists()


def test_a_decoder_run_decodes_all_codebooks_and_keeps_where_it_started(tmp_path, monkeypatch,
                                                                         capsys):
    """``--init``: quantiser dropout 0 unless given; ``init.json`` names the shipped decoder's
    gain and updates, and a rerun that resumes keeps it (its decoder started there)."""
    run = tmp_path / "run"
    argv = ["--init", "musicgen_edu/weights/edu-tiny", "--run-dir", str(run), "--clips", "2",
            "--seconds", "1", "--eval-every", "1"]
    monkeypatch.chdir(SCRIPTS.parent)
    for steps in ("1", "2"):
        monkeypatch.setattr(sys, "argv", ["train_codec.py", *argv, "--total-steps", steps])
        runpy.run_path(str(SCRIPTS / "train_codec.py"), run_name="__main__")
        if steps == "1":
            info = mg.shipped_model_info("edu-tiny")["codec"]
            assert json.loads((run / "init.json").read_text()) == {
                "from": "musicgen_edu/weights/edu-tiny", "output_gain": info["output_gain"],
                "decoder_updates": info["decoder"]["updates"]}
            (run / "init.json").write_text('{"kept": true}')
    assert "resumed at step 1" in capsys.readouterr().out
    assert json.loads((run / "init.json").read_text()) == {"kept": True}
    saved = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert saved["step"] == 2 and saved["config"]["quantizer_dropout"] == 0.0


def test_regrade_ships_the_new_grade_beside_the_same_weights(tmp_path, monkeypatch):
    """``regrade`` on a copy of the shipped folder: edu_tiny.json's grade and EVAL.md are the
    new grade's (graded as musicgen_edu/weights/edu-tiny), every other record and every weight
    stays. The grade stage itself (5 minutes) is replaced by one writing its two files."""
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("train_edu_tiny", SCRIPTS / "train_edu_tiny.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    shipped = tmp_path / "musicgen_edu" / "weights" / "edu-tiny"
    shutil.copytree(SCRIPTS.parent / "musicgen_edu" / "weights" / "edu-tiny", shipped)
    old_info = json.loads((shipped / "edu_tiny.json").read_text())
    old_weights = load_file(shipped / "model.safetensors")

    def grade(args, name=None):
        run = Path(args.run_dir)
        run.mkdir(parents=True)
        (run / "grade.json").write_text(json.dumps({"model": name, "graded": args.model}))
        (run / "grade.md").write_text("the new table\n")

    monkeypatch.setattr(script, "SHIPPED", shipped)
    monkeypatch.setattr(script, "stage_grade", grade)
    script.stage_regrade(argparse.Namespace(run_dir=str(tmp_path / "run")))
    info = json.loads((shipped / "edu_tiny.json").read_text())
    assert info.pop("grade") == {"model": "musicgen_edu/weights/edu-tiny",
                                 "graded": str(shipped)}
    assert info == {k: v for k, v in old_info.items() if k != "grade"}
    assert (shipped / "EVAL.md").read_text() == "the new table\n"
    assert (tmp_path / "run" / "regraded" / "grade.json").is_file()
    new_weights = load_file(shipped / "model.safetensors")
    assert new_weights.keys() == old_weights.keys()
    assert all(torch.equal(new_weights[k], old_weights[k]) for k in old_weights)
