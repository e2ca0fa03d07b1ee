"""Write the Colab install cell, and the repository links, of every lecture from one setting.

The lectures run in Colab before musicgen_edu is installed, so the install cell cannot import
the package to ask where it lives; it carries the pip requirement as text. That text is made
here, from ``[tool.musicgen-edu] colab-install`` in ``pyproject.toml`` (``{extras}`` becomes a
lecture's extras, e.g. ``[serve]`` for lecture 09), and ``tests/test_install_cells.py`` fails
when a lecture's cell differs. The same setting gives the repository's web address: a lecture
links the repository files it cites (``bench/``, ``tests/``) there, because a Colab student has
the package but not the checkout, and this script points those links at it. Hosting the course
elsewhere: change that one line, then run::

    python scripts/sync_install_cells.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"09_serving": "[serve]"}   # lecture -> the extras its install needs
MARKER = "# Colab only: install musicgen_edu"
TEMPLATE = '''# Colab only: install musicgen_edu if it is missing; a no-op everywhere else.
# INSTALL comes from pyproject.toml [tool.musicgen-edu] (scripts/sync_install_cells.py).
import importlib.util, subprocess, sys

INSTALL = "{install}"
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB and importlib.util.find_spec("musicgen_edu") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", INSTALL], check=True)'''


def install_requirement(lecture: str) -> str:
    """The pip requirement a lecture's install cell uses, e.g. ``musicgen-edu[serve] @ git+...``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["musicgen-edu"]
    return config["colab-install"].format(extras=EXTRAS.get(lecture, ""))


def repository_url() -> str:
    """The web address of the repository colab-install installs from, e.g.
    ``https://github.com/musicgen-edu/musicgen_edu`` (no ``.git``, no ``@ref``)."""
    url = install_requirement("00_setup").split("git+", 1)[1]
    return re.sub(r"(\.git)?(@[^/]*)?$", "", url)


# A link into a GitHub repository's files: its owner/name part is replaced by repository_url().
REPO_LINK = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/(?=(?:blob|tree)/)")


def install_cell(lecture: str) -> str:
    """The source of the install cell of ``lecture`` (a notebook stem such as ``00_setup``)."""
    return TEMPLATE.format(install=install_requirement(lecture))


def lectures() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def sync(path: Path) -> bool:
    """Rewrite the install cell and repository links of one lecture; True if it changed."""
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"
             and "".join(c["source"]).startswith(MARKER)]
    if len(cells) != 1:
        raise SystemExit(f"{path.name}: expected one install cell starting with {MARKER!r}, "
                         f"found {len(cells)}")
    source = install_cell(path.stem)
    cells[0]["source"] = source.splitlines(keepends=True)
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text_md = REPO_LINK.sub(repository_url() + "/", "".join(cell["source"]))
            cell["source"] = text_md.splitlines(keepends=True)
    new = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    changed = [p.name for p in lectures() if sync(p)]
    print(f"updated {len(changed)} lecture(s): {', '.join(changed) or 'none'}")
    sys.exit(0)
