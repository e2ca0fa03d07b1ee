"""The docs site (mkdocs.yml, docs/, docs/hooks.py) builds in strict mode and holds every page.

One ``mkdocs build --strict`` for the module (a few seconds): warnings — a broken link, a page
missing from the nav, a docstring griffe cannot parse — fail it. Then the built HTML must hold
the install and how-it-works pages, an API page with the public names, one page per lecture
notebook, and a section for every module of the package (so a new module cannot be forgotten
in docs/api.md). Every link of every built page is checked (``site_links``: the file and the
``#fragment`` it names must exist; mkdocs' own check sees only Markdown links, not the
lectures' tables of contents nor 404.html), and each lecture page is small, offers the clean
notebook for download and shows no papermill parameters or widget state. The docs tools come with
the ``docs`` extra (in ``dev``, so ``make test``
installs them); without them ``test_docs_build_strict`` fails (it does not skip) and says so.
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import pkgutil
import posixpath
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

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


class PageLinks(HTMLParser):
    """The ids (``id``, and ``name`` of ``<a>``) and the links (``href``, ``src``) of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.links.append(value)


def site_links(site: Path, base_path: str | None) -> tuple[list[str], list[str]]:
    """Check every link of every built page: ``(broken, external)``.

    A relative link must name a file of the site (a folder: its ``index.html``) and its
    ``#fragment`` an id of the target page; a root-absolute one (``/x/``) must start with
    ``base_path``, the path of ``site_url`` where the site is served (with no ``site_url`` it
    is broken: it works only at the root of a domain). ``http(s)://`` links are not fetched,
    only listed; ``data:``, ``mailto:`` and ``javascript:`` ones are skipped.
    """
    pages = {p.relative_to(site).as_posix(): p for p in sorted(site.rglob("*.html"))}
    parsed: dict[str, PageLinks] = {}

    def parse(rel: str) -> PageLinks:
        if rel not in parsed:
            parser = PageLinks()
            parser.feed(pages[rel].read_text(encoding="utf-8"))
            parsed[rel] = parser
        return parsed[rel]

    broken, external = [], set()
    for rel in pages:
        for link in parse(rel).links:
            url = urlsplit(link)
            if url.scheme in ("http", "https") or link.startswith("//"):
                external.add(link)
                continue
            if url.scheme:  # data:, mailto:, javascript:
                continue
            path = unquote(url.path)
            if path.startswith("/"):
                if base_path is None or not path.startswith(base_path):
                    broken.append(f"{rel}: {link} (root-absolute, site_url "
                                  + ("unset)" if base_path is None else f"path {base_path})"))
                    continue
                target = posixpath.normpath(path[len(base_path):] or ".")
            elif path:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), path))
            else:
                target = rel  # "#fragment": this page
            if target.startswith(".."):
                broken.append(f"{rel}: {link} (outside the site)")
                continue
            file = site / target
            if file.is_dir():
                target = posixpath.join(target, "index.html").removeprefix("./")
                file = site / target
            if not file.is_file():
                broken.append(f"{rel}: {link} (no file {target})")
                continue
            fragment = unquote(url.fragment)
            if fragment and target in pages and fragment not in parse(target).ids:
                broken.append(f"{rel}: {link} (no id {fragment!r} in {target})")
    return broken, sorted(external)


def site_url_path() -> str | None:
    """The path part of mkdocs.yml's ``site_url`` (``/musicgen_edu/``), None where unset."""
    match = re.search(r"^site_url:\s*(\S+)", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"),
                      flags=re.MULTILINE)
    return urlsplit(match.group(1).strip("\"'")).path.rstrip("/") + "/" if match else None


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


MAX_LECTURE_PAGE = 1_000_000  # bytes of a lecture's index.html (outputs live in files beside it)


@pytest.mark.parametrize("notebook", LECTURES, ids=[nb.stem for nb in LECTURES])
def test_every_lecture_is_rendered(site, notebook):
    page = site / "notebooks" / notebook.stem / "index.html"
    text = page_text(page)
    assert notebook_title(notebook) in text
    assert "Open in Colab" in text
    download = page.parent / notebook.name
    assert download.is_file(), "the .ipynb is not offered for download"
    assert download.read_bytes() == notebook.read_bytes(), (
        "the download is not the committed notebook (clean, without outputs)")
    lectures_page = page_text(site / "notebooks" / "index.html")
    assert notebook_title(notebook) in lectures_page


