"""What the tests that need an outside program do without it: skip, saying what is missing,
or fail where CI asked for it (``.ci/run`` installs the programs and sets the variables:
MUSICGEN_REQUIRE_BROWSER, _REDIS, _DEPLOY_TOOLS, _ARM), so CI cannot skip them silently."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing_tool(reason: str, required_by: str) -> NoReturn:
    """Skip with ``reason``, or fail with it when the variable ``required_by`` is ``1``."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason} ({required_by}=1)", pytrace=False)
    pytest.skip(reason)
