"""The error hierarchy and check_range, the validator every setting goes through."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from musicgen_edu import AudioError, ConfigError, GenerationError, ModelLoadError, MusicGenEduError
from musicgen_edu.errors import check_range


def test_hierarchy_also_subclasses_builtins():
    assert issubclass(ConfigError, ValueError) and issubclass(AudioError, ValueError)
    assert issubclass(ModelLoadError, OSError) and issubclass(GenerationError, RuntimeError)
    for cls in (ConfigError, AudioError, ModelLoadError, GenerationError):
        assert issubclass(cls, MusicGenEduError)


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 0), st.floats(0.5, 10))
def test_check_range_accepts_exactly_the_closed_interval(value, low, high):
    inside = low <= value <= high
    if inside:
        check_range("x", value, low, high)
    else:
        with pytest.raises(ConfigError) as err:
            check_range("x", value, low, high)
        assert f"x={value!r}" in str(err.value) and f"[{low}, {high}]" in str(err.value)


@given(st.floats(0, 1))
def test_open_bounds_exclude_the_end(value):
    if 0 < value < 1:
        check_range("p", value, 0, 1, low_open=True, high_open=True)
    else:
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            check_range("p", value, 0, 1, low_open=True, high_open=True)


@pytest.mark.parametrize("bad", ["3", None, True, [1]])
def test_non_numbers_are_refused_with_their_type(bad):
    with pytest.raises(ConfigError, match=type(bad).__name__):
        check_range("duration", bad, 0, 30, hint="Seconds.")


def test_nan_is_out_of_any_range():
    with pytest.raises(ConfigError, match="nan"):
        check_range("t", math.nan)


@pytest.mark.parametrize("value", [math.inf, -math.inf, float("1e309")])
def test_infinities_are_refused_even_without_a_bound(value):
    """An unbounded side (high=None) must not let an infinity through: it would reach the
    worker (OverflowError) and the job store (not JSON)."""
    with pytest.raises(ConfigError, match="is not a finite number; allowed: \\(0, inf\\]"):
        check_range("extend_stride", value, 0, None, low_open=True)


@pytest.mark.parametrize("bad", [2.0, "3", True, None])
def test_check_int_refuses_non_integers_naming_the_type(bad):
    from musicgen_edu.errors import check_int

    message = rf"n must be an integer in \[1, 9\], got .*\({type(bad).__name__}\)"
    with pytest.raises(ConfigError, match=message):
        check_int("n", bad, 1, 9)


def test_check_int_accepts_numpy_ints_and_checks_the_range():
    import numpy as np

    from musicgen_edu.errors import check_int

    assert check_int("n", np.int64(4), 1, 9) == 4 and type(check_int("n", np.int64(4), 1)) is int
    with pytest.raises(ConfigError, match=r"n=10 is out of range; allowed: \[1, 9\]"):
        check_int("n", 10, 1, 9)
