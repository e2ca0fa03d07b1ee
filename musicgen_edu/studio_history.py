"""The studio's memory: every result with how it was asked for, the history tab and A/B compare.

What one finished result goes through (``Studio._add`` calls :meth:`History.add`):

    Generation + job (mode, negative prompt, model, settings)
        ─► items, jobs        oldest first: ``studio.history``, ``studio.jobs``, ``table()``
        ─► a history row      [play] download  #n mode: 'prompt…', 2.0 s, T=1 k=250 p=0, ...
                              play: the result tab shows #n and its player starts at once
        ─► the A/B choices    #n 'prompt…', settings; preset to the two latest results

``compare(a, b)`` fills the A/B tab with an :class:`AudioCompare`: two players, waveforms and
spectrograms side by side, lecture 08's descriptors of both clips (``metrics.describe``:
loudness, spectral centroid, tempo, ...) and the settings that differ. Labels always carry the
prompt, shortened (``widget_kit.short_prompt``), so results that differ only in the prompt are
told apart.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math

from .errors import ConfigError
from .generation import Generation, GenerationConfig
from .metrics.descriptors import describe
from .widget_kit import (
    View,
    audio_player,
    image,
    ipywidgets_or_none,
    make,
    settings_line,
    short_prompt,
    wav_bytes,
)

__all__ = ["AB_METRICS", "AudioCompare", "History", "audio_compare", "compact", "metrics_table"]

# the descriptors (metrics.describe, lecture 08) the A/B tab shows: name -> (label, unit)
AB_METRICS = {"loudness_lufs": ("loudness", "LUFS"), "peak_dbfs": ("peak", "dBFS"),
              "centroid_hz": ("spectral centroid", "Hz"), "flatness": ("flatness", "0..1"),
              "silence_ratio": ("silence", "ratio"), "tempo_bpm": ("tempo", "BPM"),
              "beat_strength": ("beat strength", "-1..1"), "key": ("key", "")}


def compact(value) -> str:
    """A value for people: floats to 4 significant digits (0.5, not 0.5000000000000001; NaN:
    "n/a"), integers exact (a seed past 2**53 too), text quoted and shortened."""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, str):
        return short_prompt(value)
    return str(value)


def _metric(value) -> str:
    """A descriptor's value in the A/B table: a key as named ("A minor"), a number compact."""
    return value if isinstance(value, str) else "n/a" if value is None else compact(value)


def _player(g: Generation, title: str):
    """Title, an ``<audio>`` player, waveform and spectrogram of item 0 (one side of the A/B)."""
    from .audio import plot_spectrogram, plot_waveform

    wav = g.wav[0]                                                       # [C, T]
    return make("VBox", children=[
        make("HTML", value=f"<b>{html.escape(title)}</b>"), audio_player(g),
        image(lambda ax: plot_waveform(wav, g.sample_rate, ax=ax, title="waveform")),
        image(lambda ax: plot_spectrogram(wav, g.sample_rate, ax=ax, n_fft=1024,
                                           title="spectrogram"))])


def metrics_table(rows: dict) -> str:
    """``{label: describe() row}`` as an HTML table: one line per :data:`AB_METRICS` entry."""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in rows)
    lines = [f"<tr><td>{name}{f' ({unit})' if unit else ''}</td>"
             + "".join(f"<td>{html.escape(_metric(row[key]))}</td>" for row in rows.values())
             + "</tr>" for key, (name, unit) in AB_METRICS.items()]
    return (f'<table class="mg-ab-metrics"><tr><th>descriptor</th>{head}</tr>'
            f"{''.join(lines)}</table>")


class AudioCompare(View):
    """Two results side by side: players, waveforms, spectrograms, descriptors, what differs.

    Attributes:
        differences: each setting that differs -> ``(value in a, value in b)``; the seed
            compared is the one actually used (``Generation.seeds``), prompts and models count.
        metrics: ``{label: {descriptor: value}}`` for :data:`AB_METRICS`, measured by
            ``metrics.describe`` on item 0 of each (lecture 08).
    """

    def __init__(self, a: Generation, b: Generation, labels=("A", "B")):
        self.a, self.b, self.labels = a, b, tuple(labels)
        self.differences = {name: (x, y) for name, x, y in self._facts() if x != y}
        self.metrics = {label: {k: v for k, v in describe(g.wav[0], g.sample_rate).items()
                                if k in AB_METRICS} for g, label in zip((a, b), self.labels)}
        note = ("same settings" if not self.differences else "differs in: " + "; ".join(
            f"{n} {compact(x)} → {compact(y)}" for n, (x, y) in self.differences.items()))
        self.box = make("VBox", "mg-audio-compare", children=[
            make("HBox", children=[_player(g, f"{label}: {settings_line(g)}")
                                    for g, label in zip((a, b), self.labels)]),
            make("HTML", value=html.escape(note)),
            make("HTML", value=metrics_table(self.metrics))])

    def _facts(self):
        for f in dataclasses.fields(GenerationConfig):
            if f.name != "seed":
                yield f.name, getattr(self.a.config, f.name), getattr(self.b.config, f.name)
        yield "seed", self.a.seeds[0], self.b.seeds[0]
        yield "prompt", self.a.prompts[0], self.b.prompts[0]
        yield "model", self.a.model_name, self.b.model_name

    def text(self) -> str:
        lines = [f"{label}: {settings_line(g)}" for g, label in zip((self.a, self.b), self.labels)]
        lines += [f"{AB_METRICS[k][0]}: " + " vs ".join(_metric(m[k]) for m in
                                                        self.metrics.values())
                  for k in AB_METRICS]
        return "\n".join(lines + [f"differences: {self.differences or 'none'}"])


