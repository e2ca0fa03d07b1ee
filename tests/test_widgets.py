"""Headless tests of the widgets (widgets.py) and the studio (studio.py, studio_*.py).

No browser: set widget values from Python, click buttons, and assert what the generator was
asked, what the studio kept and what it says. One test starts a real kernel (jupyter_client)
to click Cancel while a cell waits in ``studio.generate``. ``tests/test_studio_browser.py``
clicks the same studio in a real JupyterLab.
"""

import _thread
import base64
import dataclasses
import datetime
import html
import io
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

import musicgen_edu as mg
from musicgen_edu import studio_history, widget_kit
from musicgen_edu.studio import MODES

ipywidgets = pytest.importorskip("ipywidgets")
IPYWIDGETS_7 = int(ipywidgets.__version__.split(".")[0]) < 8   # Colab's 7.7 (make test-min)

SETTINGS = ("duration", "temperature", "top_k", "top_p", "guidance_scale", "seed", "use_sampling")


class Spy:
    """Wraps a generator method: records every call's arguments and the steps it reported."""

    def __init__(self, method, on_step=None):
        self.method, self.on_step, self.calls, self.steps = method, on_step, [], []

    def __call__(self, *args, callback=None, **kwargs):
        self.calls.append((args, kwargs))

        def step(i, total):
            self.steps.append(i)
            callback(i, total)             # the studio's callback: Cancel check, progress bar
            if self.on_step is not None:   # e.g. a click that arrives while step i+1 runs
                self.on_step(i, total)

        return self.method(*args, callback=step, **kwargs)


@pytest.fixture
def generator():
    """A fresh generator (the debug model is shared and cached), so spies stay local."""
    return mg.MusicGenerator("debug", device="cpu", progress=False)


@pytest.fixture
def studio(generator):
    s = mg.Studio(generator, config=mg.GenerationConfig(duration=1.0, seed=0))
    yield s
    s.cancel()
    assert s.wait(60)


def click_and_wait(studio, button=None):
    (button or studio.generate_button).click()
    assert studio.wait(120), "the generation did not finish"


def browser_upload(upload, name, data):
    """What the installed ipywidgets' front end does when a student picks a file."""
    if IPYWIDGETS_7:   # 7: the files' metadata and bytes, then the counter the kernel watches
        upload.metadata = [{"name": name, "type": "audio/wav", "size": len(data),
                            "lastModified": 0}]
        upload.data = [data]
        upload._counter += 1
    else:              # 8: the value itself
        upload.value = ({"name": name, "type": "audio/wav", "size": len(data),
                         "content": memoryview(data), "last_modified": datetime.datetime.now()},)


def front_end_state(widget, name):
    """A trait as the browser gets it, by ipywidgets 8's name: 7 syncs tab titles as a dict
    ``_titles`` and most tooltips as ``description_tooltip``."""
    state = widget.get_state()
    if name == "titles" and "titles" not in state:
        return tuple(state["_titles"].get(str(i)) for i in range(len(widget.children)))
    if name == "tooltip" and "tooltip" not in state:
        return state["description_tooltip"]
    return tuple(state[name]) if name == "titles" else state[name]


# ------------------------------------------------------------------ controls from the config

def test_import_does_not_load_ipywidgets():
    code = "import sys, musicgen_edu as mg; mg.Studio; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sliders_take_their_ranges_from_generation_config():
    sliders = mg.param_sliders(max_duration=30.0)
    meta = {f.name: f.metadata for f in dataclasses.fields(mg.GenerationConfig)}
    assert list(sliders.controls) == list(SETTINGS)
    for name in ("temperature", "top_k", "top_p", "guidance_scale"):
        control, m = sliders.controls[name], meta[name]
        assert control.max == m["high"], name
        assert control.min == m["low"] + (control.step if m["low_open"] else 0), name
        assert control.min > m["low"] or not m["low_open"]
    assert sliders.controls["duration"].max == 30.0            # one window, below 600
    assert meta["duration"]["high"] == 600
    assert isinstance(sliders.controls["top_k"].value, int)
    assert sliders.controls["seed"].disabled and sliders.random["seed"].value  # seed=None
    assert sliders.values() == {n: getattr(mg.GenerationConfig(), n) for n in SETTINGS}


def test_validate_uses_the_same_metadata(monkeypatch):
    """One source of ranges: validate reads the field metadata the sliders read."""
    field = {f.name: f for f in dataclasses.fields(mg.GenerationConfig)}["top_k"]
    narrow = dict(field.metadata, high=10)
    monkeypatch.setattr(field, "metadata", narrow)
    with pytest.raises(mg.ConfigError, match=r"top_k=50 is out of range; allowed: \[0, 10\]"):
        mg.GenerationConfig(top_k=50)
    assert mg.param_sliders(mg.GenerationConfig(top_k=5), ["top_k"]).controls["top_k"].max == 10


