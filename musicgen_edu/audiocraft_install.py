"""Install audiocraft 1.3.0 next to the torch you already have (``musicgen-edu install-audiocraft``).

audiocraft 1.3.0 pins ``torch==2.1.0``, ``torchaudio<2.1.2``, ``av==11.0.0`` and
``xformers<0.0.23``, none of which have wheels for Python 3.11+ with today's torch: ``pip install
audiocraft`` downgrades torch or fails (audiocraft issues #105, #179, #317, #362, #423, #463,
#498). Its code runs on current torch; only the pins are old. So this module installs it the
way its code needs, never touching torch:

1. ``audiocraft==1.3.0`` with ``--no-deps`` (its pins are not applied);
2. :data:`RUNTIME` — the packages its modules import, each with a modern wheel — with a
   constraints file holding the installed ``torch`` version, so pip can never replace it;
3. ``torchaudio`` and ``xformers``, unless they already import (Colab's torchaudio matches its
   torch: kept), with ``--no-deps`` (both declare an exact torch). audiocraft
   uses only torchaudio's pure-Python parts (``Spectrogram``, ``loudness``, ``resample``) and
   only two names of xformers (``ops.memory_efficient_attention``, ``ops.LowerTriangularMask``:
   imported at module top; with its default ``'torch'`` attention backend neither is called).
   When torchaudio's native library cannot load beside this torch (the registry's wheel is a
   CUDA build; on a CPU torch it fails with ``libc10_cuda.so: cannot open shared object
   file``), its ``.so`` files are moved into ``torchaudio/lib/disabled-by-musicgen-edu/``:
   torchaudio then imports its Python parts only, as its own loader allows for deployments
   without the libraries (``torchaudio/_extension/utils.py::_load_lib``: no file -> False);
4. a check that ``from audiocraft.models import MusicGen`` imports and torch is unchanged.

What it does is returned as a list of steps and printed by the command, and it is idempotent.
Nothing here is a stand-in: every module audiocraft imports is the real package.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MusicGenEduError

__all__ = ["AUDIOCRAFT_VERSION", "RUNTIME", "NO_DEPS", "InstallReport", "install_audiocraft"]

AUDIOCRAFT_VERSION = "1.3.0"
# what audiocraft's modules import (models, modules, data, solvers' shared utils), modern wheels
RUNTIME = ("einops", "omegaconf", "hydra-core", "julius", "num2words", "sentencepiece", "flashy",
           "transformers>=4.31", "huggingface_hub", "av", "soundfile", "torchmetrics", "spacy",
           "librosa")
NO_DEPS = ("torchaudio", "xformers")     # each declares an exact torch: installed without deps
DISABLED = "disabled-by-musicgen-edu"    # where torchaudio's unloadable native libraries go


class InstallError(MusicGenEduError):
    """A step of the audiocraft install failed (the message names it and pip's last lines)."""


@dataclass
class InstallReport:
    """What :func:`install_audiocraft` did, step by step (``musicgen-edu install-audiocraft``)."""

    python: str                              # the interpreter installed into
    torch_before: str                        # torch's version before ...
    torch_after: str = ""                    # ... and after (always the same)
    steps: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join([f"python: {self.python}", f"torch: {self.torch_before} (unchanged: "
                          f"{self.torch_after == self.torch_before})", *self.steps])


def _run(python: str, args: list[str], what: str, dry_run: bool, report: InstallReport) -> str:
    command = [python, *args]
    report.steps.append(f"{what}: {' '.join(command[1:])}")
    if dry_run:
        return ""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise InstallError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _version(python: str, package: str) -> str:
    """``package``'s installed version in ``python``'s environment ('' when missing)."""
    if python == sys.executable:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return ""
    done = subprocess.run([python, "-c", "import importlib.metadata as m, sys\ntry: print("
                           f"m.version({package!r}))\nexcept m.PackageNotFoundError: print()"],
                          capture_output=True, text=True)
    return done.stdout.strip()


def _imports(python: str, module: str) -> bool:
    """Whether ``import module`` works in ``python``'s environment (a subprocess: a failed
    native load must not break this process)."""
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _disable_torchaudio_native(python: str, report: InstallReport, dry_run: bool) -> None:
    """Move torchaudio's native libraries aside when they cannot load beside this torch."""
    probe = subprocess.run([python, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode == 0:
        report.steps.append("torchaudio: its native library loads beside this torch; kept")
        return
    if "Could not load this library" not in probe.stderr:
        raise InstallError(f"torchaudio does not import: {probe.stderr.strip()[-600:]}")
    where = subprocess.run([python, "-c", "import importlib.util as u; print(u.find_spec("
                            "'torchaudio').submodule_search_locations[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    lib = Path(where) / "lib"
    cause = [line for line in probe.stderr.splitlines() if "cannot open" in line or
             "undefined symbol" in line][-1:] or ["(see pip's log)"]
    report.steps.append(f"torchaudio: its native library does not load beside this torch "
                        f"({cause[0].strip()}); moving {lib}/*.so to {lib / DISABLED}/ so it "
                        "imports its pure-Python parts")
    if dry_run:
        return
    (lib / DISABLED).mkdir(exist_ok=True)
    for library in lib.glob("*.so"):
        shutil.move(str(library), lib / DISABLED / library.name)


def install_audiocraft(python: str | None = None, dry_run: bool = False) -> InstallReport:
    """Install audiocraft 1.3.0 into ``python``'s environment (default: this one), keeping its
    torch (see the module docstring). ``dry_run``: report the steps, change nothing.

    Raises:
        InstallError: torch is missing, a pip step failed, or audiocraft does not import.
    """
    python = python or sys.executable
    torch_version = _version(python, "torch")
    if not torch_version:
        raise InstallError(f"no torch in {python}'s environment: install torch first (pip "
                           "install torch); this command never installs or replaces it.")
    report = InstallReport(python, torch_version)
    pip = ["-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "keep-torch.txt"
        constraints.write_text(f"torch=={torch_version}\n")
        _run(python, [*pip, "--no-deps", f"audiocraft=={AUDIOCRAFT_VERSION}"],
             "audiocraft without its pins", dry_run, report)
        _run(python, [*pip, "-c", str(constraints), *RUNTIME],
             f"its runtime packages (torch held at {torch_version})", dry_run, report)
        missing = [name for name in NO_DEPS if not _imports(python, name)]
        for name in sorted(set(NO_DEPS) - set(missing)):   # Colab's own torchaudio: kept
            report.steps.append(f"{name}: already imports here; kept as it is")
        if missing:
            _run(python, [*pip, "--no-deps", *missing], f"{' and '.join(missing)} without deps",
                 dry_run, report)
    if not dry_run and "torchaudio" in missing:
        _disable_torchaudio_native(python, report, dry_run)
    check = "from audiocraft.models import MusicGen; import audiocraft; print(audiocraft.__version__)"
    out = _run(python, ["-c", check], "check: audiocraft imports", dry_run, report)
    report.torch_after = torch_version if dry_run else _version(python, "torch")
    if report.torch_after != torch_version:
        raise InstallError(f"torch changed from {torch_version} to {report.torch_after}: a "
                           "package forced it; reinstall torch and report this.")
    if not dry_run:
        report.steps.append(f"audiocraft {out.strip()} imports; torch {report.torch_after} "
                            "untouched")
    return report
