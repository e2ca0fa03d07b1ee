"""The native decoder equals transformers: logits, greedy and sampled tokens, every mode."""

import contextlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_steps_agree

import musicgen_edu as mg
from musicgen_edu.backends import NativeBackend, TransformersBackend
from musicgen_edu.backends.linears import (
    DynamicInt8Linear,
    Int8Linear,
    PackedLinear,
    can_pack,
    can_quantize_dynamic,
)
from musicgen_edu.backends.native import FixedShape, decode_step
from musicgen_edu.sampling import Sampling


def _logits_both(model, prompts, steps, prefill=5, seed=0):
    """Feed the same random token columns to both backends; yield their logits per call."""
    ref, nat = TransformersBackend(model), NativeBackend(model)
    cond = ref.encode_text(prompts)
    total = prefill + steps
    s_ref, s_nat = ref.start(cond, total), nat.start(cond, total)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 2048, (len(prompts), model.num_codebooks, total), generator=gen)
    yield ref.step(tokens[..., :prefill], s_ref), nat.step(tokens[..., :prefill], s_nat)
    for t in range(prefill, total):
        yield ref.step(tokens[..., t: t + 1], s_ref), nat.step(tokens[..., t: t + 1], s_nat)


@pytest.mark.parametrize("name", ["debug", "debug-stereo", "debug-melody"])
def test_logits_equal_transformers_on_debug_models(name):
    model = mg.load_model(name, device="cpu")
    for a, b in _logits_both(model, ["lo-fi piano", None, "a much longer prompt, padded"], 30):
        assert a.shape == b.shape == (3, model.num_codebooks, 2048)
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_logits_equal_transformers_on_the_musicgen_small_architecture():
    model = mg.load_model("random-small", device="cpu")
    checked = 0
    for i, (a, b) in enumerate(_logits_both(model, ["80s synth pop", None], 12, prefill=4)):
        if i in (0, 1, 6, 12):  # prefill, first step, a filled cache, the last step
            torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-4)
            checked += 1
    assert checked == 4


@pytest.mark.parametrize("name", ["debug", "debug-stereo", "debug-melody"])
def test_greedy_tokens_equal_for_200_steps(name):
    model = mg.load_model(name, device="cpu")
    kwargs = dict(duration=200 / 50, use_sampling=False, progress=False)
    ref = mg.MusicGenerator(model, backend="transformers").generate(["jazz", "rock"], **kwargs)
    nat = mg.MusicGenerator(model, backend="native").generate(["jazz", "rock"], **kwargs)
    assert nat.tokens.shape[-1] == 200 and torch.equal(nat.tokens, ref.tokens)


@pytest.fixture(scope="module")
def reference(gen):
    """The transformers backend on the same model as ``gen`` (which defaults to native)."""
    assert gen.backend.name == "native"
    return mg.MusicGenerator(gen.model, backend="transformers", progress=False)


@pytest.mark.parametrize("sampler", ["counter", "reference"])
def test_sampled_tokens_equal_under_the_same_seed(gen, reference, sampler):
    """Both backends share the sampler (and its per-item seeds or generators), so the noise is
    identical by construction; equal logits then give equal tokens."""
    native, gen = gen, reference
    for kwargs in (dict(seed=4), dict(seed=9, top_k=0, top_p=0.9, temperature=0.8),
                   dict(seed=1, negative_prompt="drums")):
        kwargs["sampler"] = sampler
        a = gen.generate(["x", "y"], duration=1.0, **kwargs)
        b = native.generate(["x", "y"], duration=1.0, **kwargs)
        assert torch.equal(a.tokens, b.tokens), kwargs