def test_a_choice_setting_gets_a_dropdown_from_its_metadata():
    sliders = mg.param_sliders(names=("temperature", "sampler"))
    dropdown = sliders.controls["sampler"]
    assert type(dropdown).__name__ == "Dropdown"
    assert list(dropdown.options) == ["counter", "reference"] and dropdown.value == "counter"
    sliders.set(sampler="reference")
    assert sliders.config().sampler == "reference"
    with pytest.raises(mg.ConfigError, match="sampler='fast'"):
        sliders.set(sampler="fast")
    check = mg.exercises.check_setting_range("sampler", (0, 1))
    assert not check.passed and "not a numeric" in check.message


def test_sliders_set_checks_before_moving():
    sliders = mg.param_sliders(mg.GenerationConfig(seed=5))
    before = sliders.values()
    with pytest.raises(mg.ConfigError, match=r"temperature=0 is out of range; allowed: \(0, 10\]"):
        sliders.set(top_k=10, temperature=0)
    assert sliders.values() == before                          # nothing moved
    with pytest.raises(mg.ConfigError, match="past this slider's end"):
        sliders.set(duration=60.0)                             # valid config, past the slider
    with pytest.raises(mg.ConfigError, match="extend_stride has no control"):
        sliders.set(extend_stride=10.0)
    sliders.set(top_k=10, seed=None)
    assert sliders.values()["top_k"] == 10 and sliders.values()["seed"] is None
    assert sliders.config() == mg.GenerationConfig(top_k=10, seed=None)


def test_a_float_slider_comes_back_without_the_browsers_float_noise():
    """JupyterLab's slider sent temperature 1.0 back as 1.0000000000000002 (its value
    recomputed from its steps); once a waiting cell handles widget messages, that reached the
    generator (lecture 07's settings check failed in the browser)."""
    sliders = mg.param_sliders()
    sliders.controls["temperature"].value = 1.0000000000000002      # what the browser sends
    sliders.controls["top_p"].value = 0.75                           # a value set on purpose
    assert sliders.values()["temperature"] == 1.0 and sliders.values()["top_p"] == 0.75
    assert sliders.config().temperature == 1.0


# ------------------------------------------------------------------ the studio: one click

def test_click_sends_exactly_the_control_values(studio, generator, monkeypatch):
    running = []
    spy = Spy(generator.generate, on_step=lambda i, t: running.append(
        (studio.generate_button.disabled, studio.cancel_button.disabled, studio.running)))
    monkeypatch.setattr(generator, "generate", spy)
    studio.prompt_box.value = "dark techno, 130 bpm"
    studio.negative_box.value = "vocals"
    c = studio.sliders.controls
    c["temperature"].value, c["top_k"].value, c["top_p"].value = 0.7, 40, 0.9
    c["guidance_scale"].value, c["seed"].value = 4.5, "11"      # the seed box is text
    click_and_wait(studio)

    expected = dict(duration=1.0, temperature=0.7, top_k=40, top_p=0.9, guidance_scale=4.5,
                    seed=11, use_sampling=True)
    assert len(spy.calls) == 1
    args, kwargs = spy.calls[0]
    assert args == ("dark techno, 130 bpm",)
    assert kwargs["negative_prompt"] == "vocals" and kwargs["progress"] is False
    assert {k: kwargs[k] for k in SETTINGS} == expected
    assert set(kwargs) == {*SETTINGS, "negative_prompt", "progress"}
    out = studio.history[-1]
    assert len(studio.history) == 1 and out.seeds == [11]
    assert {k: getattr(out.config, k) for k in SETTINGS} == expected
    assert all(r == (True, False, True) for r in running)     # disabled while running
    assert not studio.generate_button.disabled and studio.cancel_button.disabled
    assert studio.progress.value == studio.progress.max == spy.steps[-1] == 50 + 3
    assert studio.message.startswith("#1 done") and "#1a7f37" in studio.status.value


def test_history_rows_play_and_download(studio):
    first = studio.generate(temperature=0.5)
    second = studio.generate("ambient pads, slow", temperature=1.5, seed=None)
    assert [len(studio.history), len(studio.history_box.children)] == [2, 2]
    assert second.seeds[0] != 0 and second.config.seed is None   # random seed, recorded
    table = studio.table()
    assert table["#"].tolist() == [1, 2] and table["temperature"].tolist() == [0.5, 1.5]
    assert table["seed"].tolist() == [0, second.seeds[0]]
    play, link = studio.history_box.children[0].children
    data = re.search(r'href="data:audio/wav;base64,([^"]+)"', link.value).group(1)
    wav, sr = sf.read(io.BytesIO(base64.b64decode(data)), always_2d=True)
    assert sr == 32000 and wav.shape == (32000, 1)
    np.testing.assert_allclose(wav[:, 0], first.wav[0, 0].numpy(), atol=1 / 2**14)
    play.click()                                                 # shows #1 in the result tab
    assert studio.result.children[0].value.startswith("<b>#1</b>")
    audio = studio.result.children[1]
    assert audio.format == "wav" and audio.value[:4] == b"RIFF"


