"""A picture of the studio's state that needs no kernel: the static fallback of its widgets.

Widgets live in the kernel. On the docs site, in a static viewer or in a notebook reopened
without a kernel, the studio is only its text summary (JupyterLab: "Error displaying widget:
model not found"). ``studio.snapshot()`` draws what the studio holds now as one ordinary
output, HTML with the pictures and the player inside it, which the notebook saves and any
viewer renders:

    settings   model, mode, prompt, negative prompt, the controls' values, the status line
    result     the result on show (the last one, or the one *play* picked): its summary, a
               player, waveform, spectrogram and token grid (``widgets.TokenGrid``'s picture)
    history    one row per result: #, mode, model, prompt, settings, seed
    A/B        the pair on show: the settings that differ and lecture 08's descriptors

A snapshot is taken when it is made (later clicks do not change it): show it at the end of a
lecture, or whenever the state is worth keeping on the page.
"""

from __future__ import annotations

import base64
import html

from .studio_history import metrics_table
from .widget_kit import draw_tokens, png, settings_line, token_size, wav_bytes

__all__ = ["StudioSnapshot"]


def _img(png: bytes, alt: str) -> str:
    return (f'<img alt="{alt}" style="max-width:32%; margin-right:1%" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}"/>')


class StudioSnapshot:
    """The studio's state as HTML (``_repr_html_``) and text, taken by ``Studio.snapshot()``.

    Attributes:
        settings: ``{name: value}`` the controls show (plus model, mode, prompt, negative).
        message: the status line.
        rows: one line per history item, ``"#n mode: 'prompt…', settings"``.
        shown: the number ``n`` of the result on show, or ``None`` before the first one.
        pictures: ``{"waveform" | "spectrogram" | "tokens": PNG bytes}`` of that result.
        differences: what differs between the A/B pair on show (empty without one).
    """

    def __init__(self, studio):
        from .audio import plot_spectrogram, plot_waveform

        self.settings = dict(model=studio.model_picker.value, mode=studio.mode,
                             prompt=studio.prompt_box.value,
                             negative=studio.negative_box.value, **studio.sliders.values())
        self.message = studio.message
        self.rows = [f"#{i + 1} {job['mode']}: {g.prompts[0]!r}, {settings_line(g)}"
                     for i, (g, job) in enumerate(zip(studio.history, studio.jobs))]
        self.shown, self.pictures, self._audio = None, {}, b""
        if studio.shown is not None:
            g, self.shown = studio.history[studio.shown], studio.shown + 1
            wav, sr = g.wav[0], g.sample_rate                                 # [C, T]
            self.summary = g.summary()
            self.pictures = {
                "waveform": png(lambda ax: plot_waveform(wav, sr, ax=ax, title="waveform")),
                "spectrogram": png(lambda ax: plot_spectrogram(wav, sr, ax=ax, n_fft=1024,
                                                                title="spectrogram")),
                "tokens": png(lambda ax: draw_tokens(ax, g.tokens[0]),
                               token_size(g.tokens.shape[1]))}
            self._audio = wav_bytes(g)
        compared = studio.archive.compared
        self.differences = compared.differences if compared is not None else {}
        self._ab = (compared.labels, compared.metrics) if compared is not None else None

    def _repr_html_(self) -> str:
        e = html.escape
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        parts = [('<div class="mg-studio-snapshot"><h4>MusicGen studio (a snapshot: the '
                  'widgets need a running kernel)</h4>'),
                 f"<p><b>settings</b>: {e(settings)}<br><b>status</b>: {e(self.message)}</p>"]
        if self.shown is None:
            parts.append("<p>no result yet: press Generate.</p>")
        else:
            wav = base64.b64encode(self._audio).decode()
            parts += [f"<p><b>#{self.shown}</b> {e(self.summary)}</p>",
                      f'<audio controls src="data:audio/wav;base64,{wav}"></audio><br>',
                      *(_img(png, name) for name, png in self.pictures.items())]
        if self.rows:
            parts.append("<p><b>history</b></p><ol>" + "".join(
                f"<li>{e(row.split(' ', 1)[1])}</li>" for row in self.rows) + "</ol>")
        if self._ab is not None:
            labels, metrics = self._ab
            changes = "; ".join(f"{k} {x!r} → {y!r}" for k, (x, y) in self.differences.items())
            parts += [(f"<p><b>A/B</b> {e(' vs '.join(labels))}: "
                       f"{e(changes or 'same settings')}</p>"), metrics_table(metrics)]
        return "\n".join(parts + ["</div>"])

    def text(self) -> str:
        shown = f"#{self.shown}: {self.summary}" if self.shown else "no result yet"
        settings = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return "\n".join([f"MusicGen studio snapshot: {settings}", f"status: {self.message}",
                          f"on show: {shown}", *self.rows,
                          *([f"A/B differences: {self.differences}"] if self._ab else [])])

    def __repr__(self) -> str:
        return self.text()