def test_every_mode_runs_on_native(gen, reference):
    native, gen = gen, reference
    prompt = native.generate("x", duration=0.4, seed=0)
    cont = native.generate_continuation(prompt.wav, 32000, "x", duration=0.8, seed=1)
    ref = gen.generate_continuation(prompt.wav, 32000, "x", duration=0.8, seed=1)
    assert torch.equal(cont.tokens, ref.tokens)
    native.max_duration = gen.max_duration = 0.6
    try:
        long_n = native.generate("x", duration=1.3, seed=2, extend_stride=0.4)
        long_t = gen.generate("x", duration=1.3, seed=2, extend_stride=0.4)
    finally:
        native.max_duration = gen.max_duration = 30.0
    assert torch.equal(long_n.tokens, long_t.tokens)
    chunks = list(native.stream("x", duration=1.0, seed=3, chunk_seconds=0.3))
    torch.testing.assert_close(torch.cat(chunks, -1), gen.generate("x", duration=1.0, seed=3).wav,
                               atol=1e-5, rtol=0)


def test_weights_are_shared_not_copied():
    model = mg.load_model("debug", device="cpu")
    native = NativeBackend(model, pack=False).decoder
    hf = model.model.decoder
    assert native.layers[0].fc1.weight is hf.model.decoder.layers[0].fc1.weight
    assert native.lm_heads[3].weight is hf.lm_heads[3].weight
    assert native.embed_tokens[0].weight.data_ptr() == hf.model.decoder.embed_tokens[0].weight.data_ptr()
    if not can_pack(native):
        pytest.skip("this torch build or CPU cannot pack weights for oneDNN")
    packed = NativeBackend(model, pack=True).decoder    # linears packed for oneDNN
    assert isinstance(packed.layers[0].fc1, PackedLinear)
    assert packed.layer_norm.weight is hf.model.decoder.layer_norm.weight  # the rest is shared
    text_k = packed.layers[0].encoder_attn.k_proj                   # used once: not packed
    assert text_k.weight is hf.model.decoder.layers[0].encoder_attn.k_proj.weight
    assert NativeBackend(model, pack=True).decoder is packed  # built once per model and setting


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_linears_equal_plain_ones(dtype):
    model = mg.load_model("random-small", device="cpu", dtype=dtype)
    plain, packed = NativeBackend(model, pack=False), NativeBackend(model, pack=True)
    if not can_pack(plain.decoder):
        pytest.skip(f"this torch build or CPU cannot pack {dtype} weights for oneDNN")
    assert isinstance(packed.decoder.layers[0].fc1, PackedLinear)
    assert_steps_agree(plain, packed, tol=2e-4 if dtype == "float32" else 2e-2)
    fc1 = packed.decoder.layers[0].fc1
    x = torch.randn(3, 5, fc1.in_features, dtype=model.dtype)       # any number of rows
    ref = torch.nn.functional.linear(x, plain.decoder.layers[0].fc1.weight)
    torch.testing.assert_close(fc1(x).float(), ref.float(), atol=1e-2, rtol=1e-2)


def test_packing_is_skipped_with_a_warning_when_memory_is_short(monkeypatch):
    from musicgen_edu.backends import linears
    from musicgen_edu.backends.native import NativeDecoder
    model = mg.load_model("debug", device="cpu")
    monkeypatch.setattr(linears, "_free_memory_bytes", lambda device=None: 1000)
    decoder = NativeDecoder.from_transformers(model.model.decoder)
    with pytest.warns(UserWarning, match="not packing"):
        linears.pack_linears(decoder)
    assert isinstance(decoder.layers[0].fc1, torch.nn.Linear)


def test_bfloat16_logits_stay_close_to_float32():
    fp32 = mg.load_model("random-small", device="cpu")
    bf16 = mg.load_model("random-small", device="cpu", dtype="bfloat16")
    cond32 = NativeBackend(fp32).encode_text(["ambient pads"])
    a_be, b_be = NativeBackend(fp32), NativeBackend(bf16)
    cond16 = b_be.encode_text(["ambient pads"])
    tokens = torch.randint(0, 2048, (1, 4, 8), generator=torch.Generator().manual_seed(0))
    a = a_be.step(tokens, a_be.start(cond32, 8))
    b = b_be.step(tokens, b_be.start(cond16, 8))
    err = (a - b).abs().max() / a.abs().max()
    assert err < 0.05, f"bf16 relative logit error {err:.3f}"
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean()
    assert agree >= 0.75


