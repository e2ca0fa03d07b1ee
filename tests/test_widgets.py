"""Headless tests of the widgets (widgets.py) and the studio (studio.py).

No browser: set widget values from Python, click buttons, and assert what the generator was
asked, what the studio kept and what it says. ``tests/test_studio_browser.py`` clicks the same
studio in a real JupyterLab.
"""

import base64
import dataclasses
import datetime
import io
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

import musicgen_edu as mg
from musicgen_edu import studio as studio_module
from musicgen_edu import widgets

pytest.importorskip("ipywidgets")

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
    c["guidance_scale"].value, c["seed"].value = 4.5, 11
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
        studio.sliders.controls["seed"].value = bad["seed"]      # typed into the seed box
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
    studio.upload.value = ({"name": "riff.wav", "type": "audio/wav", "size": len(buf.getvalue()),
                            "content": memoryview(buf.getvalue()),
                            "last_modified": datetime.datetime.now()},)
    assert studio.source_picker.value == "riff.wav (1)"
    spy = Spy(generator.generate_continuation)
    monkeypatch.setattr(generator, "generate_continuation", spy)
    studio.prompt_seconds.value = 0.5
    out = studio.generate(mode="continuation", duration=1.5)
    assert out is not None and list(out.tokens.shape) == [1, 4, 75], studio.message
    (audio, sample_rate, prompt), _ = spy.calls[0]
    assert sample_rate == 32000 and audio.shape == (1, 16000)    # the last 0.5 s
    np.testing.assert_allclose(audio[0], clip[-16000:], atol=1e-4)


# ------------------------------------------------------------------ small widgets

def test_audio_compare_names_what_differs(studio):
    a = studio.generate(temperature=0.5)
    b = studio.generate(temperature=1.5)
    view = studio.compare(0, 1)
    assert view.differences == {"temperature": (0.5, 1.5)}
    assert studio.output_tabs.selected_index == 2 and studio.compare_box.children == (view.box,)
    assert mg.audio_compare(a, a).differences == {}
    assert "temperature 0.5 → 1.5" in view.box.children[1].value
    assert studio.generate(use_sampling=False, seed=3) is not None
    assert set(studio.compare(-1, 0).differences) == {"use_sampling", "temperature", "seed"}
    with pytest.raises(mg.ConfigError, match="history index 5 is out of range"):
        studio.compare(5, 0)


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
    monkeypatch.setitem(widgets._colab, "enabled", False)
    capture_display(monkeypatch)
    studio._ipython_display_()
    mg.param_sliders()._ipython_display_()
    assert calls == [1]                                          # once per session


def test_without_ipywidgets_everything_is_text(generator, monkeypatch, capsys):
    monkeypatch.setattr(widgets, "_ipywidgets", lambda: None)
    monkeypatch.setattr(studio_module, "_ipywidgets", lambda: None)
    s = mg.Studio(generator, config=mg.GenerationConfig(duration=0.5, seed=2))
    assert isinstance(s.box, widgets._Plain)
    out = s.generate("calm piano", temperature=0.8)
    assert out is not None and out.config.temperature == 0.8 and len(s.history) == 1
    assert s.compare(0, 0).differences == {}
    s._ipython_display_()
    printed = capsys.readouterr().out
    assert printed.startswith("MusicGen studio (debug") and "1 result(s)" in printed
    mg.param_sliders()._ipython_display_()
    assert capsys.readouterr().out.startswith("settings: duration=8.0")
