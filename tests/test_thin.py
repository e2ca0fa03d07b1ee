"""backends/thin.py: ThinLinear and its C++ kernels (thin_linear.cpp, decode_step.cpp), issue #14;
the layouts built on them (backends/layouts.py).

The kernel is compiled on this machine at first use; where it cannot be (no compiler) the
tests that need it skip, and the fallback is tested with a build that is made to fail.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_steps_agree
from tooling import missing_tool
from torch import nn

import musicgen_edu as mg
from musicgen_edu.backends import NativeBackend, layouts, linears, thin
from musicgen_edu.backends.linears import Int8Linear
from musicgen_edu.backends.thin import ThinLinear, thin_kernels, thin_linears

# with every thread, alone (make test): the kernels' parallel loops are what these check, and
# the parallel main tier gives each worker one thread
pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def kernel():
    if thin_kernels() is None:
        pytest.skip("thin_linear.cpp cannot be built here (no C++ compiler?)")
    return thin_kernels()


def _layer(out_features, in_features, dtype, int8=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=False)
    linear.weight.data = torch.randn(out_features, in_features, generator=gen).to(dtype)
    return Int8Linear(linear) if int8 else linear


@pytest.mark.parametrize("dtype,int8", [(torch.float32, False), (torch.bfloat16, False),
                                        (torch.float32, True), (torch.bfloat16, True)])
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 16, 17, 40])
@pytest.mark.parametrize("inputs", [72, 73])
def test_thin_linear_equals_the_product_it_replaces(kernel, dtype, int8, rows, inputs):
    """Any number of rows (the kernel up to MAX_ROWS, then F.linear or MAX_ROWS at a time);
    input sizes that are not a multiple of the vector width, even (bf16 pairs, where the CPU
    has AVX512-BF16) and odd."""
    layer = _layer(48, inputs, dtype, int8)
    thin = ThinLinear(layer)
    x = torch.randn(rows, inputs, generator=torch.Generator().manual_seed(rows)).to(dtype)
    if int8:                                   # what the int8 weights stand for, in float64
        ref = F.linear(x.double(), layer.weight.double()) * layer.scale.double()
    else:
        ref = F.linear(x.double(), layer.weight.double())
    tol = 1e-5 if dtype == torch.float32 else 1e-2             # bf16: the output is rounded
    bound = tol * ref.abs().max().item()
    if int8:  # on AVX2 / AVX-512 each row of x is rounded to int16: |x| error <= max|x[m]| / 65534
        bound = bound + (layer.weight.double().abs() * layer.scale.double()[:, None]).sum(1) \
            * x.double().abs().amax(1, keepdim=True) / 65534          # [rows, 48]
    for shape in [(rows, 1, inputs), (1, rows, inputs)]:       # one-token steps; a prefill
        out = thin(x.view(shape))
        assert out.shape == (*shape[:2], 48) and out.dtype == dtype
        assert ((out.view(rows, 48).double() - ref).abs() <= bound).all()


@pytest.mark.parametrize("dtype,int8", [(torch.float32, False), (torch.bfloat16, False),
                                        (torch.float32, True), (torch.bfloat16, True)])
def test_a_row_gives_the_same_bits_whatever_else_is_in_the_call(kernel, dtype, int8):
    """The promise behind "an item of a batch = that prompt alone": each output is one
    running sum over the inputs in order, however many rows share the call (blocks of 1 to 4
    rows inside the kernel, MAX_ROWS per call, any batch of one-token steps)."""
    thin = ThinLinear(_layer(64, 1024, dtype, int8))
    x = torch.randn(ThinLinear.MAX_ROWS + 8, 1, 1024).to(dtype)          # [N, 1, I]
    together = thin(x)
    for i in (0, 1, 5, len(x) - 1):
        assert torch.equal(thin(x[i: i + 1]), together[i: i + 1])
    assert torch.equal(thin(x[2:5]), together[2:5])                     # a block of 3
    assert torch.equal(thin(x[3:5]), together[3:5])


@pytest.mark.parametrize("int8", [False, True])
def test_bf16_activations_come_back_rounded_as_torch_rounds(kernel, int8):
    """The kernel reads bf16 activations as they are and writes bf16 results itself (no
    conversions around the call): the same bits as float32 activations, then ``.to(bf16)``."""
    thin = ThinLinear(_layer(64, 1024, torch.float32, int8))
    x = torch.randn(3, 1, 1024).bfloat16()
    out = thin(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, thin(x.float()).bfloat16())


def test_bf16_results_round_ties_to_even_as_torch_does(kernel):
    """Exact halfway cases: 1 + 2^-8 lies between the bf16 neighbours 1 and 1 + 2^-7 (rounds to
    the even one, 1); 1 + 2^-7 + 2^-8 between 1 + 2^-7 and 1 + 2^-6 (rounds to 1 + 2^-6)."""
    layer = nn.Linear(2, 16, bias=False)
    layer.weight.data = torch.ones(16, 2)
    x = torch.tensor([[1, 2**-8], [1 + 2**-7, 2**-8], [-1, -2**-8], [-1 - 2**-7, -2**-8]])
    out = ThinLinear(layer)(x.bfloat16().view(4, 1, 2))[:, 0, 0]
    expected = torch.tensor([1.0, 1 + 2**-6, -1.0, -1 - 2**-6])
    assert torch.equal(out.float(), expected)
    assert torch.equal(out, x.sum(1).bfloat16())                 # torch's own rounding


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_int8_products_keep_their_bound_across_flushes(kernel, rows):
    """600 inputs (300 pairs: the 32-bit sums are moved to floats twice) and 80 outputs (one
    4-group block and one group left over at 2 rows); a row with a NaN gives NaNs."""
    layer = _layer(80, 600, torch.float32, int8=True)
    x = torch.randn(rows, 600, generator=torch.Generator().manual_seed(rows)) * 30
    ref = F.linear(x.double(), layer.weight.double()) * layer.scale.double()
    bound = 1e-5 * ref.abs().max() + (layer.weight.double().abs()
                                      * layer.scale.double()[:, None]).sum(1) \
        * x.double().abs().amax(1, keepdim=True) / 65534
    out = ThinLinear(layer)(x.view(rows, 1, 600)).view(rows, 80)
    assert ((out.double() - ref).abs() <= bound).all()
    x[0, 7] = float("nan")
    out = ThinLinear(layer)(x.view(rows, 1, 600)).view(rows, 80)
    assert out[0].isnan().all() and not out[1:].isnan().any()


def test_thin_linear_refuses_what_it_cannot_run(kernel):
    with pytest.raises(ValueError, match="multiple of 16 output features, got 40"):
        ThinLinear(_layer(40, 64, torch.float32))
    with pytest.raises(ValueError, match="bias-free"):
        ThinLinear(nn.Linear(64, 64))
    with pytest.raises(RuntimeError, match=r"x \[M, I\] and weight \[O / 16, I, 16\]"):
        kernel.thin_linear(torch.zeros(2, 8), torch.zeros(16, 8), torch.empty(0))


def test_thin_linears_swaps_what_it_can_and_shares_the_weights(kernel):
    model = mg.load_model("debug", device="cpu")
    decoder = NativeBackend(model, pack=False).decoder
    fc1 = decoder.layers[0].fc1
    copy = type(decoder).from_transformers(model.model.decoder)
    thin_linears(copy, skip=linears.ONCE_PER_GENERATION)
    assert isinstance(copy.layers[0].fc1, ThinLinear)
    assert isinstance(copy.layers[0].encoder_attn.k_proj, nn.Linear)     # once per generation
    assert copy.layers[0].fc1.plain.data_ptr() == fc1.weight.data_ptr()  # no float copy kept
    # the state dict holds the blocked weights once (what a step reads), not the plain ones
    assert not any(k.endswith("fc1.plain") for k in copy.state_dict())


def test_the_thin_backend_is_batch_invariant_and_agrees_with_plain(kernel):
    model = mg.load_model("debug", device="cpu", dtype="bfloat16")
    for int8 in (False, True):
        backend = NativeBackend(model, pack="thin", int8=int8)
        assert isinstance(backend.decoder.layers[0].fc1, ThinLinear)
        assert "thin-product kernel" in backend.path
        gen = mg.MusicGenerator(model, backend=backend, progress=False)
        batch = gen.generate(["rock", "jazz", "lo-fi"], duration=0.5, seeds=[7, 8, 9])
        for i, (prompt, seed) in enumerate([("rock", 7), ("jazz", 8), ("lo-fi", 9)]):
            assert torch.equal(batch.tokens[i], gen.generate(prompt, duration=0.5,
                                                             seeds=[seed]).tokens[0])
    plain = mg.MusicGenerator(model, backend=NativeBackend(model, pack=False), progress=False)
    thin = mg.MusicGenerator(model, backend=NativeBackend(model, pack="thin"), progress=False)
    a, b = (g.generate("rock", duration=1.0, seed=1).tokens for g in (plain, thin))
    assert (a == b).float().mean() >= 0.9                  # summation order only


def test_a_bad_layout_is_refused_by_name():
    model = mg.load_model("debug", device="cpu")
    with pytest.raises(mg.ConfigError, match="pack='fast'.*'thin'"):
        NativeBackend(model, pack="fast")


def test_a_failed_build_warns_and_decoding_uses_torch(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension: g++: not found")
    model = mg.load_model("debug", device="cpu")
    thin_kernels.cache_clear()
    monkeypatch.setattr(cpp, "load", no_compiler)
    try:
        with pytest.warns(UserWarning, match="could not build the CPU kernel.*g\\+\\+: not found"):
            assert thin_kernels() is None
        model.extra.pop("native_decoders", None)
        backend = NativeBackend(model, pack="thin")     # asked for, not there: plain weights
        assert type(backend.decoder.layers[0].fc1) is nn.Linear
        assert "thin" not in backend.path and "packed" not in backend.path
    finally:
        thin_kernels.cache_clear()                       # later tests build (or load) it again
        model.extra.pop("native_decoders", None)


def test_the_kernel_is_an_operator_torch_compile_traces(kernel):
    """CUDA-graph-style fixed-shape steps are checked with ``fullgraph=True`` (test_native.py):
    the kernel must not break the graph, so it is a registered operator with a shape rule."""
    thin = ThinLinear(_layer(32, 64, torch.float32))
    x = torch.randn(2, 1, 64)
    compiled = torch.compile(thin, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), thin(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 251])
def test_decode_attention_equals_sdpa_over_the_filled_cache(kernel, dtype, length):
    """One query per head over the first ``length`` cached positions (the rest of the cache
    is garbage that must not leak in), head sizes 16 and 64."""
    gen = torch.Generator().manual_seed(length)
    for heads, dim in [(4, 16), (16, 64)]:
        q = torch.randn(2, heads, 1, dim, generator=gen).to(dtype)
        k, v = (torch.randn(2, heads, 300, dim, generator=gen).to(dtype) for _ in range(2))
        k[:, :, length:] = v[:, :, length:] = 1e4                # beyond the filled part
        ref = F.scaled_dot_product_attention(q.double(), k[:, :, :length].double(),
                                             v[:, :, :length].double())
        out = kernel.decode_attention(q.float(), k, v, length)
        assert out.shape == q.shape and out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
        # bf16 queries are read as they are, and the output comes back in their dtype, rounded
        # as torch rounds (the bits of the float32 result, then .to(bf16))
        half = kernel.decode_attention(q.bfloat16(), k, v, length)
        assert half.dtype == torch.bfloat16
        assert torch.equal(half, kernel.decode_attention(q.bfloat16().float(), k, v,
                                                         length).bfloat16())


def test_decode_attention_refuses_bad_shapes_by_value(kernel):
    q, cache = torch.zeros(1, 2, 1, 16), torch.zeros(1, 2, 8, 16)
    with pytest.raises(RuntimeError, match=r"length must be in \[1, 8\], got 9"):
        kernel.decode_attention(q, cache, cache, 9)
    with pytest.raises(RuntimeError, match="head size must be a multiple of 16 up to 128, got 8"):
        kernel.decode_attention(torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 8, 8),
                                torch.zeros(1, 2, 8, 8), 4)
    with pytest.raises(RuntimeError, match=r"q \[N, H, 1, D\] and caches \[N, H, Lmax, D\]"):
        kernel.decode_attention(torch.zeros(1, 2, 3, 16), cache, cache, 4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_thin_steps_equal_plain_steps(kernel, dtype):
    """The whole decoder on our kernels (linears and one-token attention) against torch's:
    a prefill, then one-token steps, on MusicGen-small's architecture."""
    model = mg.load_model("random-small", device="cpu", dtype=dtype)
    plain, thin = NativeBackend(model, pack=False), NativeBackend(model, pack="thin")
    assert thin.decoder.layers[0].self_attn.decode_kernel is not None
    for backend in (plain, thin):
        backend.attention_dtype = model.dtype          # bf16 caches too
    assert_steps_agree(plain, thin, tol=2e-4 if dtype == "float32" else 3e-2)


