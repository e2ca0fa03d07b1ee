"""audiocraft's API on musicgen_edu (``musicgen_edu/audiocraft_api``): audiocraft's defaults,
the parameter mapping, every method on the debug models, tokens equal to ``MusicGenerator``'s,
the progress callback's arguments, ``audio_write``'s strategies measured on the written files,
clear errors, and audiocraft's demo notebook executed with only its imports changed.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import musicgen_edu as mg
from musicgen_edu.audiocraft_api import MusicGen, audio_write
from musicgen_edu.audiocraft_api import models as ac_models
from musicgen_edu.audiocraft_api.data.audio import audio_read
from musicgen_edu.audiocraft_api.data.audio_utils import convert_audio_channels
from musicgen_edu.errors import AudioError, ConfigError, GenerationError

SR, RATE, DELAY = 32000, 50, 3          # debug models: Hz, frames/s, max codebook delay
PEAK_1DB = 10 ** (-1 / 20)              # audiocraft's default peak headroom, as amplitude
AUDIOCRAFT_DEFAULTS = dict(use_sampling=True, top_k=250, top_p=0.0, temperature=1.0,
                           duration=30.0, cfg_coef=3.0, two_step_cfg=False, extend_stride=18)


@pytest.fixture(scope="module")
def model():
    m = MusicGen.get_pretrained("debug", device="cpu")
    yield m
    m.set_custom_progress_callback(None)


@pytest.fixture(scope="module")
def stereo():
    return MusicGen.get_pretrained("debug-stereo", device="cpu")


@pytest.fixture(scope="module")
def melody():
    return MusicGen.get_pretrained("debug-melody", device="cpu")


def _tone(seconds=0.5, channels=1, sr=SR, freq=440.0):
    t = torch.arange(int(seconds * sr)) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t)).expand(channels, -1).clone()  # [C, T]


# --- defaults and the parameter mapping ----------------------------------------------------

def test_defaults_and_properties_are_audiocrafts(model):
    sig = inspect.signature(MusicGen.set_generation_params).parameters
    assert {k: sig[k].default for k in AUDIOCRAFT_DEFAULTS} == AUDIOCRAFT_DEFAULTS
    fresh = MusicGen("debug", model.generator)
    assert fresh.duration == 15                    # audiocraft's __init__ sets 15 s
    assert fresh.generation_params == {"use_sampling": True, "temp": 1.0, "top_k": 250,
                                       "top_p": 0.0, "cfg_coef": 3.0, "two_step_cfg": False}
    assert (fresh.sample_rate, fresh.frame_rate, fresh.audio_channels) == (SR, RATE, 1)
    assert fresh.max_duration == 30 and fresh.extend_stride == 18
    assert inspect.signature(MusicGen.get_pretrained).parameters["name"].default == \
        "facebook/musicgen-melody"
    for name in ("generate", "generate_unconditional", "generate_continuation",
                 "generate_with_chroma"):
        params = inspect.signature(getattr(MusicGen, name)).parameters
        assert params["progress"].default is False and params["return_tokens"].default is False


@pytest.mark.parametrize("given, expected", [
    (dict(cfg_coef=5.0), dict(guidance_scale=5.0)),
    (dict(top_p=0.9, top_k=50), dict(top_p=0.9, top_k=0)),       # top_p replaces top-k
    (dict(top_k=50), dict(top_k=50, top_p=0.0)),
    (dict(temperature=0.0), dict(use_sampling=False)),           # audiocraft: greedy
    (dict(use_sampling=False, temperature=0.7), dict(use_sampling=False)),
    (dict(temperature=0.7), dict(use_sampling=True, temperature=0.7)),
    (dict(duration=0.519), dict(duration=0.5)),                  # int(duration * frame_rate)
    (dict(extend_stride=10), dict(extend_stride=10.0)),
])
def test_set_generation_params_maps_to_generation_config(model, given, expected):
    model.set_generation_params(**given)
    cfg = model.generator.config
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.seed is None
    model.set_generation_params()                  # everything back to the defaults
    assert (model.generator.config.guidance_scale, model.generator.config.top_k,
            model.generator.config.duration) == (3.0, 250, 30.0)


def test_two_step_cfg_warns_and_gives_the_same_tokens(model):
    model.set_generation_params(duration=0.3, use_sampling=False)
    _, one = model.generate(["piano"], return_tokens=True)
    with pytest.warns(UserWarning, match="one batched pass"):
        model.set_generation_params(duration=0.3, use_sampling=False, two_step_cfg=True)
    _, two = model.generate(["piano"], return_tokens=True)
    assert torch.equal(one, two)


@pytest.mark.parametrize("kwargs, match", [
    (dict(cfg_coef=0.5), r"cfg_coef=0\.5 is out of range; allowed: \[1, 30\]"),
    (dict(extend_stride=30), r"extend_stride=30 .*Cannot stride by more than the model's 30 s"),
    (dict(duration=0.01), r"less than one token frame"),
    (dict(duration=-1), r"duration=-1 is out of range"),
    (dict(top_p=1.5), r"top_p=1\.5 is out of range"),
    (dict(top_k=-1), r"top_k"),
    (dict(two_step_cfg="yes"), r"two_step_cfg must be True or False"),
    (dict(use_sampling="no"), r"use_sampling must be True or False, got 'no'"),
])
def test_bad_generation_params_fail_with_clear_messages(model, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        model.set_generation_params(**kwargs)


def test_get_pretrained_maps_audiocraft_names(monkeypatch):
    seen = []

    class Loaded(Exception):
        pass

    def fake(name, **kwargs):
        seen.append((name, kwargs["device"]))
        raise Loaded

    monkeypatch.setattr(ac_models, "MusicGenerator", fake)
    for short, hub in ac_models.HF_MODEL_CHECKPOINTS_MAP.items():
        with pytest.warns(UserWarning, match=f"facebook/musicgen-{short}"), pytest.raises(Loaded):
            MusicGen.get_pretrained(short)
        assert seen[-1] == (hub, "auto")
    with pytest.raises(Loaded):
        MusicGen.get_pretrained("facebook/musicgen-stereo-small", device=torch.device("cpu"))
    assert seen[-1] == ("facebook/musicgen-stereo-small", "cpu")


# --- every method: shapes, return_tokens, tokens equal MusicGenerator ----------------------

def test_every_method_returns_audiocrafts_shapes(model, stereo):
    for m, channels, k in ((model, 1, 4), (stereo, 2, 8)):
        m.set_generation_params(duration=0.4)
        wav = m.generate(["a", "b"])
        assert isinstance(wav, torch.Tensor) and wav.dtype == torch.float32
        assert wav.shape == (2, channels, int(0.4 * SR))
        wav, tokens = m.generate_unconditional(3, return_tokens=True)
        assert wav.shape == (3, channels, int(0.4 * SR)) and tokens.shape == (3, k, 20)
        assert tokens.dtype == torch.long and wav.device == m.device
        prompt = _tone(0.2, channels=1)                           # [C, T], mono for both
        wav, tokens = m.generate_continuation(prompt, SR, return_tokens=True)
        assert wav.shape == (1, channels, int(0.4 * SR)) and tokens.shape == (1, k, 20)
        assert torch.allclose(m.generate_audio(tokens).cpu().clamp(-1, 1), wav.cpu(), atol=1e-5)


def test_generate_greedy_tokens_equal_music_generator(model):
    model.set_generation_params(duration=0.4, use_sampling=False, cfg_coef=2.0)
    _, tokens = model.generate(["lo-fi piano", "epic drums"], return_tokens=True)
    ref = mg.MusicGenerator("debug", device="cpu", progress=False).generate(
        ["lo-fi piano", "epic drums"], duration=0.4, use_sampling=False, guidance_scale=2.0)
    assert torch.equal(tokens, ref.tokens)


def test_sampling_seeds_come_from_torch_global_rng(model):
    model.set_generation_params(duration=0.3, top_k=20, temperature=1.2)
    torch.manual_seed(3)
    expected_seeds = ac_models.draw_seeds(2)
    torch.manual_seed(3)
    _, tokens = model.generate(["a", "b"], return_tokens=True)
    assert model.last_generation.seeds == expected_seeds
    torch.manual_seed(3)
    _, again = model.generate(["a", "b"], return_tokens=True)
    assert torch.equal(tokens, again)                             # torch.manual_seed reproduces
    ref = mg.MusicGenerator("debug", device="cpu", progress=False).generate(
        ["a", "b"], seeds=expected_seeds, duration=0.3, top_k=20, temperature=1.2)
    assert torch.equal(tokens, ref.tokens)
    torch.manual_seed(4)
    _, other = model.generate(["a", "b"], return_tokens=True)
    assert not torch.equal(tokens, other)


def test_empty_description_is_the_null_condition(model):
    model.set_generation_params(duration=0.3, use_sampling=False)
    _, empty = model.generate([""], return_tokens=True)
    _, uncond = model.generate_unconditional(1, return_tokens=True)
    assert torch.equal(empty, uncond)


def test_continuation_matches_music_generator_and_keeps_the_prompt(model):
    model.set_generation_params(duration=0.6, use_sampling=False)
    prompt = torch.stack([_tone(0.2, 2, 16000, 330), _tone(0.2, 2, 16000, 550)])  # [2, 2, T]
    _, tokens = model.generate_continuation(prompt, 16000, ["jazz", None], return_tokens=True)
    mono = prompt.mean(dim=1, keepdim=True)                       # audiocraft's downmix
    ref = mg.MusicGenerator("debug", device="cpu", progress=False).generate_continuation(
        mono, 16000, ["jazz", None], duration=0.6, use_sampling=False)
    assert torch.equal(tokens, ref.tokens) and tokens.shape == (2, 4, 30)
    with pytest.raises(ConfigError, match="got 2 prompts for 1 descriptions"):
        model.generate_continuation(prompt, 16000, ["jazz"])
    with pytest.raises(AudioError, match=r"3 dimensions \[B, C, T\].*\[8000\]"):
        model.generate_continuation(torch.zeros(8000), 16000)
    with pytest.raises(ConfigError, match="duration is the total length"):
        model.generate_continuation(_tone(0.8), SR)


def test_generate_with_chroma_tensor_list_and_none(melody, model):
    melody.set_generation_params(duration=0.3, use_sampling=False)
    tune = _tone(1.0, 2, 44100, 262)                              # [2, T] stereo, 44.1 kHz
    _, tokens = melody.generate_with_chroma(["pop", "rock"], tune[None].repeat(2, 1, 1), 44100,
                                            return_tokens=True)
    ref = mg.MusicGenerator("debug-melody", device="cpu", progress=False)
    want = ref.generate_with_melody(["pop", "rock"], tune.mean(0, keepdim=True), 44100,
                                    duration=0.3, use_sampling=False)
    assert torch.equal(tokens, want.tokens)
    # a list: [C, T] melodies of different lengths and None (no melody for that item)
    short = _tone(0.6, 1, 44100, 392)
    wav, tokens = melody.generate_with_chroma(["pop", "rock", "jazz"], [tune, None, short],
                                              44100, return_tokens=True)
    assert wav.shape == (3, 1, int(0.3 * SR))
    alone = ref.generate(["rock"], duration=0.3, use_sampling=False)
    assert torch.equal(tokens[1:2], alone.tokens)
    alone = ref.generate_with_melody(["jazz"], short, 44100, duration=0.3, use_sampling=False)
    assert torch.equal(tokens[2:3], alone.tokens)
    alone = ref.generate_with_melody(["pop"], tune, 44100, duration=0.3, use_sampling=False)
    assert torch.equal(tokens[0:1], alone.tokens)     # each group runs as its own batch
    with pytest.raises(GenerationError, match="doesn't support melody conditioning"):
        model.generate_with_chroma(["pop"], tune, 44100)
    with pytest.raises(ConfigError, match="2 melodies and 1 descriptions"):
        melody.generate_with_chroma(["pop"], [tune, tune], 44100)
    with pytest.raises(AudioError, match=r"melody_wavs\[0\] must be a \[C, T\] tensor"):
        melody.generate_with_chroma(["pop"], [tune[None]], 44100)


def test_bad_arguments_fail_with_clear_messages(model):
    with pytest.raises(ConfigError, match="must be a list of strings"):
        model.generate("lo-fi piano")
    with pytest.raises(ConfigError, match="descriptions is empty"):
        model.generate([])
    with pytest.raises(ConfigError, match="num_samples must be a positive int"):
        model.generate_unconditional(0)
    with pytest.raises(GenerationError, match="MultiBandDiffusion is not available"):
        ac_models.MultiBandDiffusion.get_mbd_musicgen()
    assert convert_audio_channels(torch.ones(1, 2, 5), 2).shape == (1, 2, 5)
    with pytest.raises(AudioError, match="fewer than the 3 requested"):
        convert_audio_channels(torch.ones(2, 5), 3)


# --- progress ------------------------------------------------------------------------------

def test_progress_callback_gets_audiocrafts_arguments(model, capsys):
    calls = []
    model.set_custom_progress_callback(lambda done, todo: calls.append((done, todo)))
    model.set_generation_params(duration=0.4)
    model.generate(["a"])                                   # progress=False: no calls at all
    assert calls == []
    model.generate(["a"], progress=True)                    # one window: steps 1..F+D
    steps = 20 + DELAY
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    calls.clear()                                           # continuation: prompt steps skipped
    model.generate_continuation(_tone(0.2), SR, progress=True)
    assert calls == [(i, 20 + DELAY - 10) for i in range(1, 20 + DELAY - 10 + 1)]
    model.set_custom_progress_callback(None)
    model.generate(["a"], progress=True)                    # no callback: audiocraft's print
    assert f"{steps: 6d} / {steps: 6d}" in capsys.readouterr().out


def test_progress_callback_in_long_form_counts_per_window():
    model = MusicGen.get_pretrained("debug", device="cpu")
    model.generator.max_duration = model.max_duration = 1.0    # a 1 s window: long form is cheap
    model.set_generation_params(duration=1.5, extend_stride=0.5)
    calls = []
    model.set_custom_progress_callback(lambda done, todo: calls.append((done, todo)))
    wav = model.generate(["a"], progress=True)
    assert wav.shape == (1, 1, int(1.5 * SR))
    # audiocraft: window 0 (50 frames) then window 1 at offset 25 with a 25-frame prompt;
    # the callback sees (steps in this window + window offset, steps of this window)
    first = [(i, 50 + DELAY) for i in range(1, 50 + DELAY + 1)]
    second = [(i + 25, 50 + DELAY - 25) for i in range(1, 50 + DELAY - 25 + 1)]
    assert calls == first + second


# --- audio_write ---------------------------------------------------------------------------

def _read(path):
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return data.T, sr                                             # [C, T]


def test_audio_write_peak_clip_rms_and_suffix(tmp_path):
    wav = _tone(1.0, 2) * torch.tensor([[0.2], [0.1]])           # [2, T], peak 0.1
    path = audio_write(tmp_path / "peak", wav, SR)
    assert path == tmp_path / "peak.wav"
    data, sr = _read(path)
    assert sr == SR and data.shape == (2, SR)
    assert abs(np.abs(data).max() - PEAK_1DB) < 1e-4               # -1 dBFS
    assert abs(data[1].max() / data[0].max() - 0.5) < 1e-3        # one gain for all channels
    loud = _tone(1.0) * 3                                        # peaks at 1.5
    data, _ = _read(audio_write(tmp_path / "clip", loud, SR, strategy="clip"))
    assert abs(np.abs(data).max() - PEAK_1DB) < 1e-4
    small = np.abs(loud.numpy()) < PEAK_1DB                      # below the ceiling: unchanged
    assert np.allclose(data[small], loud.numpy()[small], atol=1e-4)
    data, _ = _read(audio_write(tmp_path / "rms", wav, SR, strategy="rms", rms_headroom_db=20))
    assert abs(np.sqrt((data.mean(axis=0) ** 2).mean()) - 0.1) < 1e-3   # mono-mix RMS -20 dB
    quiet = _tone(1.0) * 0.1
    data, _ = _read(audio_write(tmp_path / "keep", quiet, SR, normalize=False))
    assert abs(np.abs(data).max() - 0.05) < 1e-4                 # normalize=False: not raised
    data, _ = _read(audio_write(tmp_path / "down", loud, SR, normalize=False))
    assert abs(np.abs(data).max() - PEAK_1DB) < 1e-4             # ... but lowered to avoid clips
    silence = torch.zeros(1, SR)
    data, _ = _read(audio_write(tmp_path / "silence", silence, SR))
    assert np.abs(data).max() == 0


def test_audio_write_loudness(tmp_path):
    wav = _tone(2.0, 1) * 0.05
    path = audio_write(tmp_path / "loud", wav, SR, strategy="loudness", loudness_headroom_db=16)
    data, _ = _read(path)
    assert abs(mg.loudness(data, SR) - (-16)) < 0.05               # BS.1770 LUFS
    comp = audio_write(tmp_path / "comp", wav, SR, strategy="loudness", loudness_headroom_db=0,
                       loudness_compressor=True)
    data, _ = _read(comp)
    assert np.abs(data).max() < 1                                 # tanh keeps it inside
    near_silent = _tone(2.0, 1) * 1e-3                            # RMS below the energy floor
    data, _ = _read(audio_write(tmp_path / "floor", near_silent, SR, strategy="loudness"))
    assert np.allclose(data, near_silent.numpy(), atol=1e-4)


def test_audio_write_paths_formats_and_errors(tmp_path, capsys):
    wav = _tone(0.5)
    exact = audio_write(tmp_path / "no_suffix", wav, SR, add_suffix=False)
    assert exact == tmp_path / "no_suffix" and _read(exact)[1] == SR
    nested = audio_write(tmp_path / "a" / "b" / "clip", wav, SR)
    assert nested.exists()
    with pytest.raises(AudioError, match="make_parent_dir=False"):
        audio_write(tmp_path / "missing" / "clip", wav, SR, make_parent_dir=False)
    assert not (tmp_path / "missing").exists()
    assert audio_write(tmp_path / "f", wav, SR, format="flac").suffix == ".flac"
    assert audio_write(tmp_path / "o", wav, SR, format="ogg").suffix == ".ogg"
    back, sr = audio_read(tmp_path / "f.flac")
    assert sr == SR and back.shape == (1, int(0.5 * SR)) and back.dtype == torch.float32
    with pytest.raises(ConfigError, match="Invalid format 'aiff'"):
        audio_write(tmp_path / "x", wav, SR, format="aiff")
    with pytest.raises(AudioError, match="at most 2 dimensions"):
        audio_write(tmp_path / "x", wav[None], SR)
    with pytest.raises(AudioError, match="floating-point"):
        audio_write(tmp_path / "x", (wav * 100).long(), SR)
    with pytest.raises(ConfigError, match="strategy='loudnes' is not available"):
        audio_write(tmp_path / "x", wav, SR, strategy="loudnes")
    with pytest.raises(AudioError, match="peaks at 1.500"):
        audio_write(tmp_path / "x", wav * 3, SR, strategy="none")
    audio_write(tmp_path / "clipped", wav * 10, SR, strategy="rms", rms_headroom_db=0)
    assert "CLIPPING" in capsys.readouterr().err                 # log_clipping=True (default)


def test_generated_batch_writes_like_audiocrafts_readme(model, tmp_path):
    model.set_generation_params(duration=0.5)
    wav = model.generate(["happy rock", "energetic EDM"])
    for idx, one_wav in enumerate(wav):
        path = audio_write(tmp_path / f"{idx}", one_wav.cpu(), model.sample_rate,
                           strategy="loudness", loudness_compressor=True)
        data, sr = _read(path)
        assert sr == SR and data.shape == (1, int(0.5 * SR))


# --- audiocraft's demo notebook ------------------------------------------------------------

DEMO = Path(__file__).resolve().parent / "notebooks_audiocraft" / "musicgen_demo.ipynb"


def test_demo_notebook_is_committed_clean():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(DEMO, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert code[0].metadata.get("tags") == ["parameters"]
    imports = [line for c in code for line in c.source.splitlines()
               if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "audiocraft." in line.split(" import")[0]
                and "musicgen_edu" not in line]                    # no audiocraft import left
    assert "from musicgen_edu.audiocraft_api.models import MusicGen" in imports


@pytest.mark.notebooks
def test_demo_notebook_runs_on_the_offline_models(tmp_path):
    pm = pytest.importorskip("papermill")
    (tmp_path / "assets").mkdir()
    (tmp_path / "demos").mkdir()
    bach = torch.cat([_tone(0.75, 2, 44100, f) for f in (262, 330, 392, 523)], dim=-1)
    sf.write(str(tmp_path / "assets" / "bach.mp3"), bach.T.numpy(), 44100)   # 3 s, stereo
    results = tmp_path / "results.json"
    pm.execute_notebook(str(DEMO), str(tmp_path / "demos" / "executed.ipynb"),
                        parameters=dict(MODEL="debug", MELODY_MODEL="debug-melody",
                                        DURATION=2.5, MELODY_DURATION=1, DEVICE="cpu",
                                        RESULTS_PATH=str(results)),
                        kernel_name="python3", cwd=str(tmp_path / "demos"), progress_bar=False)
    got = json.loads(results.read_text())
    assert got["model"] == "debug-melody" and got["sample_rate"] == SR
    assert got["bip_shape"] == [2, 1, int(2.5 * SR)]
    assert got["melody_input_shape"][:2] == [2, 2]
    assert got["melody_wav_shape"] == [2, 1, SR]
    assert got["melody_tokens_shape"] == [2, 4, RATE]
