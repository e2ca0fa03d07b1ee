"""Small ipywidgets the lectures reuse: sliders from GenerationConfig and a token grid.

``mg.param_sliders()`` builds one control per GenerationConfig field from the range metadata
the config's own ``validate`` checks against (one source of ranges, none written here);
``mg.token_grid(generation)`` draws the generated codes ``[K, S]`` beside the delay pattern
(``codec.plot_delay_pattern``). ``mg.Studio`` (``studio.py``) is assembled from these pieces,
with the history and A/B compare (``mg.audio_compare``) in ``studio_history.py``.

The pieces they are made from (ipywidgets 7/8 translation, display with a text
fallback, pictures, players) are in ``widget_kit.py``.
"""

from __future__ import annotations

import dataclasses
import math

from .errors import ConfigError
from .generation import Generation, GenerationConfig
from .widget_kit import View, draw_tokens, image, make, token_size

__all__ = ["STUDIO_SETTINGS", "ParamSliders", "TokenGrid", "param_sliders", "token_grid"]

# GenerationConfig fields the studio shows, in this order (their ranges come from the config)
STUDIO_SETTINGS = ("duration", "temperature", "top_k", "top_p", "guidance_scale", "seed",
                   "use_sampling")


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
        return make("Checkbox", value=value, description=label, indent=False)
    if "choices" in meta:                                         # sampler
        return make("Dropdown", options=list(meta["choices"]), value=value, description=label,
                     tooltip=meta["hint"])
    low, high = meta["low"], meta["high"]
    if f.name == "duration":
        high = min(high, max_duration)       # one decoder window; long form: Python API
    hint = (f"Tick 'random' for a new {f.name} each run (the history records it)."
            if f.default is None else meta["hint"])      # the config's "None draws...": not here
    tooltip = f"{f.name} in {'(' if meta['low_open'] else '['}{low}, {high}]. {hint}"
    common = dict(description=label, tooltip=tooltip, style={"description_width": "110px"})
    if _typed_int(meta):                                          # seed: typed, exact
        return make("Text", value=str(value or 0), **common)
    if high is None:
        return make("IntText" if meta["integer"] else "FloatText", value=value or 0, **common)
    common["layout"] = {"width": "460px"}
    if meta["integer"]:
        return make("IntSlider", min=low, max=high, value=value, **common)
    step = 10 ** math.floor(math.log10((high - low) / 100))       # ~1/100 of the range, round
    return make("FloatSlider", min=low + step if meta["low_open"] else low, max=high,
                 step=step, value=value, readout_format=".2f", **common)


class ParamSliders(View):
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
        self.random = {n: make("Checkbox", value=getattr(self.base, n) is None,
                                description="random", indent=False)
                       for n in names if fields[n].default is None}   # seed: None = random
        for name, toggle in self.random.items():
            self.controls[name].disabled = toggle.value
            toggle.observe(lambda c, n=name: setattr(self.controls[n], "disabled", c.new),
                           "value")
        rows = [make("HBox", children=[w, self.random[n]]) if n in self.random else w
                for n, w in self.controls.items()]
        self.box = make("VBox", "mg-param-sliders", children=rows)

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


class TokenGrid(View):
    """The tokens of item ``index`` as a heat map ``[K, S]``, beside the delay pattern that
    produced them (``codec.plot_delay_pattern`` for the first ``frames`` frames)."""

    def __init__(self, generation: Generation, index: int = 0, frames: int = 6):
        from .codec import plot_delay_pattern

        self.tokens = generation.tokens[index]                              # [K, S]
        k, s = self.tokens.shape
        channels = generation.wav.shape[1]
        self.box = make("HBox", "mg-token-grid", layout={"align_items": "flex-start"},
                         children=[
            image(lambda ax: draw_tokens(ax, self.tokens), token_size(k)),
            image(lambda ax: plot_delay_pattern(k, max(1, min(frames, s)), channels, ax=ax),
                   token_size(k))])

    def text(self) -> str:
        return f"tokens [K, S] = {list(self.tokens.shape)}; frame 0: {self.tokens[:, 0].tolist()}"


def param_sliders(config: GenerationConfig | None = None, names=STUDIO_SETTINGS,
                  max_duration: float = 30.0) -> ParamSliders:
    """Sliders for GenerationConfig fields (see :class:`ParamSliders`)."""
    return ParamSliders(config, names, max_duration)


def token_grid(generation: Generation, index: int = 0, frames: int = 6) -> TokenGrid:
    """Show a generation's tokens and the delay pattern (see :class:`TokenGrid`)."""
    return TokenGrid(generation, index, frames)
