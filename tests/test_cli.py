"""The musicgen-edu command line: each command through typer's test runner and as a process."""

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import musicgen_edu as mg
from musicgen_edu.cli import app

runner = CliRunner()


def test_generate_writes_a_file_with_the_shipped_default_model(tmp_path):
    out = tmp_path / "clip.wav"
    result = runner.invoke(app, ["generate", "fast piano chords in C major", "-d", "0.5", "-o",
                                 str(out), "--seed", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert str(out.resolve()) in result.output.replace("\n", "")
    wav, sr = mg.load_audio(out)
    assert sr == 16000 and wav.shape == (1, 8000)           # edu-tiny: 16 kHz
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


def test_generate_defaults_and_ranges_are_generation_configs(tmp_path, monkeypatch):
    fields = {f.name: f for f in dataclasses.fields(mg.GenerationConfig)}
    options = {p.name: p for p in typer.main.get_command(app).commands["generate"].params}
    shared = fields.keys() & options.keys()
    assert shared == {"duration", "seed", "top_k", "top_p", "temperature", "guidance_scale"}
    for name in shared:
        limits = fields[name].metadata
        assert options[name].default == fields[name].default, name
        assert f"{limits['low']}, {limits['high']}]" in options[name].help, name
    seen = {}

    def record(self, prompts, **kwargs):  # what generate() receives when no option is given
        seen.update(kwargs)
        raise mg.ConfigError("recorded")
    monkeypatch.setattr(mg.MusicGenerator, "generate", record)
    result = runner.invoke(app, ["generate", "x", "-o", str(tmp_path / "x.wav"), "--no-progress"])
    assert result.exit_code == 2 and "recorded" in result.output
    assert {k: seen[k] for k in shared} == {k: fields[k].default for k in shared}


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


# ---------------------------------------------------------------- JSON, exit codes, help

def test_generate_json_is_one_object_for_scripts(tmp_path):
    result = runner.invoke(app, ["generate", "a", "b", "-d", "0.3", "-o", str(tmp_path / "c.wav"),
                                 "--seed", "2", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["files"] == [str((tmp_path / f"c_{i}.wav").resolve()) for i in (0, 1)]
    assert data["seeds"] == [2, 3] and data["prompts"] == ["a", "b"]
    assert data["sample_rate"] == 16000 and data["model"] == "edu-tiny"   # the default
    assert data["timings"]["steps"] > 0


def test_info_json_lists_versions_device_and_models():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["versions"]["musicgen_edu"] == mg.__version__ and data["device"] == "cpu"
    names = [m["name"] for m in data["models"]]
    assert "debug-melody" in names and "facebook/musicgen-small" in names


def test_ctrl_c_exits_130_not_1(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(mg.MusicGenerator, "generate", interrupted)
    result = runner.invoke(app, ["generate", "x", "-o", str(tmp_path / "x.wav"), "--no-progress"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not (tmp_path / "x.wav").exists()


def test_ctrl_c_in_a_real_process_exits_130(tmp_path):
    """SIGINT from the shell while generating: the process ends with 130 (128 + SIGINT)."""
    script = textwrap.dedent(f"""
        import signal, sys, time
        # as from an interactive shell: a test run started in the background inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import musicgen_edu as mg
        from musicgen_edu.cli import main
        def slow(*args, **kwargs):
            print("ready", flush=True)
            time.sleep(60)
        mg.MusicGenerator.generate = slow
        sys.argv = ["musicgen-edu", "generate", "x", "-o", {str(tmp_path / "x.wav")!r}]
        main()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, proc.stderr.read()
    finally:
        proc.kill()


def _commands():
    """Every command as its argv prefix: ['generate'], ..., ['config', 'show']."""
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):            # a group such as `config`
            yield from (([name, sub], subcmd) for sub, subcmd in cmd.commands.items())
        else:
            yield [name], cmd


COMMANDS = list(_commands())


@pytest.mark.parametrize("argv,cmd", COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_every_help_shows_an_example_and_keeps_its_brackets(argv, cmd):
    result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Example: musicgen-edu " + " ".join(argv) in text
    # rich markup must not eat "[ray]", "[serve]", ...: every bracket in a help text shows
    helps = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    for word in {w for h in helps for w in re.findall(r"\[(\w+)\]", h.replace("\\[", "["))}:
        assert f"[{word}]" in text, f"'[{word}]' vanished from `{' '.join(argv)} --help`"


def test_batch_help_names_the_ray_extra():
    result = runner.invoke(app, ["batch", "--help"], env={"COLUMNS": "250"})
    assert "musicgen-edu[ray]" in result.output


# ---------------------------------------------------------------- evaluate, profile

@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two generated clips and a reference folder of two more."""
    root = tmp_path_factory.mktemp("eval")
    gen = mg.MusicGenerator("debug", progress=False)
    gen.generate(["lo-fi piano", "drums"], duration=0.5, seed=1).save(root / "clip.wav")
    (root / "ref").mkdir()
    gen.generate(["strings", "bass"], duration=0.5, seed=5).save(root / "ref" / "r.wav")
    return root


def test_evaluate_describes_scores_and_compares_sets(clips):
    files = [str(clips / "clip_0.wav"), str(clips / "clip_1.wav")]
    result = runner.invoke(app, ["evaluate", *files, "--prompt", "lo-fi piano", "--prompt",
                                 "drums", "--reference", str(clips / "ref"), "--clap", "random",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["file"] for r in rows] == files and [r["prompt"] for r in rows] == ["lo-fi piano",
                                                                                  "drums"]
    want = mg.describe(*mg.load_audio(files[0]))
    assert rows[0]["loudness_lufs"] == pytest.approx(want["loudness_lufs"])
    assert rows[0]["key"] == want["key"] and rows[0]["tempo_bpm"] == pytest.approx(want["tempo_bpm"])
    assert all(r["clap_meaningful"] is False for r in rows)
    assert -1 <= rows[0]["clap_score"] <= 1
    assert rows[0]["fad"] == rows[1]["fad"] >= 0                   # one number for the set
    assert "MEANINGLESS" in result.stderr                          # the random CLAP is flagged


def test_evaluate_prompts_csv_and_bad_input(clips, tmp_path):
    table = tmp_path / "p.csv"
    table.write_text("file,prompt\nclip_0.wav,piano\nclip_1.wav,drums\n")
    files = [str(clips / "clip_0.wav"), str(clips / "clip_1.wav")]
    ok = runner.invoke(app, ["evaluate", *files, "--prompts", str(table), "--clap", "random",
                             "--format", "csv"])
    assert ok.exit_code == 0, ok.output
    assert list(pd.read_csv(io.StringIO(ok.stdout)).prompt) == ["piano", "drums"]
    few = runner.invoke(app, ["evaluate", files[0], "--reference", str(clips / "ref"),
                              "--clap", "random"])
    assert few.exit_code == 2 and "at least 2" in few.output
    many = runner.invoke(app, ["evaluate", *files, "--prompt", "a", "--prompt", "b", "--prompt",
                               "c", "--clap", "random"])
    assert many.exit_code == 2 and "3 prompts for 2 files" in many.output
    fmt = runner.invoke(app, ["evaluate", files[0], "--format", "xml"])
    assert fmt.exit_code == 2 and "'xml'" in fmt.output


def test_profile_summarises_and_bounds(monkeypatch):
    result = runner.invoke(app, ["profile", "--durations", "0.2", "--batch-sizes", "1,2",
                                 "--repeats", "1", "--warmup", "0", "--bound",
                                 "--bandwidth-mb", "4", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["runs"] == 1 for r in rows)
    assert all(r["backend"] == "native" and r["steps"] > 0 for r in rows)
    for r in rows:
        assert r["efficiency"] == pytest.approx(r["steady_steps_per_s"] / r["bound_steps_per_s"])
        assert r["bytes_per_step"] > 0 and r["bandwidth_gbs"] > 0
    bad = runner.invoke(app, ["profile", "--durations", "1,x"])
    assert bad.exit_code == 2 and "'x'" in bad.output


# ---------------------------------------------------------------- each command as a process

@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    path.write_text("prompt,duration,seed,notes\npiano,0.2,1,hi\n")
    return path


SUBPROCESS = {
    "generate": (["generate", "x", "-d", "0.2", "--no-progress", "--json", "-o", "{tmp}/g.wav"],
                 0, '"files"'),
    "info": (["info", "--json"], 0, '"versions"'),
    "prompt": (["prompt", "calm piano with soft pads"], 0, "facets:"),
    "batch": (["batch", "{rows}", "-o", "{tmp}/b", "--no-progress"], 0, "1 ok"),
    "evaluate": (["evaluate", "{clips}/clip_0.wav", "--format", "csv"], 0, "loudness_lufs"),
    "profile": (["profile", "--durations", "0.2", "--batch-sizes", "1", "--repeats", "1",
                 "--format", "csv"], 0, "steady_steps_per_s"),
    "config show": (["config", "show", "--json"], 0, '"api_port"'),
    "bad option": (["generate", "x", "--top-p", "3", "-o", "{tmp}/n.wav"], 2, "top_p=3.0"),
}


@pytest.mark.parametrize("name", list(SUBPROCESS))
def test_each_command_runs_as_python_m_musicgen_edu(name, tmp_path, rows_csv, clips):
    argv, code, needle = SUBPROCESS[name]
    argv = [a.format(tmp=tmp_path, rows=rows_csv, clips=clips) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "musicgen_edu", *argv], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
