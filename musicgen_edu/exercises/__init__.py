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

# Every lecture's checks, gathered into one name space (a star import per module; each module
# lists its checks in its __all__). checks.py holds what they are made of.
from .checks import *
from .checks import __all__ as _checks
from .lecture00 import *
from .lecture00 import __all__ as _lecture00
from .lecture01 import *
from .lecture01 import __all__ as _lecture01
from .lecture02 import *
from .lecture02 import __all__ as _lecture02
from .lecture03 import *
from .lecture03 import __all__ as _lecture03
from .lecture04 import *
from .lecture04 import __all__ as _lecture04
from .lecture05 import *
from .lecture05 import __all__ as _lecture05
from .lecture06 import *
from .lecture06 import __all__ as _lecture06
from .lecture07 import *
from .lecture07 import __all__ as _lecture07
from .lecture08 import *
from .lecture08 import __all__ as _lecture08
from .lecture09 import *
from .lecture09 import __all__ as _lecture09
from .materials import *
from .materials import __all__ as _materials

__all__ = [*_checks, *_lecture00, *_lecture01, *_lecture02, *_lecture03, *_lecture04,
           *_lecture05, *_lecture06, *_lecture07, *_lecture08, *_lecture09, *_materials]
