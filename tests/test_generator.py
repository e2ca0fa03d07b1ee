"""MusicGenerator end to end on the offline debug models, and parity with transformers."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu import ConfigError, GenerationConfig, GenerationError

SR, FR = 32000, 50  # debug models: 32 kHz EnCodec, 50 token frames per second


# --- shapes, rates, durations ----------------------------------------------------------------
@pytest.mark.parametrize("duration", [0.5, 1.02])
def test_every_variant_generates_the_requested_shape(any_gen, duration):
    out = any_gen.generate(["a calm piano", "fast drums"], duration=duration, seed=0)
    channels, k = any_gen.model.audio_channels, any_gen.model.num_codebooks
    frames = round(duration * FR)
    assert out.sample_rate == SR
    assert out.wav.dtype == torch.float32
    assert out.wav.shape == (2, channels, frames * SR // FR)
    assert out.tokens.shape == (2, k, frames)
    assert int(out.tokens.max()) < 2048 and int(out.tokens.min()) >= 0  # no special tokens left
    assert out.wav.abs().max() <= 1.0 and out.wav.abs().max() > 0
    assert out.duration == pytest.approx(frames / FR)
    assert out.prompts == ["a calm piano", "fast drums"] and out.seeds == [0, 1]


def test_single_prompt_string_gives_batch_of_one(gen):
    out = gen.generate("lo-fi", duration=0.3, seed=1)
    assert len(out) == 1 and out.prompts == ["lo-fi"]


def test_timings_are_recorded(gen):
    t = gen.generate("lo-fi", duration=0.4, seed=1).timings
    assert t["steps"] == 20 + 3                # frames + delay of the last codebook
    for key in ("first_step_s", "generate_s", "decode_s", "total_s", "steps_per_s", "rtf"):
        assert t[key] > 0, key
    assert t["first_step_s"] <= t["generate_s"] <= t["total_s"]


# --- seeds and reproducibility ---------------------------------------------------------------
def test_same_seed_same_tokens_other_seed_other_tokens(gen):
    a = gen.generate(["x", "y"], duration=0.5, seed=11)
    b = gen.generate(["x", "y"], duration=0.5, seed=11)
    c = gen.generate(["x", "y"], duration=0.5, seed=12)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.wav, b.wav)
    assert not torch.equal(a.tokens, c.tokens)


def test_per_item_seeds_are_independent_of_the_batch(gen):
    batch = gen.generate(["x", "y"], duration=0.5, seeds=[5, 9])
    alone = gen.generate("y", duration=0.5, seed=9)
    assert batch.seeds == [5, 9]
    assert torch.equal(batch.tokens[1], alone.tokens[0])


def test_one_seed_derives_item_seeds(gen):
    out = gen.generate(["x", "x", "x"], duration=0.3, seed=100)
    assert out.seeds == [100, 101, 102]
    assert not torch.equal(out.tokens[0], out.tokens[1])  # same prompt, different seeds


def test_random_seed_is_recorded_and_replays(gen):
    first = gen.generate("x", duration=0.3)
    again = gen.generate("x", duration=0.3, seeds=first.seeds)
    assert torch.equal(first.tokens, again.tokens)


def test_generation_leaves_the_global_rng_alone(gen):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    gen.generate("x", duration=0.2, seed=3)
    assert torch.equal(torch.rand(3), expected)


# --- parity with transformers' own generate --------------------------------------------------
def _reference_tokens(model, prompt, frames, seed, **kwargs):
    """Tokens of ``model.generate`` (captured where it hands them to EnCodec)."""
    captured, decode = [], model.model.audio_encoder.decode

    def record(codes, *args, **kw):
        captured.append(codes.clone())
        return decode(codes, *args, **kw)

    inputs = model.tokenizer([prompt], padding=True, return_tensors="pt")
    delay = model.num_codebooks // model.audio_channels - 1
    model.model.audio_encoder.decode = record
    try:
        torch.manual_seed(seed)
        wav = model.model.generate(**inputs, max_new_tokens=frames + delay, **kwargs)
    finally:
        model.model.audio_encoder.decode = decode
    codes = captured[0][0] if model.audio_channels == 1 else \
        torch.stack([captured[0][0], captured[1][0]], dim=2).flatten(1, 2)
    return codes, wav


@pytest.mark.parametrize("settings_", [
    dict(use_sampling=True, top_k=250, guidance_scale=3.0),
    dict(use_sampling=True, top_k=0, top_p=0.9, temperature=0.7, guidance_scale=2.0),
    dict(use_sampling=False, guidance_scale=3.0),
    dict(use_sampling=True, top_k=50, guidance_scale=1.0),
])
def test_tokens_equal_transformers_generate(any_gen, settings_):
    hf = dict(do_sample=settings_["use_sampling"], guidance_scale=settings_["guidance_scale"])
    if settings_["use_sampling"]:
        hf.update(top_k=settings_.get("top_k", 0), top_p=settings_.get("top_p", 1.0) or 1.0,
                  temperature=settings_.get("temperature", 1.0))
    ref_tokens, ref_wav = _reference_tokens(any_gen.model, "lo-fi hip hop", 40, 1234, **hf)
    ours = any_gen.generate("lo-fi hip hop", duration=40 / FR, seed=1234, sampler="reference",
                            **settings_)
    assert torch.equal(ours.tokens, ref_tokens)
    torch.testing.assert_close(ours.wav, ref_wav.clamp(-1, 1))


# --- other modes -----------------------------------------------------------------------------
def test_unconditional(gen):
    out = gen.generate_unconditional(2, duration=0.3, seed=0)
    assert out.prompts == [None, None] and out.wav.shape == (2, 1, 9600)


def test_negative_prompt_changes_the_result_only_with_guidance(gen):
    plain = gen.generate("x", duration=0.4, seed=3)
    negative = gen.generate("x", duration=0.4, seed=3, negative_prompt="drums")
    assert not torch.equal(plain.tokens, negative.tokens)
    off = dict(duration=0.4, seed=3, guidance_scale=1.0)
    assert torch.equal(gen.generate("x", **off).tokens,
                       gen.generate("x", negative_prompt="drums", **off).tokens)


def test_continuation_keeps_the_prompt_tokens(any_gen):
    prompt = any_gen.generate("x", duration=0.4, seed=2)
    out = any_gen.generate_continuation(prompt.wav[0], SR, "x", duration=1.0, seed=4)
    prompt_tokens = any_gen.backend.encode_audio(prompt.wav)
    assert out.tokens.shape[-1] == 50 and out.wav.shape[-1] == SR
    assert torch.equal(out.tokens[..., :20], prompt_tokens)


def test_continuation_resamples_and_checks_lengths(gen):
    wav = np.sin(2 * np.pi * 220 * np.arange(8000) / 16000).astype(np.float32)  # 0.5 s at 16 kHz
    out = gen.generate_continuation(wav, 16000, duration=0.8, seed=0)
    assert out.tokens.shape[-1] == 40 and out.prompts == [None]
    with pytest.raises(ConfigError, match=r"lasts 0\.50 s but duration=0\.4 s; duration is"):
        gen.generate_continuation(wav, 16000, duration=0.4)
    with pytest.raises(ConfigError, match=r"lasts 0\.50 s but duration=0\.5 s"):
        gen.generate_continuation(wav, 16000, duration=0.5)       # no frame left to generate
    short = mg.MusicGenerator(gen.model)
    short.max_duration = 0.4                                      # a 0.4 s decoder window
    with pytest.raises(ConfigError, match=r"shorter than the 0\.4 s window"):
        short.generate_continuation(wav, 16000, duration=0.8, extend_stride=0.2)
    with pytest.raises(mg.AudioError, match="NaN"):
        gen.generate_continuation(np.full(800, np.nan), SR, duration=1.0)


def test_one_audio_prompt_is_shared_and_counts_must_match(gen):
    prompt = gen.generate("x", duration=0.2, seed=0).wav            # [1, 1, T]
    out = gen.generate_continuation(prompt, SR, ["a", "b"], duration=0.4, seed=0)
    assert torch.equal(out.tokens[0, :, :10], out.tokens[1, :, :10])
    with pytest.raises(ConfigError, match="got 2 audio prompts for 3 prompts"):
        gen.generate_continuation(prompt.repeat(2, 1, 1), SR, ["a", "b", "c"], duration=0.4)


def test_long_form_matches_length_and_first_window(gen):
    gen.max_duration = 0.6  # a 30-frame window keeps the test fast; real models have 30 s
    try:
        long = gen.generate("x", duration=1.5, seed=8, extend_stride=0.4)
        first = gen.generate("x", duration=0.6, seed=8)
        with pytest.raises(ConfigError, match="extend_stride"):
            gen.generate("x", duration=1.5, extend_stride=0.6)
    finally:
        gen.max_duration = 30.0
    assert long.tokens.shape[-1] == 75 and long.wav.shape[-1] == 75 * 640
    assert torch.equal(long.tokens[..., :30], first.tokens)  # window 1 is a plain generation
    # windows (offset, frames, prompt): (0, 30, 0) (20, 30, 10) (40, 30, 10) (60, 15, 10);
    # each costs frames + 3 (delay) - prompt steps
    assert long.timings["steps"] == 33 + 23 + 23 + 8


def test_stream_chunks_add_up_to_the_full_result(gen):
    steps_seen = []
    chunks = list(gen.stream("x", duration=2.0, seed=5, chunk_seconds=0.5))
    full = gen.generate("x", duration=2.0, seed=5, callback=lambda s, t: steps_seen.append(s))
    assert len(chunks) >= 4 and all(c.shape[:2] == (1, 1) for c in chunks)
    torch.testing.assert_close(torch.cat(chunks, dim=-1).clamp(-1, 1), full.wav,
                               atol=1e-5, rtol=0)
    assert steps_seen == list(range(1, len(steps_seen) + 1))


def test_stream_yields_before_decoding_ends(gen):
    steps = []
    stream = gen.stream("x", duration=2.0, seed=5, chunk_seconds=0.2,
                        callback=lambda s, total: steps.append((s, total)))
    first = next(iter(stream))
    assert first.shape[-1] > 0
    done, total = steps[-1]
    assert done < total / 2            # the first audio arrived early in the decoding
    rest = list(stream)
    assert len(rest) >= 5 and steps[-1] == (total, total)


def test_melody_conditioning(any_gen):
    tone = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    if not any_gen.model.is_melody:
        with pytest.raises(GenerationError, match="melody"):
            any_gen.generate_with_melody("x", tone, SR)
        return
    with_melody = any_gen.generate_with_melody("x", tone, SR, duration=0.5, seed=1)
    without = any_gen.generate("x", duration=0.5, seed=1)
    assert with_melody.wav.shape == without.wav.shape
    assert not torch.equal(with_melody.tokens, without.tokens)


def test_progress_callback_counts_every_step(gen):
    calls = []
    gen.generate("x", duration=0.2, seed=0, callback=lambda s, t: calls.append((s, t)))
    assert calls == [(i, 13) for i in range(1, 14)]


# --- saving ----------------------------------------------------------------------------------
def test_save_writes_each_item_and_refuses_to_clobber(gen, tmp_path):
    out = gen.generate(["x", "y"], duration=0.3, seed=0)
    paths = out.save(tmp_path / "clip.wav")
    assert [p.name for p in paths] == ["clip_0.wav", "clip_1.wav"]
    wav, sr = mg.load_audio(paths[1])
    assert sr == SR and wav.shape == (1, 9600)
    np.testing.assert_allclose(wav[0], out.wav[1, 0].numpy(), atol=1e-4)
    with pytest.raises(mg.AudioError, match="clip_0.wav"):
        out.save(tmp_path / "clip.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_0.wav", "clip_1.wav"]


# --- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,fragment", [
    ("duration", 0, "duration=0"), ("duration", 601, "(0, 600]"), ("top_k", -1, "top_k=-1"),
    ("top_k", 2.5, "integer"), ("top_p", 1.5, "top_p=1.5"), ("temperature", 0, "use_sampling"),
    ("guidance_scale", 0.5, "[1, 30]"), ("seed", -3, "seed=-3"), ("extend_stride", 0, "(0, 30]"),
    ("use_sampling", "yes", "True or False"),
])
def test_bad_settings_name_value_and_range(gen, field, value, fragment):
    with pytest.raises(ConfigError) as err:
        gen.generate("x", **{field: value})
    assert fragment in str(err.value)


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_temperature_validator_accepts_exactly_the_range(t):
    if 0 < t <= 10:
        assert GenerationConfig(temperature=t).temperature == t
    else:
        with pytest.raises(ConfigError):
            GenerationConfig(temperature=t)


def test_bad_prompts_and_unknown_settings(gen):
    for bad in ([], [""], ["ok", "  "], [3]):
        with pytest.raises(ConfigError, match="prompt"):
            gen.generate(bad, duration=0.2)
    with pytest.raises(ConfigError, match="durration"):
        gen.generate("x", durration=3)
    with pytest.raises(ConfigError, match="seeds has 1 items for 2 prompts"):
        gen.generate(["a", "b"], seeds=[1], duration=0.2)


def test_set_params_changes_defaults(gen):
    old = gen.config
    try:
        gen.set_params(duration=0.2, top_k=10)
        assert gen.generate("x", seed=0).tokens.shape[-1] == 10
    finally:
        gen.config = old


# --- the two samplers --------------------------------------------------------------------------
def test_counter_sampler_is_the_default_and_batch_invariant(any_gen):
    assert mg.GenerationConfig().sampler == "counter"
    batch = any_gen.generate(["rock", "jazz", "rock"], duration=0.5, seeds=[7, 8, 9])
    for i, (prompt, seed) in enumerate([("rock", 7), ("jazz", 8), ("rock", 9)]):
        alone = any_gen.generate(prompt, duration=0.5, seeds=[seed])
        assert torch.equal(batch.tokens[i], alone.tokens[0])
    assert not torch.equal(batch.tokens[0], batch.tokens[2])     # same prompt, other seed


def test_samplers_differ_but_both_replay(gen):
    counter = gen.generate("x", duration=0.5, seed=3)
    reference = gen.generate("x", duration=0.5, seed=3, sampler="reference")
    assert not torch.equal(counter.tokens, reference.tokens)
    assert torch.equal(counter.tokens, gen.generate("x", duration=0.5, seed=3).tokens)
    assert torch.equal(reference.tokens,
                       gen.generate("x", duration=0.5, seed=3, sampler="reference").tokens)
    greedy = [gen.generate("x", duration=0.5, use_sampling=False, sampler=s).tokens
              for s in ("counter", "reference")]
    assert torch.equal(*greedy)                                   # greedy uses no noise


def test_unknown_sampler_is_refused(gen):
    with pytest.raises(mg.ConfigError, match="sampler='gumbel'.*counter.*reference"):
        gen.generate("x", duration=0.2, sampler="gumbel")


def test_the_generator_bounds_every_text_before_encoding_it(monkeypatch):
    """The library refuses too (CLI, studio, batch, worker): no text over the bounds ever
    reaches encode_text, so nothing grows with an attacker's text."""
    gen = mg.MusicGenerator("debug", progress=False)
    seen = []
    original = gen.backend.encode_text
    monkeypatch.setattr(gen.backend, "encode_text",
                        lambda texts, **kw: seen.append(texts) or original(texts, **kw))
    for kwargs, text in [(dict(negative_prompt="n" * 20000), "has 20000 characters"),
                         (dict(negative_prompt="n" * 600), "601 text-encoder tokens"),
                         (dict(negative_prompt=["ok", "\ud800"]), "negative_prompt 1"),
                         (dict(prompts=["a" * 2001]), "prompt 0 has 2001 characters")]:
        prompts = kwargs.pop("prompts", ["a", "b"])
        with pytest.raises(ConfigError, match=text):
            gen.generate(prompts, duration=0.1, **kwargs)
    assert seen == []
    gen.generate("a", negative_prompt="n" * 500, duration=0.1)             # 501 tokens: fine
    tokenizer = gen.model.tokenizer
    assert max(len(tokenizer(t)["input_ids"]) for t in seen[0]) <= mg.MAX_PROMPT_TOKENS