@pytest.mark.parametrize("activations", ["bf16", "int8"])
def test_int8_weights_bound_the_logit_error_and_keep_most_tokens(activations):
    """Weight-only int8 (``pack=False``) and int8 activations too (``pack=True``, the quantized
    CPU engine): the same error bounds against bf16."""
    model = mg.load_model("random-small", device="cpu", dtype="bfloat16")
    kind = Int8Linear if activations == "bf16" else DynamicInt8Linear
    if kind is DynamicInt8Linear and not can_quantize_dynamic(NativeBackend(model, pack=False).decoder):
        pytest.skip("this torch build has no quantized CPU engine")
    exact, int8 = NativeBackend(model), NativeBackend(model, int8=True, pack=activations == "int8")
    assert int8.name == "native-int8" and exact.name == "native"
    assert isinstance(int8.decoder.layers[0].fc1, kind)
    for layer in int8.decoder.layers:  # the text keys/values run once per generation: kept exact
        assert isinstance(layer.encoder_attn.q_proj, kind)
        assert not isinstance(layer.encoder_attn.k_proj, kind)
        assert not isinstance(layer.encoder_attn.v_proj, kind)
    assert model.model.decoder.model.decoder.layers[0].fc1.weight.dtype == torch.bfloat16  # untouched
    cond = exact.encode_text(["ambient pads", None])
    tokens = torch.randint(0, 2048, (2, 4, 6), generator=torch.Generator().manual_seed(1))
    a = exact.step(tokens, exact.start(cond, 6))
    b = int8.step(tokens, int8.start(cond, 6))
    err = (a - b).abs().max() / a.abs().max()
    assert err < 0.08, f"int8 relative logit error {err:.3f}"
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.75


def test_int8_backend_is_batch_invariant_and_int8_activations_are_not():
    """Weight-only int8 (the default) keeps "item i of a batch = the same prompt alone"; int8
    activations (``pack=True``) share one scale per call, so the batch changes an item's
    rounding — why they are opt-in and never chosen by timing."""
    model = mg.load_model("debug", device="cpu")
    gens = {kind: mg.MusicGenerator(model, backend=NativeBackend(model, int8=True, pack=pack),
                                    progress=False)
            for kind, pack in [("weights", None), ("activations", True)]}
    if not isinstance(gens["activations"].backend.decoder.layers[0].fc1, DynamicInt8Linear):
        pytest.skip("this torch build has no quantized CPU engine")
    differ = {}
    for kind, gen in gens.items():
        batch = gen.generate(["rock", "jazz", "lo-fi"], duration=0.5, seeds=[7, 8, 9])
        alone = [gen.generate(p, duration=0.5, seeds=[s]).tokens[0]
                 for p, s in [("rock", 7), ("jazz", 8), ("lo-fi", 9)]]
        differ[kind] = sum(not torch.equal(batch.tokens[i], a) for i, a in enumerate(alone))
    assert differ == {"weights": 0, "activations": differ["activations"]}
    assert differ["activations"] > 0


def test_backend_choice_is_validated(gen):
    with pytest.raises(mg.ConfigError, match="backend='fast'"):
        mg.MusicGenerator(gen.model, backend="fast")
    other = mg.load_model("debug-stereo", device="cpu")
    with pytest.raises(mg.ConfigError, match="another model"):
        mg.MusicGenerator(gen.model, backend=NativeBackend(other))