def test_history_play_shows_and_starts_the_chosen_entry(studio):
    """Issue 25: *play* switched to the result tab but nothing played."""
    first = studio.generate(temperature=0.5)
    studio.generate(temperature=1.5)
    newest = studio.result.children[1]
    assert newest.autoplay is False                              # a new result waits for you
    studio.output_tabs.selected_index = 1                        # the history tab
    studio.history_box.children[0].children[0].click()           # play #1
    player = studio.result.children[1]
    assert player.autoplay is True and player.value == widget_kit.wav_bytes(first)
    assert player.get_state()["autoplay"] is True                # what the browser is sent
    assert studio.output_tabs.selected_index == 0 and studio.shown == 0
    assert studio.result.children[0].value.startswith("<b>#1</b>")


def test_cancel_stops_at_the_next_step_and_keeps_nothing(studio, generator, monkeypatch):
    studio.generate()                                            # one kept result
    spy = Spy(generator.generate,
              on_step=lambda i, total: studio.cancel_button.click() if i == 3 else None)
    monkeypatch.setattr(generator, "generate", spy)
    assert studio.generate(duration=2.0) is None
    assert spy.steps == [1, 2, 3, 4]                             # clicked at 3, stopped at 4
    assert len(studio.history) == 1 and len(studio.history_box.children) == 1
    assert studio.message == "cancelled at step 4 of 103; nothing was kept."
    assert not studio.generate_button.disabled and studio.cancel_button.disabled
    monkeypatch.undo()                                           # no more clicks
    assert studio.generate() is not None                         # and it runs again


def test_cancel_from_another_thread_while_it_runs(studio):
    """The kernel stays free: Cancel is clicked while the worker thread decodes 30 s."""
    studio.generate(duration=30.0, wait=False)
    for _ in range(6000):
        if studio.progress.value > 0 or not studio.running:
            break
        threading.Event().wait(0.01)
    assert studio.running, "30 s of audio finished before the test could cancel it"
    assert studio.generate(temperature=0.5) is None                   # one run at a time
    assert studio.message == "already generating: wait for it, or press Cancel."
    assert studio.sliders.values()["temperature"] == 1.0              # nothing was changed
    studio.cancel_button.click()
    assert studio.wait(60)
    assert studio.history == [] and studio.message.startswith("cancelled at step")
    assert studio.progress.value < studio.progress.max


@pytest.mark.serial      # the interrupt goes to the process's main thread: run alone
def test_the_kernels_stop_button_cancels_the_run(studio, generator, monkeypatch):
    """Interrupt (the notebook's stop button) while ``studio.generate`` waits: the run is
    cancelled before the interrupt goes on, so nothing keeps decoding behind the student."""
    spy = Spy(generator.generate,
              on_step=lambda i, total: _thread.interrupt_main() if i == 3 else None)
    monkeypatch.setattr(generator, "generate", spy)
    with pytest.raises(KeyboardInterrupt):
        studio.generate(duration=2.0)
    assert not studio.running and studio.history == []
    assert studio.message.startswith("cancelled at step") and spy.steps[-1] < 103


KERNEL_SETUP = """
import ipywidgets, musicgen_edu as mg
studio = mg.Studio(mg.MusicGenerator("debug", device="cpu", progress=False),
                   config=mg.GenerationConfig(duration=1.0, seed=0))
print(ipywidgets.__version__, studio.cancel_button.model_id, studio.progress.model_id)
"""