def test_decode_attention_adds_the_text_mask(kernel):
    """Cross-attention: padded text positions carry the dtype's minimum in an additive mask."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, n, 16, generator=gen) for n in (1, 12, 12))
    keep = torch.ones(2, 1, 1, 12, dtype=torch.bool)
    keep[1, ..., 7:] = False                                     # the second text is shorter
    mask = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(kernel.decode_attention(q, k, v, 12, mask), ref,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match=r"mask \[N, 1, 1, length\] = \[2, 1, 1, 12\]"):
        kernel.decode_attention(q, k, v, 12, mask[..., :5])
    with pytest.raises(RuntimeError, match="additive float mask expected"):
        kernel.decode_attention(q, k, v, 12, keep)


def test_a_text_padded_in_a_batch_attends_with_the_same_bits_as_alone(kernel):
    """A prompt batched with a longer one has its text padded under the mask: the padding
    must add exact zeros (e^-inf = 0, sums over whole vectors), whatever the padded length."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 4, n, 16, generator=gen) for n in (1, 10, 10))
    alone = kernel.decode_attention(q, k, v, 10, torch.zeros(1, 1, 1, 10))
    for padded in (11, 16, 17, 40):
        pad = torch.randn(1, 4, padded - 10, 16, generator=gen)
        mask = torch.zeros(1, 1, 1, padded)
        mask[..., 10:] = torch.finfo(torch.float32).min
        out = kernel.decode_attention(q, torch.cat([k, pad], 2), torch.cat([v, pad], 2),
                                      padded, mask)
        assert torch.equal(out, alone), padded