@pytest.mark.parametrize("name", ["random-small", "debug-stereo", "debug-melody"])
def test_fixed_shape_step_equals_the_eager_step(name):
    """The step a CUDA graph captures (whole cache, masked) gives the eager step's logits."""
    model = mg.load_model(name, device="cpu")
    eager, static = NativeBackend(model), NativeBackend(model, graphs=True)
    cond = eager.encode_text(["lo-fi piano", None])
    tokens = torch.randint(0, 2048, (2, model.num_codebooks, 10),
                           generator=torch.Generator().manual_seed(3))
    s_eager, s_static = eager.start(cond, 10), static.start(cond, 10)
    for cols in [slice(0, 3)] + [slice(t, t + 1) for t in range(3, 10)]:
        a, b = eager.step(tokens[..., cols], s_eager), static.step(tokens[..., cols], s_static)
        torch.testing.assert_close(b, a, atol=1e-4 * a.abs().max().item(), rtol=0)
        if cols.start == 3:                    # a single one-token step is not worth a capture
            assert static.replays == 0
    assert static.replays == 6 and s_static.pos == s_eager.pos


@pytest.mark.parametrize("sampling", [
    Sampling(1, 3.0, True, 0.9, 50, 0.0), Sampling(1, 3.0, True, 1.0, 0, 0.9),
    Sampling(1, 1.0, False, 1.0, 0, 0.0)], ids=["top-k", "top-p", "greedy"])
def test_decode_step_draws_the_same_tokens_eager_and_at_fixed_shapes(sampling):
    """``decode_step``, the one function both paths run: the eager form (int position) and
    the fixed-shape form a CUDA graph captures draw the same tokens from the same columns."""
    model = mg.load_model("random-small", device="cpu")
    backend = NativeBackend(model, pack=False, graphs=True)    # graphs: zeroed caches
    cond = backend.encode_text(["lo-fi piano", None])
    tokens = torch.randint(0, 2048, (2, model.num_codebooks, 8),
                           generator=torch.Generator().manual_seed(5))
    eager, fixed = backend.start(cond, 8), backend.start(cond, 8)
    seeds = torch.tensor([11])
    with torch.no_grad():
        for t in range(8):
            column = tokens[..., t: t + 1]
            a = decode_step(backend.decoder, column, eager, sampling, seeds, t)
            b = decode_step(backend.decoder, column, fixed, sampling, seeds, torch.tensor([t]),
                            fixed=FixedShape(torch.tensor([t]), 8))
            assert a.shape == (1, model.num_codebooks) and torch.equal(a, b), t
    assert eager.pos == 8 and fixed.pos == 0        # the fixed form leaves pos to its caller


def test_fixed_shape_step_builds_its_attention_mask_once():
    """One additive mask per step, not a boolean one that SDPA would turn into an additive
    one in every block (two ``where`` kernels per block and step on a GPU)."""
    from torch.profiler import profile

    model = mg.load_model("random-small", device="cpu")
    backend = NativeBackend(model, graphs=True, pack=False)
    state = backend.start(backend.encode_text(["x", None]), 20)
    tokens = torch.zeros(2, model.num_codebooks, 1, dtype=torch.long)
    with torch.no_grad(), profile() as prof:
        backend.decoder.step_static(tokens, torch.tensor([3]), state, 20)
    ops = [event.name for event in prof.events()]
    assert ops.count("aten::scaled_dot_product_attention") == 2 * len(backend.decoder.layers)
    assert ops.count("aten::where") == 0 and ops.count("aten::masked_fill") == 1


def test_attention_buckets():
    from musicgen_edu.backends.cuda_graph import attention_length

    assert [attention_length(p, 3000) for p in (0, 255, 256, 511, 512, 1535, 1536, 2999)] == \
        [256, 256, 512, 512, 1024, 1536, 2048, 3000]
    assert attention_length(10, 100) == 100                # never past the cache
    assert all(attention_length(p, 1503) > p for p in range(1503))


