"""The training scripts' flags (scripts/train_codec.py, scripts/train_edu_tiny.py): a bad
value stops a script before any work starts, with the flag, the value and the allowed range
(argparse's exit status 2), and a missing file or folder is named, not a traceback."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run_script(name: str, argv: list[str], monkeypatch, capsys) -> tuple[object, str]:
    """Run ``scripts/name`` as ``__main__`` with ``argv``; its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(SCRIPTS / name), run_name="__main__")
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--clips", "0"], "--clips=0 is out of range; allowed: [1, 100000]"),
    (["--batch-size", "2.5"], "argument --batch-size: invalid int value: '2.5'"),
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
    (["lm", "--codec", "no/such/best.pt"], "--codec 'no/such/best.pt': no such file or folder"),
    (["lm", "--init", "no/such/folder"], "--init 'no/such/folder': no such file or folder"),
])
def test_train_edu_tiny_refuses_a_bad_flag_before_any_work(argv, says, tmp_path, monkeypatch,
                                                           capsys):
    code, err = run_script("train_edu_tiny.py", [*argv, "--run-dir", str(tmp_path / "run")],
                           monkeypatch, capsys)
    assert code == 2 and says in err
    assert not (tmp_path / "run").exists()


def test_calibrate_codec_wants_a_decoder_run_checkpoint(tmp_path, monkeypatch, capsys):
    stray = tmp_path / "best.pt"                    # no init.json beside it: not --init's run
    stray.write_bytes(b"")
    code, _ = run_script("train_edu_tiny.py", ["calibrate", "--codec", str(stray), "--run-dir",
                                               str(tmp_path / "run")], monkeypatch, capsys)
    assert "has no init.json beside it" in str(code) and str(stray) in str(code)
    assert not (tmp_path / "run").exists()


def test_calibrate_codec_refuses_a_run_from_another_shipped_decoder(tmp_path, monkeypatch,
                                                                     capsys):
    (tmp_path / "init.json").write_text('{"from": "elsewhere", "output_gain": 1.0}')
    (tmp_path / "best.pt").write_bytes(b"")         # refused before it is read
    code, _ = run_script("train_edu_tiny.py", ["calibrate", "--codec", str(tmp_path / "best.pt"),
                                               "--run-dir", str(tmp_path / "run")],
                         monkeypatch, capsys)
    assert "started from a decoder with output gain 1.0000, the shipped one has" in str(code)
    assert not (tmp_path / "run").exists()