class Kernel:
    """A real ipykernel (this interpreter) and its client: run cells, read what they print."""

    def __init__(self, tmp_path):
        from jupyter_client.manager import start_new_kernel

        env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython"), "MPLBACKEND": "agg"}
        self.manager, self.client = start_new_kernel(kernel_name="python3", env=env,
                                                     startup_timeout=120)
        self.printed, self.idle, self.comm_updates = {}, set(), []

    def execute(self, code: str) -> str:
        msg_id = self.client.execute(code)
        self.printed[msg_id] = ""
        return msg_id

    def read(self, until, timeout: float = 180):
        """Read IOPub messages until ``until()`` is true: cell prints and errors by cell,
        widget updates (``comm_msg``) in order."""
        import queue

        deadline = time.monotonic() + timeout
        while not until():
            try:
                msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"the kernel said nothing for {timeout} s: {self.printed}")
            parent, kind = msg["parent_header"].get("msg_id"), msg["msg_type"]
            content = msg["content"]
            if kind == "stream" and parent in self.printed:
                self.printed[parent] += content["text"]
            elif kind == "error" and parent in self.printed:
                self.printed[parent] += f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                self.idle.add(parent)
            elif kind == "comm_msg":
                self.comm_updates.append((content["comm_id"], content["data"]))

    def run(self, code: str) -> str:
        msg_id = self.execute(code)
        self.read(lambda: msg_id in self.idle)
        return self.printed[msg_id]

    def click(self, comm_id: str) -> None:
        """What a browser sends when a Button is clicked (ipywidgets 7 and 8 alike)."""
        self.client.shell_channel.send(self.client.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}))

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_cancel_works_while_a_cell_waits_in_studio_generate(tmp_path):
    """Issue 25: lecture 07 drives the studio from cells, and a kernel handles widget messages
    only between cells: a Cancel click 2 s into ``studio.generate(duration=30)`` did nothing.
    Here a real kernel runs that cell, the next cell is already queued (as Run All queues
    it), and Cancel is clicked once the progress bar moved."""
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    kernel = Kernel(tmp_path)
    try:
        version, cancel_id, progress_id = kernel.run(KERNEL_SETUP).split()
        assert version == ipywidgets.__version__              # this venv's ipywidgets (7 or 8)
        running = kernel.execute("print(studio.generate(duration=30.0), '|', studio.message)")
        after = kernel.execute("print(len(studio.history), studio.running)")
        kernel.read(lambda: any(comm == progress_id and data.get("state", {}).get("value")
                                for comm, data in kernel.comm_updates))   # decoding has begun
        kernel.click(cancel_id)
        kernel.read(lambda: {running, after} <= kernel.idle)
        printed = kernel.printed[running].strip()
        assert printed.startswith("None | cancelled at step"), printed
        assert printed.endswith("of 1503; nothing was kept."), printed
        assert kernel.printed[after].strip() == "0 False"          # the queued cell ran after
    finally:
        kernel.close()


@pytest.mark.parametrize("bad, message", [
    (dict(seed=-1), "seed=-1 is out of range; allowed: [0, 9223372036854775807]. "
                    "None draws a random seed."),
    (dict(prompt="piano\x00"), "invisible control characters"),
    (dict(prompt="  "), "prompt is only whitespace"),
])
def test_bad_values_show_the_error_message(studio, generator, monkeypatch, bad, message):
    spy = Spy(generator.generate)
    monkeypatch.setattr(generator, "generate", spy)
    if "seed" in bad:
        studio.sliders.controls["seed"].value = str(bad["seed"])  # typed into the seed box
    else:
        studio.prompt_box.value = bad["prompt"]
        assert "✗" in studio.prompt_info.value                   # live validation
    click_and_wait(studio)
    assert message in studio.message
    assert spy.calls == [] and studio.history == []
    assert "#cf222e" in studio.status.value and "Traceback" not in studio.status.value


def test_config_error_from_the_python_api_is_the_config_message(studio):
    assert studio.generate(temperature=0.0) is None
    with pytest.raises(mg.ConfigError) as err:
        mg.GenerationConfig(temperature=0.0)
    assert studio.message == str(err.value)


def test_library_and_unexpected_errors_are_one_readable_line(studio, generator, monkeypatch):
    assert studio.generate(mode="melody") is None                # no source yet
    assert "melody needs a source clip" in studio.message
    studio.generate(mode="text")
    assert studio.generate(mode="melody", source="#1 result") is None  # not a melody model
    assert "has no melody conditioning" in studio.message

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(generator, "generate", broken)
    assert studio.generate(mode="text") is None
    assert studio.message.startswith("unexpected RuntimeError: boom")
    assert isinstance(studio.last_error, RuntimeError) and len(studio.history) == 1


def test_improve_and_model_facts(studio):
    studio.prompt_box.value = "calm piano"
    improved = studio.improve_button.click() or studio.prompt_box.value
    assert improved == mg.PromptEngineer().improve("calm piano")
    labels = dict((v, k) for k, v in studio.model_picker.options)
    assert "stereo, melody yes" in labels["facebook/musicgen-stereo-melody"]
    assert "mono, melody no" in labels["facebook/musicgen-small"]
    assert "mono, melody no, trained on synthetic music" in labels["edu-tiny"]   # not debug's
    assert "stereo, melody no, tiny, random weights" in labels["debug-stereo"]
    studio.model_picker.value = "debug-stereo"
    assert studio.model_info.value == ("debug-stereo can do: text, continuation (the melody "
                                       "tab needs a melody model); loads on Generate")
    studio.model_picker.value = "facebook/musicgen-melody"
    assert "continuation, melody; loads on Generate" in studio.model_info.value


