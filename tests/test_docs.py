"""The docs site (mkdocs.yml, docs/, docs/hooks.py) builds in strict mode and holds every page.

One ``mkdocs build --strict`` for the module (a few seconds): warnings — a broken link, a page
missing from the nav, a docstring griffe cannot parse — fail it. Then the built HTML must hold
the install and how-it-works pages, an API page with the public names, one page per lecture
notebook, and a section for every module of the package (so a new module cannot be forgotten
in docs/api.md). The docs tools come with the ``docs`` extra (in ``dev``, so ``make test``
installs them); without them ``test_docs_build_strict`` fails (it does not skip) and says so.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import musicgen_edu

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parent.parent
LECTURES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def package_modules() -> list[str]:
    """Every public module of musicgen_edu (``__main__`` and ``_private`` ones skipped)."""
    names = []
    for info in pkgutil.walk_packages(musicgen_edu.__path__, prefix="musicgen_edu."):
        parts = info.name.split(".")[1:]
        if info.name.endswith("__main__") or any(p.startswith("_") for p in parts):
            continue
        names.append(info.name)
    return sorted(names)


def page_text(path: Path) -> str:
    """The visible text of a built page: tags dropped, entities decoded, spaces collapsed."""
    assert path.is_file(), f"{path} was not built"
    raw = path.read_text(encoding="utf-8")
    raw = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", raw)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"(?s)<[^>]+>", " ", raw)))


def notebook_title(path: Path) -> str:
    cell = next(c for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                if c["cell_type"] == "markdown")
    first = "".join(cell["source"]).splitlines()[0]
    assert first.startswith("# "), f"{path.name}: the first markdown cell must start with the title"
    return first[2:].strip()


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str | None]:
    """Build the site once with ``mkdocs build --strict``: (site folder, problem or None)."""
    missing = [m for m in ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings_handlers")
               if importlib.util.find_spec(m) is None]
    if missing:
        return Path(), (f"the docs tools are not installed ({', '.join(missing)} missing): run "
                        "`pip install -e \".[docs]\"` (or `make docs`; `make test` installs "
                        "them with the dev extra)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # no end-of-life banner from material
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    if proc.returncode == 0:
        return out, None
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    report = "\n".join(problems)
    if not problems or "Traceback" in proc.stderr:
        report += "\n--- stderr ---\n" + proc.stderr[-6000:]
    return out, f"mkdocs build --strict failed (exit {proc.returncode}):\n{report}"


def test_docs_build_strict(build):
    """The whole site builds with every warning treated as an error."""
    _, problem = build
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def site(build) -> Path:
    out, problem = build
    if problem:
        pytest.skip("the docs build failed: see test_docs_build_strict")
    return out


def test_home_page_lists_every_lecture_with_colab_link(site):
    text = page_text(site / "index.html")
    assert "make demo" in text and "make test" in text
    for nb in LECTURES:
        assert notebook_title(nb) in text, f"home page does not list {nb.name}"
    assert text.count("Open in Colab") >= len(LECTURES)


def test_install_page(site):
    text = page_text(site / "install" / "index.html")
    for needle in ("Colab", "pip install -e", "environment.yml", "TORCH_SPEC",
                   "musicgen-edu info", "debug"):
        assert needle in text, f"install page lacks {needle!r}"


def test_how_it_works_page(site):
    text = page_text(site / "how-musicgen-works" / "index.html")
    for needle in ("EnCodec", "delay", "classifier-free guidance", "top-k", "chroma",
                   "arXiv:2306.05284", "arXiv:2210.13438"):
        assert needle.lower() in text.lower(), f"how-it-works page lacks {needle!r}"
    # module references resolved by mkdocstrings' autorefs into links to the API page
    raw = (site / "how-musicgen-works" / "index.html").read_text(encoding="utf-8")
    assert 'href="../api/#musicgen_edu.patterns' in raw


def test_api_page_documents_public_names(site):
    text = page_text(site / "api" / "index.html")
    for name in ("MusicGenerator", "GenerationConfig", "load_model", "build_delay_grid",
                 "classifier_free_guidance", "ConfigError"):
        assert name in text, f"API page lacks {name}"
    # docstrings, not only names: a module docstring and an Args: section rendered as a table
    assert "Codebook delay interleaving and its inverse" in text
    assert "Parameters:" in text


@pytest.mark.parametrize("notebook", LECTURES, ids=[nb.stem for nb in LECTURES])
def test_every_lecture_is_rendered(site, notebook):
    page = site / "notebooks" / notebook.stem / "index.html"
    text = page_text(page)
    assert notebook_title(notebook) in text
    assert "Open in Colab" in text
    assert (page.parent / notebook.name).is_file(), "the .ipynb is not offered for download"
    lectures_page = page_text(site / "notebooks" / "index.html")
    assert notebook_title(notebook) in lectures_page


def test_lectures_exist():
    assert LECTURES, "no notebooks/NN_*.ipynb found"


def test_every_module_is_listed_in_api_md():
    """Each module has a ``::: name`` block in docs/api.md, or a listed package shows it."""
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: (musicgen_edu[\w.]*)", api, flags=re.MULTILINE))
    with_submodules = {m.group(1) for m in re.finditer(
        r"^::: (musicgen_edu[\w.]*)\n(?:[ \t]+.*\n)*?[ \t]+show_submodules: true", api,
        flags=re.MULTILINE)}
    missing = [name for name in package_modules()
               if name not in listed
               and not any(name.startswith(pkg + ".") for pkg in with_submodules)]
    assert not missing, (f"add `::: <module>` for {missing} to docs/api.md (in reading order) "
                         "so the API reference documents them")


def test_every_module_is_rendered_in_api_page(site):
    raw = (site / "api" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in package_modules() if f'id="{name}"' not in raw]
    assert not missing, f"the built API page has no section for {missing}"


def test_lectures_render_the_notebook_tiers_runs(site):
    """Each lecture the notebook tier ran (earlier in the same session: the docs tests run
    last) is published with its outputs: plots, tables and players, not just code."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from hooks import executed_copy
    finally:
        sys.path.remove(str(ROOT / "docs"))
    executed = [nb for nb in LECTURES if executed_copy(nb)]
    if not executed:
        pytest.skip("no executed lectures in build/executed/: run the notebook tier first "
                    "(`make test` runs it before the docs build)")
    for nb in executed:
        raw = (site / "notebooks" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert "shown as the test suite ran it" in raw, nb.name
        assert raw.count('class="jp-OutputArea-child') >= 3, f"{nb.name}: no outputs rendered"
    for nb in set(LECTURES) - set(executed):
        raw = (site / "notebooks" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert "shown here without outputs" in raw and 'class="jp-OutputArea-child' not in raw
