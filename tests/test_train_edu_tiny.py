"""edu-tiny's stages (train/edu_tiny.py): a MusicGen built around our codec, its token data,
and the float16 package it ships as. The trained weights' quality is in the grade table
(scripts/train_edu_tiny.py grade, bench/results/edu_tiny/); here, what makes the pieces fit."""

from __future__ import annotations

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.train import edu_tiny
from musicgen_edu.train.codec import Codec, CodecConfig, si_snr_db
from musicgen_edu.train.edu_tiny import (
    EduTinyConfig,
    build_edu_tiny,
    ship_model,
    synth_token_dataset,
)
from musicgen_edu.train.objective import CaptionEncoder, training_step
from musicgen_edu.train.synth import synth_clips

SMALL = EduTinyConfig(text_width=32, text_layers=1, text_heads=2, text_ffn=64, width=64,
                      layers=2, heads=2, ffn=128, max_frames=500)


@pytest.fixture(scope="module")
def codec():
    return Codec(CodecConfig(), seed=3).eval()


@pytest.fixture(scope="module")
def model(codec):
    return build_edu_tiny(codec, SMALL)


def test_the_model_is_musicgen_around_our_codec(codec, model):
    assert (model.sample_rate, model.frame_rate, model.num_codebooks) == (16000, 50, 4)
    assert model.special_token == codec.config.codebook_size == 256
    decoder = model.config.decoder
    assert (decoder.num_hidden_layers, decoder.hidden_size) == (2, 64)
    wav = torch.from_numpy(synth_clips(1, 1.0, 16000, seed=5)[0][0])[None, None]
    codes = model.model.audio_encoder.encode(wav).audio_codes[0]        # [1, K, S]
    assert torch.equal(codes, codec.encode(wav))                        # the same codes
    again = build_edu_tiny(codec, SMALL)                                 # seeded weights
    assert all(torch.equal(a, b) for a, b in zip(model.model.decoder.parameters(),
                                                 again.model.decoder.parameters()))
    out = mg.MusicGenerator(model, progress=False).generate(["fast organ chords"], duration=0.5,
                                                            seed=0)
    assert out.wav.shape == (1, 1, 8000) and torch.isfinite(out.wav).all()


def test_token_data_are_the_synth_clips_encoded(model):
    data = synth_token_dataset(model, 3, seconds=1.0, seed=4)
    clips = synth_clips(3, 1.0, 16000, seed=4)
    assert len(data) == 3 and data.frames == 50
    assert data.captions == [c for _, c, _ in clips]
    tokens, caption = data[2]
    wav = torch.from_numpy(clips[2][0])[None, None]
    assert torch.equal(tokens, model.model.audio_encoder.encode(wav).audio_codes[0, 0].long())
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 256
    with pytest.raises(ConfigError, match="n=0"):
        synth_token_dataset(model, 0)


def test_the_decoder_learns_from_scratch(model):
    """A few full-decoder steps on one batch lower its loss: the tokens, the delay pattern and
    the captions reach a new decoder the way they reach a fine-tuned one."""
    import copy
    import dataclasses

    from musicgen_edu.train.lora import prepare_trainable, trainable_parameters

    local = dataclasses.replace(model, model=copy.deepcopy(model.model))
    prepare_trainable(local, lora=False)
    data = synth_token_dataset(local, 4, seconds=1.0, seed=6)
    tokens = torch.stack([data[i][0] for i in range(4)])
    captions, texts = CaptionEncoder(local), data.captions
    optimizer = torch.optim.AdamW(trainable_parameters(local).values(), lr=3e-3)
    losses = []
    for _ in range(8):
        result = training_step(local, captions, tokens, texts)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_shipping_halves_the_weights_and_loads_as_a_model(model, tmp_path):
    size = ship_model(model, tmp_path / "ship", info={"config": SMALL, "eval": {"x": 1.5}})
    files = {p.name for p in (tmp_path / "ship").iterdir()}
    assert {"config.json", "model.safetensors", "edu_tiny.json"} <= files
    assert size == sum((tmp_path / "ship" / f).stat().st_size for f in files)
    loaded = mg.load_model(str(tmp_path / "ship"), device="cpu", dtype="float32", cache=False)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ship" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    ids = torch.randint(0, 256, (4, 10))
    with torch.no_grad():
        want = model.model.decoder(input_ids=ids).logits
        got = loaded.model.decoder(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-2 * want.abs().max()            # float16 rounding
    wav = torch.from_numpy(synth_clips(1, 1.0, 16000, seed=8)[0][0])[None, None]
    codes = model.model.audio_encoder.encode(wav).audio_codes              # the codec, too:
    with torch.no_grad():                                                 # codebooks, decoder
        again = loaded.model.audio_encoder.encode(wav).audio_codes
        out = [m.model.audio_encoder.decode(codes, [None]).audio_values for m in (model, loaded)]
    assert (again == codes).float().mean() > 0.95
    assert si_snr_db(out[0], out[1]).item() > 30


def test_shipping_refuses_a_model_over_the_budget(model, tmp_path, monkeypatch):
    ship_model(model, tmp_path / "ok")                                   # a good one first
    before = {p.name: p.read_bytes() for p in (tmp_path / "ok").iterdir()}
    monkeypatch.setattr(edu_tiny, "MAX_SHIPPED_BYTES", 1_000_000)
    with pytest.raises(ConfigError, match=r"MiB; allowed: at most .* was not changed"):
        ship_model(model, tmp_path / "ok")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ok").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]           # no leftovers
