"""``mg.Studio``: explore MusicGen by ear in JupyterLab or Colab, without writing a loop.

The path of one click on **Generate**; the studio is a thin caller of ``MusicGenerator`` with
no generation, validation or audio code of its own (ARCHITECTURE.md, interfaces layer):

    sliders (widgets.param_sliders: ranges from GenerationConfig) ─► GenerationConfig(**values)
        a bad value ─► its ConfigError message in the status line, an empty bar; nothing runs;
        until the click succeeds, every change of a control checks again (a fix clears it)
    prompt box ─► PromptEngineer.validate, live (errors block Generate, warnings teach); a
        click it blocks points the status line there instead of repeating the error
    Generate ─► worker thread: MusicGenerator.generate(prompt, callback=step, **values)
        step(i, total) ─► progress bar; Cancel sets a flag, the next step raises _Cancelled,
        the decoding loop stops there and nothing half-made is kept
    Generation ─► "drawing…", then player (<audio>), waveform, spectrogram, token grid; a
        history row and A/B choice (#n, the prompt shortened, settings; play, download); the
        continuation/melody source moves to this result

The worker thread keeps the kernel free: while the decoder runs, widget messages (Cancel, a
slider) are still handled, and ipywidgets 8 sends the progress updates from that thread.
Errors of the library (``MusicGenEduError``) appear as their message in the status line,
never as a traceback. The same studio works from Python (``studio.generate(...)`` sets the
controls and presses Generate), which is how lecture 07 and the tests drive it.
"""

from __future__ import annotations

import base64
import html
import tempfile
import threading
from pathlib import Path

from .errors import ConfigError, MusicGenEduError
from .generator import Generation, GenerationConfig, MusicGenerator
from .models import DEBUG_MODELS, HUB_MODELS
from .prompt import PromptEngineer
from .widgets import (ParamSliders, TokenGrid, _audio, _image, _ipywidgets, _make, _settings,
                      _short, _View, _wav_bytes, audio_compare)

__all__ = ["Studio", "MODES"]

MODES = ("text", "continuation", "melody")      # the mode tabs, in order
_COLORS = {"ok": "#1a7f37", "error": "#cf222e", "warn": "#9a6700", "busy": "#0969da"}
_HELP = {
    "text": "Text to music: the prompt (and negative prompt) above, the settings below.",
    "continuation": "Continue a source clip: its last <i>prompt seconds</i> become the first "
                    "tokens, duration is the total length (longer than the prompt). The text "
                    "prompt is optional; the source follows the latest result.",
    "melody": "Follow the melody (chroma) of a source clip: melody models only "
              "(debug-melody, facebook/musicgen-melody, facebook/musicgen-stereo-melody)."}


class _Cancelled(Exception):
    """Raised from the progress callback after Cancel: ends the decoding loop at that step."""


def _model_facts(name: str, generator: MusicGenerator | None = None) -> str:
    """What a model can do: channels, melody, size (from the registry, or the loaded model)."""
    if name in HUB_MODELS:
        channels, melody, millions = HUB_MODELS[name]
    elif name in DEBUG_MODELS:
        (channels, melody), millions = DEBUG_MODELS[name], None
    elif generator is not None:
        channels, melody = generator.model.audio_channels, generator.model.is_melody
        millions = None
    else:
        return "unknown until loaded"
    size = "tiny, offline" if millions is None else f"{millions}M params, downloads once"
    return f"{'stereo' if channels == 2 else 'mono'}, melody {'yes' if melody else 'no'}, {size}"


