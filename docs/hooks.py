"""mkdocs hooks for the musicgen_edu site (loaded by ``hooks:`` in mkdocs.yml).

mkdocs only builds pages under ``docs/``, but the lectures live in ``notebooks/``. These hooks
put each ``notebooks/NN_*.ipynb`` into the build under the same path (mkdocs-jupyter renders
it without executing anything; the section's own page is ``docs/notebooks/index.md``), append
it to the "Lectures" section of the nav, and expand the ``<!-- lectures -->`` marker of a page
into a table of the lectures, so a new lecture appears on the site without touching
mkdocs.yml or any page.

What a lecture page shows: ``make docs-run`` (part of ``make docs``) runs each lecture with
papermill at its own default parameters into ``build/docs-run/notebooks/``; where that run is
newer than the lecture, the page renders it (plots, tables, players), else the clean lecture.
A run is cleaned for the site first (``clean_run``): no papermill ``injected-parameters``
cell, no saved widget state (megabytes for lecture 07, and the widgets cannot run on a static
page: each widget shows its text form instead). Every lecture page gets "Open in Colab" and
"download" links; the download is the committed notebook (no outputs), not the run. Inline
outputs (base64 images and audio) and mkdocs-jupyter's inline stylesheet are written to files
of their own (``lean_page``), so a page stays small, and the table of contents is taken from
the rendered headings (``toc_from_html``: mkdocs-jupyter's own drops inline code from a
heading, so its links missed the heading's id).

The API page (``docs/api.md``) lists modules with ``::: musicgen_edu.<module>``; a listed
module that does not exist yet is left out with an info message (modules being written in
parallel), and ``tests/test_docs.py`` checks that every module of the package is listed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import mimetypes
import posixpath
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File
from mkdocs.structure.toc import get_toc

log = logging.getLogger("mkdocs.hooks.musicgen_edu")

ROOT = Path(__file__).resolve().parent.parent       # the repository root
NOTEBOOKS = ROOT / "notebooks"
RUNS = ROOT / "build" / "docs-run"                  # `make docs-run`: runs at the defaults
LECTURE_GLOB = "[0-9][0-9]_*.ipynb"                  # notebooks/NN_topic.ipynb (STYLE.md rule 11)
LECTURES_DIR = "notebooks"                           # where lectures appear in the site
LECTURES_MARKER = "<!-- lectures -->"
# "::: musicgen_edu.module" and the indented option lines under it
API_DIRECTIVE = re.compile(r"^::: (musicgen_edu[\w.]*)[ \t]*\n(?:[ \t]+\S.*\n)*", re.MULTILINE)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TQDM_BAR = re.compile(r"\d+%\|.*\| *[\d?.]+/[\d?.]+ ")   # "generating:  40%|####  | 21/53 [..."
# base64 outputs inlined by nbconvert, written to files by lean_page
DATA_URI = re.compile(r'(?P<attr>src|href)="data:(?P<mime>(?:audio|image|video)/[\w.+-]+);base64,'
                      r'(?P<data>[A-Za-z0-9+/=\s]+)"')
STYLE = re.compile(r"(?s)<style\b[^>]*>(.*?)</style>")
BIG_STYLE = 20_000                                   # characters; mkdocs-jupyter's is ~570 kB

_rendered: tempfile.TemporaryDirectory | None = None  # the cleaned runs of this build


def lecture_notebooks() -> list[Path]:
    """The lecture notebooks, sorted by number."""
    return sorted(NOTEBOOKS.glob(LECTURE_GLOB))


def lecture_run(nb: Path) -> Path | None:
    """``make docs-run``'s run of lecture ``nb``, if there is one newer than the lecture."""
    run = RUNS / LECTURES_DIR / nb.name
    return run if run.is_file() and run.stat().st_mtime >= nb.stat().st_mtime else None


