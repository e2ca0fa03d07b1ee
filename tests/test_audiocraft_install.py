"""``musicgen-edu install-audiocraft`` (audiocraft_install.py), without the network.

The real install runs in ``make test-audiocraft`` (its own venv, then the audiocraft backend's
tests). Here: the steps it would take, that torch is never among them and is held by a
constraint, the refusal without torch, and the torchaudio step on a stand-in package whose
native library cannot load (as the registry's CUDA torchaudio beside a CPU torch).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from musicgen_edu.audiocraft_install import (
    DISABLED,
    InstallError,
    InstallReport,
    _disable_torchaudio_native,
    install_audiocraft,
)
from musicgen_edu.cli import app


def test_a_dry_run_lists_the_steps_and_never_touches_torch():
    report = install_audiocraft(dry_run=True)
    text = str(report)
    assert report.torch_before and report.torch_after == report.torch_before
    assert "--no-deps audiocraft==1.3.0" in text
    runtime = next(step for step in report.steps if step.startswith("its runtime packages"))
    assert "-c " in runtime and "keep-torch.txt" in runtime          # torch held by a constraint
    assert not any(" torch " in f" {step} " or "torch==" in step for step in report.steps)


def test_the_command_prints_its_report():
    result = CliRunner().invoke(app, ["install-audiocraft", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "audiocraft without its pins" in result.output and "unchanged: True" in result.output


@pytest.fixture
def bare_python(tmp_path):
    """A Python with no torch: a venv without pip (made in a second)."""
    venv.create(tmp_path / "bare", with_pip=False)
    return str(tmp_path / "bare" / "bin" / "python")


def test_no_torch_is_refused_before_anything_is_installed(bare_python):
    with pytest.raises(InstallError, match="no torch in .* install torch first"):
        install_audiocraft(bare_python)


def test_a_torchaudio_whose_native_library_cannot_load_keeps_its_python_parts(bare_python):
    """A stand-in torchaudio loading its library the way torchaudio's ``_load_lib`` does:
    a ``.so`` present but unloadable raises; none present -> Python parts only."""
    site = subprocess.run([bare_python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    package = Path(site.stdout.strip()) / "torchaudio"
    (package / "lib").mkdir(parents=True)
    (package / "lib" / "_torchaudio.so").write_bytes(b"not a library")
    (package / "__init__.py").write_text(
        "import pathlib\n"
        "if list((pathlib.Path(__file__).parent / 'lib').glob('*.so')):\n"
        "    raise OSError('Could not load this library: _torchaudio.so: libc10_cuda.so: '\n"
        "                  'cannot open shared object file')\n")
    report = InstallReport(bare_python, "2.x")
    _disable_torchaudio_native(bare_python, report, dry_run=False)
    assert (package / "lib" / DISABLED / "_torchaudio.so").is_file()
    assert not list((package / "lib").glob("*.so"))
    assert subprocess.run([bare_python, "-c", "import torchaudio"]).returncode == 0
    assert "libc10_cuda.so" in report.steps[-1] and "pure-Python" in report.steps[-1]
    _disable_torchaudio_native(bare_python, report, dry_run=False)    # idempotent: it loads now
    assert report.steps[-1].endswith("kept")

