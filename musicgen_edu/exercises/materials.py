"""Course material a lecture needs besides the package's code: solutions and lecture notebooks.

Both must reach a student who installed the package with the lecture's install cell (Colab:
``pip install "musicgen-edu @ git+https://github.com/..."``), where the repository's
``notebooks/`` folder is not on disk. The path of one request::

    mg.exercises.solution(5)
      -> musicgen_edu/exercises/solutions/05_latency_solutions.py   package data: in every install
    mg.exercises.lecture_notebook("06_experiments", INSTALL)
      -> <repository>/notebooks/06_experiments.ipynb                 a source checkout: that file
      -> ./06_experiments.ipynb                                      already fetched: that file
      -> raw URL of the install's git repository, at the installed commit (or the ref in
         INSTALL, else HEAD), saved to ./06_experiments.ipynb        Colab

``INSTALL`` is the requirement the lecture's first cell defines (written from
``[tool.musicgen-edu] colab-install`` in ``pyproject.toml`` by ``scripts/sync_install_cells.py``),
so hosting the course elsewhere changes that one setting, not this code.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError

__all__ = ["Solution", "lecture_notebook", "lecture_url", "solution", "solution_files"]

_STEM = re.compile(r"\d\d_[a-z0-9_]+")       # a lecture's file stem, e.g. "06_experiments"
# "musicgen-edu[serve] @ git+https://github.com/owner/repo.git@ref" -> owner, repo, ref
_GITHUB = re.compile(r"git\+https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(?:\.git)?"
                     r"(?:@(?P<ref>[^\s#]+))?(?:#.*)?$")
_RAW = "https://raw.githubusercontent.com/{owner}/{repo}/{ref}/notebooks/{stem}.ipynb"
CHECKOUT_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"  # absent in a pip install


def solution_files() -> dict[str, Path]:
    """The solution files shipped with the package, by lecture stem (``"05_latency"``)."""
    folder = resources.files(__package__) / "solutions"
    return {p.name[:-len("_solutions.py")]: Path(str(p)) for p in sorted(
        folder.iterdir(), key=lambda p: p.name) if p.name.endswith("_solutions.py")}


@dataclass(frozen=True)
class Solution:
    """A lecture's solutions as text: prints as the code, renders highlighted in a notebook."""

    lecture: str        # the lecture's file stem, e.g. "05_latency"
    path: Path          # the file inside the installed package
    text: str           # its source code

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        return f"Solutions of lecture `{self.lecture}` (`{self.path.name}`):\n\n```python\n" \
               f"{self.text.rstrip()}\n```"


def solution(lecture: int | str) -> Solution:
    """The solutions to a lecture's checked exercises (try the exercise first).

    They ship inside the package (``musicgen_edu/exercises/solutions/``), so this works
    wherever the package is installed, Colab included. Each ``solve_*`` function returns an
    answer the lecture's ``mg.exercises.check_*`` accepts. Example::

        mg.exercises.solution(5)            # or solution("05") or solution("05_latency")

    Args:
        lecture: the lecture's number (0-99), its two digits, or its file stem.

    Returns:
        A :class:`Solution`; ``print(...)`` it, or let the cell show it.
    """
    files = solution_files()
    key = _lecture_key(lecture)
    found = [stem for stem in files if stem == key or stem[:2] == key]
    if len(found) != 1:
        raise ConfigError(f"no solutions for lecture {lecture!r}; lectures with checked "
                          f"exercises: {', '.join(s[:2] for s in files)} (a number such as 5, "
                          "or a file stem such as '05_latency').")
    path = files[found[0]]
    return Solution(found[0], path, path.read_text(encoding="utf-8"))


def _lecture_key(lecture) -> str:
    """5 -> "05", "5" -> "05", "05_latency" stays; anything else names what is allowed."""
    if isinstance(lecture, int) and not isinstance(lecture, bool) and 0 <= lecture <= 99:
        return f"{lecture:02d}"
    if isinstance(lecture, str) and re.fullmatch(r"\d{1,2}", lecture.strip()):
        return f"{int(lecture):02d}"
    if isinstance(lecture, str) and _STEM.fullmatch(lecture.removesuffix(".ipynb")):
        return lecture.removesuffix(".ipynb")
    raise ConfigError(f"lecture={lecture!r}; pass its number 0-99 (e.g. 5) or its file stem "
                      "(e.g. '05_latency').")


