"""What every widget of the package is made from: ipywidgets 7/8, display, pictures, players.

``widgets.py`` (the lectures' sliders and token grid) and the studio's files (``studio*.py``)
build their controls with :func:`make`, show themselves through :class:`View` and draw with
:func:`image` / :func:`png`; nothing else in the package imports ipywidgets.

How a widget reaches the screen: ``display(widget)`` -> ``View._ipython_display_`` sends the
ipywidgets view *and* a plain-text summary; JupyterLab 4 renders the view (the
``jupyterlab_widgets`` extension comes with ipywidgets 8), Colab does once its custom widget
manager is on (turned on here at the first display:
``google.colab.output.enable_custom_widget_manager()``), and everywhere widgets cannot render
(a terminal, papermill, a static viewer) the text is shown. ipywidgets is imported only when a
widget is made, so ``import musicgen_edu`` works without it; without it the widgets keep their
values and Python API (:class:`Plain`) and display as text. ipywidgets 7.7 (Colab's) and 8
both work: the few names that differ are translated in one place (:func:`make`,
:func:`upload_files`).
"""

from __future__ import annotations

import io
import sys

from .generation import Generation

__all__ = ["COLAB_MANAGER", "STATUS_COLORS", "Plain", "View", "audio_player", "draw_tokens", "enable_colab",
           "figure", "image", "ipywidgets_or_none", "make", "png", "settings_line",
           "short_prompt", "token_size", "upload_files", "view_bundle", "wav_bytes"]

# the colour of a status line or message, by kind (the studio's status, prompt checks)
STATUS_COLORS = {"ok": "#1a7f37", "error": "#cf222e", "warn": "#9a6700", "busy": "#0969da"}


# --- small pieces ---------------------------------------------------------------------------

def ipywidgets_or_none():
    """The ipywidgets module, or None when it is not installed (widgets degrade to text)."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


class Plain:
    """Stands in for a widget without ipywidgets: keeps its traits and click handlers, draws
    nothing, so the studio's Python API works the same."""

    def __init__(self, **traits):
        self.__dict__.update({"disabled": False, "value": None, **traits})
        self._handlers = []

    def observe(self, *args, **kwargs):
        pass

    def add_class(self, name):
        return self

    def on_click(self, handler):
        self._handlers.append(handler)

    def click(self):
        for handler in self._handlers:
            handler(self)


# --- ipywidgets 7 and 8: every difference we meet, here and nowhere else -------------------
# Colab preinstalls ipywidgets 7.7; JupyterLab 4 needs 8. The studio is written against 8's
# names, and these helpers translate where 7 differs:
#   tab titles   8: Tab(titles=[...]) (Accordion too)    7: tab.set_title(i, title) afterwards
#   tooltips     8: tooltip= on every widget              7: description_tooltip= (Button and
#                                                            ToggleButton: tooltip= as in 8)
#   uploads      8: FileUpload.value = ({"name", "type", "size", "content": memoryview,
#                   "last_modified"}, ...)
#                7: FileUpload.value = {filename: {"metadata": {"name", "type", "size",
#                   "lastModified"}, "content": bytes}}          -> upload_files() reads both
#   display      8: widget._repr_mimebundle_()            7: only widget._ipython_display_()
#                   -> view_bundle() builds the same view bundle (protocol 2) for both
# A trait a widget class does not have is dropped by traitlets with only a DeprecationWarning
# (the titles and tooltips simply vanish on 7), so make renames by the class's own traits.

def make(kind: str, *css: str, **traits):
    """``ipywidgets.<kind>(**traits)`` with CSS classes (stable hooks for browser tests), the
    traits named as in ipywidgets 8 and translated for 7 (see the table above)."""
    w = ipywidgets_or_none()
    if w is None:
        widget = Plain(**traits)
    else:
        cls = getattr(w, kind)
        has = cls.class_trait_names()
        titles = traits.pop("titles", ()) if "titles" not in has else ()
        if "tooltip" in traits and "tooltip" not in has:
            traits["description_tooltip"] = traits.pop("tooltip")
        widget = cls(**traits)
        for i, title in enumerate(titles):
            widget.set_title(i, title)
    for name in css:
        widget.add_class(name)
    return widget


def upload_files(upload) -> list[tuple[str, bytes]]:
    """The files a student picked in an ``ipywidgets.FileUpload``, from either version's value.

    Args:
        upload: the widget (anything with its ``value``): ipywidgets 8 holds a tuple of dicts,
            7 a dict by file name; the value's shape says which made it.

    Returns:
        ``[(file name, content bytes), ...]``, empty before any upload.
    """
    value = upload.value or ()
    if isinstance(value, dict):                                    # ipywidgets 7
        return [(name, bytes(item["content"])) for name, item in value.items()]
    return [(item["name"], bytes(item["content"])) for item in value]   # ipywidgets 8