def test_model_loads_on_demand_and_melody_tab(studio):
    melody = np.sin(2 * np.pi * 440 * np.arange(32000) / 32000).astype(np.float32)
    label = studio.use_audio(melody, 32000, name="a4")
    out = studio.generate(mode="melody", model="debug-melody", source=label)
    assert out is not None and out.model_name == "debug-melody"
    assert studio.generator.model.is_melody
    info = "debug-melody can do: text, continuation, melody; loaded on cpu"
    assert studio.model_info.value == info


def test_continuation_tab_and_upload(studio, generator, monkeypatch):
    clip = (0.3 * np.sin(2 * np.pi * 220 * np.arange(64000) / 32000)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, clip, 32000, format="WAV")
    browser_upload(studio.upload, "riff.wav", buf.getvalue())
    assert studio.source_picker.value == "riff.wav (1)"
    spy = Spy(generator.generate_continuation)
    monkeypatch.setattr(generator, "generate_continuation", spy)
    studio.prompt_seconds.value = 0.5
    out = studio.generate(mode="continuation", duration=1.5)
    assert out is not None and list(out.tokens.shape) == [1, 4, 75], studio.message
    (audio, sample_rate, prompt), _ = spy.calls[0]
    assert sample_rate == 32000 and audio.shape == (1, 16000)    # the last 0.5 s
    np.testing.assert_allclose(audio[0], clip[-16000:], atol=1e-4)


def test_continuation_defaults_are_valid_and_the_source_follows_the_results(studio):
    """Issue 25: the source started empty and prompt 2.0 s = duration 2.0 s was rejected."""
    assert studio.prompt_seconds.value == 0.5 < studio.sliders.values()["duration"] == 1.0
    for duration, prompt in ((1.0, 0.5), (2.0, 1.0), (8.0, 2.0)):
        s = mg.Studio(studio.generator, config=mg.GenerationConfig(duration=duration))
        assert s.prompt_seconds.value == prompt < duration
    width = studio.sliders.controls["duration"].style.description_width
    assert studio.prompt_seconds.style.description_width == width == "110px"   # not "prompt se…"
    assert studio.generate() is not None and studio.source_picker.value == "#1 result"
    out = studio.generate(mode="continuation")                   # the defaults, as they are
    assert out is not None and list(out.tokens.shape) == [1, 4, 50], studio.message
    assert studio.source_picker.value == "#2 result"             # follows the latest result


def test_ab_and_history_labels_show_the_prompt_and_compact_numbers(studio):
    studio.generate("calm piano", temperature=0.5000000000000001)    # a slider's float step
    studio.generate("dark techno with a long build-up and a heavy drop at 130 bpm, no vocals",
                    temperature=1.5)
    first, second = (label for label, _ in studio.compare_a.options)
    assert first.startswith("#1 'calm piano', ") and "T=0.5 " in first
    assert second.startswith("#2 'dark techno with a long…', ")
    row = html.unescape(studio.history_box.children[1].children[1].value)
    assert "#2 text: 'dark techno with a long build-up and a heavy drop at 130…', 1.0 s" in row
    view = studio.compare(0, 1)
    assert html.unescape(view.box.children[1].value) == (
        "differs in: temperature 0.5 → 1.5; prompt 'calm piano' → 'dark techno with a long…'")
    titles = [html.unescape(player.children[0].value) for player in view.box.children[0].children]
    assert titles == ["<b>A #1 'calm piano': 1.0 s, T=0.5 k=250 p=0, cfg=3, seed=0</b>",
                      "<b>B #2 'dark techno with a long…': 1.0 s, T=1.5 k=250 p=0, cfg=3, seed=0</b>"]
    assert studio_history.compact(2**62 + 1) == "4611686018427387905"   # integers stay exact


def test_the_seed_box_is_exact_text_and_says_how_to_get_a_random_one(studio, generator):
    seed_box = studio.sliders.controls["seed"]
    tip = front_end_state(seed_box, "tooltip")
    assert "None" not in tip and "Tick 'random'" in tip
    out = studio.generate(seed=2**62 + 1)
    assert out.seeds == [2**62 + 1] and seed_box.value == "4611686018427387905"
    assert seed_box.get_state()["value"] == "4611686018427387905"    # no double in the browser
    assert f"seed={2**62 + 1}" in studio.history_box.children[0].children[1].value
    seed_box.value = "12a"
    studio.generate_button.click()
    assert studio.message == ("seed='12a' is not a whole number: type digits such as 42, or "
                              "tick 'random'.") and len(studio.history) == 1
    assert studio.sliders.text().startswith("settings: seed='12a' is not")   # repr never raises
    studio.sliders.set(seed=3)                                   # replaces the typo
    assert studio.sliders.values()["seed"] == 3 and studio.message == "ready: press Generate."