def test_thin_layout_is_skipped_with_a_warning_when_memory_is_short(kernel, monkeypatch):
    model = mg.load_model("debug", device="cpu")
    decoder = type(NativeBackend(model, pack=False).decoder).from_transformers(model.model.decoder)
    monkeypatch.setattr(linears, "_free_memory_bytes", lambda device=None: 1000)
    with pytest.warns(UserWarning, match="not laying the decoder's weights out"):
        thin_linears(decoder)
    assert type(decoder.layers[0].fc1) is nn.Linear


def test_candidate_layouts_for_every_setting(kernel, monkeypatch):
    """Default first; several only when timing (pack=None); what cannot run falls back."""
    from musicgen_edu.backends.layouts import candidate_layouts
    from musicgen_edu.backends.linears import can_pack, can_quantize_dynamic
    decoder = NativeBackend(mg.load_model("debug", device="cpu"), pack=False).decoder

    def names(*args):                                  # the layouts' names, as in cpu_paths.json
        return [str(layout) for layout in candidate_layouts(*args)]

    packed = ["packed"] if can_pack(decoder) else []
    assert names(decoder, False, None) == [*packed, "plain"]   # tiny: not worth
    assert names(decoder, True, None) == ["int8"]              # a 25 s build
    monkeypatch.setattr(layouts, "THIN_MIN_BYTES", 0)                     # as if it were big
    assert names(decoder, False, None) == [*packed, "plain", "thin"]
    assert names(decoder, False, True) == (packed or ["plain"])
    assert names(decoder, False, False) == ["plain"]
    assert names(decoder, False, "thin") == ["thin"]
    assert names(decoder, True, None) == ["int8", "int8-thin"]
    assert names(decoder, True, False) == ["int8"]
    assert names(decoder, True, "thin") == ["int8-thin"]
    assert names(decoder, True, True) == (
        ["int8-dynamic"] if can_quantize_dynamic(decoder) else ["int8"])
    with pytest.raises(mg.ConfigError, match="pack='fast' is not a weight layout"):
        candidate_layouts(decoder, False, "fast")


