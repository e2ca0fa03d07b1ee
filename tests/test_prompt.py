"""Tests for musicgen_edu/prompt.py: PromptEngineer checks, edits and the CLI report."""

from __future__ import annotations

import dataclasses
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.prompt import (
    MAX_VARIATIONS,
    PromptEngineer,
    PromptReport,
    PromptSettings,
    prompt_report,
)
from musicgen_edu.prompt_facets import FACETS, clean_prompt, load_vocabulary

FILLED = ("genre", "mood", "instrument", "tempo", "key", "era", "production")  # improve() adds
VOCAB = load_vocabulary()
ENG = PromptEngineer()                     # token counts estimated, default limits
TEMPLATES = ENG.templates
TINY = PromptEngineer(max_tokens=24)       # additions stop early: exercises the budget
ANY_TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])),  # + surrogates
                   max_size=120)
PLAIN_TEXT = st.text(max_size=80)
prop = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def model():
    return mg.load_model("debug", device="cpu")


# ------------------------------------------------------------------ the packaged vocabulary

def test_vocabulary_ships_in_the_package_and_loads_with_importlib_resources():
    path = resources.files("musicgen_edu") / "data" / "prompt_vocabulary.json"
    assert path.is_file()
    assert len(VOCAB["genres"]) >= 20 and "lo-fi hip hop" in VOCAB["genres"]
    assert VOCAB["negative_base"] == ["vocals", "low quality", "distorted", "noise"]
    load_vocabulary()["genres"].clear()    # a fresh copy each time: editing it is harmless
    assert load_vocabulary()["genres"]


@pytest.mark.parametrize("genre", sorted(VOCAB["genres"]))
def test_each_genre_uses_terms_the_detector_knows(genre):
    info = VOCAB["genres"][genre]
    low, high = info["bpm"]
    assert 40 <= low <= high <= 220
    assert set(info["instruments"]) <= set(VOCAB["instruments"])
    assert set(info["production"]) <= set(VOCAB["production"])
    assert set(info["moods"]) <= set(VOCAB["moods"])
    assert all(ENG.explain(era)["era"] == [era] for era in info["eras"])
    assert len(info["instruments"]) >= 2 and info["moods"] and info["eras"]


def _terms():
    for genre, info in VOCAB["genres"].items():
        for term in [genre, *info["aliases"]]:
            yield "genre", term, genre
    for facet, key in [("production", "production"), ("instrument", "instruments"),
                       ("era", "eras"), ("tempo", "tempo_words"), ("mood", "moods"),
                       ("vocals", "vocal_words")]:
        yield from ((facet, t, t) for t in VOCAB[key])


@pytest.mark.parametrize("facet,term,canonical", list(_terms()))
def test_every_term_is_found_as_its_own_facet_only(facet, term, canonical):
    found = ENG.explain(term)
    assert found[facet] == [canonical]
    assert all(found[f] == [] for f in FACETS if f != facet), found


# ------------------------------------------------------------------ explain

def test_explain_finds_every_facet_and_parses_bpm_and_key():
    found = ENG.explain("Relaxed lo-fi hip hop with Rhodes piano and upright bass, 85 BPM, "
                        "in A minor, 1990s, vinyl crackle")
    assert found["genre"] == ["lo-fi hip hop"] and found["mood"] == ["relaxed"]
    assert found["instrument"] == ["rhodes piano", "upright bass"]
    assert found["tempo"] == ["85 bpm"] and found["bpm"] == 85
    assert found["key"] == ["A minor"] and found["era"] == ["1990s"]
    assert found["production"] == ["vinyl crackle"] and found["vocals"] == []


@pytest.mark.parametrize("text,key", [
    ("F# minor groove", ["F# minor"]), ("in b flat major", ["Bb major"]),
    ("key of e minor", ["E minor"]), ("Ebmaj ballad", ["Eb major"]),
    ("in a minor key", ["minor key"]), ("a minor change", []), ("piano", [])])
def test_explain_keys(text, key):
    assert ENG.explain(text)["key"] == key


@pytest.mark.parametrize("text,era", [("'80s synthwave", ["1980s"]), ("90s", ["1990s"]),
                                      ("00s pop", ["2000s"]), ("1970s funk", ["1970s"]),
                                      ("vintage 60s", ["1960s", "vintage"])])
def test_explain_decades(text, era):
    assert ENG.explain(text)["era"] == era


