"""``mg.Studio``: explore MusicGen by ear in JupyterLab or Colab, without writing a loop.

The path of one click on **Generate**; the studio is a thin caller of ``MusicGenerator`` with
no generation, validation or audio code of its own (ARCHITECTURE.md, interfaces layer):

    sliders (widgets.param_sliders: ranges from GenerationConfig) ─► GenerationConfig(**values)
        a bad value ─► its ConfigError message in the status line, an empty bar; nothing runs;
        until the click succeeds, every change of a control checks again (a fix clears it)
    prompt box ─► PromptEngineer.validate, live (errors block Generate, warnings teach); a
        click it blocks points the status line there instead of repeating the error
        (``studio_prompt.py``)
    Generate ─► worker thread: MusicGenerator.generate(prompt, callback=step, **values)
        step(i, total) ─► progress bar; Cancel sets a flag, the next step raises _Cancelled,
        the decoding loop stops there and nothing half-made is kept
    Generation ─► "drawing…", then player (<audio>), waveform, spectrogram, token grid; a
        history row and A/B choice (``studio_history.py``: #n, the prompt shortened,
        settings; play, download); the continuation/melody source (``studio_sources.py``)
        moves to this result; a model picked in the picker loads first (``studio_models.py``)

The worker thread keeps the kernel free: after a click, widget messages (Cancel, a slider)
are still handled while the decoder runs, and ipywidgets 8 sends the progress updates from
that thread. The same studio works from Python (``studio.generate(...)`` sets the controls and
presses Generate), which is how lecture 07 and the tests drive it; while such a cell waits,
``studio_events.wait_for`` handles the widget messages itself, so Cancel works there too.
Errors of the library (``MusicGenEduError``) appear as their message in the status line,
never as a traceback. ``studio.snapshot()`` (``studio_snapshot.py``) is the studio's state as
an ordinary output, for places without a kernel (the docs site, a reopened notebook).
"""

from __future__ import annotations

import html
import threading

from .errors import ConfigError, MusicGenEduError
from .generation import Generation, GenerationConfig
from .generator import MusicGenerator
from .models import DEFAULT_MODEL
from .studio_events import wait_for
from .studio_history import AudioCompare, History
from .studio_models import ModelPicker, model_facts
from .studio_prompt import PromptPanel
from .studio_snapshot import StudioSnapshot
from .studio_sources import Sources
from .widget_kit import STATUS_COLORS, View, audio_player, image, make, settings_line
from .widgets import ParamSliders, TokenGrid

__all__ = ["MODES", "Studio"]

MODES = ("text", "continuation", "melody")      # the mode tabs, in order
_HELP = {
    "text": "Text to music: the prompt (and negative prompt) above, the settings below.",
    "continuation": "Continue a source clip: its last <i>prompt seconds</i> become the first "
                    "tokens, duration is the total length (longer than the prompt). The text "
                    "prompt is optional; the source follows the latest result.",
    "melody": "Follow the melody (chroma) of a source clip: melody models only "
              "(debug-melody, facebook/musicgen-melody, facebook/musicgen-stereo-melody)."}


class _Cancelled(Exception):
    """Raised from the progress callback after Cancel: ends the decoding loop at that step."""


