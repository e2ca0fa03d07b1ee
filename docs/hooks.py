"""mkdocs hooks for the musicgen_edu site (loaded by ``hooks:`` in mkdocs.yml).

mkdocs only builds pages under ``docs/``, but the lectures live in ``notebooks/``. These hooks
put each ``notebooks/NN_*.ipynb`` into the build under the same path (mkdocs-jupyter renders
it without executing anything; the section's own page is ``docs/notebooks/index.md``). Where
the notebook tier has run a lecture (``tests/test_notebooks.py`` keeps each papermill run in
``build/executed/notebooks/``, with the offline debug model and 1 s clips) and that run is
newer than the lecture, the executed copy is rendered, so the site shows plots, tables and
players while the committed notebooks stay clean; append it to the
"Lectures" section of the nav, and expand the ``<!-- lectures -->`` marker of a page into a
table of the lectures, so a new lecture appears on the site without touching mkdocs.yml or
any page. Every lecture page also gets "Open in Colab" and "download" links.

The API page (``docs/api.md``) lists modules with ``::: musicgen_edu.<module>``; a listed
module that does not exist yet is left out with an info message (modules being written in
parallel), and ``tests/test_docs.py`` checks that every module of the package is listed.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.musicgen_edu")

ROOT = Path(__file__).resolve().parent.parent       # the repository root
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "executed"               # the notebook tier's runs (not committed)
LECTURE_GLOB = "[0-9][0-9]_*.ipynb"                  # notebooks/NN_topic.ipynb (STYLE.md rule 11)
LECTURES_DIR = "notebooks"                           # where lectures appear in the site
LECTURES_MARKER = "<!-- lectures -->"
# "::: musicgen_edu.module" and the indented option lines under it
API_DIRECTIVE = re.compile(r"^::: (musicgen_edu[\w.]*)[ \t]*\n(?:[ \t]+\S.*\n)*", re.MULTILINE)


def lecture_notebooks() -> list[Path]:
    """The lecture notebooks, sorted by number."""
    return sorted(NOTEBOOKS.glob(LECTURE_GLOB))


def executed_copy(nb: Path) -> Path | None:
    """The notebook tier's run of lecture ``nb``, if there is one newer than the lecture."""
    run = EXECUTED / LECTURES_DIR / nb.name
    return run if run.is_file() and run.stat().st_mtime >= nb.stat().st_mtime else None


def notebook_title(path: Path) -> str:
    """The notebook's first ``# `` heading, or its file name."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        source = "".join(cell.get("source", []))
        for line in source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem


def module_exists(name: str) -> bool:
    """Whether ``musicgen_edu.a.b`` has a source file in this checkout (nothing is imported)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def colab_url(path: Path, repo_url: str | None) -> str | None:
    """The "Open in Colab" address of a notebook on the repository's main branch."""
    if not repo_url or "github.com/" not in repo_url:
        return None
    owner_repo = repo_url.rstrip("/").split("github.com/", 1)[1]
    return (f"https://colab.research.google.com/github/{owner_repo}/blob/main/"
            f"{path.relative_to(ROOT).as_posix()}")


def on_config(config):
    """Append every lecture to the nav's "Lectures" section."""
    lectures = [f"{LECTURES_DIR}/{nb.name}" for nb in lecture_notebooks()]
    for item in config.nav or []:
        if isinstance(item, dict) and "Lectures" in item:
            section = item["Lectures"]
            section.extend(p for p in lectures if p not in section)
            break
    else:
        log.warning("mkdocs.yml has no 'Lectures' section in nav; the lectures are not listed")
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which wraps the .ipynb files
def on_files(files, config):
    """Add notebooks/NN_*.ipynb (outside docs_dir) to the build, at the same path."""
    for nb in lecture_notebooks():
        # a plain File with the repository root (or the executed copies' folder) as its source
        # folder: mkdocs-jupyter wraps it like any .ipynb in docs/ (File.generated files lose
        # their source path in its wrapper)
        src_dir = EXECUTED if executed_copy(nb) else ROOT
        files.append(File(f"{LECTURES_DIR}/{nb.name}", src_dir=str(src_dir),
                          dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    return files


def _lecture_table(page, config) -> str:
    here = posixpath.dirname(page.file.src_uri)
    rows = ["| lecture | run it |", "| --- | --- |"]
    for nb in lecture_notebooks():
        link = posixpath.relpath(f"{LECTURES_DIR}/{nb.name}", here or ".")
        colab = colab_url(nb, config.repo_url)
        rows.append(f"| [{notebook_title(nb)}]({link}) | "
                    + (f"[Open in Colab]({colab})" if colab else "") + " |")
    return "\n".join(rows)


def _drop_missing_api_modules(markdown: str) -> str:
    def keep(match: re.Match) -> str:
        name = match.group(1)
        if not module_exists(name):
            log.info("API reference: %s does not exist (yet); its section is left out", name)
            return ""
        return match.group(0)

    return API_DIRECTIVE.sub(keep, markdown)


def on_page_markdown(markdown, page, config, files):
    """Expand the lectures marker; leave modules that do not exist out of the API page."""
    if LECTURES_MARKER in markdown:
        markdown = markdown.replace(LECTURES_MARKER, _lecture_table(page, config))
    if page.file.src_uri == "api.md":
        markdown = _drop_missing_api_modules(markdown)
    return markdown


def on_page_content(html, page, config, files):
    """Put "Open in Colab" and "download" links at the top of every lecture page."""
    src = page.file.src_uri
    if src.startswith(f"{LECTURES_DIR}/") and src.endswith(".ipynb"):
        name = posixpath.basename(src)
        # mkdocs-jupyter's include_source copies the notebook into the page's folder
        links = [f'<a href="{name}" download>download the notebook</a>']
        colab = colab_url(NOTEBOOKS / name, config.repo_url)
        if colab:
            links.insert(0, f'<a href="{colab}"><strong>Open in Colab</strong></a>')
        shown = ("shown as the test suite ran it, with the offline debug model (random weights, "
                 "1 s clips: noise, through the real code path)" if executed_copy(NOTEBOOKS / name)
                 else "shown here without outputs")
        html = (f'<p class="mg-lecture-links">{" · ".join(links)} — {shown}; run it yourself '
                "to see and hear your own (on Colab the first cell installs musicgen_edu; set "
                '<code>MODEL = "facebook/musicgen-small"</code> on a GPU runtime).</p>\n' + html)
    return html