def test_fixed_shape_step_follows_the_position_across_buckets():
    """Crossing a bucket boundary (256 slots) changes the attended length, not the logits."""
    model = mg.load_model("debug", device="cpu")
    eager, static = NativeBackend(model), NativeBackend(model, graphs=True)
    cond = eager.encode_text(["lo-fi piano", None])
    steps = 300
    tokens = torch.randint(0, 2048, (2, model.num_codebooks, steps),
                           generator=torch.Generator().manual_seed(4))
    s_eager, s_static = eager.start(cond, 1500), static.start(cond, 1500)   # a 30 s window
    for t in range(steps):
        a = eager.step(tokens[..., t: t + 1], s_eager)
        b = static.step(tokens[..., t: t + 1], s_static)
        torch.testing.assert_close(b, a, atol=1e-4 * a.abs().max().item(), rtol=0)
    assert s_static.graph.lengths == [256, 512]           # not 1500 from the first step on


def test_a_finished_generation_frees_its_cache_without_the_garbage_collector():
    """The captured step must not point back at the state (a cycle would keep the KV cache
    alive until the next garbage collection: two caches at once on a GPU)."""
    import gc
    import weakref
    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True)
    state = backend.start(backend.encode_text(["x"]), 6)
    for _ in range(4):
        backend.step(torch.zeros(1, model.num_codebooks, 1, dtype=torch.long), state)
    assert state.graph is not None
    alive = weakref.ref(state.k_cache[0])
    gc.disable()
    try:
        del state
        assert alive() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("settings_", [dict(), dict(use_sampling=False),
                                       dict(sampler="reference"),
                                       dict(top_k=0, top_p=0.8, temperature=0.7, guidance_scale=1.0)])
def test_generation_through_the_fixed_shape_step_is_token_identical(settings_):
    """Counter sampler and greedy: decoder and draw in one (captured on a GPU) step;
    reference sampler: the step alone, the draw outside. All equal the eager loop."""
    model = mg.load_model("debug", device="cpu")
    kwargs = dict(duration=1.0, seed=5, progress=False, **settings_)
    ref = mg.MusicGenerator(model).generate(["jazz", "rock"], **kwargs)
    backend = NativeBackend(model, graphs=True)
    assert backend.fuses_draw
    static = mg.MusicGenerator(model, backend=backend)
    assert torch.equal(static.generate(["jazz", "rock"], **kwargs).tokens, ref.tokens)


