"""The musicgen-edu command line, through typer's test runner."""

import os

import pytest
from typer.testing import CliRunner

import musicgen_edu as mg
from musicgen_edu.cli import app

runner = CliRunner()


def test_generate_writes_a_file(tmp_path):
    out = tmp_path / "clip.wav"
    result = runner.invoke(app, ["generate", "lo-fi piano", "-d", "0.5", "-o", str(out),
                                 "--seed", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert str(out.resolve()) in result.output.replace("\n", "")
    wav, sr = mg.load_audio(out)
    assert sr == 32000 and wav.shape == (1, 16000)
    assert os.listdir(tmp_path) == ["clip.wav"]  # no temp files left behind


def test_same_seed_same_file(tmp_path):
    for name in ("a.wav", "b.wav"):
        runner.invoke(app, ["generate", "x", "-d", "0.3", "-o", str(tmp_path / name),
                            "--seed", "4", "--no-progress"])
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / "clip.wav"
    out.write_bytes(b"precious")
    result = runner.invoke(app, ["generate", "x", "-d", "0.3", "-o", str(out), "--no-progress"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == b"precious"
    result = runner.invoke(app, ["generate", "x", "-d", "0.3", "-o", str(out), "--no-progress",
                                 "--overwrite"])
    assert result.exit_code == 0 and out.read_bytes() != b"precious"


def test_several_prompts_write_numbered_files(tmp_path):
    result = runner.invoke(app, ["generate", "a", "b", "-d", "0.3", "-o", str(tmp_path / "c.flac"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ["c_0.flac", "c_1.flac"]


@pytest.mark.parametrize("args,fragment", [
    (["-d", "-2"], "duration=-2.0"), (["--top-p", "3"], "top_p=3.0"),
    (["--cfg", "0.5"], "guidance_scale=0.5"), (["--model", "nope/not-a-model"], "nope/not-a-model"),
    (["--device", "tpu"], "tpu"),
])
def test_bad_options_print_one_clear_error(tmp_path, args, fragment, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "x.wav"
    result = runner.invoke(app, ["generate", "x", "-o", str(out), "--no-progress", *args])
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_info_lists_versions_and_models():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    for fragment in ("torch", "transformers", "device (auto)", "debug-melody",
                     "facebook/musicgen-small"):
        assert fragment in result.output


def test_prompt_command_reports_and_improves():
    result = runner.invoke(app, ["prompt", "lo-fi hip hop with piano", "--improve",
                                 "--variations", "2"])
    assert result.exit_code == 0, result.output
    assert "improved" in result.output and "lo-fi hip hop with piano" in result.output
    bad = runner.invoke(app, ["prompt", "   "])
    assert bad.exit_code == 1 and "whitespace" in bad.output
    wrong = runner.invoke(app, ["prompt", "jazz", "--variations", "-3"])
    assert wrong.exit_code == 2 and "-3" in wrong.output


def test_batch_command_runs_and_resumes(tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,duration,seed\nlo-fi piano,0.3,1\ndrums,0.3,2\n,0.3,3\n")
    out = tmp_path / "out"
    args = ["batch", str(rows), "-o", str(out), "--no-progress", "--max-batch-size", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output            # one invalid row (empty prompt)
    assert "2 ok" in first.output and "1 invalid" in first.output and "row 2" in first.output
    assert sorted(p.suffix for p in out.iterdir() if p.suffix == ".wav") == [".wav", ".wav"]
    again = runner.invoke(app, [*args, "--resume"])
    assert "2 resumed" in again.output.replace("(", " ").replace(")", " ")
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
