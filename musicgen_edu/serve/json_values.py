"""Values a job stores and shows, as JSON any client can read.

The store refuses what JSON cannot carry (:func:`finite_json`: inf and NaN raise a
``ValueError`` naming the job and the value); what an older version wrote is answered
JSON-safe (:func:`json_safe`: non-finite numbers as ``null``, characters UTF-8 cannot encode,
such as a lone surrogate, as ``?``). Used by jobs.py.
"""

from __future__ import annotations

import json
import math

__all__ = ["valid_text", "json_safe", "finite_json"]


def valid_text(value: str) -> str:
    """``value`` as valid UTF-8 text: what cannot be encoded (a lone surrogate) becomes ``?``."""
    return value.encode("utf-8", "replace").decode("utf-8")


def json_safe(value):
    """``value`` with non-finite floats as None and every string valid UTF-8 (keys too)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _non_finite(value, where: str) -> str | None:
    """Where the first non-finite float in ``value`` is, e.g. ``"params['settings']['top_p'] =
    nan"``; None if there is none."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} = {value!r}"
    if isinstance(value, dict):
        parts = [(f"{where}[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        parts = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    return next((found for w, v in parts if (found := _non_finite(v, w))), None)


def finite_json(value, job_id: str, what: str) -> str:
    """``value`` as JSON text; ValueError naming the job and the value if it is not finite."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        where = _non_finite(value, what)
        if where is None:                  # another reason (a circular reference): as it is
            raise
        raise ValueError(f"job {job_id}: {where} cannot be stored; job {what} must hold "
                         "finite numbers only (JSON has no inf or NaN)") from None