def test_a_rejected_click_shows_its_error_once_and_a_fix_clears_it(studio):
    assert studio.generate() is not None
    assert studio.progress.value == studio.progress.max > 1
    studio.prompt_box.value = "piano " * 800
    error = studio.engineer.validate(studio.prompt_box.value).errors[0]
    assert "tokens" in error and error in studio.prompt_info.value      # live, under the box
    studio.generate_button.click()
    assert studio.message == error                               # the whole text, for Python
    assert error not in studio.status.value and "fix the prompt" in studio.status.value
    assert "#cf222e" in studio.status.value and studio.progress.value == 0   # bar reset
    studio.source_picker.value = None
    studio.mode_tabs.selected_index = MODES.index("melody")
    assert studio.message == error                               # still the prompt's error
    studio.prompt_box.value = "calm piano"                       # fixed: the next problem shows
    assert "melody needs a source clip" in studio.message
    assert "melody needs a source clip" in studio.status.value   # not a prompt error: in full
    studio.mode_tabs.selected_index = 0                          # fixed too: no stale red line
    assert studio.message == "ready: press Generate." and "#cf222e" not in studio.status.value
    studio.negative_box.value = "vocals"                         # nothing rejected: untouched
    assert studio.message == "ready: press Generate."


def test_the_status_says_drawing_while_the_plots_render(studio, monkeypatch):
    seen, show = [], studio.show
    monkeypatch.setattr(studio, "show", lambda i: seen.append(studio.message) or show(i))
    studio.generate()
    assert seen == ["#1 decoded; drawing its waveform, spectrogram and tokens…"]
    assert studio.message.startswith("#1 done")


# ------------------------------------------------------------------ small widgets

def test_audio_compare_names_what_differs(studio):
    a = studio.generate(temperature=0.5)
    b = studio.generate(temperature=1.5)
    view = studio.compare(0, 1)
    assert (view.a, view.b) == (a, b) and view.differences == {"temperature": (0.5, 1.5)}
    assert studio.output_tabs.selected_index == 2 and studio.compare_box.children == (view.box,)
    assert mg.audio_compare(a, a).differences == {}
    assert "temperature 0.5 → 1.5" in view.box.children[1].value
    assert studio.generate(use_sampling=False, seed=3) is not None
    assert set(studio.compare(-1, 0).differences) == {"use_sampling", "temperature", "seed"}
    with pytest.raises(mg.ConfigError, match="history index 5 is out of range"):
        studio.compare(5, 0)


def test_ab_compare_shows_spectrograms_and_lecture_08_descriptors(studio):
    """Issue 25: A/B compared only waveforms."""
    a = studio.generate("calm piano", temperature=0.5)
    b = studio.generate("calm piano", temperature=1.5)
    view = studio.compare(0, 1)
    for player, g in zip(view.box.children[0].children, (a, b)):
        _, audio, waveform, spectrogram = player.children
        assert audio.value == widget_kit.wav_bytes(g)
        assert waveform.value[:4] == spectrogram.value[:4] == b"\x89PNG"
        assert waveform.value != spectrogram.value
    assert list(view.metrics) == list(view.labels)
    for label, g in zip(view.labels, (a, b)):
        expected = mg.describe(g.wav[0], g.sample_rate)           # lecture 08's descriptors
        assert set(view.metrics[label]) == set(studio_history.AB_METRICS) == {
            "loudness_lufs", "peak_dbfs", "centroid_hz", "flatness", "silence_ratio",
            "tempo_bpm", "beat_strength", "key"}
        for name, value in view.metrics[label].items():
            same_nan = isinstance(value, float) and np.isnan(value) and np.isnan(expected[name])
            assert value == expected[name] or same_nan, name
    table = html.unescape(view.box.children[2].value)
    centroids = [studio_history.compact(view.metrics[label]["centroid_hz"])
                 for label in view.labels]
    assert f"<td>spectral centroid (Hz)</td><td>{centroids[0]}</td><td>{centroids[1]}</td>" in table
    assert "<td>loudness (LUFS)</td>" in table and "<td>tempo (BPM)</td>" in table
    assert f"spectral centroid: {centroids[0]} vs {centroids[1]}" in view.text()


def test_compare_bad_index_is_a_message(studio):
    studio.compare_a.options = studio.compare_b.options = [("x", 4)]
    studio.compare_a.value = studio.compare_b.value = 4
    studio.compare_button.click()
    assert "history index 4 is out of range" in studio.message