def test_explain_masks_longer_terms_and_maps_aliases():
    assert ENG.explain("drum and bass")["instrument"] == []          # a genre, not instruments
    assert ENG.explain("lofi beats")["genre"] == ["lo-fi hip hop"]    # alias -> genre
    assert ENG.explain("dark synth trap")["mood"] == []         # "dark synth" is an instrument
    assert ENG.explain("pianos and synths")["instrument"] == ["piano", "synth"]  # plurals
    assert ENG.explain("fast, 120bpm then 90 bpm")["tempo"] == ["120 bpm", "90 bpm", "fast"]
    assert ENG.explain("slow")["bpm"] is None


def test_explain_refuses_non_text():
    with pytest.raises(ConfigError, match="must be text"):
        ENG.explain(3)


# ------------------------------------------------------------------ validate

def test_a_good_prompt_is_ok_with_no_warnings():
    report = ENG.validate("calm ambient piano with soft synth pads, 70 bpm")
    assert isinstance(report, PromptReport) and report.ok
    assert report.errors == [] and report.warnings == []
    assert report.n_words == 9 and report.n_chars == 47 and not report.tokens_exact
    assert report.n_tokens == 13 and report.dropped_tokens == 0
    assert report.missing == ["key", "era", "production"]
    assert "status: OK (0 errors, 0 warnings)" in str(report)


@pytest.mark.parametrize("bad,words", [("", "empty"), ("  \n\t ", "only whitespace"),
                                       (None, "got NoneType"), (3, "got int"),
                                       (b"piano", "decode it first")])
def test_empty_and_non_text_are_errors(bad, words):
    report = ENG.validate(bad)
    assert not report.ok and words in report.errors[0]


@pytest.mark.parametrize("text,code", [("jazz\x00 piano trio", "U+0000"),
                                       ("jazz\u200b piano trio", "U+200B"),
                                       ("jazz\x1b[31m piano trio", "U+001B")])
def test_control_characters_are_errors(text, code):
    report = ENG.validate(text)
    assert not report.ok and code in report.errors[0]
    assert ENG.validate(clean_prompt(text)).ok


def test_line_breaks_only_warn():
    report = ENG.validate("calm ambient piano\nwith soft pads")
    assert report.ok and "one line" in report.warnings[0]


@pytest.mark.parametrize("text,term", [("pop song with lyrics about love", "lyrics"),
                                       ("a female singer singing over jazz piano", "singing"),
                                       ("boom bap beat with a rap verse", "rap verse")])
def test_vocal_requests_warn(text, term):
    report = ENG.validate(text)
    assert report.ok
    (warning,) = [w for w in report.warnings if "vocals" in w]
    assert term in warning and "cannot sing" in warning


@pytest.mark.parametrize("text", ["une musique douce avec du piano et des violons",
                                  "música tranquila con guitarra española para dormir",
                                  "静かなピアノの音楽とやさしいドラムのリズム"])
def test_other_languages_warn_but_are_not_errors(text):
    report = ENG.validate(text)
    assert report.ok and any("English" in w for w in report.warnings)


def test_short_vague_and_odd_tempo_prompts_warn():
    assert "only 1 word" in ENG.validate("piano").warnings[0]
    assert "no words" in ENG.validate("!!! ???").warnings[0]
    warnings = ENG.validate("fast techno at 500 bpm and 130 bpm").warnings
    assert any("500 bpm is outside" in w for w in warnings)
    assert any("several tempos (500, 130 bpm)" in w for w in warnings)


def test_too_long_with_the_debug_models_byt5_tokenizer(model):
    eng = PromptEngineer(model)                       # ByT5: one token per UTF-8 byte, + </s>
    prompt = "calm piano " * 27 + "pad"              # 300 characters
    report = eng.validate(prompt)
    assert report.tokens_exact and report.n_tokens == 301 and report.dropped_tokens == 45
    assert not report.ok and "45 tokens would be dropped" in report.errors[0]
    assert "max_tokens=256" in report.errors[0]
    assert PromptEngineer(model, max_tokens=400).validate(prompt).ok   # the limit is a setting
    assert ENG.validate(prompt).ok and not ENG.validate(prompt).tokens_exact  # estimate: fewer
    assert PromptEngineer(model).count_tokens("é") == (3, True)        # 2 bytes + </s>


