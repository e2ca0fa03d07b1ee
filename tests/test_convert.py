"""``convert``: transformers <-> audiocraft checkpoints, exact both ways, in audiocraft's names."""

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import musicgen_edu as mg
from musicgen_edu.cli import app as cli
from musicgen_edu.convert import (
    CODEC_FILE,
    LM_FILE,
    T5_DIR,
    from_audiocraft,
    read_audiocraft,
    to_audiocraft,
)
from musicgen_edu.errors import ConfigError, ModelLoadError

SR = 32000


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (original MusicGenModel, audiocraft folder, transformers folder from it)."""
    done = {}

    def get(name: str):
        if name not in done:
            root = tmp_path_factory.mktemp(name)
            model = mg.load_model(name, device="cpu", dtype="float32", cache=False)
            ac = to_audiocraft(model, root / "audiocraft")
            done[name] = (model, ac, from_audiocraft(ac, root / "transformers"))
        return done[name]
    return get


def load_pkg(folder, name=LM_FILE) -> dict:
    return torch.load(folder / name, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("name", ["debug", "debug-stereo", "debug-melody"])
def test_round_trip_is_bit_identical(converted, name):
    model, ac, hf = converted(name)
    back = mg.load_model(str(hf), device="cpu", dtype="float32", cache=False)
    a, b = model.model.state_dict(), back.model.state_dict()
    assert sorted(a) == sorted(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert type(back.model) is type(model.model) and back.is_melody == model.is_melody
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "ffn_dim",
                  "vocab_size", "num_codebooks", "audio_channels", "pad_token_id"):
        assert getattr(back.config.decoder, field) == getattr(model.config.decoder, field), field
    for field in ("sampling_rate", "upsampling_ratios", "num_quantizers", "codebook_size",
                  "hidden_size", "num_filters", "use_conv_shortcut", "num_lstm_layers"):
        assert getattr(back.config.audio_encoder, field) == getattr(model.config.audio_encoder,
                                                                    field), field
    if model.is_melody:
        assert back.config.chroma_length == model.config.chroma_length == 235
    assert back.tokenizer("calm piano").input_ids == model.tokenizer("calm piano").input_ids


@pytest.mark.parametrize("name", ["debug", "debug-stereo", "debug-melody"])
def test_round_trip_generates_the_same_greedy_tokens(converted, name):
    model, _, hf = converted(name)
    settings = dict(duration=0.5, use_sampling=False, guidance_scale=3.0, progress=False)
    prompts = ["calm piano", "fast drums"]
    want = mg.MusicGenerator(name, device="cpu").generate(prompts, **settings).tokens
    got = mg.MusicGenerator(str(hf), device="cpu").generate(prompts, **settings).tokens
    assert got.shape == want.shape == (2, model.num_codebooks, 25)
    assert torch.equal(got, want)
    assert not torch.equal(got[0], got[1])       # the prompt reached the decoder


def expected_debug_lm(cross: bool = True, n_q: int = 4) -> dict:
    """The best_state audiocraft 1.3.0's LMModel has for the debug decoder (dim 64, 2 layers,
    ffn 128, card 2048, no biases, pre-norm), written out from lm.py and transformer.py."""
    shapes = {}
    for k in range(n_q):
        shapes[f"emb.{k}.weight"] = (2049, 64)
        shapes[f"linears.{k}.weight"] = (2048, 64)
    for i in range(2):
        p = f"transformer.layers.{i}."
        for att in ["self_attn", "cross_attention"] if cross else ["self_attn"]:
            shapes[p + att + ".in_proj_weight"] = (192, 64)
            shapes[p + att + ".out_proj.weight"] = (64, 64)
        shapes[p + "linear1.weight"], shapes[p + "linear2.weight"] = (128, 64), (64, 128)
        for norm in ["norm1", "norm2"] + (["norm_cross"] if cross else []):
            shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (64,)
    shapes["out_norm.weight"] = shapes["out_norm.bias"] = (64,)
    shapes["condition_provider.conditioners.description.output_proj.weight"] = (64, 32)
    shapes["condition_provider.conditioners.description.output_proj.bias"] = (64,)
    return shapes


def test_audiocraft_files_have_lmmodels_keys_shapes_and_config(converted):
    model, ac, _ = converted("debug")
    pkg = load_pkg(ac)
    assert sorted(pkg) == ["best_state", "exported", "musicgen_edu", "version", "xp.cfg"]
    assert {k: tuple(v.shape) for k, v in pkg["best_state"].items()} == expected_debug_lm()
    layer = model.model.decoder.model.decoder.layers[1]
    packed = pkg["best_state"]["transformer.layers.1.cross_attention.in_proj_weight"]
    assert torch.equal(packed, torch.cat([layer.encoder_attn.q_proj.weight,
                                          layer.encoder_attn.k_proj.weight,
                                          layer.encoder_attn.v_proj.weight]))
    cfg = yaml.safe_load(pkg["xp.cfg"])           # a YAML string, as audiocraft's export writes
    lm = cfg["transformer_lm"]
    assert (lm["dim"], lm["num_heads"], lm["num_layers"], lm["n_q"], lm["card"]) == (64, 4, 2, 4, 2048)
    assert int(lm["hidden_scale"] * lm["dim"]) == 128 and lm["norm_first"] and not lm["bias_attn"]
    assert cfg["codebooks_pattern"]["delay"]["delays"] == [0, 1, 2, 3]
    assert cfg["conditioners"]["description"]["t5"]["name"] == T5_DIR
    assert cfg["fuser"]["cross"] == ["description"] and cfg["dataset"]["segment_duration"] == 30.0
    assert (ac / T5_DIR / "config.json").is_file()


def test_stereo_and_melody_configs(converted):
    stereo = yaml.safe_load(load_pkg(converted("debug-stereo")[1])["xp.cfg"])
    assert stereo["codebooks_pattern"]["delay"]["delays"] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert stereo["interleave_stereo_codebooks"]["use"] and stereo["transformer_lm"]["n_q"] == 8
    assert yaml.safe_load(load_pkg(converted("debug-stereo")[1], CODEC_FILE)["xp.cfg"])[
        "channels"] == 1                          # one mono EnCodec per channel
    pkg = load_pkg(converted("debug-melody")[1])
    melody = yaml.safe_load(pkg["xp.cfg"])
    assert melody["fuser"]["prepend"] == ["self_wav", "description"] and melody["fuser"]["cross"] == []
    shapes = {k: tuple(v.shape) for k, v in pkg["best_state"].items()}
    assert shapes == expected_debug_lm(cross=False) | {
        "condition_provider.conditioners.self_wav.output_proj.weight": (64, 12),
        "condition_provider.conditioners.self_wav.output_proj.bias": (64,),
        "condition_provider.conditioners.self_wav.chroma.spec.window": (16384,)}


def test_encodec_keys_and_weight_norm(converted):
    model, ac, _ = converted("debug")
    best = load_pkg(ac, CODEC_FILE)["best_state"]
    codec = model.model.audio_encoder
    assert len(best) == len(codec.state_dict())
    assert best["quantizer.vq.layers.3._codebook.embed"].shape == (2048, 32)
    assert torch.equal(best["quantizer.vq.layers.3._codebook.embed"],
                       codec.quantizer.layers[3].codebook.embed)
    assert "encoder.model.13.lstm.weight_ih_l0" in best and "encoder.model.1.shortcut.conv.conv.bias" in best
    for name, conv in [("encoder.model.3.conv.conv", codec.encoder.layers[3].conv),
                       ("decoder.model.3.convtr.convtr", codec.decoder.layers[3].conv)]:
        g, v = best[name + ".weight_g"], best[name + ".weight_v"]   # w = g * v / |v|
        assert torch.allclose(g * v / v.norm(dim=(1, 2), keepdim=True), conv.weight, atol=1e-6)


def test_a_fine_tuned_model_converts(tmp_path):
    t = np.arange(SR) / SR
    clips = [(0.5 * np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t)).astype(np.float32)[None]
             for i in range(4)]
    data = mg.write_dataset(tmp_path / "clips", clips, SR, ["a", "b", "c", "d"])
    config = mg.TrainConfig(steps=2, batch_size=2, warmup_steps=1, window=1.0, hop=1.0,
                            checkpoint_every=2, sample_seconds=0.2, learning_rate=1e-2)
    result = mg.Trainer("debug", data, tmp_path / "run", config, progress=False).fit()
    tuned = mg.load_model(str(result.model_dir), device="cpu", cache=False)
    hf = from_audiocraft(to_audiocraft(str(result.model_dir), tmp_path / "ac"), tmp_path / "hf")
    back = mg.load_model(str(hf), device="cpu", cache=False).model.state_dict()
    a = tuned.model.state_dict()
    assert all(torch.equal(a[k], back[k]) for k in a)
    base = mg.load_model("debug", device="cpu", cache=False).model.state_dict()
    key = "decoder.lm_heads.0.weight"
    assert not torch.equal(base[key], back[key])   # the trained weights, not the base model's


def test_pretrained_encodec_and_t5_inside_the_state(converted, tmp_path):
    """Published checkpoints name their EnCodec ({'pretrained': ...}); audiocraft's finetune
    T5 keeps its weights in state_dict.bin: both are read."""
    model, ac, _ = converted("debug")
    folder = tmp_path / "ac"
    shutil.copytree(ac, folder)
    model.model.audio_encoder.save_pretrained(tmp_path / "encodec")
    torch.save({"pretrained": str(tmp_path / "encodec"), "exported": True}, folder / CODEC_FILE)
    pkg = load_pkg(folder)
    t5 = {f"condition_provider.conditioners.description.t5.{k}": v * 2
          for k, v in model.model.text_encoder.state_dict().items()}
    torch.save(pkg | {"best_state": pkg["best_state"] | t5}, folder / LM_FILE)
    back = mg.load_model(str(from_audiocraft(folder, tmp_path / "hf")), device="cpu",
                         cache=False).model
    assert all(torch.equal(v, model.model.audio_encoder.state_dict()[k])
               for k, v in back.audio_encoder.state_dict().items())
    doubled = back.text_encoder.state_dict()["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert torch.equal(doubled, 2 * model.model.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight)


# --- errors ---------------------------------------------------------------------------------

@pytest.fixture
def copy(converted, tmp_path):
    folder = tmp_path / "ac"
    shutil.copytree(converted("debug")[1], folder)
    return folder


def test_missing_files(copy, tmp_path):
    (copy / CODEC_FILE).unlink()
    with pytest.raises(ModelLoadError, match="compression_state_dict.bin does not exist"):
        from_audiocraft(copy, tmp_path / "hf")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        from_audiocraft(tmp_path / "nowhere", tmp_path / "hf")


def test_unknown_keys_and_shape_mismatch_are_named(copy, tmp_path):
    pkg = load_pkg(copy)
    best = pkg["best_state"] | {"transformer.layers.0.extra.weight": torch.zeros(3)}
    best["emb.0.weight"] = torch.zeros(2049, 32)
    torch.save(pkg | {"best_state": best}, copy / LM_FILE)
    with pytest.raises(ModelLoadError) as err:
        from_audiocraft(copy, tmp_path / "hf")
    text = str(err.value)
    assert "unknown key(s): transformer.layers.0.extra.weight" in text
    assert "emb.0.weight: (2049, 32) in" in text and "but (2049, 64) in the model" in text


def test_settings_transformers_lacks(copy, tmp_path):
    pkg = load_pkg(copy)
    cfg = yaml.safe_load(pkg["xp.cfg"])
    cfg["codebooks_pattern"]["modeling"] = "parallel"
    torch.save(pkg | {"xp.cfg": yaml.safe_dump(cfg)}, copy / LM_FILE)
    with pytest.raises(ConfigError, match="delay pattern"):
        from_audiocraft(copy, tmp_path / "hf")
    cfg["codebooks_pattern"]["modeling"] = "delay"
    cfg["transformer_lm"]["bias_attn"] = True
    torch.save(pkg | {"xp.cfg": yaml.safe_dump(cfg)}, copy / LM_FILE)
    with pytest.raises(ConfigError, match="bias_attn=True"):
        from_audiocraft(copy, tmp_path / "hf")


def test_pickled_objects_need_trust(copy, tmp_path):
    pkg = load_pkg(copy)
    torch.save(pkg | {"extra": argparse.Namespace(a=1)}, copy / LM_FILE)
    with pytest.raises(ModelLoadError, match="trusted=True"):
        read_audiocraft(copy / LM_FILE)
    assert read_audiocraft(copy / LM_FILE, trusted=True)["xp.cfg"]["transformer_lm"]["dim"] == 64


def test_interpolations_in_xp_cfg_are_resolved(copy, tmp_path):
    pkg = load_pkg(copy, CODEC_FILE)
    text = pkg["xp.cfg"].replace("  sample_rate: 32000", "  sample_rate: ${sample_rate}")
    assert "${sample_rate}" in text
    torch.save(pkg | {"xp.cfg": text}, copy / CODEC_FILE)
    assert read_audiocraft(copy / CODEC_FILE)["xp.cfg"]["encodec"]["sample_rate"] == SR


# --- the command ----------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli, ["convert", *(str(a) for a in args)], env={"COLUMNS": "300"})


def test_cli_both_ways(tmp_path):
    first = invoke("debug-stereo", tmp_path / "ac", "--json")
    assert first.exit_code == 0, first.output
    facts = json.loads(first.stdout)          # progress bars of transformers go to stderr
    assert facts["direction"] == "to-audiocraft" and LM_FILE in facts["files"]
    second = invoke(tmp_path / "ac", tmp_path / "hf", "--json")
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["direction"] == "to-transformers"
    assert mg.load_model(str(tmp_path / "hf"), device="cpu", cache=False).audio_channels == 2
    again = invoke(tmp_path / "ac", tmp_path / "hf")
    assert again.exit_code == 2 and "not an empty folder" in " ".join(again.output.split())


def test_cli_errors(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / CODEC_FILE).write_bytes(b"")
    result = invoke(tmp_path / "half", tmp_path / "out")
    assert result.exit_code == 2
    assert f"without {LM_FILE} (it has {CODEC_FILE})" in " ".join(result.output.split())
    result = invoke("no-such-model", tmp_path / "out")
    assert result.exit_code == 2 and "known names: debug" in " ".join(result.output.split())
    result = invoke("./missing", tmp_path / "out")
    assert result.exit_code == 2 and "does not exist" in result.output


# --- against audiocraft itself, where it is installed ---------------------------------------

@pytest.mark.parametrize("name", ["debug", "debug-stereo"])
def test_audiocraft_loads_the_files_and_agrees(converted, name, tmp_path, monkeypatch):
    """audiocraft's own loaders build LMModel and EnCodec from the files, with the logits and
    codes transformers gives; and a state audiocraft saves converts back to the same logits.
    Runs only where ``import audiocraft`` works (its own environment)."""
    pytest.importorskip("audiocraft", reason="audiocraft is not installed in this environment")
    from audiocraft.models import MusicGen, builders, loaders
    from audiocraft.modules import conditioners
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    model, ac, _ = converted(name)
    k = model.num_codebooks
    monkeypatch.chdir(ac)   # audiocraft loads its T5 by a name it knows: register our folder
    monkeypatch.setattr(conditioners.T5Conditioner, "MODELS", [T5_DIR])
    monkeypatch.setattr(conditioners.T5Conditioner, "MODELS_DIMS", {T5_DIR: 32})
    monkeypatch.setattr(conditioners, "T5Tokenizer", AutoTokenizer)
    lm = loaders.load_lm_model(ac, device="cpu")     # load_state_dict is strict
    codes = torch.randint(0, 2048, (2, k, 6))
    texts = ["calm piano", "fast drums"]
    ids = model.tokenizer(texts, return_tensors="pt", padding=True)

    def logits_of(hf_model):                          # [B, K, S, card] as audiocraft gives them
        with torch.no_grad():
            out = hf_model(**ids, decoder_input_ids=codes.reshape(2 * k, 6)).logits
        return out.reshape(2, k, 6, 2048)

    attributes = [conditioners.ConditioningAttributes(text={"description": t}) for t in texts]
    with torch.no_grad():
        want = lm(codes, attributes)
    assert torch.allclose(want, logits_of(model.model), atol=1e-4)
    codec = builders.get_wrapped_compression_model(
        loaders.load_compression_model(ac, device="cpu"), lm.cfg)
    wav = torch.randn(1, model.audio_channels, SR // 2)
    with torch.no_grad():
        hf_codes = torch.cat([model.model.audio_encoder.encode(wav[:, c:c + 1]).audio_codes[0]
                              for c in range(model.audio_channels)], dim=1)  # [1, K/C * C, S]
        ac_codes = codec.encode(wav)[0]
    order = [c * (k // model.audio_channels) + q for q in range(k // model.audio_channels)
             for c in range(model.audio_channels)]   # L0 R0 L1 R1 ... as audiocraft interleaves
    assert codec.num_codebooks == k and torch.equal(ac_codes, hf_codes[:, order])
    musicgen = MusicGen.get_pretrained(str(ac), device="cpu")   # greedy with CFG 3, as ours
    musicgen.set_generation_params(duration=0.5, use_sampling=False, cfg_coef=3.0)
    _, ac_tokens = musicgen.generate(texts, return_tokens=True)
    ours = mg.MusicGenerator(name, device="cpu").generate(
        texts, duration=0.5, use_sampling=False, guidance_scale=3.0, progress=False).tokens
    assert torch.equal(ac_tokens, ours)
    # the other way: weights audiocraft holds (re-drawn here) -> transformers, same logits
    torch.manual_seed(1)
    for param in lm.parameters():
        param.data.normal_(0, 0.05)
    folder = tmp_path / "from_audiocraft"
    shutil.copytree(ac, folder)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": OmegaConf.to_yaml(lm.cfg),
                "version": "1.3.0", "exported": True}, folder / LM_FILE)
    back = mg.load_model(str(from_audiocraft(folder, tmp_path / "hf")), device="cpu", cache=False)
    with torch.no_grad():
        want = lm(codes, attributes)
    assert torch.allclose(want, logits_of(back.model), atol=1e-4)
