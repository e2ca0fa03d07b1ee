"""Small ipywidgets the lectures reuse: sliders from GenerationConfig and a token grid.

``mg.param_sliders()`` builds one control per GenerationConfig field from the range metadata
the config's own ``validate`` checks against (one source of ranges, none written here);
``mg.token_grid(generation)`` draws the generated codes ``[K, S]`` beside the delay pattern
(``codec.plot_delay_pattern``). ``mg.Studio`` (``studio.py``) is assembled from these pieces,
with the history and A/B compare (``mg.audio_compare``) in ``studio_history.py``.

How a widget reaches the screen: ``display(widget)`` -> ``_View._ipython_display_`` sends the
ipywidgets view *and* a plain-text summary; JupyterLab 4 renders the view (the
``jupyterlab_widgets`` extension comes with ipywidgets 8), Colab does once its custom widget
manager is on (turned on here at the first display:
``google.colab.output.enable_custom_widget_manager()``), and everywhere widgets cannot render
(a terminal, papermill, a static viewer) the text is shown. ipywidgets is imported only when a
widget is made, so ``import musicgen_edu`` works without it; without it the widgets keep their
values and Python API (``_Plain``) and display as text. ipywidgets 7.7 (Colab's) and 8 both
work: the few names that differ are translated in one place (``_make``, ``upload_files``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import sys

from .errors import ConfigError
from .generator import Generation, GenerationConfig

__all__ = ["STUDIO_SETTINGS", "ParamSliders", "TokenGrid", "param_sliders", "token_grid"]

# GenerationConfig fields the studio shows, in this order (their ranges come from the config)
STUDIO_SETTINGS = ("duration", "temperature", "top_k", "top_p", "guidance_scale", "seed",
                   "use_sampling")


# --- small pieces ---------------------------------------------------------------------------

def _ipywidgets():
    """The ipywidgets module, or None when it is not installed (widgets degrade to text)."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


class _Plain:
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
#                   -> _view_bundle() builds the same view bundle (protocol 2) for both
# A trait a widget class does not have is dropped by traitlets with only a DeprecationWarning
# (the titles and tooltips simply vanish on 7), so _make renames by the class's own traits.

def _make(kind: str, *css: str, **traits):
    """``ipywidgets.<kind>(**traits)`` with CSS classes (stable hooks for browser tests), the
    traits named as in ipywidgets 8 and translated for 7 (see the table above)."""
    w = _ipywidgets()
    if w is None:
        widget = _Plain(**traits)
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


def _view_bundle(widget) -> dict:
    """The display bundle that makes a front end draw ``widget`` (ipywidgets 7 and 8 both use
    widget protocol 2; 7 has no ``_repr_mimebundle_`` to ask for it)."""
    return {"application/vnd.jupyter.widget-view+json": {
        "version_major": 2, "version_minor": 0, "model_id": widget.model_id}}


# --- showing a widget: Colab's widget manager, the view with its text fallback, pictures ---

_colab = {"enabled": False}


def _enable_colab() -> None:
    """Colab renders ipywidgets 8 only with its custom widget manager: turn it on once."""
    if "google.colab" in sys.modules and not _colab["enabled"]:
        _colab["enabled"] = True
        try:
            from google.colab import output  # only exists on Colab

            output.enable_custom_widget_manager()
        except (ImportError, AttributeError):
            print("Widgets need Colab's custom widget manager: run "
                  "`from google.colab import output; output.enable_custom_widget_manager()`.")