def test_counts_sentencepiece_tokens_like_the_hub_models(model):
    from transformers import T5Tokenizer

    pieces = ["▁calm", "▁lo", "-", "fi", "▁piano", "▁"] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -i - 1.0)
                                                              for i, p in enumerate(pieces)]
    t5 = dataclasses.replace(model, tokenizer=T5Tokenizer(vocab=vocab, extra_ids=0))
    eng = PromptEngineer(t5, max_tokens=5)     # ▁calm ▁lo - fi ▁piano </s> = 6 tokens
    report = eng.validate("calm lo-fi piano")
    assert (report.n_tokens, report.tokens_exact, report.dropped_tokens) == (6, True, 1)
    assert "1 tokens would be dropped" in report.errors[0]


def test_accepts_a_generator_or_a_name_and_rejects_other_models(model):
    gen = mg.MusicGenerator(model, progress=False)
    assert PromptEngineer(gen).count_tokens("lo-fi") == (6, True)
    assert PromptEngineer("debug").tokenizer is not None
    with pytest.raises(ConfigError, match="expected a model"):
        PromptEngineer(model=3.5)


def test_bad_settings_name_the_value_and_range():
    with pytest.raises(ConfigError, match=r"max_tokens=0 is out of range; allowed: \[1, 100000\]"):
        PromptEngineer(max_tokens=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        PromptEngineer(max_token=10)
    with pytest.raises(ConfigError, match="bpm_range"):
        PromptSettings(bpm_range=(200, 100))


# ------------------------------------------------------------------ improve

def test_improve_adds_the_missing_facets_that_fit_the_prompt():
    out = ENG.improve("calm piano")
    assert out.startswith("calm piano, ")
    found = ENG.explain(out)
    assert all(found[f] for f in FILLED) and len(found["genre"]) == 1
    assert found["mood"] == ["calm"] and found["instrument"] == ["piano"]   # nothing added
    low, high = VOCAB["genres"][found["genre"][0]]["bpm"]
    assert low <= found["bpm"] <= high
    assert found["key"][0].endswith("major")          # calm -> a major key
    assert ENG.improve("calm piano") == out == ENG.improve("calm piano", seed=0)


@pytest.mark.parametrize("text, kept", [
    ("pop song with lyrics about love", "pop song about love"),
    ("a female singer singing over jazz piano", "jazz piano"),
    ("boom bap beat with a rap verse", "boom bap beat"),
    ("upbeat funk, female vocals, 110 bpm", "upbeat funk, 110 bpm"),
    ("Vocals", "")])
def test_improve_drops_the_vocals_it_warns_about(text, kept):
    """MusicGen cannot sing: improve() drops the request (with the words that only joined it)
    and says "instrumental" instead, so the improved prompt passes without the warning."""
    assert any("cannot sing" in w for w in ENG.validate(text).warnings)
    out = ENG.improve(text)
    assert ENG.explain(out)["vocals"] == []
    assert not any("vocals" in w for w in ENG.validate(out).warnings)
    assert out.startswith(f"{kept}, instrumental" if kept else "instrumental, ")
    assert ENG.improve(out) == out
    assert ENG.improve("jazz piano") == ENG.improve("jazz piano", seed=0)   # no vocals: no change
    assert "instrumental" not in ENG.improve("jazz piano")


VOCAL_WORDS = st.lists(st.sampled_from(
    [*VOCAB["vocal_words"], "with", "and", "a", "the", "over", "female", "featuring", "A minor",
     "piano", "jazz", "calm", "120 bpm", "80s", "chorus", "verse", ","]), max_size=12)


@prop
@given(VOCAL_WORDS, st.integers(0, 9))
def test_improve_never_keeps_vocals_and_is_idempotent_on_them(words, seed):
    text = " ".join(words)
    before = ENG.explain(clean_prompt(text))
    out = ENG.improve(text, seed=seed)
    after = ENG.explain(out)
    assert after["vocals"] == [] and ENG.improve(out, seed=seed) == out
    for facet in ("genre", "instrument", "tempo", "era"):   # the rest of the prompt is kept
        assert after[facet][:len(before[facet])] == before[facet]


def test_improve_never_adds_a_second_genre_or_tempo():
    out = ENG.improve("heavy metal, 100 bpm")
    found = ENG.explain(out)
    assert found["genre"] == ["heavy metal"] and found["tempo"] == ["100 bpm"]
    assert ENG.explain(ENG.improve("slow jazz"))["tempo"] == ["slow"]  # a tempo word counts


@pytest.mark.parametrize("genre", sorted(VOCAB["genres"]))
def test_improve_picks_instruments_of_the_genre(genre):
    found = ENG.explain(ENG.improve(genre, seed=3))
    assert found["genre"] == [genre]
    assert set(found["instrument"]) <= set(VOCAB["genres"][genre]["instruments"])
    assert len(found["instrument"]) == 2 and found["mood"][0] in VOCAB["genres"][genre]["moods"]


def test_improve_picks_a_genre_that_fits_the_named_instruments_and_tempo():
    found = ENG.explain(ENG.improve("wobble bass, 140 bpm"))
    assert found["genre"] == ["dubstep"]


def test_improve_of_nothing_writes_a_whole_prompt_and_seeds_change_it():
    outs = {ENG.improve("", seed=s) for s in range(5)}
    assert len(outs) > 1
    assert all(ENG.validate(o).ok and all(ENG.explain(o)[f] for f in FILLED) for o in outs)


def test_improve_stops_before_the_token_limit(model):
    eng = PromptEngineer(model, max_tokens=40)
    out = eng.improve("calm piano")
    unlimited = PromptEngineer(model).improve("calm piano")
    assert eng.count_tokens(out)[0] <= 40 < eng.count_tokens(unlimited)[0]
    assert eng.improve(out) == out


@pytest.mark.parametrize("seed", [-1, 2**63, 1.0, "0", True])
def test_bad_seed_is_a_config_error(seed):
    with pytest.raises(ConfigError, match=r"seed.*\[0, 9223372036854775807\]"):
        ENG.improve("piano", seed=seed)


# ------------------------------------------------------------------ variations, templates, negative

def test_variations_are_distinct_deterministic_and_keep_the_prompt():
    vs = ENG.variations("dreamy synthwave", n=5, seed=1)
    assert len(vs) == len(set(vs)) == 5 and vs == ENG.variations("dreamy synthwave", 5, 1)
    assert vs != ENG.variations("dreamy synthwave", 5, 2)
    assert all(v.startswith("dreamy synthwave, ") and ENG.validate(v).ok for v in vs)
    assert all(ENG.explain(v)["genre"] == ["synthwave"] for v in vs)


def test_variations_of_a_complete_prompt_vary_the_details():
    full = ENG.improve("jazz")
    vs = ENG.variations(full, n=3)
    assert len(set(vs)) == 3 and all(v.startswith(full + ", ") for v in vs)


@pytest.mark.parametrize("n,match", [
    (0, r"n=0 is out of range; allowed: \[1, 100\]"),
    (MAX_VARIATIONS + 1, r"n=101 is out of range; allowed: \[1, 100\]"),
    (2.0, r"n must be an integer in \[1, 100\], got 2.0"),
    ("3", r"n must be an integer in \[1, 100\], got '3'"),
    (True, r"n must be an integer in \[1, 100\], got True")])
def test_bad_n_is_a_config_error_naming_value_and_range(n, match):
    with pytest.raises(ConfigError, match=match):
        ENG.variations("piano", n=n)


def test_too_many_variations_for_a_tight_prompt_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"n=3, but only 0 distinct variations"):
        PromptEngineer(max_tokens=5).variations("calm ambient piano", n=3)