@contextlib.contextmanager
def _one_graph(fn):
    """``fn`` compiled with ``fullgraph=True`` (any graph break raises), and the list of the
    graphs its compilations produced; dynamo's caches are reset before and after."""
    graphs = []

    def count(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        yield torch.compile(fn, backend=count, fullgraph=True, dynamic=False), graphs
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("pack, fuse", [(None, False), ("thin", False), (False, True)])
def test_fixed_shape_step_traces_to_one_graph_without_host_syncs(pack, fuse):
    """What CUDA-graph capture needs, checked on a CPU: ``torch.compile(fullgraph=True)`` fails
    on any graph break (e.g. ``.item()``, data-dependent shapes), and later positions reuse the
    first graph (no recompilation), because the position is a tensor, not a Python number.
    Also on our CPU kernels (registered operators with shape rules), and fused (the CUDA
    default: fusion.py)."""
    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True, pack=pack, fuse=fuse)
    if pack == "thin" and "thin" not in backend.path:
        pytest.skip("thin_linear.cpp cannot be built here")
    state = backend.start(backend.encode_text(["x", None]), 8)
    tokens = torch.zeros(2, model.num_codebooks, 1, dtype=torch.long)
    with _one_graph(backend.decoder.step_static) as (step, graphs), torch.no_grad():
        outs = [step(tokens, torch.tensor([p]), state) for p in range(4)]
    assert len(graphs) == 1 and all(o.shape == (2, model.num_codebooks, 2048) for o in outs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graph_steps_equal_eager_steps_on_a_gpu(dtype):
    model = mg.load_model("random-small", device="cuda", dtype=dtype)
    eager, graphed = NativeBackend(model, graphs=False), NativeBackend(model)
    assert graphed.graphs
    cond = eager.encode_text(["lo-fi piano", None])
    tokens = torch.randint(0, 2048, (2, 4, 40), device="cuda")
    s_eager, s_graph = eager.start(cond, 40), graphed.start(cond, 40)
    for cols in [slice(0, 3)] + [slice(t, t + 1) for t in range(3, 40)]:
        a, b = eager.step(tokens[..., cols], s_eager), graphed.step(tokens[..., cols], s_graph)
        torch.testing.assert_close(b, a, atol=(1e-3 if dtype == "float32" else 5e-2)
                                   * a.abs().max().item(), rtol=0)
    assert s_graph.graph.graphs                         # really replayed a captured graph


def test_fixed_shape_buffers_and_graphs_are_pooled_across_generations():
    """Capture once per process: a second generation of the same shape reuses the first one's
    caches (and, on a GPU, its captured graphs); results equal the eager backend's."""
    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True)
    static = mg.MusicGenerator(model, backend=backend, progress=False)
    eager = mg.MusicGenerator(model, progress=False)
    kwargs = dict(duration=0.5, seed=2)
    first = static.generate(["jazz", "rock"], **kwargs)
    (key, pooled), = backend._pool.idle.items()
    cache, graph = pooled.k_cache[0], pooled.graph
    second = static.generate(["a longer prompt", "rock"], **kwargs)   # 16 bytes: same bucket
    assert backend._pool.idle[key].k_cache[0] is cache and backend._pool.idle[key].graph is graph
    assert torch.equal(first.tokens, eager.generate(["jazz", "rock"], **kwargs).tokens)
    assert torch.equal(second.tokens, eager.generate(["a longer prompt",
                                                      "rock"], **kwargs).tokens)
    assert second.timings["capture_s"] == 0.0            # nothing captured on a CPU
    static.generate(["x"], **kwargs)                      # another shape: another entry
    assert len(backend._pool) == 2


def test_a_step_that_cannot_be_captured_falls_back_to_eager_decoding(monkeypatch):
    """A GPU or driver that cannot capture an op: warn once, finish the generation eagerly
    (the same tokens), and decode without graphs from then on."""
    from musicgen_edu.backends import cuda_graph

    def fails_to_capture(self, body):    # as torch.cuda.graph does for an op it cannot take
        raise RuntimeError("operation not permitted when stream is capturing")

    init = cuda_graph.GraphedStep.__init__

    def on_a_gpu(self, *args, **kwargs):                 # take the capture path on a CPU
        init(self, *args, **kwargs)
        self.cuda = True

    monkeypatch.setattr(cuda_graph.GraphedStep, "_capture", fails_to_capture)
    monkeypatch.setattr(cuda_graph.GraphedStep, "__init__", on_a_gpu)
    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True)
    static = mg.MusicGenerator(model, backend=backend, progress=False)
    kwargs = dict(duration=0.5, seed=4)
    with pytest.warns(UserWarning, match="CUDA graph capture failed.*stream is capturing"):
        out = static.generate(["jazz", "rock"], **kwargs)
    eager = mg.MusicGenerator(model, progress=False).generate(["jazz", "rock"], **kwargs)
    assert torch.equal(out.tokens, eager.tokens)
    assert not backend.graphs and backend.replays == 0
    assert len(backend._pool) == 0                       # no caches kept for replays to come
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no second warning
        assert torch.equal(static.generate(["jazz", "rock"], **kwargs).tokens, eager.tokens)


def test_an_error_in_the_fixed_shape_step_is_raised_not_turned_into_a_warning(monkeypatch):
    """Only a failed capture falls back to eager decoding; a bug in the step itself stops the
    generation with its own error."""
    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True)

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch in step_static")

    monkeypatch.setattr(backend.decoder, "step_static", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="shape mismatch in step_static"):
            mg.MusicGenerator(model, backend=backend, progress=False).generate(
                ["jazz"], duration=0.5, seed=4)
    assert backend.graphs


