"""Every lecture's Colab install cell comes from one setting: pyproject.toml [tool.musicgen-edu].

scripts/sync_install_cells.py writes the cells; this fails when one differs (run the script).
"""

from __future__ import annotations

import importlib.util
import json
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