def test_templates_fill_deterministically_and_fit_the_genre():
    assert TEMPLATES == tuple(VOCAB["templates"]) and len(TEMPLATES) >= 4
    text = ENG.fill_template(TEMPLATES[0], seed=4, genre="techno")
    assert text == ENG.fill_template(0, seed=4, genre="techno")
    mood, rest = text.split(" techno with ")
    instrument, bpm = rest.split(", ")
    assert mood in VOCAB["genres"]["techno"]["moods"]
    assert instrument in VOCAB["genres"]["techno"]["instruments"]
    assert 125 <= int(bpm.split()[0]) <= 140
    assert ENG.fill_template("{genre} in {key}", genre="x", key="C major") == "x in C major"
    assert ENG.fill_template("{mood} {genre}", mood="dark").startswith("dark ")
    filled = {ENG.fill_template(t, seed=s) for t in TEMPLATES for s in range(3)}
    assert all(ENG.validate(f).ok and "{" not in f for f in filled)


@pytest.mark.parametrize("template,match", [("{tempo} beats", "unknown template field"),
                                            ("{} beats", "unknown template field"),
                                            ("{genre", "not a format string"),
                                            (99, r"template=99 is out of range"),
                                            (None, "must be a format string")])
def test_bad_templates_are_config_errors(template, match):
    with pytest.raises(ConfigError, match=match):
        ENG.fill_template(template)


