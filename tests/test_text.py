"""Tests for musicgen_edu/text.py: the tokenizer's view of prompts and the T5 conditioning."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.text import embed_prompts, prompt_similarity, tokenize_prompt

PROMPTS = ["lo-fi", "calm lo-fi piano with soft drums", "epic orchestra"]


@pytest.fixture(scope="module")
def model():
    return mg.load_model("debug", device="cpu")


@pytest.fixture(scope="module")
def t5_model(model):
    """The debug model with a (tiny, offline) SentencePiece T5 tokenizer, like the hub models'."""
    from transformers import T5Tokenizer

    pieces = ["▁calm", "▁lo", "-", "fi", "▁piano", "▁with", "▁soft", "▁drums", "▁"]
    pieces += list("abcdefghijklmnopqrstuvwxyz")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -i - 1.0) for i, p in
                                                              enumerate(pieces)]
    return dataclasses.replace(model, tokenizer=T5Tokenizer(vocab=vocab, extra_ids=0))


# ------------------------------------------------------------------ tokenize_prompt

def test_byt5_pieces_are_bytes_and_rejoin_to_the_prompt(model):
    prompt = "calm lo-fi piano"
    tokens = tokenize_prompt(model, prompt)
    assert tokens[-1] == (model.tokenizer.eos_token_id, "</s>")
    ids, pieces = zip(*tokens[:-1])
    assert "".join(pieces) == prompt
    assert list(ids) == [b + 3 for b in prompt.encode()]  # ByT5: id = byte + 3 special ids
    assert all(isinstance(i, int) for i in ids)


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=40).filter(str.strip))
def test_byt5_one_token_per_utf8_byte_and_tokenizer_rejoins(model, prompt):
    tokens = tokenize_prompt(model, prompt)
    assert len(tokens) == len(prompt.encode("utf-8")) + 1  # + </s>
    pieces = [piece for _, piece in tokens[:-1]]
    assert model.tokenizer.convert_tokens_to_string(pieces) == prompt


def test_non_ascii_characters_take_several_tokens(model):
    assert len(tokenize_prompt(model, "café")) == len("cafe") + 1 + 1  # é is two bytes


def test_sentencepiece_t5_pieces(t5_model):
    tokens = tokenize_prompt(t5_model, "calm lo-fi piano")
    assert [p for _, p in tokens] == ["▁calm", "▁lo", "-", "fi", "▁piano", "</s>"]
    assert tokens[-1][0] == t5_model.tokenizer.eos_token_id
    pieces = [p for _, p in tokens[:-1]]
    assert t5_model.tokenizer.convert_tokens_to_string(pieces).strip() == "calm lo-fi piano"


def test_accepts_a_generator(model):
    gen = mg.MusicGenerator(model, progress=False)
    assert tokenize_prompt(gen, "piano") == tokenize_prompt(model, "piano")


@pytest.mark.parametrize("bad", ["", "   ", None, 3, ["a"]])
def test_tokenize_rejects_bad_prompts(model, bad):
    with pytest.raises(ConfigError, match="non-empty strings"):
        tokenize_prompt(model, bad)


def test_rejects_something_that_is_not_a_model():
    with pytest.raises(ConfigError, match="mg.load_model"):
        tokenize_prompt("debug", "piano")
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        embed_prompts(object(), ["piano"])


# ------------------------------------------------------------------ embed_prompts

def test_shapes_dtype_and_width(model):
    states, mask = embed_prompts(model, PROMPTS)
    lengths = [len(tokenize_prompt(model, p)) for p in PROMPTS]
    width = model.config.decoder.hidden_size
    assert states.shape == (len(PROMPTS), max(lengths), width)
    assert width != model.config.text_encoder.hidden_size  # the projection was applied
    assert mask.shape == states.shape[:2]
    assert states.dtype == torch.float32 and states.device.type == "cpu"
    assert mask.dtype == torch.long


