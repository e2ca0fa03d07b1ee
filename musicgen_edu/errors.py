"""One exception hierarchy for musicgen_edu.

Every error the package raises on purpose is a ``MusicGenEduError``, so homework and notebooks
can catch one class. Messages teach: they name the bad value, the allowed range and what to do
next (STYLE.md rule 9). Subclasses also inherit from the matching built-in exception
(``ValueError``, ``OSError``, ...) so code written against the standard library still works.

    MusicGenEduError
    ├── ConfigError        a setting is out of range            (also ValueError)
    ├── ModelLoadError     weights or config could not be loaded (also OSError)
    ├── AudioError         a file or array is not usable audio   (also ValueError)
    ├── GenerationError    generation was asked something impossible (also RuntimeError)
    ├── DataError          a training dataset cannot be built from what was given (also ValueError)
    └── TrainingError      a training run cannot go on: a non-finite loss or gradient (also RuntimeError)
"""

from __future__ import annotations

import numbers

__all__ = ["MusicGenEduError", "ConfigError", "ModelLoadError", "AudioError", "GenerationError",
           "DataError", "TrainingError", "check_range", "check_int"]


class MusicGenEduError(Exception):
    """Base class of every error raised on purpose by musicgen_edu."""


class ConfigError(MusicGenEduError, ValueError):
    """A setting (generation parameter, device, dtype, CLI option) is not allowed."""


class ModelLoadError(MusicGenEduError, OSError):
    """A model could not be loaded: unknown name, no network, missing or broken files."""


class AudioError(MusicGenEduError, ValueError):
    """An audio file or array cannot be used: missing, empty, unreadable, wrong shape or rate."""


class GenerationError(MusicGenEduError, RuntimeError):
    """Generation was asked for something the model cannot do (e.g. melody on a text-only model)."""


class DataError(MusicGenEduError, ValueError):
    """A training dataset cannot be built: no clips, a caption missing, a clip unreadable,
    silent or shorter than the window. The message names every bad file; clips already
    encoded stay on disk."""


class TrainingError(MusicGenEduError, RuntimeError):
    """A training update produced a non-finite loss or gradient; the weights were not
    changed by it, and the run resumes from its last checkpoint."""


def check_range(name: str, value, low=None, high=None, *, low_open: bool = False,
                high_open: bool = False, hint: str = "") -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high`` (bounds optional, open if asked).

    Only finite numbers pass, also where a bound is ``None``: an infinity is never a setting.

    Args:
        name: the setting's name as the user wrote it, e.g. ``"top_p"``.
        value: the value to check; must be a real number (bool is refused).
        low: lower bound (inclusive unless ``low_open``), or ``None`` for unbounded.
        high: upper bound (inclusive unless ``high_open``), or ``None`` for unbounded.
        low_open: make the lower bound exclusive.
        high_open: make the upper bound exclusive.
        hint: what to do next, appended to the message.
    """
    lo = "-inf" if low is None else f"{low}"
    hi = "inf" if high is None else f"{high}"
    allowed = f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
    tail = f" {hint}" if hint else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in {allowed}, got {value!r} "
                          f"({type(value).__name__}).{tail}")
    if value != value or value in (float("inf"), float("-inf")):   # NaN, infinities
        raise ConfigError(f"{name}={value!r} is not a finite number; allowed: {allowed}.{tail}")
    bad = False
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        raise ConfigError(f"{name}={value!r} is out of range; allowed: {allowed}.{tail}")


def check_int(name: str, value, low=None, high=None, hint: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer in ``[low, high]``, else ConfigError.

    Python and numpy integers pass; floats (even ``2.0``), strings and bools are refused with
    their type named, so a typo is never silently rounded.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        tail = f" {hint}" if hint else ""
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r} "
                          f"({type(value).__name__}).{tail}")
    check_range(name, int(value), low, high, hint=hint)
    return int(value)