def clean_run(nb: dict) -> dict:
    """A papermill run as the site shows it (``nb`` is changed and returned).

    The ``injected-parameters`` cell goes (the page shows the lecture's own parameters cell),
    and so does the saved widget state: each widget output keeps only its text form (the
    studio's text summary), and a tqdm bar, whose text form is its first 0%, goes entirely.
    """
    nb["cells"] = [c for c in nb["cells"]
                   if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                text = "".join(data.get("text/plain", ""))
                if not text or TQDM_BAR.search(text):
                    continue
                out["data"] = {"text/plain": data["text/plain"]}
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    return nb


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
    """Add notebooks/NN_*.ipynb (outside docs_dir) to the build, at the same path: the lecture,
    or its cleaned run (written to a temporary folder for this build)."""
    global _rendered
    _cleanup()
    _rendered = tempfile.TemporaryDirectory(prefix="musicgen_edu-docs-")
    for nb in lecture_notebooks():
        # a plain File with the repository root (or the cleaned runs' folder) as its source
        # folder: mkdocs-jupyter wraps it like any .ipynb in docs/ (File.generated files lose
        # their source path in its wrapper)
        src_dir = ROOT
        run = lecture_run(nb)
        if run:
            src_dir = Path(_rendered.name)
            cleaned = clean_run(json.loads(run.read_text(encoding="utf-8")))
            (src_dir / LECTURES_DIR).mkdir(exist_ok=True)
            (src_dir / LECTURES_DIR / nb.name).write_text(json.dumps(cleaned), encoding="utf-8")
        files.append(File(f"{LECTURES_DIR}/{nb.name}", src_dir=str(src_dir),
                          dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls))
    return files


def _cleanup(*_args, **_kwargs):
    global _rendered
    if _rendered is not None:
        _rendered.cleanup()
        _rendered = None


on_post_build = on_build_error = on_shutdown = _cleanup


def is_lecture(page) -> bool:
    src = page.file.src_uri
    return src.startswith(f"{LECTURES_DIR}/") and src.endswith(".ipynb")


class _Headings(HTMLParser):
    """``(level, id, text)`` of each ``<h1>``-``<h6>`` with an id (anchor links' "¶" left out)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[list] = []
        self._open: list | None = None
        self._in_anchor = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if re.fullmatch(r"h[1-6]", tag) and attrs.get("id"):
            self._open = [int(tag[1]), attrs["id"], ""]
        elif tag == "a" and self._open and "anchor-link" in (attrs.get("class") or ""):
            self._in_anchor = True

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_anchor = False
        elif self._open and tag == f"h{self._open[0]}":
            self.found.append(self._open)
            self._open = None

    def handle_data(self, data):
        if self._open and not self._in_anchor:
            self._open[2] += data


def toc_from_html(content: str):
    """The table of contents of a rendered page, from its headings' own ids and text."""
    parser = _Headings()
    parser.feed(content)
    root: dict = {"level": 0, "children": []}
    stack = [root]
    for level, anchor, text in parser.found:
        token = {"level": level, "id": anchor, "name": html.escape(" ".join(text.split())),
                 "children": []}
        while stack[-1]["level"] >= level:
            stack.pop()
        stack[-1]["children"].append(token)
        stack.append(token)
    return get_toc(root["children"])


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
    """Put "Open in Colab" and "download" links at the top of every lecture page, and take its
    table of contents from the rendered headings."""
    if not is_lecture(page):
        return html
    page.toc = toc_from_html(html)
    name = posixpath.basename(page.file.src_uri)
    # on_post_page copies the committed notebook into the page's folder
    links = [f'<a href="{name}" download>download the notebook</a>']
    colab = colab_url(NOTEBOOKS / name, config.repo_url)
    if colab:
        links.insert(0, f'<a href="{colab}"><strong>Open in Colab</strong></a>')
    shown = ("shown as run at its own default parameters, with the offline debug model "
             "(random weights: noise, through the real code path)"
             if lecture_run(NOTEBOOKS / name) else "shown here without outputs")
    return (f'<p class="mg-lecture-links">{" · ".join(links)} (without outputs) — {shown}; '
            "run it yourself to see and hear your own (on Colab the first cell installs "
            'musicgen_edu; set <code>MODEL = "facebook/musicgen-small"</code> on a GPU '
            "runtime).</p>\n" + html)


def lean_page(output: str, page_dir: Path, site_dir: Path) -> str:
    """Write a page's base64 outputs (images, audio) next to it and its big inline
    stylesheets to ``assets/`` (one file for all pages), and link them instead."""
    def to_file(folder: Path, data: bytes, suffix: str, prefix: str = "output") -> str:
        path = folder / f"{prefix}-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return Path(posixpath.relpath(path.as_posix(), page_dir.as_posix())).as_posix()

    def data_uri(match: re.Match) -> str:
        mime = match["mime"]
        suffix = {"audio/wav": ".wav", "audio/x-wav": ".wav", "image/jpeg": ".jpg"}.get(
            mime) or mimetypes.guess_extension(mime) or ".bin"
        data = base64.b64decode("".join(match["data"].split()))
        return f'{match["attr"]}="{to_file(page_dir, data, suffix)}"'

    def style(match: re.Match) -> str:
        if len(match.group(1)) < BIG_STYLE:
            return match.group(0)
        href = to_file(site_dir / "assets" / "stylesheets", match.group(1).encode(), ".css",
                       "jupyter")
        return f'<link rel="stylesheet" href="{href}">'

    return STYLE.sub(style, DATA_URI.sub(data_uri, output))


def on_post_page(output, page, config):
    """A lecture page: its outputs and stylesheet in files, and the committed notebook
    (clean, without outputs) next to it for the "download" link."""
    if not is_lecture(page):
        return output
    page_dir = Path(page.file.abs_dest_path).parent
    name = posixpath.basename(page.file.src_uri)
    page_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NOTEBOOKS / name, page_dir / name)
    return lean_page(output, page_dir, Path(config.site_dir))