def test_token_grid_shows_the_tokens(gen):
    out = gen.generate("calm piano", duration=0.5, seed=1)
    grid = mg.token_grid(out)
    assert torch.equal(grid.tokens, out.tokens[0]) and list(grid.tokens.shape) == [4, 25]
    images = grid.box.children
    assert len(images) == 2 and all(im.value[:8] == b"\x89PNG\r\n\x1a\n" for im in images)
    assert repr(grid).startswith("tokens [K, S] = [4, 25]")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_a_stereo_token_grid_is_sharp_and_not_stretched():
    """Issue 25: the 8-codebook grid of a stereo model was stretched and blurry: drawn as tall
    as 4 rows, then stretched by the row beside it (the taller delay-pattern picture)."""
    stereo = mg.MusicGenerator("debug-stereo", device="cpu", progress=False)
    out = stereo.generate("calm piano", duration=0.5, seed=1)
    tokens = out.tokens[0]                                       # [8, 25]
    grid = mg.token_grid(out)
    tokens_png, pattern_png = (image.value for image in grid.box.children)
    (_, height), (_, pattern_height) = png_size(tokens_png), png_size(pattern_png)
    assert height == pattern_height                              # one row, one height
    assert height > png_size(widget_kit.png(lambda ax: widget_kit.draw_tokens(ax, tokens[:4]),
                                            widget_kit.token_size(4)))[1]   # taller with more rows
    for image in grid.box.children:                              # the browser keeps the aspect
        assert image.layout.height == "auto" and image.layout.align_self == "flex-start"
    assert grid.box.layout.align_items == "flex-start"
    fig = widget_kit.figure(lambda ax: widget_kit.draw_tokens(ax, tokens),
                            widget_kit.token_size(8))
    fig.canvas.draw()
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.get_interpolation() == "nearest"                # cells, not a smoothed blur
    assert np.array_equal(image.get_array(), tokens.numpy())
    for ticks, (low, high) in ((ax.get_xticks(), (0, 24)), (ax.get_yticks(), (0, 7))):
        shown = [t for t in ticks if low - 0.5 <= t <= high + 0.5]
        assert shown and all(float(t).is_integer() for t in shown), ticks
    row_pixels = ax.get_window_extent().height / 8
    assert row_pixels >= 12, f"a codebook row is only {row_pixels:.1f} px tall"


# ------------------------------------------------------------------ a snapshot without a kernel

def test_the_snapshot_shows_the_studios_state_without_widgets(studio):
    """Issue 25: widget outputs are blank on the docs site and "model not found" without a
    kernel; ``studio.snapshot()`` is an ordinary output of the same state."""
    empty = studio.snapshot()
    assert empty.shown is None and empty.rows == [] and empty.pictures == {}
    assert "no result yet" in empty._repr_html_() and "no result yet" in repr(empty)
    first = studio.generate("calm piano", temperature=0.5)
    studio.generate("dark techno", temperature=1.5)
    studio.compare(0, 1)
    studio.history_box.children[0].children[0].click()           # the result tab shows #1
    studio.sliders.set(temperature=0.7)
    snap = studio.snapshot()
    assert snap.shown == 1 and snap.settings["temperature"] == 0.7
    assert snap.settings["prompt"] == "dark techno" and snap.settings["model"] == "debug"
    assert snap.rows == [f"#1 text: 'calm piano', {widget_kit.settings_line(first)}",
                         f"#2 text: 'dark techno', {widget_kit.settings_line(studio.history[1])}"]
    assert set(snap.pictures) == {"waveform", "spectrogram", "tokens"}
    assert all(png[:4] == b"\x89PNG" for png in snap.pictures.values())
    page = html.unescape(snap._repr_html_())
    assert "temperature=0.7" in page and studio.message in page
    assert "<b>#1</b> " + first.summary() in page
    assert page.count("<img") == 3 and page.count("<audio") == 1
    wav = base64.b64decode(re.search(r'<audio controls src="data:audio/wav;base64,([^"]+)"',
                                     page).group(1))
    assert wav == widget_kit.wav_bytes(first)                    # #1's sound, not the newest
    assert "<li>text: 'calm piano', 1.0 s" in page and "<li>text: 'dark techno'" in page
    assert "temperature 0.5 → 1.5; prompt 'calm piano' → 'dark techno'" in page
    assert "<td>spectral centroid (Hz)</td>" in page
    text = repr(snap)
    assert "on show: #1" in text and "temperature=0.7" in text and "A/B differences" in text


# ------------------------------------------------------------------ ipywidgets 7 and 8

def wav_file(seconds=0.5, rate=32000):
    clip = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * rate)) / rate))
    buf = io.BytesIO()
    sf.write(buf, clip.astype(np.float32), rate, format="WAV")
    return clip, buf.getvalue()


def _upload_value(version, name, data):
    """A FileUpload value as ipywidgets ``version`` holds it after a file is picked."""
    if version == 7:
        return {name: {"metadata": {"name": name, "type": "audio/wav", "size": len(data),
                                    "lastModified": 1700000000000}, "content": data}}
    return ({"name": name, "type": "audio/wav", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime(2024, 1, 1)},)


@pytest.mark.parametrize("version", [7, 8])
def test_upload_files_reads_both_versions_values(version):
    value = _upload_value(version, "a.wav", b"RIFF1234")
    assert widget_kit.upload_files(type("Upload", (), {"value": value})) == [("a.wav", b"RIFF1234")]
    assert widget_kit.upload_files(type("Upload", (), {"value": {} if version == 7 else ()})) == []


