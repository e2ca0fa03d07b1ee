"""What every exercise check is made of: a :class:`CheckResult` and the helpers that read an answer.

Each lecture's module (``lecture00.py`` ...) builds its ``check_*`` functions from these;
``musicgen_edu.exercises`` gathers them all under one name space (``mg.exercises``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckResult", "result", "not_yet", "model_of", "as_number"]


@dataclass
class CheckResult:
    """Outcome of one exercise check."""

    passed: bool        # True when the answer is right
    message: str        # what was checked, and a hint when it is not right yet

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'✅ Correct' if self.passed else '❌ Not yet'}: {self.message}"

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.passed else "#cf222e"
        return f'<span style="color:{color}">{html.escape(repr(self))}</span>'


def result(passed: bool, success: str, hint: str) -> CheckResult:
    """Build a CheckResult: ``success`` if right, else ``hint`` (what to look at next)."""
    return CheckResult(bool(passed), success if passed else hint)


def not_yet(what: str) -> CheckResult:
    """The answer for a cell still holding ``None``: what to write there instead."""
    return result(False, "", f"replace None with {what}.")


def model_of(model):
    """A :class:`~musicgen_edu.models.MusicGenModel`, also when a MusicGenerator is passed."""
    from ..models import MusicGenModel

    return model if isinstance(model, MusicGenModel) else model.model


def as_number(answer) -> float | None:
    """The answer as a float, or None when it is not one number (None, text, lists, bools);
    a one-element tensor counts as its number."""
    import numbers

    import torch

    if isinstance(answer, numbers.Real) and not isinstance(answer, bool):
        return float(answer)
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        return float(answer)
    return None
