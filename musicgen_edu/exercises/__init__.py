"""Checks for the lectures' exercises: each ``check_*`` says right or wrong, with a hint.

A check returns a :class:`CheckResult`, which prints as one line in a notebook (and is
truthy when the answer is right), so an exercise cell ends with e.g.
``mg.exercises.check_frames(model, 8.0, my_answer)``. The solutions ship with the package
(``musicgen_edu/exercises/solutions/``, shown by ``mg.exercises.solution(5)``, also on Colab);
``tests/test_exercises_lectureNN.py`` runs them so every check is proven to accept a right
answer and to reject a wrong one. ``materials.py`` also gives a lecture's notebook as a file
where the repository is not on disk (``mg.exercises.lecture_notebook``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckResult", "result", "not_yet", "model_of", "as_number"]  # + every
# lecture's check_* (added below)


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


# Each lecture's checks (imported last: they use ``result`` from this module).
from .lecture00 import *  # noqa: E402, F403
from .lecture00 import __all__ as _l00  # noqa: E402
from .lecture01 import *  # noqa: E402, F403
from .lecture01 import __all__ as _l01  # noqa: E402
from .lecture02 import *  # noqa: E402, F403
from .lecture02 import __all__ as _l02  # noqa: E402
from .lecture03 import *  # noqa: E402, F403
from .lecture03 import __all__ as _l03  # noqa: E402
from .lecture04 import *  # noqa: E402, F403
from .lecture04 import __all__ as _l04  # noqa: E402
from .lecture05 import *  # noqa: E402, F403
from .lecture05 import __all__ as _l05  # noqa: E402
from .lecture06 import *  # noqa: E402, F403
from .lecture06 import __all__ as _l06  # noqa: E402
from .lecture07 import *  # noqa: E402, F403
from .lecture07 import __all__ as _l07  # noqa: E402
from .lecture08 import *  # noqa: E402, F403
from .lecture08 import __all__ as _l08  # noqa: E402
from .lecture09 import *  # noqa: E402, F403
from .lecture09 import __all__ as _l09  # noqa: E402
from .materials import *  # noqa: E402, F403
from .materials import __all__ as _materials  # noqa: E402

__all__ += [*_l00, *_l01, *_l02, *_l03, *_l04, *_l05, *_l06, *_l07, *_l08, *_l09, *_materials]
