"""The web page: ``GET /`` serves ``serve/web/index.html``, ``GET /web/{name}`` its scripts
and style sheet. Everything else the page shows comes from the API it calls (web/app.js)::

    GET  /                       the page (no key: it holds no data; its API calls carry one)
    GET  /web/app.js, ...        its scripts and style sheet, by name from a fixed list

The page talks only to this origin; its Content-Security-Policy says so to the browser as
well: scripts, styles and requests from here (``'self'`` also covers ``ws://`` of this host),
audio from ``blob:`` URLs the page makes itself (which it, or a test, may read back), no
frames, no inline code. None of these routes is in the OpenAPI document, the contract of
``/v1``: a page is not an API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

__all__ = ["router", "WEB_DIR"]

router = APIRouter(include_in_schema=False)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"   # ships in the wheel (package-data)
# name -> media type: app.js imports the other three (ES modules, no build step)
_FILES = {"app.js": "text/javascript", "api.js": "text/javascript",
          "form.js": "text/javascript", "run.js": "text/javascript", "style.css": "text/css"}

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' blob:; "
        "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",          # a new version of the page is seen at once
}


@router.get("/")
def index() -> FileResponse:
    """The web page (web/index.html)."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_HEADERS)


@router.get("/web/{name}")
def asset(name: str) -> FileResponse:
    """One of the page's files, looked up by name in :data:`_FILES` (404 for any other)."""
    if name not in _FILES:
        raise HTTPException(404, f"no file {name!r:.80} here; the page's files are "
                            f"{sorted(_FILES)}.")
    return FileResponse(WEB_DIR / name, media_type=_FILES[name], headers=_HEADERS)