def audio_compare(a: Generation, b: Generation, labels=("A", "B")) -> AudioCompare:
    """Play two generations side by side and list what differs (see :class:`AudioCompare`)."""
    return AudioCompare(a, b, labels)


class History:
    """The studio's results, oldest first, with the history tab and the A/B tab's widgets.

    Args:
        play: ``play(index)`` shows item ``index`` in the result tab and starts its player
            (the history rows' *play* buttons call it).
    """

    def __init__(self, play):
        self.items: list[Generation] = []       # every finished result, oldest first
        self.jobs: list[dict] = []              # how each was asked for (mode, negative, ...)
        self.compared: AudioCompare | None = None   # what the A/B tab shows
        self._play = play
        self.box = make("VBox", "mg-studio-history")
        self.compare_a, self.compare_b = (
            make("Dropdown", f"mg-studio-ab-{side.lower()}", description=side, options=[],
                  layout={"width": "40%"}) for side in "AB")
        self.compare_button = make("Button", description="compare A/B", icon="headphones")
        self.compare_box = make("VBox", "mg-studio-compare")
        self.tab = make("VBox", children=[
            make("HBox", children=[self.compare_a, self.compare_b, self.compare_button]),
            self.compare_box])

    def add(self, out: Generation, job: dict) -> int:
        """Keep a finished result: its history row and A/B choices. Returns its number ``n``."""
        self.items.append(out)
        self.jobs.append(job)
        n = len(self.items)
        data = base64.b64encode(wav_bytes(out)).decode() if ipywidgets_or_none() else ""
        link = (f'<a download="musicgen_{n}.wav" href="data:audio/wav;base64,{data}">'
                "download</a>")
        play = make("Button", description="play", icon="play", layout={"width": "80px"},
                     tooltip=f"play #{n} in the result tab")
        play.on_click(lambda _, i=n - 1: self._play(i))
        prompt = html.escape(short_prompt(out.prompts[0], 60))
        label = f"#{n} {job['mode']}: {prompt}, {settings_line(out)}"
        self.box.children = (*self.box.children, make(
            "HBox", children=[play, make("HTML", value=f"{link} &nbsp; {label}")]))
        choices = [(f"{self.title(i)}, {settings_line(g)}", i) for i, g in enumerate(self.items)]
        self.compare_a.options, self.compare_b.options = choices, choices
        self.compare_a.value, self.compare_b.value = max(0, n - 2), n - 1
        return n

    def item(self, index: int) -> Generation:
        """Result ``index`` (negative from the end); ConfigError names the valid range."""
        if not isinstance(index, int) or not -len(self.items) <= index < len(self.items):
            raise ConfigError(f"history index {index!r} is out of range; the studio has "
                              f"{len(self.items)} result(s): 0..{len(self.items) - 1} or "
                              "negative from the end. Generate first.")
        return self.items[index]

    def number(self, index: int) -> int:
        """``#n`` as the history shows it (1-based) for an index (negative from the end)."""
        return index % len(self.items) + 1

    def title(self, index: int) -> str:
        """``#n 'its prompt…'``: what tells results apart in the A/B choices and players."""
        return f"#{self.number(index)} {short_prompt(self.items[index].prompts[0], 24)}"

    def compare(self, a: int, b: int) -> AudioCompare:
        """Fill the A/B tab with items ``a`` and ``b``."""
        first, second = self.item(a), self.item(b)
        self.compared = AudioCompare(first, second, labels=(f"A {self.title(a)}",
                                                            f"B {self.title(b)}"))
        self.compare_box.children = [self.compared.box]
        return self.compared

    def table(self):
        """The history as a pandas DataFrame: one row per result, its settings and seed."""
        import pandas as pd

        return pd.DataFrame([{"#": i + 1, "mode": job["mode"], "model": g.model_name,
                              "prompt": g.prompts[0], "negative": job["negative_prompt"],
                              **{k: v for k, v in vars(g.config).items() if k != "seed"},
                              "seed": g.seeds[0], "seconds": round(g.duration, 3)}
                             for i, (g, job) in enumerate(zip(self.items, self.jobs))])
