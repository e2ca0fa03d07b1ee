"""Every lecture's Colab install cell and repository links come from one setting:
pyproject.toml [tool.musicgen-edu] colab-install.

scripts/sync_install_cells.py writes them; this fails when one differs (run the script), and
when a lecture names a repository-only file (bench/, tests/, scripts/) that a Colab student,
who has the package but not the checkout, could not open: such a file must be a link.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("sync_install_cells",
                                              ROOT / "scripts" / "sync_install_cells.py")
sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync)
LECTURES = sync.lectures()


def test_the_install_source_is_one_setting():
    assert sync.install_requirement("00_setup") == \
        "musicgen-edu @ git+https://github.com/musicgen-edu/musicgen_edu"
    assert sync.install_requirement("09_serving").startswith("musicgen-edu[serve] @ ")


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_each_lecture_installs_from_that_setting(path):
    cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code" and "".join(c["source"]).startswith(sync.MARKER)]
    assert len(cells) == 1, f"{path.name}: one install cell expected"
    source = "".join(cells[0]["source"])
    assert source == sync.install_cell(path.stem), (
        f"{path.name}: install cell is out of date; run `python scripts/sync_install_cells.py`")
    assert len(source.splitlines()) <= 15 and source.count("git+") == 1


# `bench/decode.py` not followed by "](": a repository file named but not linked.
BARE_REPO_FILE = re.compile(r"(?<!\[)`((?:bench|tests|scripts|notebooks/solutions)/[^`]*)`(?!\]\()")


# upstream code a lecture may link to (lecture 04 compares our decoder with these)
UPSTREAM = ("https://github.com/huggingface/transformers/blob/",
            "https://github.com/facebookresearch/audiocraft/blob/")


def test_the_repository_address_comes_from_that_setting():
    assert sync.repository_url() == "https://github.com/musicgen-edu/musicgen_edu"


@pytest.mark.parametrize("path", LECTURES, ids=[p.stem for p in LECTURES])
def test_repository_files_a_lecture_cites_are_links_there(path):
    """Lecture 05 cited `bench/decode.py` and every lecture `tests/test_notebooks.py` as bare
    paths: nothing a Colab student can open (issue #25)."""
    text = "".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))
                   ["cells"] if c["cell_type"] == "markdown")
    assert not BARE_REPO_FILE.findall(text), f"{path.name}: link these to the repository"
    for url in re.findall(r"\]\((https://github\.com/[^)]*)\)", text):
        if url.startswith(UPSTREAM):              # the implementations a lecture compares
            continue
        assert url.startswith(sync.repository_url() + "/"), (
            f"{path.name}: {url} is not in the repository; run `python scripts/sync_install_cells.py`")