@pytest.mark.parametrize("notebook", LECTURES, ids=[nb.stem for nb in LECTURES])
def test_lecture_page_is_small_and_shows_no_run_machinery(site, notebook):
    """No papermill parameters (a temp path, a DURATION the visible cell does not say), no
    saved widget state (megabytes of it for lecture 07), and under 1 MB."""
    page = site / "notebooks" / notebook.stem / "index.html"
    raw = page.read_text(encoding="utf-8")
    assert "injected-parameters" not in raw, "papermill's injected parameters are shown"
    assert "widget-state+json" not in raw, "saved widget state is embedded in the page"
    assert "pytest-of-" not in raw, "a test's temporary path is shown"
    size = page.stat().st_size
    assert size < MAX_LECTURE_PAGE, f"{page.relative_to(site)} is {size / 1e6:.1f} MB"


def test_no_broken_links(site):
    """Every relative link and ``#fragment`` of every built page resolves; 404.html's
    root-absolute links start with site_url's path. External links are listed, not fetched."""
    base = site_url_path()
    assert base, "set site_url in mkdocs.yml: 404.html links to /assets/... from any depth"
    broken, external = site_links(site, base)
    print(f"{len(external)} external links (not fetched):", *external, sep="\n  ")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken)


def test_link_check_finds_broken_links(tmp_path):
    """The checker itself, on a small site: each kind of broken link is reported."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text(
        '<h2 id="b-l-d">x</h2><a name="old"></a><a href="#b-l-d">ok</a> <a href="#old">ok</a>'
        '<a href="#missing">toc</a> <img src="pic.png"> <a href="../">ok</a>'
        '<a href="../index.html#top">ok</a> <a href="../c/">gone</a> <a href="https://x.org">'
        '<img src="data:image/png;base64,AA=="> <a href="/site/a/#b-l-d">ok</a>'
        '<a href="/a/">not under /site/</a> <a href="../../up.html">outside</a>',
        encoding="utf-8")
    (tmp_path / "index.html").write_text('<p id="top"></p>', encoding="utf-8")
    broken, external = site_links(tmp_path, "/site/")
    assert external == ["https://x.org"]
    assert [b.split(" (")[0] for b in broken] == [
        "a/index.html: #missing", "a/index.html: pic.png", "a/index.html: ../c/",
        "a/index.html: /a/", "a/index.html: ../../up.html"], broken
    broken, _ = site_links(tmp_path, None)  # no site_url: root-absolute links are broken
    assert sum("site_url unset" in b for b in broken) == 2


def test_clean_run_drops_parameters_and_widget_state():
    """docs/hooks.py's clean_run on a papermill run: the injected cell and the widget state
    go, a widget keeps its text form, a tqdm bar goes, other outputs stay."""
    hooks = import_hooks()
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "m1"}}
    nb = {"metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}},
          "cells": [
              {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [],
               "source": "DURATION = 4.0"},
              {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
               "outputs": [], "source": 'DURATION = 1.0\nOUTPUT = "/tmp/pytest-of-x/clip.wav"'},
              {"cell_type": "code", "metadata": {}, "source": "studio", "outputs": [
                  {"output_type": "display_data",
                   "data": {**view, "text/plain": ["studio: 0 result(s)"]}},
                  {"output_type": "display_data",
                   "data": {**view, "text/plain": ["generating:  40%|####  | 21/53 [00:01<00:02]"]}},
                  {"output_type": "display_data", "data": {"image/png": "AA=="}}]}]}
    out = hooks.clean_run(nb)
    assert [c["source"] for c in out["cells"]] == ["DURATION = 4.0", "studio"]
    assert "widgets" not in out["metadata"]
    assert [o["data"] for o in out["cells"][1]["outputs"]] == [
        {"text/plain": ["studio: 0 result(s)"]}, {"image/png": "AA=="}]


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


def import_hooks():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    return hooks


def test_lectures_render_their_default_runs(site):
    """Each lecture that ``make docs-run`` ran (at its own default parameters, newer than the
    lecture) is published with its outputs: plots, tables and players, not just code; the
    others say they are shown without outputs."""
    hooks = import_hooks()
    ran = [nb for nb in LECTURES if hooks.lecture_run(nb)]
    for nb in ran:
        raw = (site / "notebooks" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert "shown as run at its own default parameters" in raw, nb.name
        assert raw.count('class="jp-OutputArea-child') >= 3, f"{nb.name}: no outputs rendered"
    for nb in set(LECTURES) - set(ran):
        raw = (site / "notebooks" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert "shown here without outputs" in raw and 'class="jp-OutputArea-child' not in raw
    if not ran:
        pytest.skip("no runs in build/docs-run/: `make docs-run` (part of `make docs`) makes "
                    "them")
