"""The lowest versions pyproject.toml declares, as pins for the minimum-versions run.

``make test-min`` installs musicgen_edu with these pins into ``.venv-min`` and runs a subset
of the tests there, so a lower bound in ``pyproject.toml`` is one that was tested (Colab and
course servers lag behind the newest releases). The pins are read from ``pyproject.toml``, so
raising a bound there moves the run with it::

    python scripts/min_versions.py            # transformers==5.0 numpy==1.24 ipywidgets==7.7.1 peft==0.13
    python scripts/min_versions.py --check    # in .venv-min: fail unless those are installed
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# what the run pins at its lowest declared version (torch: as installed, a plain lower bound)
PINNED = ("transformers", "numpy", "ipywidgets", "peft")


def lowest() -> dict[str, str]:
    """``{package: lowest declared version}`` for PINNED, from dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *(r for extra in project["optional-dependencies"].values() for r in extra)]
    found = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9.]*)", requirement)
        if match and match[1].lower() in PINNED:
            found[match[1].lower()] = match[2]
    missing = [name for name in PINNED if name not in found]
    if missing:
        sys.exit(f"pyproject.toml declares no 'NAME>=VERSION' bound for {missing}")
    return found


def _same(installed: str, declared: str) -> bool:
    """5.0.0 is 5.0: compare release numbers padded with zeros."""
    a, b = ([int(p) for p in v.split("+")[0].split(".")] for v in (installed, declared))
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) == b + [0] * (width - len(b))


def main(argv: list[str]) -> int:
    pins = lowest()
    if argv[1:] == ["--check"]:
        wrong = {name: metadata.version(name) for name, version in pins.items()
                 if not _same(metadata.version(name), version)}
        for name, version in wrong.items():
            print(f"{name} {version} is installed; the minimum-versions run needs {pins[name]}")
        if not wrong:
            print("lowest declared versions installed: " +
                  ", ".join(f"{n} {v}" for n, v in pins.items()))
        return 1 if wrong else 0
    print(" ".join(f"{name}=={version}" for name, version in pins.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