def _prompt_seconds(duration: float) -> float:
    """A continuation prompt shorter than ``duration`` (the total length): about half of it on
    the slider's 0.5 s grid, 0.5 to 2 s (1.0 s -> 0.5, 2.0 s -> 1.0, 8.0 s -> 2.0)."""
    return min(2.0, max(0.5, duration // 1 / 2))


class Studio(_View):
    """A MusicGen studio: prompt, model, settings, Generate/Cancel, result, history and A/B.

    Args:
        generator: a :class:`MusicGenerator`, or a model name to load (default ``"debug"``).
        prompt: the text the prompt box starts with.
        config: starting settings (default: the generator's ``config``).
        models: names the model picker offers (default: the debug models, then the hub ones);
            a picked model loads on the next Generate.

    Python API (the same path as the buttons): ``generate(prompt, **settings)``, ``cancel()``,
    ``wait()``, ``history`` (a list of :class:`Generation`), ``table()``, ``show(i)``,
    ``compare(a, b)``, ``use_audio(wav, sample_rate)`` and ``message`` (the status line).

    Example::

        studio = mg.Studio(mg.MusicGenerator("debug"))
        studio                                        # the widget (last line of a cell)
        studio.generate("calm lo-fi piano", duration=4, temperature=0.7, seed=0)
        studio.compare(-2, -1)                        # A/B: the last two results
    """

    def __init__(self, generator: MusicGenerator | str = "debug", *,
                 prompt: str = "calm lo-fi piano with soft drums",
                 config: GenerationConfig | None = None, models=None):
        if not isinstance(generator, MusicGenerator):
            generator = MusicGenerator(generator, progress=False)
        self.generator = generator
        self.engineer = PromptEngineer(generator)
        self.history: list[Generation] = []       # every finished result, oldest first
        self.jobs: list[dict] = []                # how each was asked for (mode, negative, ...)
        self.sources: dict[str, tuple] = {}       # continuation/melody audio: label -> (wav, sr)
        self.message, self.last_error = "", None  # the status line; an unexpected exception
        self._rejected = False                    # the status shows why the last click failed
        self._generators = {generator.model.name: generator}
        self._thread, self._cancel = None, threading.Event()
        names = list(dict.fromkeys([generator.model.name, *(models or [*DEBUG_MODELS,
                                                                         *HUB_MODELS])]))
        # inputs: prompt, model, mode, settings
        self.prompt_box = _make("Textarea", "mg-studio-prompt", value=prompt, rows=2,
                                description="prompt", layout={"width": "95%"})
        self.prompt_info = _make("HTML")
        self.improve_button = _make("Button", description="improve prompt", icon="magic",
                                    tooltip="PromptEngineer.improve: add the missing facets")
        self.negative_box = _make("Text", value="", description="negative",
                                  placeholder="what to steer away from, e.g. vocals",
                                  layout={"width": "95%"})
        self.model_picker = _make("Dropdown", description="model", value=generator.model.name,
                                  options=[(f"{n}  ({_model_facts(n, generator)})", n)
                                           for n in names], layout={"width": "95%"})
        self.model_info = _make("HTML")
        self.sliders = ParamSliders(config or generator.config,
                                    max_duration=generator.max_duration)
        self.source_picker = _make("Dropdown", description="source", options=[])
        self.upload = _make("FileUpload", accept="audio/*", multiple=False,
                            description="upload audio")
        self.prompt_seconds = _make("FloatSlider", min=0.5, max=10.0, step=0.5,
                                    value=_prompt_seconds(self.sliders.base.duration),
                                    description="prompt seconds", layout={"width": "460px"},
                                    style={"description_width": "110px"})   # as the sliders
        source_row = _make("HBox", children=[self.source_picker, self.upload])
        self.mode_tabs = _make("Tab", titles=MODES, selected_index=0, children=[
            _make("HTML", value=_HELP["text"]),
            _make("VBox", children=[_make("HTML", value=_HELP["continuation"]), source_row,
                                    self.prompt_seconds]),
            _make("VBox", children=[_make("HTML", value=_HELP["melody"]), source_row])])
        # run: Generate, Cancel, progress, status
        self.generate_button = _make("Button", "mg-studio-generate", description="Generate",
                                     button_style="primary", icon="play")
        self.cancel_button = _make("Button", "mg-studio-cancel", description="Cancel",
                                   icon="stop", disabled=True)
        self.progress = _make("IntProgress", value=0, min=0, max=1, description="steps")
        self.status = _make("HTML", "mg-studio-status")
        # outputs: result, history, A/B
        self.result = _make("VBox", "mg-studio-result")
        self.history_box = _make("VBox", "mg-studio-history")
        self.compare_a = _make("Dropdown", description="A", options=[], layout={"width": "40%"})
        self.compare_b = _make("Dropdown", description="B", options=[], layout={"width": "40%"})
        self.compare_button = _make("Button", description="compare A/B", icon="headphones")
        self.compare_box = _make("VBox", "mg-studio-compare")
        self.output_tabs = _make("Tab", titles=("result", "history", "A/B compare"), children=[
            self.result, self.history_box, _make("VBox", children=[
                _make("HBox", children=[self.compare_a, self.compare_b, self.compare_button]),
                self.compare_box])])
        self.box = _make("VBox", "mg-studio", children=[
            _make("HTML", value="<h3>MusicGen studio</h3>"), self.model_picker, self.model_info,
            self.prompt_box, _make("HBox", children=[self.improve_button, self.prompt_info]),
            self.negative_box, self.mode_tabs, self.sliders.box,
            _make("HBox", children=[self.generate_button, self.cancel_button, self.progress]),
            self.status, self.output_tabs])
        # wiring
        self.prompt_box.observe(lambda _: self._check_prompt(), "value")
        self.improve_button.on_click(lambda _: self._safely(self.improve))
        self.model_picker.observe(lambda _: self._show_model(), "value")
        self.upload.observe(lambda _: self._uploaded(), "value")
        self.generate_button.on_click(lambda _: self._start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.compare_button.on_click(lambda _: self._safely(
            self.compare, self.compare_a.value, self.compare_b.value))
        for control in (self.prompt_box, self.negative_box, self.source_picker, self.prompt_seconds,
                        *self.sliders.controls.values(), *self.sliders.random.values()):
            control.observe(lambda _: self._recheck(), "value")
        self.mode_tabs.observe(lambda _: self._recheck(), "selected_index")
        self._check_prompt()
        self._show_model()

    # --- the Python API ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a generation runs in the worker thread."""
        return self._thread is not None and self._thread.is_alive()

    def generate(self, prompt: str | None = None, *, negative_prompt: str | None = None,
                 model: str | None = None, mode: str | None = None, source: str | None = None,
                 wait: bool = True, **settings) -> Generation | None:
        """Set the given controls, then press Generate (exactly what a click does).

        Args:
            prompt: put into the prompt box (``None`` keeps what it holds).
            negative_prompt: put into the negative box (``""`` clears it).
            model: a name for the model picker (loaded on demand).
            mode: ``"text"``, ``"continuation"`` or ``"melody"`` (a tab).
            source: a label of :attr:`sources` (a past result ``"#1 ..."`` or a ``use_audio`` one).
            wait: block until done (the result), or return ``None`` at once (see :meth:`wait`).
            **settings: GenerationConfig fields the sliders show, e.g. ``temperature=0.7``;
                ``seed=None`` turns the random toggle on.

        Returns:
            The new :class:`Generation`, or ``None`` when it failed, was cancelled or is still
            running; :attr:`message` says which. Library errors never raise here.
        """
        if self.running:
            self._say("already generating: wait for it, or press Cancel.", "error")
            return None
        try:
            if prompt is not None:
                self.prompt_box.value = prompt
            if negative_prompt is not None:
                self.negative_box.value = negative_prompt
            if model is not None:
                self._offer(model)
                self.model_picker.value = model
            if mode is not None:
                if mode not in MODES:
                    raise ConfigError(f"mode={mode!r} is not one of {list(MODES)}.")
                self.mode_tabs.selected_index = MODES.index(mode)
            if source is not None:
                self._pick_source(source)
            self.sliders.set(**settings)
        except MusicGenEduError as exc:
            self._say(exc, "error")
            return None
        before = len(self.history)
        self.generate_button.click()
        if not wait:
            return None
        self.wait()
        return self.history[-1] if len(self.history) > before else None

    def cancel(self) -> None:
        """Stop the running generation at its next decoder step; nothing is kept."""
        if self.running:
            self._cancel.set()
            self._say("cancelling at the next step…", "warn")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running generation ends; False if ``timeout`` seconds passed first."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def improve(self) -> str:
        """Replace the prompt with ``PromptEngineer.improve`` of it (missing facets added)."""
        self.prompt_box.value = self.engineer.improve(self.prompt_box.value)
        return self.prompt_box.value

    def show(self, index: int = -1) -> Generation:
        """Show history item ``index`` in the result tab: player, plots, token grid."""
        from .audio import plot_spectrogram, plot_waveform

        g, n = self._item(index), self._number(index)
        wav = g.wav[0]                                                    # [C, T]
        self.result.children = [
            _make("HTML", value=f"<b>#{n}</b> {html.escape(g.summary())}"),
            _audio(g),
            _make("HBox", children=[
                _image(lambda ax: plot_waveform(wav, g.sample_rate, ax=ax, title="waveform")),
                _image(lambda ax: plot_spectrogram(wav, g.sample_rate, ax=ax, n_fft=1024,
                                                   title="spectrogram"))]),
            TokenGrid(g).box]
        self.output_tabs.selected_index = 0
        return g

    def compare(self, a: int = -2, b: int = -1):
        """A/B two history items (indices, negative from the end) in the A/B tab."""
        view = audio_compare(self._item(a), self._item(b),
                             labels=(f"A {self._title(a)}", f"B {self._title(b)}"))
        self.compare_box.children = [view.box]
        self.output_tabs.selected_index = 2
        return view

    def use_audio(self, wav, sample_rate: int, name: str = "audio") -> str:
        """Add a clip ``[T]`` or ``[C, T]`` as a continuation/melody source; returns its label."""
        label = f"{name} ({len(self.sources) + 1})"
        self.sources[label] = (wav, int(sample_rate))
        self.source_picker.options = list(self.sources)
        self.source_picker.value = label
        return label

    def table(self):
        """The history as a pandas DataFrame: one row per result, its settings and seed."""
        import pandas as pd

        return pd.DataFrame([{"#": i + 1, "mode": job["mode"], "model": g.model_name,
                              "prompt": g.prompts[0], "negative": job["negative_prompt"],
                              **{k: v for k, v in vars(g.config).items() if k != "seed"},
                              "seed": g.seeds[0], "seconds": round(g.duration, 3)}
                             for i, (g, job) in enumerate(zip(self.history, self.jobs))])

    def text(self) -> str:
        model = self.generator.model.name
        last = f"\nlast: {_settings(self.history[-1])}" if self.history else ""
        return (f"MusicGen studio ({model}: {_model_facts(model, self.generator)}), "
                f"{len(self.history)} result(s). Widgets do not render here: use "
                f"studio.generate(prompt, temperature=...), studio.history, studio.table(), "
                f"studio.compare(a, b).{last}" + (f"\nstatus: {self.message}" if self.message
                                                  else ""))

    # --- one click --------------------------------------------------------------------------
    def _start(self) -> None:
        """Generate was clicked: check everything here, then decode in a worker thread."""
        if self.running:
            self._say("already generating: wait for it, or press Cancel.", "error")
            return
        self.progress.value = 0                          # no full bar left from the last run
        try:
            job = self._job()
        except MusicGenEduError as exc:
            self._reject(exc)
            return
        self._rejected = False
        self._cancel.clear()
        self.generate_button.disabled, self.cancel_button.disabled = True, False
        self._thread = threading.Thread(target=self._work, args=(job,), name="mg-studio",
                                        daemon=True)
        self._thread.start()

    def _job(self) -> dict:
        """What to run, from the controls; ConfigError names the first thing that is wrong."""
        self.sliders.config()                            # a bad value: its ConfigError
        mode = MODES[self.mode_tabs.selected_index or 0]
        prompt = self.prompt_box.value
        report = self.engineer.validate(prompt)
        if (mode == "text" or prompt.strip()) and not report.ok:
            raise ConfigError(report.errors[0])
        job = dict(mode=mode, prompt=prompt if prompt.strip() else None,
                   negative_prompt=self.negative_box.value.strip() or None,
                   model=self.model_picker.value, settings=self.sliders.values())
        if mode != "text":
            if self.source_picker.value not in self.sources:
                raise ConfigError(f"{mode} needs a source clip: pick a past result in "
                                  "'source', or upload an audio file.")
            wav, sr = self.sources[self.source_picker.value]
            if mode == "continuation":                   # keep the last prompt seconds
                wav = wav[..., -max(1, int(self.prompt_seconds.value * sr)):]
            job.update(audio=wav, sample_rate=sr)
        return job

    def _work(self, job: dict) -> None:
        """The worker thread: load on demand, generate, then show; errors become messages."""
        try:
            gen = self._load(job["model"])
            self._say(f"generating {job['settings']['duration']} s with {gen.model.name}…",
                      "busy")
            kw = dict(negative_prompt=job["negative_prompt"], progress=False,
                      callback=self._step, **job["settings"])
            if job["mode"] == "continuation":
                out = gen.generate_continuation(job["audio"], job["sample_rate"], job["prompt"],
                                                **kw)
            elif job["mode"] == "melody":
                out = gen.generate_with_melody(job["prompt"], job["audio"], job["sample_rate"],
                                               **kw)
            else:
                out = gen.generate(job["prompt"], **kw)
            self._add(out, job)
        except _Cancelled as stop:
            self._say(f"cancelled at step {stop.args[0]} of {stop.args[1]}; nothing was kept.",
                      "warn")
        except MusicGenEduError as exc:
            self._say(exc, "error")
        except Exception as exc:  # noqa: BLE001  a bug, not a user error: one line, kept
            self.last_error = exc
            self._say(f"unexpected {type(exc).__name__}: {exc} (details: studio.last_error)",
                      "error")
        finally:
            self.generate_button.disabled, self.cancel_button.disabled = False, True

    def _step(self, step: int, total: int) -> None:
        """``callback(step, total)`` of the decoding loop: Cancel check, then the bar."""
        if self._cancel.is_set():
            raise _Cancelled(step, total)
        if step == total or step * 50 // total != (step - 1) * 50 // total:   # <= 50 updates
            self.progress.max, self.progress.value = total, step

    def _load(self, name: str) -> MusicGenerator:
        """The generator for ``name``, loaded the first time it is picked."""
        if name not in self._generators:
            self._say(f"loading {name}… (hub models download once)", "busy")
            self._generators[name] = MusicGenerator(name, device=str(self.generator.model.device),
                                                    progress=False)
        if self._generators[name] is not self.generator:
            self.generator = self._generators[name]
            self.engineer = PromptEngineer(self.generator)
            self._show_model()
        return self.generator

    def _add(self, out: Generation, job: dict) -> None:
        """A finished result: history row, A/B choices, sources, result tab, status."""
        self.history.append(out)
        self.jobs.append(job)
        n, name = len(self.history), f"musicgen_{len(self.history)}.wav"
        data = base64.b64encode(_wav_bytes(out)).decode() if _ipywidgets() else ""
        link = f'<a download="{name}" href="data:audio/wav;base64,{data}">download</a>'
        play = _make("Button", description="play", icon="play", layout={"width": "80px"})
        play.on_click(lambda _, i=n - 1: self.show(i))
        label = f"#{n} {job['mode']}: {html.escape(_short(out.prompts[0], 60))}, {_settings(out)}"
        self.history_box.children = (*self.history_box.children, _make(
            "HBox", children=[play, _make("HTML", value=f"{link} &nbsp; {label}")]))
        choices = [(f"{self._title(i)}, {_settings(g)}", i) for i, g in enumerate(self.history)]
        self.compare_a.options, self.compare_b.options = choices, choices
        self.compare_a.value, self.compare_b.value = max(0, n - 2), n - 1
        self.sources[f"#{n} result"] = (out.wav[0], out.sample_rate)
        self.source_picker.options = list(self.sources)
        self.source_picker.value = f"#{n} result"           # the source follows the latest
        self._say(f"#{n} decoded; drawing its waveform, spectrogram and tokens…", "busy")
        self.show(n - 1)
        self._say(f"#{n} done: {out.summary()}", "ok")

    def _reject(self, exc: MusicGenEduError) -> None:
        """A click that cannot run: its error once (a prompt error is already red under the
        prompt box, so the status line points there); the bar stays empty."""
        self._rejected = True
        own = str(exc) in self.engineer.validate(self.prompt_box.value).errors
        self._say(exc, "error", shown="not generated: fix the prompt first (its error is in "
                                      "red under the prompt box)." if own else None)

    def _recheck(self) -> None:
        """A control changed after a rejected click: check the job again, so the status line
        never keeps an error that was fixed (a new problem replaces it)."""
        if not self._rejected or self.running:
            return
        try:
            self._job()
        except MusicGenEduError as exc:
            self._reject(exc)
            return
        self._rejected = False
        self._say("ready: press Generate.", "ok")

    # --- small helpers ----------------------------------------------------------------------
    def _say(self, message, kind: str = "ok", shown: str | None = None) -> None:
        """Set :attr:`message` (the whole text, for Python callers) and the status line
        (``shown`` instead where the same text is already on screen)."""
        self.message = str(message)
        self.status.value = (f'<span style="color:{_COLORS[kind]}">'
                             f'{html.escape(shown or self.message)}</span>')

    def _safely(self, action, *args):
        try:
            return action(*args)
        except MusicGenEduError as exc:
            self._say(exc, "error")

    def _item(self, index: int) -> Generation:
        if not isinstance(index, int) or not -len(self.history) <= index < len(self.history):
            raise ConfigError(f"history index {index!r} is out of range; the studio has "
                              f"{len(self.history)} result(s): 0..{len(self.history) - 1} or "
                              "negative from the end. Generate first.")
        return self.history[index]

    def _number(self, index: int) -> int:
        return index % len(self.history) + 1                # "#n" as the history shows it

    def _title(self, index: int) -> str:
        """``#n 'its prompt…'``: what tells results apart in the A/B choices and players."""
        return f"#{self._number(index)} {_short(self.history[index].prompts[0], 24)}"

    def _offer(self, model: str) -> None:
        if model not in [v for _, v in self.model_picker.options]:
            self.model_picker.options = [*self.model_picker.options,
                                         (f"{model}  ({_model_facts(model)})", model)]

    def _pick_source(self, source: str) -> None:
        if source not in self.sources:
            raise ConfigError(f"source {source!r} is unknown; choose one of "
                              f"{list(self.sources)} or add one with use_audio(wav, sr).")
        self.source_picker.value = source

    def _check_prompt(self) -> None:
        """Live validation under the prompt box: errors in red, warnings in amber."""
        r = self.engineer.validate(self.prompt_box.value)
        head = (f"{r.n_words} words, {r.n_tokens}/{r.max_tokens} tokens"
                + (f"; missing: {', '.join(r.missing)}" if r.missing else ""))
        lines = [(e, "error") for e in r.errors] + [(w, "warn") for w in r.warnings]
        self.prompt_info.value = "<br>".join(
            [f"{'✓' if r.ok else '✗'} {html.escape(head)}"] + [
                f'<span style="color:{_COLORS[k]}">{html.escape(t)}</span>' for t, k in lines])

    def _show_model(self) -> None:
        name = self.model_picker.value
        gen = self._generators.get(name)
        melody = gen.model.is_melody if gen else (HUB_MODELS.get(name) or
                                                  DEBUG_MODELS.get(name, (1, False)))[1]
        tabs = "text, continuation" + (", melody" if melody else
                                       " (the melody tab needs a melody model)")
        loaded = f"loaded on {gen.model.device}" if gen else "loads on Generate"
        self.model_info.value = html.escape(f"{name} can do: {tabs}; {loaded}")

    def _uploaded(self) -> None:
        """An uploaded file becomes a source clip (read by ``audio.load_audio``)."""
        from .audio import load_audio
        from .widgets import upload_files

        for name, content in upload_files(self.upload):   # ipywidgets 7's value or 8's
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(name).name
                path.write_bytes(content)
                try:
                    wav, sr = load_audio(path)
                except MusicGenEduError as exc:   # named as the student named it, not by
                    self._say(str(exc).replace(str(path), name), "error")  # the temp path
                    continue
            self.use_audio(wav, sr, name=name)