# ------------------------------------------------------------------ lecture notebooks

def _installed_commit(owner: str, repo: str) -> str | None:
    """The commit pip installed the package from, when it came from that GitHub repository
    (PEP 610 ``direct_url.json``); None otherwise (PyPI, a local folder, another fork)."""
    from importlib import metadata

    try:
        text = metadata.distribution("musicgen-edu").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    info = json.loads(text or "{}")
    url = info.get("url", "").removesuffix(".git").rstrip("/").lower()
    if url != f"https://github.com/{owner}/{repo}".lower():
        return None
    return info.get("vcs_info", {}).get("commit_id")


def lecture_url(stem: str, install: str) -> str:
    """Where a lecture notebook lives in the repository ``install`` points to.

    Example::

        lecture_url("06_experiments", "musicgen-edu @ git+https://github.com/o/r")
        # 'https://raw.githubusercontent.com/o/r/<commit>/notebooks/06_experiments.ipynb'
        # (<commit>: the one installed from o/r, else HEAD)

    Args:
        stem: the lecture's file stem, e.g. ``"06_experiments"``.
        install: a pip requirement ``name[extras] @ git+https://github.com/owner/repo[@ref]``,
            as in the lecture's install cell (``INSTALL``).

    Returns:
        The raw URL at ``ref`` if given, else at the commit installed from that repository,
        else at ``HEAD`` (the default branch).
    """
    stem = _lecture_key(stem)
    if not _STEM.fullmatch(stem):
        raise ConfigError(f"lecture {stem!r}: give the file stem, e.g. '06_experiments'.")
    match = _GITHUB.search(install.strip()) if isinstance(install, str) else None
    if match is None:
        raise ConfigError(f"install={install!r} names no GitHub repository "
                          "('name @ git+https://github.com/owner/repo'); download "
                          f"notebooks/{stem}.ipynb from the course's repository and pass its path.")
    owner, repo = match["owner"], match["repo"]
    ref = match["ref"] or _installed_commit(owner, repo) or "HEAD"
    return _RAW.format(owner=owner, repo=repo, ref=ref, stem=stem)


def lecture_notebook(stem: str, install: str | None = None, folder: str | os.PathLike = ".",
                     timeout: float = 30.0) -> Path:
    """A lecture notebook as a file, e.g. to run it with ``musicgen-edu experiments`` (lecture 06).

    From a source checkout this is ``notebooks/<stem>.ipynb``; a copy already in ``folder`` is
    used as it is; otherwise (Colab, a pip install) it is downloaded from the repository of
    ``install`` (see :func:`lecture_url`) into ``folder``.

    Args:
        stem: the lecture's file stem, e.g. ``"06_experiments"``.
        install: the lecture's ``INSTALL`` requirement (its first cell); needed only to download.
        folder: where a downloaded copy goes (default: the working directory).
        timeout: seconds to wait for the download.

    Returns:
        The path of the notebook.
    """
    stem = _lecture_key(stem)
    if not _STEM.fullmatch(stem):
        raise ConfigError(f"lecture {stem!r}: give the file stem, e.g. '06_experiments'.")
    checkout = CHECKOUT_NOTEBOOKS / f"{stem}.ipynb"
    local = Path(folder) / f"{stem}.ipynb"
    for path in (checkout, local):
        if path.is_file():
            return path
    if install is None:
        raise ConfigError(f"notebooks/{stem}.ipynb is not on disk here; pass install=INSTALL "
                          "(the requirement in the lecture's first cell) to download it.")
    url = lecture_url(stem, install)
    data = _download(url, timeout)
    try:
        cells = json.loads(data).get("cells")
    except (ValueError, AttributeError):
        cells = None
    if not isinstance(cells, list):
        raise ConfigError(f"{url} is not a notebook; check INSTALL ({install!r}).")
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, local)                        # never a half-written notebook
    return local


def _download(url: str, timeout: float) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        raise ConfigError(f"could not download {url} ({err}); check the network, or download "
                          "the notebook by hand and pass its path.") from None
