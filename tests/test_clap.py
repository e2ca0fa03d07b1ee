"""CLAP scores (metrics/clap.py) with the offline random CLAP: shapes, determinism, labels.

The random model's numbers are meaningless by design; these tests check the plumbing (48 kHz
resampling, 10 s chunking, pairing of texts and clips, the meaningful=False label), never that
a score is "good". The real checkpoint is tested only where the hub is reachable (marker hub).
"""

import time

import numpy as np
import pytest
import torch

from musicgen_edu.errors import ConfigError, ModelLoadError
from musicgen_edu.metrics.clap import (
    RANDOM_CLAP_WARNING,
    Clap,
    build_random_clap,
    clap_embeddings,
    clap_score,
    clap_text_embeddings,
    load_clap,
    prompt_adherence_table,
)

SR = 32000
pytestmark = pytest.mark.filterwarnings("ignore:CLAP model 'random'")


@pytest.fixture(scope="module")
def clap():
    return load_clap("random", device="cpu")


def tone(freq, seconds, sr=SR):
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_random_clap_is_offline_and_labelled(clap):
    assert isinstance(clap, Clap) and clap.name == "random" and not clap.meaningful
    assert "MEANINGLESS" in clap.warning and clap.warning == RANDOM_CLAP_WARNING
    assert clap.embedding_dim == 32 and "meaningful=False" in repr(clap)
    assert load_clap("random", device="cpu") is clap            # cached


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = build_random_clap(0)[0], build_random_clap(0)[0], build_random_clap(1)[0]
    pa, pb, pc = (next(m.audio_projection.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_audio_embeddings_shape_norm_and_determinism(clap):
    wavs = np.stack([tone(220, 1.0), tone(880, 1.0)])[:, None]  # [2, 1, T]
    emb = clap_embeddings(wavs, SR, clap)
    assert emb.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb, clap_embeddings(wavs, SR, clap))   # deterministic
    assert not np.allclose(emb[0], emb[1])                  # different audio, different vector


def test_resampling_and_long_clips(clap):
    at_32k = clap_embeddings(tone(440, 1.0), SR, clap)
    at_48k = clap_embeddings(tone(440, 1.0, 48000), 48000, clap)   # already at CLAP's rate
    assert float(at_32k[0] @ at_48k[0]) > 0.99
    long = clap_embeddings(tone(440, 21.0, 16000), 16000, clap)    # 3 chunks of 7 s, averaged
    assert long.shape == (1, 32) and abs(np.linalg.norm(long) - 1) < 1e-5


def test_text_embeddings(clap):
    emb = clap_text_embeddings(["calm piano", "loud drums", "x" * 1000], clap)  # long: truncated
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    expected = clap_text_embeddings("calm piano", clap)
    np.testing.assert_allclose(emb[:1], expected, atol=1e-6)  # batch padding: float noise only
    with pytest.raises(ConfigError, match="non-empty"):
        clap_text_embeddings(["ok", ""], clap)


def test_clap_score_pairs_texts_with_clips_and_warns(clap):
    wavs = [tone(220, 1.0), tone(440, 0.5)]
    with pytest.warns(UserWarning, match="MEANINGLESS"):
        df = clap_score(["low tone", "high tone"], wavs, SR, model=clap)
    assert list(df.columns) == ["text", "score", "meaningful"] and df.index.name == "clip"
    assert df.attrs["meaningful"] is False and "MEANINGLESS" in df.attrs["warning"]
    assert not df["meaningful"].any() and df["score"].between(-1, 1).all()
    texts = clap_text_embeddings(["low tone", "high tone"], clap)
    manual = (clap_embeddings(wavs, SR, clap) * texts).sum(1)
    np.testing.assert_allclose(df["score"], manual, atol=1e-6)
    one_text = clap_score("tone", wavs, SR, model=clap)                      # broadcast
    assert one_text["text"].tolist() == ["tone", "tone"]
    with pytest.raises(ConfigError, match="3 texts for 2 clips"):
        clap_score(["a", "b", "c"], wavs, SR, model=clap)


def test_prompt_adherence_table(gen, clap):
    prompts = ["lo-fi piano", "epic drums"]
    out = gen.generate(prompts, duration=0.5, seed=0)
    again = gen.generate(prompts, duration=0.5, seed=5)
    df = prompt_adherence_table([out, again], prompts, clap)
    assert len(df) == 4 * 2 and df["own_prompt"].sum() == 4
    assert set(df.columns) == {"clip", "generated_from", "seed", "prompt", "score", "own_prompt"}
    assert df["seed"].tolist()[::2] == [0, 1, 5, 6] and df.attrs["meaningful"] is False
    table = df.pivot_table(index="generated_from", columns="prompt", values="score")
    assert table.shape == (2, 2)
    score = clap_score(prompts, out, model=clap)["score"].tolist()       # the diagonal
    own = df[df["own_prompt"] & (df["clip"] < 2)]["score"].tolist()
    np.testing.assert_allclose(own, score, atol=1e-6)


def test_real_clap_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="load_clap\\('random'\\)"):
        load_clap("laion/clap-htsat-unfused", device="cpu", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    with pytest.raises(ConfigError, match="non-empty string"):
        load_clap("")
    with pytest.raises(ConfigError, match="expected a Clap"):
        clap_score("x", tone(440, 0.5), SR, model=42)


@pytest.mark.hub
def test_real_clap_prefers_the_right_text():  # runs only where the hub is reachable
    from musicgen_edu.models import hub_reachable

    if not hub_reachable():
        pytest.skip("model hub not reachable from this machine")
    clap = load_clap("laion/clap-htsat-unfused")
    assert clap.meaningful and clap.warning == ""
    scores = clap_score(["a pure sine wave tone", "a dog barking"], [tone(440, 3.0)] * 2, SR, clap)
    assert scores["score"][0] > scores["score"][1]