def test_mask_marks_each_prompts_tokens_and_padding_is_zero(model):
    states, mask = embed_prompts(model, PROMPTS)
    lengths = [len(tokenize_prompt(model, p)) for p in PROMPTS]
    assert mask.sum(dim=1).tolist() == lengths
    for row, n in enumerate(lengths):  # real tokens first, then padding
        assert mask[row, :n].all() and not mask[row, n:].any()
    assert states[mask == 0].abs().max() == 0
    assert states[mask == 1].abs().sum(dim=-1).min() > 0


def test_single_string_is_a_batch_of_one(model):
    states, mask = embed_prompts(model, "lo-fi")
    assert states.shape[0] == 1 and mask.tolist() == [[1] * len(tokenize_prompt(model, "lo-fi"))]


def test_deterministic_and_independent_of_the_batch(model):
    a, mask_a = embed_prompts(model, PROMPTS)
    b, mask_b = embed_prompts(model, PROMPTS)
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    alone, _ = embed_prompts(model, [PROMPTS[0]])
    n = alone.shape[1]
    torch.testing.assert_close(a[0, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_different_prompts_give_different_states(model):
    states, _ = embed_prompts(model, ["calm piano", "heavy drums"])
    assert not torch.allclose(states[0], states[1])


def test_none_is_the_null_condition(model):
    states, mask = embed_prompts(model, ["piano", None])
    assert states[1].abs().max() == 0 and mask[1].sum() == 0
    states, mask = embed_prompts(model, [None, None])  # CFG's unconditional rows alone
    assert states.shape == (2, 1, model.config.decoder.hidden_size) and mask.sum() == 0


def test_matches_what_the_generator_feeds_the_decoder(model):
    gen = mg.MusicGenerator(model, progress=False)
    cond = gen.backend.encode_text(list(PROMPTS))
    states, mask = embed_prompts(gen, PROMPTS)
    assert torch.equal(states, cond.states.float()) and torch.equal(mask, cond.mask)


def test_sentencepiece_tokenizer_path(t5_model):
    states, mask = embed_prompts(t5_model, ["calm", "calm lo-fi piano"])
    assert mask.tolist() == [[1, 1, 0, 0, 0, 0], [1] * 6]
    assert states.shape == (2, 6, t5_model.config.decoder.hidden_size)


def test_melody_models_return_the_prefix_with_a_mask_of_ones():
    melody = mg.load_model("debug-melody", device="cpu")
    states, mask = embed_prompts(melody, PROMPTS)
    text_len = max(len(tokenize_prompt(melody, p)) for p in PROMPTS)
    assert states.shape == (len(PROMPTS), melody.config.chroma_length + text_len,
                            melody.config.decoder.hidden_size)
    assert mask.shape == states.shape[:2] and bool(mask.all())


@pytest.mark.parametrize("bad", [[], [""], ["ok", "  "], ["ok", 7]])
def test_embed_rejects_bad_prompts(model, bad):
    with pytest.raises(ConfigError, match="prompt"):
        embed_prompts(model, bad)


# ------------------------------------------------------------------ prompt_similarity

@pytest.mark.parametrize("name", ["debug", "debug-melody"])
def test_similarity_is_a_symmetric_cosine(name):
    model = mg.load_model(name, device="cpu")
    assert prompt_similarity(model, "calm piano", "calm piano") == pytest.approx(1.0, abs=1e-5)
    ab = prompt_similarity(model, "calm piano", "heavy metal drums")
    ba = prompt_similarity(model, "heavy metal drums", "calm piano")
    assert ab == pytest.approx(ba, abs=1e-6) and -1.0 <= ab < 0.9999


def test_similarity_pools_over_real_tokens_only(model):
    # embedded one at a time there is no padding: the padded pair must give the same cosine
    a, b = "a", "calm lo-fi piano with soft drums"
    pooled = [embed_prompts(model, [p])[0][0].mean(dim=0) for p in (a, b)]
    expected = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0)
    assert prompt_similarity(model, a, b) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("bad", [None, "", 5])
def test_similarity_rejects_bad_prompts(model, bad):
    with pytest.raises(ConfigError, match="prompt"):
        prompt_similarity(model, "piano", bad)
