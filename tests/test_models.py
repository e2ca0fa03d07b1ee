"""load_model: debug models, caching, local folders, the offline hub error, devices, dtypes."""

import time

import numpy as np
import pytest
import torch

import musicgen_edu as mg
from musicgen_edu import ConfigError, ModelLoadError
from musicgen_edu.models import build_offline_model


@pytest.mark.parametrize("name,channels,k,melody", [
    ("debug", 1, 4, False), ("debug-stereo", 2, 8, False), ("debug-melody", 1, 4, True)])
def test_debug_models_are_real_musicgen_networks(name, channels, k, melody):
    model = mg.load_model(name, device="cpu")
    expected = "MusicgenMelodyForConditionalGeneration" if melody else "MusicgenForConditionalGeneration"
    assert type(model.model).__name__ == expected
    assert type(model.model.text_encoder).__name__ == "T5EncoderModel"
    assert type(model.model.audio_encoder).__name__ == "EncodecModel"
    assert model.model.config.decoder.num_hidden_layers == 2
    assert (model.sample_rate, model.frame_rate) == (32000, 50)
    assert (model.audio_channels, model.num_codebooks, model.is_melody) == (channels, k, melody)
    assert model.special_token == 2048 and model.source == "debug"
    assert model.tokenizer("piano")["input_ids"][-1] == 1  # ByT5: bytes + </s>, no files needed


def test_debug_weights_are_deterministic_and_leave_the_rng_alone():
    torch.manual_seed(1)
    expected = torch.rand(2)
    torch.manual_seed(1)
    a, _ = build_offline_model("debug")
    assert torch.equal(torch.rand(2), expected)
    b, _ = build_offline_model("debug")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_loaded_models_are_reused():
    first = mg.load_model("debug", device="cpu", dtype="float32")
    again = mg.load_model("debug", device="cpu", dtype=torch.float32)
    assert again is first and again.load_seconds == first.load_seconds
    assert mg.load_model("debug", device="cpu", dtype="bfloat16") is not first


def test_bfloat16_debug_model_generates():
    gen = mg.MusicGenerator(mg.load_model("debug", device="cpu", dtype="bf16"), progress=False)
    assert gen.model.model.decoder.dtype == torch.bfloat16
    assert gen.model.model.audio_encoder.dtype == torch.float32  # EnCodec stays fp32
    out = gen.generate("x", duration=0.3, seed=0)
    assert out.wav.dtype == torch.float32 and torch.isfinite(out.wav).all()


def test_local_folder_loads_and_generates_the_same(tmp_path):
    debug = mg.load_model("debug", device="cpu")
    debug.model.save_pretrained(tmp_path)
    debug.tokenizer.save_pretrained(tmp_path)
    local = mg.load_model(str(tmp_path), device="cpu")
    assert local.source == "local" and local is not debug
    a = mg.MusicGenerator(debug, progress=False).generate("x", duration=0.3, seed=2)
    b = mg.MusicGenerator(local, progress=False).generate("x", duration=0.3, seed=2)
    assert torch.equal(a.tokens, b.tokens)


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no MusicGen config.json"):
        mg.load_model(str(tmp_path))


