"""metrics/profiling.py and bound.py: timings tables, the KV cache and the bandwidth bound (debug model)."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import musicgen_edu as mg
from musicgen_edu.metrics.bound import decode_bound, measure_bandwidth
from musicgen_edu.metrics.profiling import (
    kv_cache_comparison,
    profile_generation,
    profile_summary,
    profile_variants,
)

PROMPTS = ["calm lo-fi piano", "driving drums"]
DURATIONS, BATCHES, REPEATS, WARMUP = [0.1, 0.2], [1, 2], 2, 1
TIMINGS = ["first_step_s", "step_s", "steps_per_s", "steady_steps_per_s", "item_steps_per_s",
           "generate_s", "decode_s", "total_s", "rtf", "peak_memory_mb"]
# The debug decoder (models.py): hidden 64, 2 layers, 4 heads, FFN 128, K = 4 heads of 2048.
D, LAYERS, HEADS, FFN, K, V = 64, 2, 4, 128, 4, 2048
PER_LAYER = 4 * D * D + 2 * D * D + 2 * D * FFN + 3 * 2 * D  # self-attn, cross q/out, MLP, 3 LNs
WEIGHT_BYTES = 4 * (LAYERS * PER_LAYER + 2 * D + K * D * V)  # + final LN + heads, float32
assert WEIGHT_BYTES == 2_428_416


@pytest.fixture(scope="module")
def table(gen):
    return profile_generation(gen, PROMPTS, durations=DURATIONS, batch_sizes=BATCHES,
                              repeats=REPEATS, warmup=WARMUP, seed=3)


# ------------------------------------------------------------------ whole generations

def test_profile_has_one_row_per_run_and_the_setup(table, gen):
    assert len(table) == len(DURATIONS) * len(BATCHES) * (WARMUP + REPEATS)
    assert {"model", "device", "backend", "dtype", "duration", "audio_s", "batch_size", "repeat",
            "warmup", "guidance_scale", "steps", "load_s", "memory_metric", *TIMINGS} <= set(table)
    assert set(table.model) == {"debug"} and set(table.device) == {"cpu"}
    assert set(table.backend) == {"native"} and set(table.dtype) == {"float32"}
    assert set(table.memory_metric) == {"process_max_rss"}
    assert (table.load_s == gen.model.load_seconds).all() and (table.guidance_scale == 3.0).all()
    for (d, _), group in table.groupby(["duration", "batch_size"]):
        assert sorted(group.repeat[~group.warmup]) == list(range(REPEATS))
        assert group.warmup.sum() == WARMUP
        assert (group.steps == round(d * 50) + 3).all()  # frames + the largest delay


def test_profile_timings_are_positive_and_consistent(table):
    assert (table[TIMINGS] > 0).all().all()
    assert (table.audio_s == table.duration).all()
    pd.testing.assert_series_equal(table.rtf, table.total_s / table.audio_s, check_names=False)
    pd.testing.assert_series_equal(table.steps_per_s, table.steps / table.generate_s,
                                   check_names=False)
    steady = (table.generate_s - table.first_step_s) / (table.steps - 1)
    pd.testing.assert_series_equal(table.step_s, steady, check_names=False)
    pd.testing.assert_series_equal(table.item_steps_per_s, table.steps_per_s * table.batch_size,
                                   check_names=False)
    assert (table.total_s >= table.generate_s + table.decode_s - 1e-6).all()
    assert (table.first_step_s < table.generate_s).all()


def test_summary_leaves_the_warmup_out(table):
    spoiled = table.copy()
    spoiled.loc[spoiled.warmup, ["rtf", "step_s"]] = 1e9  # a warm-up must not move any median
    summary = profile_summary(spoiled)
    assert len(summary) == len(DURATIONS) * len(BATCHES) and (summary.runs == REPEATS).all()
    timed = table[~table.warmup]
    for row in summary.itertuples():
        rows = timed[(timed.duration == row.duration) & (timed.batch_size == row.batch_size)]
        assert row.rtf == pytest.approx(rows.rtf.median())
        assert row.step_s == pytest.approx(rows.step_s.median())
    with pytest.raises(mg.ConfigError, match="no timed runs"):
        profile_summary(table[table.warmup])
    with pytest.raises(mg.ConfigError, match="lacks columns"):
        profile_summary(table.drop(columns="rtf"))


def test_settings_reach_the_generator(gen):
    df = profile_generation(gen, PROMPTS[0], durations=[0.1], batch_sizes=[1], repeats=1,
                            warmup=0, guidance_scale=1.0)
    assert len(df) == 1 and not df.warmup.any() and df.guidance_scale.iloc[0] == 1.0
    with pytest.raises(mg.ConfigError, match="unknown generation setting"):
        profile_generation(gen, PROMPTS[0], durations=[0.1], batch_sizes=[1], guidance=2)
    with pytest.raises(mg.ConfigError, match="durations"):
        profile_generation(gen, PROMPTS[0], durations=[0.1], duration=1.0)


@settings(max_examples=20, deadline=None)
@given(bad=st.sampled_from([
    dict(batch_sizes=[0]), dict(batch_sizes=[1.5]), dict(batch_sizes=[]), dict(repeats=0),
    dict(warmup=-1), dict(durations=[0.0]), dict(durations=[601.0]), dict(prompts=""),
    dict(prompts=[]), dict(repeats=True)]))
def test_bad_arguments_raise_before_any_work(gen, bad):
    kwargs = {**dict(prompts="x", durations=[0.1], batch_sizes=[1], repeats=1, warmup=0), **bad}
    with pytest.raises(mg.ConfigError):
        profile_generation(gen, **kwargs)


def test_profile_rejects_other_objects():
    with pytest.raises(mg.ConfigError, match="MusicGenerator"):
        profile_generation("debug", "x")


def test_kv_cache_comparison(gen):
    df = kv_cache_comparison(gen, PROMPTS[0], lengths=[1, 16], repeats=1)
    assert list(df.columns) == ["length", "cached_step_s", "recompute_s", "ratio"]
    assert list(df.length) == [1, 16] and (df[["cached_step_s", "recompute_s"]] > 0).all().all()
    pd.testing.assert_series_equal(df.ratio, df.recompute_s / df.cached_step_s, check_names=False)
    with pytest.raises(mg.ConfigError, match="length"):
        kv_cache_comparison(gen, PROMPTS[0], lengths=[0])
    with pytest.raises(mg.ConfigError, match="length"):
        kv_cache_comparison(gen, PROMPTS[0], lengths=[5000])


# ------------------------------------------------------------------ the bandwidth bound

def test_bandwidth_is_positive():
    assert measure_bandwidth("cpu", size_mb=8, repeats=3) > 0
    with pytest.raises(mg.ConfigError, match="size_mb"):
        measure_bandwidth("cpu", size_mb=0)


@pytest.mark.parametrize("batch, cfg, cache", [(1, True, 100), (3, True, 7), (2, False, 0)])
def test_decode_bound_matches_a_hand_computation(gen, batch, cfg, cache):
    got = decode_bound(gen.model, batch_size=batch, cache_len=cache, cfg=cfg, bandwidth_gbs=10.0)
    rows = batch * (2 if cfg else 1)
    kv = 2 * LAYERS * rows * HEADS * (D // HEADS) * cache * 4  # keys + values, float32
    assert got["weight_bytes"] == WEIGHT_BYTES and got["kv_bytes"] == kv and got["rows"] == rows
    assert got["bytes_per_step"] == WEIGHT_BYTES + kv
    assert got["bound_s_per_step"] == pytest.approx((WEIGHT_BYTES + kv) / 10e9)
    assert got["bound_steps_per_s"] == pytest.approx(10e9 / (WEIGHT_BYTES + kv))


@pytest.mark.parametrize("activations", ["float", "int8"])
def test_decode_bound_counts_the_backends_weights(gen, activations):
    from musicgen_edu.backends import NativeBackend
    from musicgen_edu.backends.linears import can_quantize_dynamic

    shared = decode_bound(gen, cache_len=0, bandwidth_gbs=1.0)  # native shares the weights
    assert shared["weight_bytes"] == WEIGHT_BYTES
    if activations == "int8" and not can_quantize_dynamic(gen.backend.decoder):
        pytest.skip("this torch build has no quantized CPU engine")
    backend = NativeBackend(gen.model, int8=True, pack=activations == "int8")  # prepacked or not
    int8 = decode_bound(mg.MusicGenerator(gen.model, backend=backend, progress=False),
                        cache_len=0, bandwidth_gbs=1.0)
    # int8 linear weights + one float32 scale per output row; layer norms stay float32
    linears = 4 * D * D + 2 * D * D + 2 * D * FFN
    scales = 4 * (4 * D + 2 * D + FFN + D)
    heads = K * (D * V + 4 * V)
    assert int8["weight_bytes"] == LAYERS * (linears + scales + 4 * 3 * 2 * D) + 4 * 2 * D + heads
    with_text = decode_bound(gen.model, cache_len=10, text_len=5, bandwidth_gbs=1.0)
    assert with_text["kv_bytes"] == 2 * LAYERS * 2 * D * 15 * 4


def test_decode_bound_measures_bandwidth_and_checks_arguments(gen):
    got = decode_bound(gen.model, size_mb=8)
    assert got["bandwidth_gbs"] > 0 and got["cache_len"] == 750  # half of a 30 s window
    with pytest.raises(mg.ConfigError, match="MusicGenModel"):
        decode_bound("debug")
    with pytest.raises(mg.ConfigError, match="batch_size"):
        decode_bound(gen.model, batch_size=0, bandwidth_gbs=1.0)
    with pytest.raises(mg.ConfigError, match="bandwidth_gbs"):
        decode_bound(gen.model, bandwidth_gbs=0.0)


def test_variants_run_in_turns_and_keep_their_settings(gen):
    reference = mg.MusicGenerator(gen.model, backend="transformers", progress=False)
    df = profile_variants({"no CFG": (gen, {"guidance_scale": 1.0}), "CFG": (gen, {}),
                           "transformers": (reference, {"top_k": 10})},
                          PROMPTS[0], duration=0.1, repeats=2, warmup=1, seed=4)
    names = ["no CFG", "CFG", "transformers"]
    assert list(df.variant) == names * 3                             # in turns, warm-up first
    assert list(df.warmup) == [True] * 3 + [False] * 6
    assert list(df.guidance_scale[:3]) == [1.0, 3.0, 3.0]
    assert list(df.backend[:3]) == ["native", "native", "transformers"]
    summary = profile_summary(df)
    assert sorted(summary.variant) == sorted(names) and (summary.runs == 2).all()
    assert (summary.steps == 8).all()                                # 5 frames + 3 delays


@pytest.mark.parametrize("variants, match", [
    ({}, "non-empty"), ({"a": "debug"}, "generator, settings"),
    ({"a": ("debug", {})}, "MusicGenerator"), ({"a": (None, {"duration": 1.0})}, "MusicGenerator"),
])
def test_variants_are_checked(gen, variants, match):
    with pytest.raises(mg.ConfigError, match=match):
        profile_variants(variants, PROMPTS[0])


def test_variants_take_duration_and_seed_as_arguments(gen):
    with pytest.raises(mg.ConfigError, match="duration= and seed="):
        profile_variants({"a": (gen, {"seed": 3})}, PROMPTS[0])
    with pytest.raises(mg.ConfigError, match="guidance_scale"):
        profile_variants({"a": (gen, {"guidance_scale": -1.0})}, PROMPTS[0])


def test_cpu_load_is_per_core(monkeypatch):
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert mg.cpu_load() == pytest.approx(2.0)
    monkeypatch.delattr(os, "getloadavg")
    assert mg.cpu_load() is None