def test_bad_template_keywords_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown template field\(s\) \['tempo'\]"):
        ENG.fill_template(TEMPLATES[0], tempo=120)


def test_negative_prompt_adds_mood_opposites_and_never_negates_the_request_but_vocals():
    base = "vocals, low quality, distorted, noise"
    assert ENG.negative("calm piano") == base + ", energetic, aggressive"
    neg = ENG.negative("aggressive metal with distorted guitar")
    assert "distorted" not in neg.split(", ") and "calm" in neg and "gentle" in neg
    assert "vocals" in ENG.negative("jazz with vocals").split(", ")   # MusicGen cannot sing
    assert ENG.negative("") == base


# ------------------------------------------------------------------ the CLI report

def test_prompt_report_is_plain_text_with_every_part():
    text = prompt_report("calm piano", improve=True, variations=2, seed=0)
    assert "status: OK" in text and "  genre: -" in text and "  mood: calm" in text
    assert f"improved: {ENG.improve('calm piano')}" in text
    assert "\n  1. calm piano, " in text and "\n  2. calm piano, " in text
    assert "negative: vocals, low quality, distorted, noise, energetic, aggressive" in text
    assert "\x1b" not in text                             # no rich markup or colour codes


def test_prompt_report_with_a_model_and_bad_inputs(model):
    assert "counted with the model's tokenizer" in prompt_report("piano", model=model)
    assert "NOT OK" in prompt_report("") and "improved: " in prompt_report("", improve=True)
    assert "NOT OK" in prompt_report(None)
    with pytest.raises(ConfigError, match=r"variations=-1 is out of range; allowed: \[0, 100\]"):
        prompt_report("piano", variations=-1)


# ------------------------------------------------------------------ properties

@prop
@given(ANY_TEXT)
def test_never_crashes_on_any_unicode(text):
    assert isinstance(ENG.validate(text), PromptReport)
    found = ENG.explain(text)
    assert set(found) == {*FACETS, "bpm"}
    assert isinstance(ENG.improve(text), str) and isinstance(ENG.negative(text), str)
    assert clean_prompt(clean_prompt(text)) == clean_prompt(text)


@prop
@given(ANY_TEXT, st.sampled_from([ENG, TINY]), st.integers(0, 2**32))
def test_improve_is_idempotent(text, eng, seed):
    once = eng.improve(text, seed=seed)
    assert eng.improve(once, seed=seed) == once


@prop
@given(PLAIN_TEXT, st.sampled_from([ENG, TINY]), st.integers(0, 9))
def test_improve_output_has_no_errors_when_the_input_had_none(text, eng, seed):
    if eng.validate(text).ok:
        report = eng.validate(eng.improve(text, seed=seed))
        assert report.ok, report.errors


@prop
@given(PLAIN_TEXT, st.integers(0, 9))
def test_explain_finds_what_improve_added_and_keeps_what_was_there(text, seed):
    before = ENG.explain(clean_prompt(text))
    after = ENG.explain(ENG.improve(text, seed=seed))
    assert all(after[f] for f in FILLED)                # every facet is there now
    for facet in FILLED:                                # nothing of the user's was lost
        assert after[facet][:len(before[facet])] == before[facet]
    for facet in ("genre", "tempo"):                    # never a second genre or tempo
        if before[facet]:
            assert after[facet] == before[facet]


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40), st.integers(0, 2**32), st.integers(1, 4))
def test_variations_are_deterministic_and_distinct(text, seed, n):
    vs = ENG.variations(text, n=n, seed=seed)
    assert vs == ENG.variations(text, n=n, seed=seed)
    assert len(set(vs)) == n and clean_prompt(text) not in vs


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=60))
def test_improve_respects_an_exact_byte_budget(model, text):
    eng = PromptEngineer(model, max_tokens=48)
    if eng.validate(text).ok:
        out = eng.improve(text)
        assert eng.validate(out).ok and eng.improve(out) == out