def test_hub_model_offline_fails_fast_with_a_teaching_message(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_CACHE_DIR", str(tmp_path))  # an empty cache
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        mg.load_model("facebook/musicgen-small")
    assert time.perf_counter() - start < 15
    message = str(err.value)
    for fragment in ("facebook/musicgen-small", "network", "local folder", "load_model('debug')",
                     str(tmp_path)):
        assert fragment in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one paragraph


def test_unknown_names():
    with pytest.raises(ModelLoadError, match="random-tiny"):
        mg.load_model("random-tiny")
    with pytest.raises(ModelLoadError, match="debug-huge"):
        mg.load_model("debug-huge")
    with pytest.raises(ConfigError, match="non-empty string"):
        mg.load_model("  ")


def test_devices_and_dtypes():
    assert mg.resolve_device("cpu") == torch.device("cpu")
    assert mg.resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert mg.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert mg.resolve_dtype("fp16") == torch.float16
    with pytest.raises(ConfigError, match="float64"):
        mg.resolve_dtype("float64")
    with pytest.raises(ConfigError, match="'gpu'"):
        mg.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            mg.resolve_device("cuda")


def test_list_models_names_every_checkpoint():
    names = mg.list_models()
    assert names[:4] == ["edu-tiny", "debug", "debug-stereo", "debug-melody"]
    assert names[4:7] == ["random-small", "random-medium", "random-large"]
    assert "facebook/musicgen-stereo-melody" in names and len(names) == 15


def test_edu_tiny_is_what_plays_when_no_model_is_named():
    """The generator, studio, batch runner, CLI and ``make demo`` default to it (the service:
    test_settings.py, test_serve.py)."""
    import inspect
    import pathlib

    import typer

    from musicgen_edu.cli import app

    assert mg.DEFAULT_MODEL == "edu-tiny" and mg.load_model(device="cpu").source == "edu-tiny"
    assert mg.MusicGenerator(device="cpu", progress=False).model.name == "edu-tiny"
    studio = mg.Studio()
    assert studio.generator.model.name == "edu-tiny"
    assert studio.model_picker.value == "edu-tiny"
    assert inspect.signature(mg.evaluate_files).parameters["model"].default == "edu-tiny"
    for fn in (mg.run_batch, mg.BatchRunner):
        first = next(p for p in inspect.signature(fn).parameters.values()
                     if p.default is not inspect.Parameter.empty)
        assert first.default == "edu-tiny", fn
    commands = typer.main.get_command(app).commands
    for name in ("generate", "batch", "profile", "evaluate"):
        option = next(p for p in commands[name].params if p.name == "model")
        assert option.default == "edu-tiny", name
    makefile = (pathlib.Path(__file__).parents[1] / "Makefile").read_text()
    assert "--model edu-tiny" in makefile.split("\ndemo:")[1].split("\n\n")[0]


def test_edu_tiny_ships_in_the_package_and_plays_its_caption():
    """Loaded from the package, it plays the tempo and the register a caption asks for (the
    grade table: 97 and 94 %; a model that ignored the caption would be right half the time)."""
    from musicgen_edu.train import eval as ears
    from musicgen_edu.train.grade import prompt_groups

    model = mg.load_model("edu-tiny", device="cpu")
    assert (model.source, model.sample_rate, model.num_codebooks) == ("edu-tiny", 16000, 4)
    assert mg.shipped_model_info()["grade"]["model"] == "musicgen_edu/weights/edu-tiny"
    groups = prompt_groups("tempo", 8, seed=5) + prompt_groups("register", 8, seed=5)
    out = mg.MusicGenerator(model, progress=False).generate(
        [spec.caption() for spec, _, _ in groups], seeds=[s for _, _, s in groups], duration=4.0)
    assert out.wav.shape == (16, 1, 64000) and torch.isfinite(out.wav).all()
    heard = [ears.tempo_class(w[0].numpy(), 16000) for w in out.wav[:8]] + \
            [ears.register_class(w[0].numpy(), 16000) for w in out.wav[8:]]
    right = sum(h == wanted for h, (_, wanted, _) in zip(heard, groups))
    assert right >= 12, list(zip(heard, [w for _, w, _ in groups]))


def test_edu_tiny_decodes_with_the_sign_and_level_of_what_it_encoded():
    """Its codec's training losses (mel, SI-SNR) ignore the output's sign: shipped
    uncalibrated, the decode was inverted (gain -1.14, waveform SNR -4 dB at SI-SNR +4 dB).
    Calibrated (train/codec.py calibrate_output), held-out clips come back with gain near 1 and a
    waveform SNR that rises with every codebook."""
    from musicgen_edu.train.codec import output_gain
    from musicgen_edu.train.synth import synth_clips

    model = mg.load_model("edu-tiny", device="cpu")
    wav = torch.from_numpy(np.stack([w for w, _, _ in synth_clips(8, 2.0, 16000, seed=1)]))
    assert 0.7 < output_gain(model.model.audio_encoder, wav[:, None]) < 1.4     # per clip: 0.5-2
    snr = mg.reconstruction_error(model, wav[:, None], 16000)["snr_db"].tolist()
    assert snr == sorted(snr) and snr[-1] > 2, snr


def test_a_saved_musicgen_folder_loads_without_the_pad_id_warning():
    """MusicGen's pad/BOS id is one past the codebook, by design; transformers warns about it
    once per process, so a fresh one loads the shipped folder by its path."""
    import subprocess
    import sys

    folder = mg.models.shipped_model_dir("edu-tiny")
    code = f"import musicgen_edu as mg; mg.load_model({str(folder)!r}, device='cpu')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "within the vocabulary" not in run.stdout + run.stderr, run.stderr[-2000:]


def test_a_shipped_model_without_its_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(mg.models.SHIPPED_MODELS, "edu-tiny", str(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="'edu-tiny' has no weights in this install"):
        mg.load_model("edu-tiny", cache=False)
    with pytest.raises(ModelLoadError, match="'edu-tiny' has no weights in this install"):
        mg.shipped_model_info("edu-tiny")
    with pytest.raises(ModelLoadError, match="'debug' is not a shipped model"):
        mg.shipped_model_info("debug")


def test_random_small_has_the_published_architecture():
    model = mg.load_model("random-small", device="cpu")
    decoder = model.config.decoder
    assert (decoder.hidden_size, decoder.num_hidden_layers, decoder.num_attention_heads,
            decoder.ffn_dim) == (1024, 24, 16, 4096)
    assert model.config.text_encoder.d_model == 768 and model.num_codebooks == 4
    assert 400e6 < model.num_parameters() < 700e6  # decoder ~420M incl. heads + t5-base ~110M
    assert model.source == "random"


@pytest.mark.hub
def test_real_musicgen_small_loads():  # runs only where the hub is reachable (e.g. Colab)
    from musicgen_edu.models import hub_reachable

    if not hub_reachable():
        pytest.skip("model hub not reachable from this machine")
    model = mg.load_model("facebook/musicgen-small")
    assert model.num_codebooks == 4 and model.sample_rate == 32000


def test_an_uncached_load_is_a_private_copy():
    """``cache=False`` (what the trainer uses): a fresh model, equal weights, shared with
    nobody, and not kept for the next caller."""
    shared = mg.load_model("debug", device="cpu")
    private = mg.load_model("debug", device="cpu", cache=False)
    assert private is not shared and private.model is not shared.model
    assert all(torch.equal(a, b) for a, b in zip(private.model.parameters(),
                                                 shared.model.parameters()))
    assert mg.load_model("debug", device="cpu") is shared