def view_bundle(widget) -> dict:
    """The display bundle that makes a front end draw ``widget`` (ipywidgets 7 and 8 both use
    widget protocol 2; 7 has no ``_repr_mimebundle_`` to ask for it)."""
    return {"application/vnd.jupyter.widget-view+json": {
        "version_major": 2, "version_minor": 0, "model_id": widget.model_id}}


# --- showing a widget: Colab's widget manager, the view with its text fallback, pictures ---

# whether this kernel has turned Colab's widget manager on (once per kernel)
COLAB_MANAGER = {"enabled": False}


def enable_colab() -> None:
    """Colab renders ipywidgets 8 only with its custom widget manager: turn it on once."""
    if "google.colab" in sys.modules and not COLAB_MANAGER["enabled"]:
        COLAB_MANAGER["enabled"] = True
        try:
            from google.colab import output  # only exists on Colab

            output.enable_custom_widget_manager()
        except (ImportError, AttributeError):
            print("Widgets need Colab's custom widget manager: run "
                  "`from google.colab import output; output.enable_custom_widget_manager()`.")


class View:
    """Displays ``box`` where widgets render, with ``text()`` as the plain-text fallback."""

    box = None

    def text(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.text()

    def _ipython_display_(self):
        from IPython.display import display

        if self.box is None or isinstance(self.box, Plain):
            print(self.text())
            return
        enable_colab()
        bundle = view_bundle(self.box)         # the widget view, and our text for the rest
        bundle["text/plain"] = self.text()
        display(bundle, raw=True)


def figure(draw, size=(5.0, 2.2)):
    """A fresh figure (no pyplot state: safe in the worker thread) with ``draw(ax)`` done."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=80, constrained_layout=True)
    draw(fig.add_subplot())
    return fig


def png(draw, size=(5.0, 2.2)) -> bytes:
    """``figure(draw, size)`` as PNG bytes (``size`` in inches, 80 pixels each)."""
    buf = io.BytesIO()
    figure(draw, size).savefig(buf, format="png")
    return buf.getvalue()


def image(draw, size=(5.0, 2.2)):
    """An Image widget of ``png(draw, size)``, drawn at its own size: never stretched to a
    neighbour's height in a row (``align_self``), narrowed only to fit, keeping its aspect."""
    return make("Image", value=png(draw, size) if ipywidgets_or_none() else b"", format="png",
                 layout={"max_width": "100%", "height": "auto", "align_self": "flex-start"})


def token_size(num_codebooks: int) -> tuple[float, float]:
    """Inches for a picture with one row per codebook: a fixed height per row, so a stereo
    model's 8 codebooks get twice the height of 4 instead of half as tall rows (and the token
    grid and the delay pattern beside it are the same height)."""
    return 5.0, 0.3 * num_codebooks + 1.2


def draw_tokens(ax, tokens) -> None:
    """The generated codes ``[K, S]`` as a heat map: one row per codebook, one column per
    frame, drawn cell by cell (nearest, never smoothed) with whole-number ticks
    (``codec.plot_tokens``)."""
    from .codec import plot_tokens

    mesh = plot_tokens(tokens, ax, title=f"generated tokens [K, S] = {list(tokens.shape)}")
    ax.figure.colorbar(mesh, ax=ax, label="token id")


def wav_bytes(generation: Generation, index: int = 0) -> bytes:
    """Item ``index`` as WAV bytes, through ``audio.play`` (IPython's Audio encoder)."""
    from .audio import play

    return play(generation.wav[index], generation.sample_rate).data


def settings_line(g: Generation) -> str:
    """One line with what made ``g``: length, sampling settings and the seed actually used."""
    c = g.config
    how = "greedy" if not c.use_sampling else f"T={c.temperature:g} k={c.top_k} p={c.top_p:g}"
    return f"{g.duration:.1f} s, {how}, cfg={c.guidance_scale:g}, seed={g.seeds[0]}"


def short_prompt(text: str | None, width: int = 32) -> str:
    """A prompt for a label: quoted, cut to ``width`` characters with "…"; none: "no prompt"."""
    if text is None:
        return "no prompt"
    if len(text) <= width:
        return repr(text)
    cut = text[:width]
    cut = cut.rsplit(" ", 1)[0] if " " in cut[width // 2:] else cut[:-1]  # at a word, if near
    return repr(cut.rstrip() + "…")


def audio_player(g: Generation, autoplay: bool = False):
    """An ``<audio>`` player widget for item 0; ``autoplay``: it starts as soon as it is shown."""
    return make("Audio", value=wav_bytes(g) if ipywidgets_or_none() else b"", format="wav",
                 autoplay=autoplay)