def test_whole_decode_step_with_sampling_traces_to_one_graph():
    """The CPU-checkable half of "one launch per step": decoder step, CFG, temperature, top-k,
    top-p, the counter draw and the grid write compose into one graph with no breaks (no
    .item(), no host sync, no Python loop over the batch), with the position and the step as
    tensors, so one capture can serve every step of a generation."""
    from musicgen_edu.patterns import UNKNOWN
    from musicgen_edu.sampling import classifier_free_guidance, process_logits, sample_counter

    model = mg.load_model("debug", device="cpu")
    backend = NativeBackend(model, graphs=True)
    state = backend.start(backend.encode_text(["x", "y", None, None]), 8)
    seeds = torch.tensor([3, 4])
    column = torch.full((2, model.num_codebooks), UNKNOWN)

    def step(tokens, pos, step_no):
        logits = backend.decoder.step_static(tokens.repeat(2, 1, 1), pos, state, 8)
        guided = classifier_free_guidance(logits[:2], logits[2:], 3.0)
        processed = process_logits(guided, temperature=0.8, top_k=50, top_p=0.9)
        drawn = sample_counter(processed, seeds, step_no)                  # [B, K]
        return torch.where(column == UNKNOWN, drawn, column)

    tokens = torch.zeros(2, model.num_codebooks, 1, dtype=torch.long)
    with _one_graph(step) as (compiled, graphs), torch.no_grad():
        outs = [compiled(tokens, torch.tensor([p]), torch.tensor([p])) for p in range(4)]
        eager = step(tokens, torch.tensor([3]), torch.tensor([3]))
    assert len(graphs) == 1 and all(o.shape == (2, model.num_codebooks) for o in outs)
    assert torch.equal(outs[-1], eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU tier: needs CUDA")
def test_graphs_are_captured_once_and_replayed_on_a_gpu():
    model = mg.load_model("random-small", device="cuda", dtype="bfloat16")
    gen = mg.MusicGenerator(model, progress=False)
    first = gen.generate("lo-fi piano", duration=6.0, seed=1)      # crosses the 256 bucket
    second = gen.generate("lo-fi piano", duration=6.0, seed=1)
    assert first.timings["capture_s"] > 0 and second.timings["capture_s"] == 0
    third = gen.generate("lo-fi piano", duration=6.0, seed=1)
    # H200, torch 2.11: with cuDNN attention the three differed in 2-7 tokens after step 256
    assert torch.equal(first.tokens, second.tokens) and torch.equal(second.tokens, third.tokens)


@pytest.mark.parametrize("repeatable", [True, False])
def test_repeatable_backends_keep_attention_off_cudnn(monkeypatch, repeatable):
    """cuDNN's attention is not run-to-run exact on a GPU: a repeatable backend switches it off
    for the process before any step runs (CPU builds carry the same switch, so it is checked
    here; the GPU tier checks the tokens)."""
    import musicgen_edu.backends.native as native

    torch.backends.cuda.enable_cudnn_sdp(True)
    model = mg.load_model("debug", device="cpu")
    try:
        assert NativeBackend(model).repeatable is False       # CPU default: nothing to do
        assert torch.backends.cuda.cudnn_sdp_enabled()
        backend = NativeBackend(model, graphs=True, repeatable=repeatable)
        cond = backend.encode_text(["lo-fi piano", None])     # T5 attention: not a decoder step
        seen, sdpa = [], F.scaled_dot_product_attention

        def spy(*args, **kwargs):
            seen.append(torch.backends.cuda.cudnn_sdp_enabled())
            return sdpa(*args, **kwargs)

        monkeypatch.setattr(native.F, "scaled_dot_product_attention", spy)
        state = backend.start(cond, 8)
        for t in range(4):
            backend.step(torch.full((2, model.num_codebooks, 1), t), state)
        assert seen and set(seen) == {not repeatable}
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