class Studio(View):
    """A MusicGen studio: prompt, model, settings, Generate/Cancel, result, history and A/B.

    Args:
        generator: a :class:`MusicGenerator`, or a model name to load (default ``"edu-tiny"``).
        prompt: the text the prompt box starts with.
        config: starting settings (default: the generator's ``config``).
        models: names the model picker offers (default: edu-tiny, the debug models, then the hub ones);
            a picked model loads on the next Generate.

    Python API (the same path as the buttons): ``generate(prompt, **settings)``, ``cancel()``,
    ``wait()``, ``history`` (a list of :class:`Generation`), ``table()``, ``show(i)``,
    ``compare(a, b)``, ``use_audio(wav, sample_rate)``, ``snapshot()`` (the state as a
    picture that needs no kernel) and ``message`` (the status line).

    Example::

        studio = mg.Studio(mg.MusicGenerator("edu-tiny"))
        studio                                        # the widget (last line of a cell)
        studio.generate("fast organ chords in G major", duration=4, temperature=0.7, seed=0)
        studio.compare(-2, -1)                        # A/B: the last two results
    """

    def __init__(self, generator: MusicGenerator | str = DEFAULT_MODEL, *,
                 prompt: str = "slow piano melody in C major, low register, with drums",
                 config: GenerationConfig | None = None, models=None):
        if not isinstance(generator, MusicGenerator):
            generator = MusicGenerator(generator, progress=False)
        self.generator = generator
        self.archive = History(play=lambda i: self.show(i, autoplay=True))   # results, A/B
        self.history = self.archive.items         # every finished result, oldest first
        self.jobs = self.archive.jobs             # how each was asked for (mode, negative, ...)
        self.shown: int | None = None             # the history index the result tab shows
        self.message, self.last_error = "", None  # the status line; an unexpected exception
        self._rejected = False                    # the status shows why the last click failed
        self._thread, self._cancel = None, threading.Event()
        # inputs: model, prompt, mode (with its source clip), settings
        self.models = ModelPicker(generator, models)
        self.model_picker, self.model_info = self.models.picker, self.models.info
        self.prompts = PromptPanel(generator, prompt, on_error=lambda e: self._say(e, "error"))
        self.prompt_box, self.prompt_info = self.prompts.prompt_box, self.prompts.info
        self.improve_button, self.negative_box = self.prompts.improve_button, self.prompts.negative_box
        self.sliders = ParamSliders(config or generator.config,
                                    max_duration=generator.max_duration)
        self.clips = Sources(self.sliders.base.duration, on_error=lambda m: self._say(m, "error"))
        self.sources = self.clips.clips           # continuation/melody clips: label -> (wav, sr)
        self.source_picker, self.prompt_seconds = self.clips.picker, self.clips.prompt_seconds
        self.upload = self.clips.upload
        self.mode_tabs = make("Tab", titles=MODES, selected_index=0, children=[
            make("HTML", value=_HELP["text"]),
            make("VBox", children=[make("HTML", value=_HELP["continuation"]), self.clips.row,
                                    self.prompt_seconds]),
            make("VBox", children=[make("HTML", value=_HELP["melody"]), self.clips.row])])
        # run: Generate, Cancel, progress, status
        self.generate_button = make("Button", "mg-studio-generate", description="Generate",
                                     button_style="primary", icon="play")
        self.cancel_button = make("Button", "mg-studio-cancel", description="Cancel",
                                   icon="stop", disabled=True)
        self.progress = make("IntProgress", value=0, min=0, max=1, description="steps")
        self.status = make("HTML", "mg-studio-status")
        # outputs: result, history, A/B (the last two: studio_history.History's widgets)
        self.result = make("VBox", "mg-studio-result")
        self.history_box, self.compare_box = self.archive.box, self.archive.compare_box
        self.compare_a, self.compare_b = self.archive.compare_a, self.archive.compare_b
        self.compare_button = self.archive.compare_button
        self.output_tabs = make("Tab", titles=("result", "history", "A/B compare"),
                                 children=[self.result, self.history_box, self.archive.tab])
        self.box = make("VBox", "mg-studio", children=[
            make("HTML", value="<h3>MusicGen studio</h3>"), self.model_picker, self.model_info,
            self.prompt_box, self.prompts.row, self.negative_box, self.mode_tabs, self.sliders.box,
            make("HBox", children=[self.generate_button, self.cancel_button, self.progress]),
            self.status, self.output_tabs])
        # wiring
        self.generate_button.on_click(lambda _: self._start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.compare_button.on_click(lambda _: self._safely(
            self.compare, self.compare_a.value, self.compare_b.value))
        for control in (self.prompt_box, self.negative_box, self.source_picker, self.prompt_seconds,
                        *self.sliders.controls.values(), *self.sliders.random.values()):
            control.observe(lambda _: self._recheck(), "value")
        self.mode_tabs.observe(lambda _: self._recheck(), "selected_index")

    # --- the Python API ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a generation runs in the worker thread."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def engineer(self):
        """The :class:`~musicgen_edu.prompt.PromptEngineer` checking the prompt box (it
        counts tokens with the current model's tokenizer)."""
        return self.prompts.engineer

    @property
    def mode(self) -> str:
        """The mode tab on show: ``"text"``, ``"continuation"`` or ``"melody"``."""
        return MODES[self.mode_tabs.selected_index or 0]

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
                self.models.offer(model)
                self.model_picker.value = model
            if mode is not None:
                if mode not in MODES:
                    raise ConfigError(f"mode={mode!r} is not one of {list(MODES)}.")
                self.mode_tabs.selected_index = MODES.index(mode)
            if source is not None:
                self.clips.pick(source)
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
        """Block until the running generation ends; False if ``timeout`` seconds passed first.

        In a notebook cell the studio's buttons keep working meanwhile (Cancel included, see
        ``studio_events``); the kernel's stop button cancels the run, then interrupts the cell.
        """
        thread = self._thread
        if thread is not None:
            wait_for(thread, timeout, on_interrupt=self.cancel)
        return not self.running

    def improve(self) -> str:
        """Replace the prompt with ``PromptEngineer.improve`` of it (missing facets added)."""
        return self.prompts.improve()

    def show(self, index: int = -1, autoplay: bool = False) -> Generation:
        """Show history item ``index`` in the result tab: player, plots, token grid.

        Args:
            index: as in Python lists (``-1``: the newest).
            autoplay: start the player at once (the history rows' *play* buttons do).
        """
        from .audio import plot_spectrogram, plot_waveform

        g, n = self.archive.item(index), self.archive.number(index)
        self.shown = n - 1
        wav = g.wav[0]                                                    # [C, T]
        self.result.children = [
            make("HTML", value=f"<b>#{n}</b> {html.escape(g.summary())}"),
            audio_player(g, autoplay=autoplay),
            make("HBox", children=[
                image(lambda ax: plot_waveform(wav, g.sample_rate, ax=ax, title="waveform")),
                image(lambda ax: plot_spectrogram(wav, g.sample_rate, ax=ax, n_fft=1024,
                                                   title="spectrogram"))]),
            TokenGrid(g).box]
        self.output_tabs.selected_index = 0
        return g

    def compare(self, a: int = -2, b: int = -1) -> AudioCompare:
        """A/B two history items (indices, negative from the end) in the A/B tab: players,
        waveforms, spectrograms, lecture 08's descriptors and the settings that differ."""
        view = self.archive.compare(a, b)
        self.output_tabs.selected_index = 2
        return view

    def snapshot(self) -> StudioSnapshot:
        """The studio's state now as an ordinary output (HTML with pictures and a player):
        what stays visible where widgets are not (the docs site, no kernel)."""
        return StudioSnapshot(self)

    def use_audio(self, wav, sample_rate: int, name: str = "audio") -> str:
        """Add a clip ``[T]`` or ``[C, T]`` as a continuation/melody source; returns its label."""
        return self.clips.add_named(wav, sample_rate, name)

    def table(self):
        """The history as a pandas DataFrame: one row per result, its settings and seed."""
        return self.archive.table()

    def text(self) -> str:
        model = self.generator.model.name
        last = f"\nlast: {settings_line(self.history[-1])}" if self.history else ""
        return (f"MusicGen studio ({model}: {model_facts(model, self.generator)}), "
                f"{len(self.history)} result(s). Widgets do not render here: use "
                f"studio.generate(prompt, temperature=...), studio.history, studio.table(), "
                f"studio.compare(a, b), studio.snapshot().{last}"
                + (f"\nstatus: {self.message}" if self.message else ""))

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
        mode = self.mode
        job = dict(mode=mode, **self.prompts.job(mode),    # a prompt error: its ConfigError
                   model=self.model_picker.value, settings=self.sliders.values())
        if mode != "text":
            wav, sr = self.clips.clip(mode)              # no clip picked: its ConfigError
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
        except Exception as exc:
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
        gen = self.models.load(name, str(self.generator.model.device), on_download=lambda:
                               self._say(f"loading {name}… (hub models download once)", "busy"))
        if gen is not self.generator:
            self.generator = gen
            self.prompts.use(gen)                         # token counts: the new model's
        return gen

    def _add(self, out: Generation, job: dict) -> None:
        """A finished result: history row, A/B choices, sources, result tab, status."""
        n = self.archive.add(out, job)
        self.clips.add(out.wav[0], out.sample_rate, f"#{n} result")   # the source follows
        self._say(f"#{n} decoded; drawing its waveform, spectrogram and tokens…", "busy")
        self.show(n - 1)
        self._say(f"#{n} done: {out.summary()}", "ok")

    def _reject(self, exc: MusicGenEduError) -> None:
        """A click that cannot run: its error once (a prompt error is already red under the
        prompt box, so the status line points there); the bar stays empty."""
        self._rejected = True
        self._say(exc, "error", shown="not generated: fix the prompt first (its error is in "
                                      "red under the prompt box)." if self.prompts.shows(exc)
                  else None)

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
        self.status.value = (f'<span style="color:{STATUS_COLORS[kind]}">'
                             f'{html.escape(shown or self.message)}</span>')

    def _safely(self, action, *args):
        try:
            return action(*args)
        except MusicGenEduError as exc:
            self._say(exc, "error")
