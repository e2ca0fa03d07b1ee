"""Shared fixtures: offline debug models, loaded once per test session."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

import musicgen_edu as mg  # noqa: E402


@pytest.fixture(scope="session")
def gen():
    """A MusicGenerator on the mono debug model, progress bar off."""
    return mg.MusicGenerator("debug", device="cpu", progress=False)


@pytest.fixture(scope="session", params=["debug", "debug-stereo", "debug-melody"])
def any_gen(request):
    """One MusicGenerator per debug variant (mono, stereo, melody)."""
    return mg.MusicGenerator(request.param, device="cpu", progress=False)