@pytest.mark.parametrize("name,dtype,int8,caches", [
    ("debug", "float32", False, "float32"), ("debug", "bfloat16", False, "float32"),
    ("debug", "bfloat16", False, "bfloat16"), ("debug", "bfloat16", True, "bfloat16"),
    ("debug-melody", "bfloat16", True, "float32")])
def test_a_block_in_one_call_gives_the_bits_of_its_python_forward(kernel, name, dtype, int8,
                                                                  caches):
    """Block.block_kernel (decode_step.cpp's decode_block) runs Block.forward's operators in
    its order: logits and caches equal bit for bit, step after step, batch of 2 prompts; fp32
    or bf16 caches; a text model (cross-attention) and a melody one (none)."""
    model = mg.load_model(name, device="cpu", dtype=dtype)
    backend = NativeBackend(model, pack="thin", int8=int8)
    backend.attention_dtype = getattr(torch, caches)
    blocks = backend.decoder.layers
    assert all(block.block_kernel is not None for block in blocks)
    cond = backend.encode_text(["rock", "a longer prompt about jazz", None, None])   # CFG
    tokens = torch.randint(0, 16, (4, model.num_codebooks, 10),
                           generator=torch.Generator().manual_seed(0))
    states, logits = [], []
    for fused in (True, False):
        steps = {block: block.block_kernel for block in blocks}
        if not fused:
            for block in blocks:
                block.block_kernel = None
        state = backend.start(cond, max_len=12)
        logits.append([backend.step(tokens[..., i: i + 1], state) for i in range(10)])
        states.append(state)
        for block, step in steps.items():
            block.block_kernel = step
    for a, b in zip(*logits):
        assert torch.equal(a, b)
    for a, b in zip(states[0].k_cache + states[0].v_cache, states[1].k_cache + states[1].v_cache):
        assert torch.equal(a[:, :, :10], b[:, :, :10])                  # the filled part


