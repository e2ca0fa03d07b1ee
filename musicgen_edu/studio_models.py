"""The studio's model picker: what each model can do, and loading a picked one on demand.

    picker label  "facebook/musicgen-melody  (mono, melody yes, 1500M params, downloads once)"
                  from the registry (``models.HUB_MODELS``, ``DEBUG_MODELS``) without loading
    info line     "debug-melody can do: text, continuation, melody; loaded on cpu"
    Generate      ─► ``load(name)``: the first time a name is picked, ``MusicGenerator(name)``
                  on the current device (hub models download once), then kept for the session
"""

from __future__ import annotations

import html

from .generator import MusicGenerator
from .models import DEBUG_MODELS, HUB_MODELS, SHIPPED_MODELS
from .widget_kit import make

__all__ = ["ModelPicker", "model_facts"]


def model_facts(name: str, generator: MusicGenerator | None = None) -> str:
    """What a model can do: channels, melody, size (from the registry, or the loaded model)."""
    size = "tiny, offline"
    if name in HUB_MODELS:
        channels, melody, millions = HUB_MODELS[name]
        size = f"{millions}M params, downloads once"
    elif name in SHIPPED_MODELS:
        channels, melody, size = 1, False, "trained on synthetic music, offline"
    elif name in DEBUG_MODELS:
        (channels, melody), size = DEBUG_MODELS[name], "tiny, random weights, offline"
    elif generator is not None and generator.model.name == name:
        channels, melody = generator.model.audio_channels, generator.model.is_melody
    else:
        return "unknown until loaded"
    return f"{'stereo' if channels == 2 else 'mono'}, melody {'yes' if melody else 'no'}, {size}"


class ModelPicker:
    """A model dropdown with a line saying what the picked model can do, and its generators.

    Args:
        generator: the studio's first generator (listed first, already loaded).
        models: the names to offer (default: edu-tiny, the debug models, then the hub ones).
    """

    def __init__(self, generator: MusicGenerator, models=None):
        self.generators = {generator.model.name: generator}    # name -> loaded generator
        names = list(dict.fromkeys([generator.model.name,
                                    *(models or [*SHIPPED_MODELS, *DEBUG_MODELS, *HUB_MODELS])]))
        self.picker = make("Dropdown", description="model", value=generator.model.name,
                            options=[(f"{n}  ({model_facts(n, generator)})", n) for n in names],
                            layout={"width": "95%"})
        self.info = make("HTML")
        self.picker.observe(lambda _: self.show(), "value")
        self.show()

    def offer(self, model: str) -> None:
        """Add ``model`` to the choices if it is not there yet."""
        if model not in [v for _, v in self.picker.options]:
            self.picker.options = [*self.picker.options,
                                   (f"{model}  ({model_facts(model)})", model)]

    def load(self, name: str, device: str, on_download) -> MusicGenerator:
        """The generator for ``name``, loaded on ``device`` the first time (``on_download()``
        is called before that load, e.g. to say so in the status line)."""
        if name not in self.generators:
            on_download()
            self.generators[name] = MusicGenerator(name, device=device, progress=False)
            self.show()
        return self.generators[name]

    def show(self) -> None:
        """The info line for the picked model: its tabs, and whether it is loaded."""
        name = self.picker.value
        gen = self.generators.get(name)
        melody = gen.model.is_melody if gen else (HUB_MODELS.get(name) or
                                                  DEBUG_MODELS.get(name, (1, False)))[1]
        tabs = "text, continuation" + (", melody" if melody else
                                       " (the melody tab needs a melody model)")
        loaded = f"loaded on {gen.model.device}" if gen else "loads on Generate"
        self.info.value = html.escape(f"{name} can do: {tabs}; {loaded}")