@pytest.mark.parametrize("version", [7, 8])
def test_an_upload_in_either_versions_shape_becomes_a_source(studio, monkeypatch, version):
    """Colab's 7.7 gave ``TypeError: string indices must be integers`` here."""
    clip, data = wav_file()
    monkeypatch.setattr(studio.clips, "upload", type("Upload", (), {
        "value": _upload_value(version, "riff.wav", data)}))
    studio.clips.uploaded()
    assert studio.source_picker.value == "riff.wav (1)", studio.message
    wav, rate = studio.sources["riff.wav (1)"]
    assert rate == 32000
    np.testing.assert_allclose(np.asarray(wav).reshape(-1), clip, atol=1e-4)


def test_a_bogus_upload_is_named_as_uploaded_not_by_a_temporary_path(studio, monkeypatch):
    monkeypatch.setattr(studio.clips, "upload", type("Upload", (), {
        "value": _upload_value(8, "notes.wav", b"not audio at all")}))
    studio.clips.uploaded()
    assert "notes.wav" in studio.message and "/tmp" not in studio.message, studio.message
    assert "tmp" not in studio.status.value


def test_the_installed_upload_widget_reaches_the_studio(studio):
    _, data = wav_file()
    browser_upload(studio.upload, "riff.wav", data)              # this version's own protocol
    assert widget_kit.upload_files(studio.upload) == [("riff.wav", data)]
    assert studio.source_picker.value == "riff.wav (1)", studio.message


def test_tab_titles_and_tooltips_reach_the_front_end(studio):
    """Colab's 7.7 showed every tab title as None: ``Tab(titles=...)`` is 8's name."""
    assert front_end_state(studio.mode_tabs, "titles") == MODES
    assert front_end_state(studio.output_tabs, "titles") == ("result", "history", "A/B compare")
    assert [studio.mode_tabs.get_title(i) for i in range(3)] == list(MODES)   # both versions
    assert front_end_state(studio.improve_button, "tooltip").startswith("PromptEngineer.improve")
    tip = front_end_state(studio.sliders.controls["temperature"], "tooltip")
    assert tip.startswith("temperature in (0, 10]")


def test_every_trait_we_set_exists_in_the_installed_ipywidgets(generator):
    """A trait a widget class lacks is dropped with only a DeprecationWarning (how the titles
    vanished on 7): build every widget the studio and the lectures make, and allow none."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = mg.Studio(generator, config=mg.GenerationConfig(duration=0.5, seed=0))
        a, b = s.generate("calm piano"), s.generate("fast drums")
        s.compare(0, 1)
        mg.param_sliders(), mg.audio_compare(a, b), mg.token_grid(b)
    dropped = [str(w.message).split("\n")[0] for w in caught
               if "unrecognized arguments" in str(w.message)]
    assert dropped == []


# ------------------------------------------------------------------ display and fallbacks

def capture_display(monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    return shown


def test_display_sends_the_widget_and_a_text_fallback(studio, monkeypatch):
    shown = capture_display(monkeypatch)
    studio._ipython_display_()
    bundle = shown[0]
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == studio.box.model_id
    assert bundle["text/plain"] == studio.text() and "studio.generate(" in bundle["text/plain"]
    assert "mg-studio" in studio.box._dom_classes
    assert "mg-studio-generate" in studio.generate_button._dom_classes


def test_colab_gets_its_widget_manager(studio, monkeypatch):
    calls = []
    colab = type(sys)("google.colab")
    colab.output = type(sys)("google.colab.output")
    colab.output.enable_custom_widget_manager = lambda: calls.append(1)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", colab.output)
    monkeypatch.setattr(widget_kit, "COLAB_MANAGER", {"enabled": False})  # a fresh kernel
    capture_display(monkeypatch)
    studio._ipython_display_()
    mg.param_sliders()._ipython_display_()
    assert calls == [1]                                          # once per session


def test_without_ipywidgets_everything_is_text(generator, monkeypatch, capsys):
    monkeypatch.setattr(widget_kit, "ipywidgets_or_none", lambda: None)
    monkeypatch.setattr(studio_history, "ipywidgets_or_none", lambda: None)
    s = mg.Studio(generator, config=mg.GenerationConfig(duration=0.5, seed=2))
    assert isinstance(s.box, widget_kit.Plain)
    out = s.generate("calm piano", temperature=0.8)
    assert out is not None and out.config.temperature == 0.8 and len(s.history) == 1
    assert s.compare(0, 0).differences == {}
    s._ipython_display_()
    printed = capsys.readouterr().out
    assert printed.startswith("MusicGen studio (debug") and "1 result(s)" in printed
    mg.param_sliders()._ipython_display_()
    assert capsys.readouterr().out.startswith("settings: duration=8.0")