class _View:
    """Displays ``box`` where widgets render, with ``text()`` as the plain-text fallback."""

    box = None

    def text(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.text()

    def _ipython_display_(self):
        from IPython.display import display

        if self.box is None or isinstance(self.box, _Plain):
            print(self.text())
            return
        _enable_colab()
        bundle = _view_bundle(self.box)         # the widget view, and our text for the rest
        bundle["text/plain"] = self.text()
        display(bundle, raw=True)


def _figure(draw, size=(5.0, 2.2)):
    """A fresh figure (no pyplot state: safe in the worker thread) with ``draw(ax)`` done."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=80, constrained_layout=True)
    draw(fig.add_subplot())
    return fig


def _png(draw, size=(5.0, 2.2)) -> bytes:
    """``_figure(draw, size)`` as PNG bytes (``size`` in inches, 80 pixels each)."""
    buf = io.BytesIO()
    _figure(draw, size).savefig(buf, format="png")
    return buf.getvalue()


def _image(draw, size=(5.0, 2.2)):
    """An Image widget of ``_png(draw, size)``, drawn at its own size: never stretched to a
    neighbour's height in a row (``align_self``), narrowed only to fit, keeping its aspect."""
    return _make("Image", value=_png(draw, size) if _ipywidgets() else b"", format="png",
                 layout={"max_width": "100%", "height": "auto", "align_self": "flex-start"})


def _token_size(num_codebooks: int) -> tuple[float, float]:
    """Inches for a picture with one row per codebook: a fixed height per row, so a stereo
    model's 8 codebooks get twice the height of 4 instead of half as tall rows (and the token
    grid and the delay pattern beside it are the same height)."""
    return 5.0, 0.3 * num_codebooks + 1.2


def _draw_tokens(ax, tokens) -> None:
    """The generated codes ``[K, S]`` as a heat map: one row per codebook, one column per
    frame, drawn cell by cell (nearest, never smoothed) with whole-number ticks
    (``codec.plot_tokens``)."""
    from .codec import plot_tokens

    mesh = plot_tokens(tokens, ax, title=f"generated tokens [K, S] = {list(tokens.shape)}")
    ax.figure.colorbar(mesh, ax=ax, label="token id")


def _wav_bytes(generation: Generation, index: int = 0) -> bytes:
    """Item ``index`` as WAV bytes, through ``audio_display.play`` (IPython's Audio encoder)."""
    from .audio_display import play

    return play(generation.wav[index], generation.sample_rate).data


def _settings(g: Generation) -> str:
    """One line with what made ``g``: length, sampling settings and the seed actually used."""
    c = g.config
    how = "greedy" if not c.use_sampling else f"T={c.temperature:g} k={c.top_k} p={c.top_p:g}"
    return f"{g.duration:.1f} s, {how}, cfg={c.guidance_scale:g}, seed={g.seeds[0]}"


def _short(text: str | None, width: int = 32) -> str:
    """A prompt for a label: quoted, cut to ``width`` characters with "…"; none: "no prompt"."""
    if text is None:
        return "no prompt"
    if len(text) <= width:
        return repr(text)
    cut = text[:width]
    cut = cut.rsplit(" ", 1)[0] if " " in cut[width // 2:] else cut[:-1]  # at a word, if near
    return repr(cut.rstrip() + "…")


def _audio(g: Generation, autoplay: bool = False):
    """An ``<audio>`` player widget for item 0; ``autoplay``: it starts as soon as it is shown."""
    return _make("Audio", value=_wav_bytes(g) if _ipywidgets() else b"", format="wav",
                 autoplay=autoplay)


# --- the small widgets lectures reuse -------------------------------------------------------

def _typed_int(meta) -> bool:
    """A whole number too wide for a slider (the seed): typed as text, so it stays exact (a
    browser holds numbers as doubles, exact only up to 2**53)."""
    high = meta.get("high")
    return bool(meta.get("integer")) and high is not None and high - meta["low"] > 100_000


def _read(name: str, text: str, random: bool) -> int:
    """The integer typed into a text box, exactly; ConfigError says what to type instead."""
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        other = ", or tick 'random'" if random else ""
        raise ConfigError(f"{name}={text!r} is not a whole number: type digits such as "
                          f"42{other}.") from None


def _clean(value: float) -> float:
    """A float slider's value without the browser's binary-float noise: its slider recomputes
    the value from its steps and sends it back (temperature 1.0 came back from JupyterLab as
    1.0000000000000002); 12 significant digits drop the noise and keep any value one sets."""
    return float(f"{value:.12g}")


def _control(f: dataclasses.Field, value, max_duration: float):
    """A control for one GenerationConfig field, from its type and range metadata."""
    label, meta = f.name.replace("_", " "), f.metadata
    if not meta:                                                  # bool: use_sampling
        return _make("Checkbox", value=value, description=label, indent=False)
    if "choices" in meta:                                         # sampler
        return _make("Dropdown", options=list(meta["choices"]), value=value, description=label,
                     tooltip=meta["hint"])
    low, high = meta["low"], meta["high"]
    if f.name == "duration":
        high = min(high, max_duration)       # one decoder window; long form: Python API
    hint = (f"Tick 'random' for a new {f.name} each run (the history records it)."
            if f.default is None else meta["hint"])      # the config's "None draws...": not here
    tooltip = f"{f.name} in {'(' if meta['low_open'] else '['}{low}, {high}]. {hint}"
    common = dict(description=label, tooltip=tooltip, style={"description_width": "110px"})
    if _typed_int(meta):                                          # seed: typed, exact
        return _make("Text", value=str(value or 0), **common)
    if high is None:
        return _make("IntText" if meta["integer"] else "FloatText", value=value or 0, **common)
    common["layout"] = {"width": "460px"}
    if meta["integer"]:
        return _make("IntSlider", min=low, max=high, value=value, **common)
    step = 10 ** math.floor(math.log10((high - low) / 100))       # ~1/100 of the range, round
    return _make("FloatSlider", min=low + step if meta["low_open"] else low, max=high,
                 step=step, value=value, readout_format=".2f", **common)


class ParamSliders(_View):
    """Controls for GenerationConfig fields, built from the ranges in the config's metadata.

    Args:
        config: the starting values (default ``GenerationConfig()``).
        names: which fields to show, in order (default :data:`STUDIO_SETTINGS`).
        max_duration: where the duration slider stops (one decoder window, 30 s).

    Example::

        sliders = mg.param_sliders(mg.GenerationConfig(duration=4, seed=0))
        sliders.set(temperature=0.7)            # checked first: a bad value raises ConfigError
        gen.generate("calm piano", **sliders.values())
    """

    def __init__(self, config: GenerationConfig | None = None, names=STUDIO_SETTINGS,
                 max_duration: float = 30.0):
        self.base = config or GenerationConfig()
        fields = {f.name: f for f in dataclasses.fields(GenerationConfig)}
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {unknown}; allowed: "
                              f"{sorted(fields)}.")
        self.controls = {n: _control(fields[n], getattr(self.base, n), max_duration)
                         for n in names}
        self.typed = {n for n in names if _typed_int(fields[n].metadata)}   # text -> int
        self.floats = {n for n in names if fields[n].metadata.get("high") is not None
                       and not fields[n].metadata["integer"]}           # float sliders
        self.random = {n: _make("Checkbox", value=getattr(self.base, n) is None,
                                description="random", indent=False)
                       for n in names if fields[n].default is None}   # seed: None = random
        for name, toggle in self.random.items():
            self.controls[name].disabled = toggle.value
            toggle.observe(lambda c, n=name: setattr(self.controls[n], "disabled", c.new),
                           "value")
        rows = [_make("HBox", children=[w, self.random[n]]) if n in self.random else w
                for n, w in self.controls.items()]
        self.box = _make("VBox", "mg-param-sliders", children=rows)

    def values(self) -> dict:
        """``{field: value}`` as the controls show them (a random seed is ``None``); a typed
        value that is not a whole number raises ConfigError."""
        return {n: self._value(n) for n in self.controls}

    def _value(self, name: str):
        if name in self.random and self.random[name].value:
            return None
        value = self.controls[name].value
        if name in self.floats:
            return _clean(value)
        return _read(name, value, name in self.random) if name in self.typed else value

    def config(self) -> GenerationConfig:
        """The config the controls describe; ``ConfigError`` names a bad value."""
        return self.base.replace(**self.values())

    def set(self, **values) -> None:
        """Move controls; every value is checked (config range, slider range) before any moves."""
        others = {n: self._value(n) for n in self.controls if n not in values}
        self.base.replace(**others, **values)                              # ConfigError
        for name, value in values.items():
            if name not in self.controls:
                raise ConfigError(f"{name} has no control here; shown: {list(self.controls)}.")
            top = getattr(self.controls[name], "max", None)
            if value is not None and top is not None and value > top:
                raise ConfigError(f"{name}={value!r} is past this slider's end {top} (one "
                                  "decoder window); call MusicGenerator.generate for long form.")
        for name, value in values.items():
            if name in self.random:
                self.random[name].value = value is None
            if value is not None:
                self.controls[name].value = str(value) if name in self.typed else value

    def text(self) -> str:
        try:
            values = self.values()
        except ConfigError as exc:                   # a typo in the seed box: say it, never raise
            return f"settings: {exc}"
        return "settings: " + ", ".join(f"{k}={v!r}" for k, v in values.items())


class TokenGrid(_View):
    """The tokens of item ``index`` as a heat map ``[K, S]``, beside the delay pattern that
    produced them (``codec.plot_delay_pattern`` for the first ``frames`` frames)."""

    def __init__(self, generation: Generation, index: int = 0, frames: int = 6):
        from .codec import plot_delay_pattern

        self.tokens = generation.tokens[index]                              # [K, S]
        k, s = self.tokens.shape
        channels = generation.wav.shape[1]
        self.box = _make("HBox", "mg-token-grid", layout={"align_items": "flex-start"},
                         children=[
            _image(lambda ax: _draw_tokens(ax, self.tokens), _token_size(k)),
            _image(lambda ax: plot_delay_pattern(k, max(1, min(frames, s)), channels, ax=ax),
                   _token_size(k))])

    def text(self) -> str:
        return f"tokens [K, S] = {list(self.tokens.shape)}; frame 0: {self.tokens[:, 0].tolist()}"


def param_sliders(config: GenerationConfig | None = None, names=STUDIO_SETTINGS,
                  max_duration: float = 30.0) -> ParamSliders:
    """Sliders for GenerationConfig fields (see :class:`ParamSliders`)."""
    return ParamSliders(config, names, max_duration)


def token_grid(generation: Generation, index: int = 0, frames: int = 6) -> TokenGrid:
    """Show a generation's tokens and the delay pattern (see :class:`TokenGrid`)."""
    return TokenGrid(generation, index, frames)
