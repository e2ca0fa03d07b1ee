"""backends/fusion.py: q/k/v and the codebook heads as one product each, same numbers."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_steps_agree
from torch import nn

import musicgen_edu as mg
from musicgen_edu.backends import fusion, linears
from musicgen_edu.backends.layouts import Layout, Weights
from musicgen_edu.backends.native import NativeDecoder
from musicgen_edu.backends.native_backend import NativeBackend


def _pair(model, **kwargs):
    """An unfused and a fused native backend over ``model``, otherwise alike."""
    return (NativeBackend(model, pack=False, fuse=False, **kwargs),
            NativeBackend(model, pack=False, fuse=True, **kwargs))


def test_stacked_linear_gives_the_layers_outputs_side_by_side():
    torch.manual_seed(0)
    layers = [nn.Linear(32, n, bias=False) for n in (16, 48, 16)]
    stacked = fusion.stack_linears(layers)
    x = torch.randn(2, 3, 32)
    assert stacked.weight.shape == (80, 32) and not stacked.weight.requires_grad
    torch.testing.assert_close(stacked(x), torch.cat([layer(x) for layer in layers], -1),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="bias-free"):
        fusion.stack_linears([nn.Linear(4, 4)])


@pytest.mark.parametrize("name", ["random-small", "debug-stereo", "debug-melody"])
def test_fused_decoder_steps_like_the_unfused_one(name):
    """Prefill and one-token steps, text and melody models, 4 and 8 codebooks."""
    model = mg.load_model(name, device="cpu")
    plain, fused = _pair(model)
    attn = fused.decoder.layers[0].self_attn
    dim = attn.heads * attn.head_dim
    assert attn.qkv_proj.weight.shape == (3 * dim, dim)
    assert not hasattr(attn, "q_proj") and len(fused.decoder.lm_heads) == 1
    assert "fused q/k/v and heads" in fused.path and "fused" not in plain.path
    assert_steps_agree(plain, fused, tol=1e-5, steps=5)


def _stacked_product_rounds_alike() -> bool:
    """Whether this machine's GEMM gives a 3·D-wide product the same bits as three D-wide
    ones (each output is the same sum; its rounding is the library's choice)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 64, generator=gen)
    weights = [torch.randn(64, 64, generator=gen) for _ in range(3)]
    return torch.equal(nn.functional.linear(x, torch.cat(weights)),
                       torch.cat([nn.functional.linear(x, w) for w in weights], -1))


@pytest.mark.parametrize("kwargs", [dict(), dict(graphs=True), dict(int8=True)])
def test_fused_generation_draws_the_same_tokens(kwargs):
    """Eager, the fixed-shape step a CUDA graph captures, and int8 weights (the stacked layer
    is quantized per row, as its three parts would be): the same tokens wherever the stacked
    product rounds like the separate ones (so on the project's CPUs); elsewhere a near-tie
    may flip a token, and the rest of the clip follows it."""
    model = mg.load_model("debug", device="cpu")
    plain, fused = _pair(model, **kwargs)
    runs = [mg.MusicGenerator(model, backend=b, progress=False).generate(
        ["jazz", "rock"], duration=1.0, seed=5) for b in (plain, fused)]
    if _stacked_product_rounds_alike():
        assert torch.equal(runs[0].tokens, runs[1].tokens)
    else:
        assert (runs[0].tokens[..., :10] == runs[1].tokens[..., :10]).float().mean() > 0.9


def test_fusion_is_the_default_on_cuda_only_and_skips_our_cpu_kernels():
    model = mg.load_model("debug", device="cpu")
    assert len(NativeBackend(model, pack=False).decoder.lm_heads) == model.num_codebooks
    with pytest.raises(ValueError, match="nothing to fuse"):
        Layout(Weights.THIN, fused=True)
    thin = NativeBackend(model, pack="thin", fuse=True)
    if "thin" in thin.path:                       # where thin_linear.cpp builds
        assert "fused" not in thin.path and len(thin.decoder.lm_heads) == model.num_codebooks


def test_fusion_is_skipped_with_a_warning_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(linears, "_free_memory_bytes", lambda device=None: 1000)
    decoder = NativeDecoder.from_transformers(mg.load_model("debug", device="cpu").model.decoder)
    with pytest.warns(UserWarning, match="not fusing the q/k/v projections"):
        fusion.fuse_projections(decoder)
    assert decoder.layers[0].self_attn.qkv_proj is None and len(decoder.lm_heads) == 4


def test_fused_decoder_keeps_the_breakdown_stages():
    """The profiler's hooks find the fused heads and attention (metrics.breakdown)."""
    model = mg.load_model("debug", device="cpu")
    gen = mg.MusicGenerator(model, backend=NativeBackend(model, pack=False, fuse=True),
                            progress=False)
    df = mg.breakdown(gen, "jazz", duration=0.3)
    seconds = dict(zip(df.stage, df.seconds))
    assert seconds["decoder: lm heads"] > 0 and seconds["decoder: attention"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_steps_stay_close_on_a_gpu(dtype):
    model = mg.load_model("random-small", device="cuda", dtype=dtype)
    plain, fused = NativeBackend(model, fuse=False), NativeBackend(model)
    assert "fused" in fused.path and fused.graphs
    assert_steps_agree(plain, fused, tol=1e-3 if dtype == "float32" else 5e-2, steps=35)
