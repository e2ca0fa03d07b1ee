"""Shared fixtures: offline debug models, loaded once per test session."""

import importlib.util
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
# The CPU path timed at first use is saved per machine (backends/cpu.py); the suite keeps its
# own file, shared with the processes it starts (servers, Ray workers, notebook kernels), and
# leaves the user's ~/.cache alone.
os.environ.setdefault("MUSICGEN_CPU_PATHS", os.path.join(
    tempfile.mkdtemp(prefix="musicgen-cpu-paths-"), "cpu_paths.json"))

import pytest
import torch

import musicgen_edu as mg

# audiocraft's demo notebook runs in test_audiocraft_api.py (papermill, with the assets and
# parameters it needs); nbval (`--nbval-lax` over tests/) must not run it a second time bare
collect_ignore_glob = ["notebooks_audiocraft/*.ipynb"]


@pytest.fixture(scope="session")
def gen():
    """A MusicGenerator on the mono debug model, progress bar off."""
    return mg.MusicGenerator("debug", device="cpu", progress=False)


@pytest.fixture(scope="session", params=["debug", "debug-stereo", "debug-melody"])
def any_gen(request):
    """One MusicGenerator per debug variant (mono, stereo, melody)."""
    return mg.MusicGenerator(request.param, device="cpu", progress=False)


SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "musicgen_edu" / "exercises" / "solutions"


def load_solutions(lecture: str):
    """Import ``musicgen_edu/exercises/solutions/<lecture>_solutions.py`` (package data, what
    ``mg.exercises.solution`` shows), e.g. ``"01_first_generation"``."""
    path = SOLUTIONS_DIR / f"{lecture}_solutions.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{lecture}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def failed(check) -> bool:
    """True when an exercise check rejected the answer with a message ("Not yet: ...")."""
    from musicgen_edu.exercises import CheckResult

    assert isinstance(check, CheckResult) and check.message
    return not check.passed and "Not yet" in repr(check)


def passes(check_result) -> None:
    """Assert an exercise check accepted the answer (and prints as "✅ Correct")."""
    assert check_result.passed, check_result.message
    assert repr(check_result).startswith("✅")


def fails(check_result) -> None:
    """Assert an exercise check rejected the answer (and prints as "❌ Not yet")."""
    assert not check_result.passed
    assert repr(check_result).startswith("❌ Not yet")


def assert_steps_agree(reference, backend, tol: float, prompt: str = "ambient pads",
                       steps: int = 3):
    """Feed both backends the same random tokens — a 5-token prefill, then ``steps`` one-token
    steps — and check their logits agree within ``tol`` of the largest (a different summation
    order is all that may differ: packed weights, our CPU kernels, fused products)."""
    model = reference.mg
    cond = reference.encode_text([prompt, None])
    tokens = torch.randint(0, 2048, (2, model.num_codebooks, 6 + steps),
                           generator=torch.Generator().manual_seed(2)).to(model.device)
    s_ref, s_other = reference.start(cond, 6 + steps), backend.start(cond, 6 + steps)
    for cols in [slice(0, 5)] + [slice(t, t + 1) for t in range(5, 5 + steps)]:
        a, b = reference.step(tokens[..., cols], s_ref), backend.step(tokens[..., cols], s_other)
        torch.testing.assert_close(b, a, atol=tol * a.abs().max().item(), rtol=0)
