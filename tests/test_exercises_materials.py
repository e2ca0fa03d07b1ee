"""Course material that must reach a Colab student: solutions as package data (in the built
wheel too) and lecture notebooks fetched from the install's repository."""

import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import musicgen_edu as mg
from musicgen_edu.exercises import materials

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "musicgen_edu" / "exercises" / "solutions"
# lectures whose "Solutions:" sentence points at mg.exercises.solution(N): every lecture with
# checked exercises (lecture 10's exercises are open questions, with no checks to solve)
SENTENCE_UPDATED = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                          if (SOLUTIONS / f"{p.stem}_solutions.py").is_file())


def colab_install(extras: str = "") -> str:
    """The requirement the lectures' install cells use (scripts/sync_install_cells.py)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["musicgen-edu"]
    return config["colab-install"].format(extras=extras)


# ------------------------------------------------------------------ solutions

@pytest.mark.parametrize("lecture", [0, 5, "05", "5", "05_latency", "08_evaluation", 9])
def test_solution_shows_the_shipped_file(lecture):
    shown = mg.exercises.solution(lecture)
    number = int(str(lecture)[:2])
    (path,) = SOLUTIONS.glob(f"{number:02d}_*_solutions.py")
    assert shown.path.resolve() == path.resolve()
    assert str(shown) == repr(shown) == path.read_text(encoding="utf-8")
    assert "def solve_" in shown.text
    markdown = shown._repr_markdown_()
    assert "```python\n" in markdown and shown.text.rstrip() in markdown


def test_every_lecture_with_checks_has_solutions():
    checked = {int(m[1]) for p in (ROOT / "musicgen_edu" / "exercises").glob("lecture*.py")
               if (m := re.fullmatch(r"lecture(\d\d)\.py", p.name))}
    assert {int(stem[:2]) for stem in mg.exercises.solution_files()} == checked


@pytest.mark.parametrize("bad", [10, "99"])
def test_solution_of_an_unknown_lecture_names_the_choices(bad):
    with pytest.raises(mg.ConfigError, match=r"lectures with checked exercises: 00, 01, .*, 09"):
        mg.exercises.solution(bad)


@pytest.mark.parametrize("bad", [-1, 100, "latency", True, 5.0, None])
def test_solution_of_a_bad_value_says_what_to_pass(bad):
    with pytest.raises(mg.ConfigError, match=r"number 0-99 \(e.g. 5\) or its file stem"):
        mg.exercises.solution(bad)


@pytest.mark.parametrize("stem", SENTENCE_UPDATED)
def test_lectures_point_at_the_packaged_solutions(stem):
    text = (ROOT / "notebooks" / f"{stem}.ipynb").read_text(encoding="utf-8")
    assert "notebooks/solutions" not in text
    assert f"mg.exercises.solution({int(stem[:2])})" in text


def test_nothing_else_points_at_the_old_folder():
    for path in [*ROOT.glob("musicgen_edu/**/*.py"), *ROOT.glob("docs/*.md"),
                 ROOT / "Makefile", ROOT / "docs" / "hooks.py", ROOT / "README.md"]:
        assert "notebooks/solutions" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("namespaces", [True, False])
def test_the_built_wheel_holds_the_solutions(tmp_path, namespaces):
    """What `pip install git+...` installs: the wheel built from the source tree. Declared as
    package data, they ship also where folders without __init__.py are not packages."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "musicgen_edu", src / "musicgen_edu",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "README.md", src / "README.md")
    pyproject = (ROOT / "pyproject.toml").read_text()
    if not namespaces:
        pyproject = pyproject.replace("[tool.setuptools.packages.find]\n",
                                      "[tool.setuptools.packages.find]\nnamespaces = false\n")
        assert "namespaces = false" in pyproject
    (src / "pyproject.toml").write_text(pyproject)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps",
                    "--no-build-isolation", "--quiet", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("musicgen_edu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"musicgen_edu/exercises/solutions/{p.name}" for p in SOLUTIONS.glob("*.py")}
    assert len(shipped) >= 10 and shipped <= names, sorted(shipped - names)
    assert "musicgen_edu/exercises/materials.py" in names


# ------------------------------------------------------------------ lecture notebooks

def test_lecture_url_comes_from_the_colab_install_setting(monkeypatch):
    monkeypatch.setattr(materials, "_installed_commit", lambda owner, repo: None)
    url = mg.exercises.lecture_url("06_experiments", colab_install())
    match = re.search(r"git\+https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?$", colab_install())
    owner, repo = match.groups()
    assert url == (f"https://raw.githubusercontent.com/{owner}/{repo}/HEAD/notebooks/"
                   "06_experiments.ipynb")
    pinned = mg.exercises.lecture_url("06_experiments", colab_install("[serve]") + "@v0.1")
    assert f"/{owner}/{repo}/v0.1/notebooks/" in pinned


def test_lecture_url_uses_the_installed_commit(monkeypatch):
    """pip records where a git install came from (PEP 610 direct_url.json)."""
    from importlib import metadata

    owner_repo = re.search(r"github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?$", colab_install())[1]
    record = {"url": f"https://github.com/{owner_repo}.git",
              "vcs_info": {"vcs": "git", "commit_id": "0123abc"}}

    class Installed:
        def read_text(self, name):
            return json.dumps(record) if name == "direct_url.json" else None

    monkeypatch.setattr(metadata, "distribution", lambda name: Installed())
    url = mg.exercises.lecture_url("06_experiments", colab_install())
    assert f"/{owner_repo}/0123abc/notebooks/06_experiments.ipynb" in url
    record["url"] = "https://github.com/someone/else"              # a fork: not its commit
    assert "/HEAD/" in mg.exercises.lecture_url("06_experiments", colab_install())


@pytest.mark.parametrize("install", ["musicgen-edu", "musicgen-edu @ git+https://gitlab.com/a/b",
                                     None])
def test_lecture_url_without_a_github_repository_says_what_to_do(install):
    with pytest.raises(mg.ConfigError, match="download"):
        mg.exercises.lecture_url("06_experiments", install)


def test_lecture_notebook_in_a_checkout_is_the_file():
    path = mg.exercises.lecture_notebook("06_experiments")
    assert path.resolve() == (ROOT / "notebooks" / "06_experiments.ipynb").resolve()


def test_lecture_notebook_on_colab_is_downloaded(monkeypatch, tmp_path):
    """No checkout on disk (a pip install): fetched from the raw URL, into the folder."""
    import urllib.request

    source = (ROOT / "notebooks" / "06_experiments.ipynb").read_bytes()
    asked = []

    def urlopen(url, timeout):
        asked.append(url)
        return io.BytesIO(source)

    monkeypatch.setattr(materials, "CHECKOUT_NOTEBOOKS", tmp_path / "no-checkout")
    monkeypatch.setattr(materials, "_installed_commit", lambda owner, repo: None)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(mg.ConfigError, match="install=INSTALL"):
        mg.exercises.lecture_notebook("06_experiments", folder=tmp_path)
    path = mg.exercises.lecture_notebook("06_experiments", colab_install(), folder=tmp_path)
    assert path == tmp_path / "06_experiments.ipynb" and path.read_bytes() == source
    assert asked == [mg.exercises.lecture_url("06_experiments", colab_install())]
    pm = pytest.importorskip("papermill")                  # runnable by musicgen-edu experiments
    assert "MAX_BATCH_SIZE" in pm.inspect_notebook(str(path))
    assert mg.exercises.lecture_notebook("06_experiments", folder=tmp_path) == path  # no refetch
    assert len(asked) == 1
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>"))
    with pytest.raises(mg.ConfigError, match="not a notebook"):
        mg.exercises.lecture_notebook("09_serving", colab_install(), folder=tmp_path)
    assert not (tmp_path / "09_serving.ipynb").exists()