def test_decode_block_refuses_a_wrong_number_of_weights(kernel):
    x = torch.zeros(1, 1, 16)
    with pytest.raises(RuntimeError, match="6 \\(8 with cross-attention\\) weights"):
        kernel.decode_block(x, [x] * 5, [x] * 5, [x] * 4, x, x, 0, None, None, None, 1, 1e-5)


@pytest.mark.parametrize("capability,extra", [("AVX512", []), ("AVX2", ["-mno-avx512f"]),
                                              ("DEFAULT", ["-mno-avx"])])
def test_the_kernels_use_no_more_than_torch_dispatches(monkeypatch, capability, extra):
    """``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 CPU: torch runs its AVX2 kernels, and ours
    are built without AVX-512 too (a separate cache entry); ``MUSICGEN_THIN_CFLAGS`` comes
    last, so its ``-march`` wins over ``-march=native``."""
    monkeypatch.setattr(thin.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.delenv("MUSICGEN_THIN_CFLAGS", raising=False)
    assert thin.thin_flags() == thin.THIN_FLAGS + extra
    monkeypatch.setenv("MUSICGEN_THIN_CFLAGS", "-march=x86-64-v3 -mtune=generic")
    assert thin.thin_flags()[-2:] == ["-march=x86-64-v3", "-mtune=generic"]
    monkeypatch.setattr(thin.platform, "machine", lambda: "aarch64")   # no x86 flags there
    assert thin.thin_flags() == thin.THIN_FLAGS + ["-march=x86-64-v3", "-mtune=generic"]


def test_the_build_follows_the_flags_into_its_cache_name(monkeypatch):
    """Two flag sets, two builds: a cached AVX-512 build is never loaded for an AVX2 process."""
    names = []
    monkeypatch.setattr(thin, "_load_thin", lambda name, flags: names.append(name))
    thin_kernels.cache_clear()
    try:
        for cflags in ("", "-march=x86-64-v3"):
            monkeypatch.setenv("MUSICGEN_THIN_CFLAGS", cflags)
            thin_kernels.cache_clear()
            thin_kernels()
    finally:
        thin_kernels.cache_clear()
    assert len(names) == 2 and names[0] != names[1]
    assert all(n.startswith("musicgen_edu_thin_") for n in names)


@pytest.mark.arm
def test_arm_build_of_the_kernels_matches_aten_under_qemu():
    """The kernels built for ARM (AArch64: 4-float NEON vectors, NEON's fused multiply-add) and
    run under qemu (``tests/arm/run.sh``): the AArch64 baseline build, and an Armv8.6 build
    with SVE run with 128- and 256-bit vectors. Products of 1-17 rows in fp32, bf16 and int8,
    one-token attention and whole layers (``decode_block``) against float64 references, and
    bit for bit: a row alone, bf16 ties to even, one fused multiply-add per input, a padded
    text. No ARM machine is at hand; Apple silicon under Linux, Graviton and Raspberry Pi run
    these builds. Skipped without the cross compiler, qemu, or a mount namespace (root)
    (``MUSICGEN_REQUIRE_ARM=1``, set by ``.ci/run``, which installs them: fails instead)."""
    missing = [tool for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64", "unshare")
               if shutil.which(tool) is None]
    run = None if missing else subprocess.run(
        ["bash", str(Path(__file__).parent / "arm" / "run.sh")], capture_output=True, text=True,
        timeout=1200, env={**os.environ, "PYTHON": sys.executable})
    if missing or run.returncode == 77:                   # cannot be set up here
        message = (f"the ARM check needs {', '.join(missing)}" if missing else
                   run.stdout.strip().splitlines()[-1]) + " (tests/arm/run.sh)"
        missing_tool(message, "MUSICGEN_REQUIRE_ARM")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    counts = re.findall(r"(\d+) of (\d+) checks passed", run.stdout)   # one line per build
    assert len(counts) == 3 and all(a == b and int(b) > 200 for a, b in counts), run.stdout[-2000:]
