"""backends/cpu.py: the machine facts every CPU speed figure is labelled with, and the
decoder path chosen by timing at first use (issue #14)."""

import json
import os

import pytest
import torch

import musicgen_edu as mg
from musicgen_edu.backends import NativeBackend, layouts
from musicgen_edu.backends import cpu as cpu_module
from musicgen_edu.backends.cpu import ISA_FLAGS, CpuPath, choose_native_path, cpu_info, fastest
from musicgen_edu.backends.layouts import Layout, Weights
from musicgen_edu.backends.linears import PackedLinear, can_pack
from musicgen_edu.backends.thin import ThinLinear, can_thin


def test_cpu_info_names_the_machine():
    info = cpu_info()
    assert set(info) == {"model", "capability", "flags", "threads", "family", "limits"}
    assert info["limits"] == {k: os.environ[k] for k in cpu_module.ISA_LIMITS if os.environ.get(k)}
    assert info["model"] and info["family"] and " " not in info["family"]
    assert set(info["flags"]) <= set(ISA_FLAGS)
    assert info["threads"] == torch.get_num_threads()
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()


X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""
ARM = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
Features\t: fp asimd
"""


def test_cpuinfo_names_x86_and_arm_cores_by_model_and_flags():
    """The kernels' build cache is keyed on these: an ARM core (no "model name", no "flags")
    is named by its implementer and part numbers and keeps its Features, so a Graviton 2 and
    a Graviton 3 sharing a home folder do not share one -march=native build."""
    from musicgen_edu.backends.cpu import parse_cpuinfo

    assert parse_cpuinfo(X86, "x86_64") == (
        "AMD EPYC 9R14", ("fpu", "sse2", "avx2", "avx512f", "avx512_vnni", "avx512_bf16"))
    model, flags = parse_cpuinfo(ARM, "aarch64")
    assert model == "ARM 0x41-0xd0c" and flags[:2] == ("fp", "asimd")
    assert "asimdrdm" in flags and len(flags) == 13                      # processor 0's only
    graviton3 = ARM.replace("0xd0c", "0xd40").replace("asimdrdm", "asimdrdm sve bf16")
    assert parse_cpuinfo(graviton3, "aarch64") != (model, flags)
    assert parse_cpuinfo("", "aarch64") == ("aarch64", ())               # not Linux


def test_generation_records_the_decoder_path(gen):
    timings = gen.generate("x", duration=0.2, seed=0).timings
    assert timings["decoder"].startswith("native") and "fp32 attention" in timings["decoder"]
    plain = mg.MusicGenerator(gen.model, backend="transformers", progress=False)
    assert plain.generate("x", duration=0.2, seed=0).timings["decoder"] == "transformers"


def _fake_clock_candidates(costs: dict[str, float]):
    """Candidates that advance a fake clock by their cost: timing without real time."""
    now = [0.0]
    calls = {name: 0 for name in costs}

    def make(name):
        def run():
            calls[name] += 1
            now[0] += costs[name]
        return run
    return {name: make(name) for name in costs}, (lambda: now[0]), calls


def test_fastest_takes_the_smallest_median_and_times_each_candidate_alike():
    candidates, clock, calls = _fake_clock_candidates({"a": 0.030, "b": 0.010, "c": 0.020})
    best, medians = fastest(candidates, repeats=4, clock=clock)
    assert best == "b" and medians == pytest.approx({"a": 0.030, "b": 0.010, "c": 0.020})
    assert calls == {"a": 5, "b": 5, "c": 5}                  # one warm-up + 4 timed each


def test_fastest_keeps_the_default_unless_clearly_beaten():
    candidates, clock, _ = _fake_clock_candidates({"default": 0.100, "other": 0.090})
    assert fastest(candidates, clock=clock, prefer="default")[0] == "default"  # 10 %: noise
    candidates, clock, _ = _fake_clock_candidates({"default": 0.100, "other": 0.080})
    assert fastest(candidates, clock=clock, prefer="default")[0] == "other"    # 20 %: a win


def _needs_packing(model):
    if not can_pack(NativeBackend(model, pack=False).decoder):
        pytest.skip("this torch build or CPU cannot pack weights for oneDNN")


@pytest.fixture
def fresh_choices(monkeypatch, tmp_path):
    """No choice in this process or on this machine yet (the saved file lives in tmp_path)."""
    monkeypatch.setattr(cpu_module, "CHOICES", {})
    monkeypatch.setattr(cpu_module, "choices_file", lambda: tmp_path / "cpu_paths.json")
    return tmp_path / "cpu_paths.json"


def test_the_native_backend_times_its_path_once_per_machine(monkeypatch, fresh_choices):
    model = mg.load_model("debug", device="cpu")
    _needs_packing(model)
    model.extra.pop("native_decoders", None)
    first = NativeBackend(model)
    assert first.choice["timed"] and set(first.choice["ms_per_step"]) == {
        "packed weights, float32 attention", "plain weights, float32 attention"}  # tiny: no
    # thin candidate (our kernels are timed for decoders of layouts.THIN_MIN_BYTES or more)
    assert all(ms > 0 for ms in first.choice["ms_per_step"].values())
    assert "chosen by timing on this CPU" in first.path
    assert ("oneDNN-packed weights" in first.path) == (first.choice["weights"] == "packed")
    second = NativeBackend(model)                        # the same process: no timing again
    assert not second.choice["timed"] and second.decoder is first.decoder
    assert len(cpu_module.CHOICES) == 1
    monkeypatch.setattr(cpu_module, "CHOICES", {})      # a new process on the same machine
    third = NativeBackend(model)
    assert not third.choice["timed"] and third.choice["weights"] == first.choice["weights"]
    fresh_choices.write_text("{ damaged")               # unreadable: time again, save again
    monkeypatch.setattr(cpu_module, "CHOICES", {})
    assert NativeBackend(model).choice["timed"] and '"weights"' in fresh_choices.read_text()


def test_a_choice_is_not_reused_under_other_isa_limits(monkeypatch, fresh_choices):
    """A machine's saved choice holds for the instructions it was timed with: run as an older
    CPU (oneDNN capped, say), the same machine times its paths again and keeps both."""
    model = mg.load_model("debug", device="cpu")
    _needs_packing(model)                                  # (two candidates to time)
    model.extra.pop("native_decoders", None)
    limits = {}
    monkeypatch.setattr(cpu_module, "cpu_info", lambda: {**cpu_info(), "limits": limits})
    assert NativeBackend(model, pack=None).choice["timed"]
    monkeypatch.setattr(cpu_module, "CHOICES", {})                  # a new process
    assert not NativeBackend(model, pack=None).choice["timed"]
    limits["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    monkeypatch.setattr(cpu_module, "CHOICES", {})
    assert NativeBackend(model, pack=None).choice["timed"]
    assert len(json.loads(fresh_choices.read_text())) == 2
    assert any("ONEDNN_MAX_CPU_ISA=AVX2" in key for key in json.loads(fresh_choices.read_text()))


def test_the_first_saved_choice_wins(fresh_choices):
    """Two processes timing at once must agree: the second adopts the first one's choice."""
    import json

    assert cpu_module._save_choice("k", {"weights": "plain", "attention": "float32"})["weights"] \
        == "plain"
    assert cpu_module._save_choice("k", {"weights": "packed", "attention": "float32"})["weights"] \
        == "plain"
    assert json.loads(fresh_choices.read_text())["k"]["weights"] == "plain"
    assert {p.name for p in fresh_choices.parent.iterdir()} == {"cpu_paths.json",
                                                                "cpu_paths.json.lock"}  # atomic


def _save_in_a_process(path, name, results):
    os.environ["MUSICGEN_CPU_PATHS"] = str(path)
    results.put(cpu_module._save_choice("key", {"weights": name, "attention": "float32"})["weights"])


def test_processes_saving_at_once_all_take_the_same_choice(tmp_path):
    """Ray workers start together: under the file lock every one adopts the first saved."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    path = tmp_path / "cpu_paths.json"
    workers = [context.Process(target=_save_in_a_process, args=(path, f"layout{i}", results))
               for i in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    chosen = [results.get(timeout=10) for _ in workers]
    assert len(set(chosen)) == 1 and chosen[0].startswith("layout")


@pytest.mark.parametrize("entry", [{}, {"weights": "int8", "attention": "float32"},
                                   {"weights": "plain", "attention": "bogus"}, "not a dict"])
def test_a_saved_choice_that_names_no_candidate_is_timed_again(fresh_choices, entry):
    """An older version or a hand edit may leave anything in the file: never trust it blindly."""
    import json

    model = mg.load_model("debug", device="cpu")
    _needs_packing(model)
    backend = NativeBackend(model, pack=False)
    decoders = {Layout(Weights.PACKED): lambda: NativeBackend(model, pack=True).decoder,
                Layout(Weights.PLAIN): lambda: backend.decoder}
    names = {"packed", "plain"}                                     # as the JSON file has them
    first = choose_native_path(backend, decoders)                  # saves a valid entry
    (key,) = json.loads(fresh_choices.read_text())
    fresh_choices.write_text(json.dumps({key: entry}))
    cpu_module.CHOICES.clear()                                      # a new process
    again = choose_native_path(backend, decoders)
    assert again["timed"] and again["weights"] in names and again["attention"] == "float32"
    assert json.loads(fresh_choices.read_text())[key]["weights"] in names   # healed
    assert first["weights"] in names


def test_timing_leaves_the_global_random_state_alone(fresh_choices):
    model = mg.load_model("debug", device="cpu")
    _needs_packing(model)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    NativeBackend(model)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("weights", ["plain", "packed", "thin"])
def test_the_chosen_path_is_the_one_that_runs(monkeypatch, fresh_choices, weights):
    """The choice decides the decoder; a packed copy built only to lose is dropped (memory)."""
    model = mg.load_model("debug", device="cpu", dtype="bfloat16")
    _needs_packing(model)
    model.extra.pop("native_decoders", None)
    probe = NativeBackend(model, pack=False)
    if weights == "thin" and not can_thin(probe.decoder):
        pytest.skip("thin_linear.cpp cannot be built here")
    monkeypatch.setattr(layouts, "THIN_MIN_BYTES", 0)  # our kernels a candidate for a tiny model
    with monkeypatch.context() as m:                     # record a choice without timing
        m.setattr(cpu_module, "fastest",
                  lambda c, **k: (CpuPath(Layout(Weights(weights)), "bfloat16"),
                                  dict.fromkeys(c, 1.0)))
        model.extra.pop("native_decoders", None)
        backend = NativeBackend(model)
    assert backend.choice["weights"] == weights and backend.attention_dtype == torch.bfloat16
    assert isinstance(backend.decoder.layers[0].fc1, PackedLinear) == (weights == "packed")
    assert isinstance(backend.decoder.layers[0].fc1, ThinLinear) == (weights == "thin")
    for layout in ("packed", "thin"):                  # the loser's copy is gone
        assert (Layout(Weights(layout)) in model.extra["native_decoders"]) == (weights == layout)
    state = backend.start(backend.encode_text(["x", None]), 4)
    assert state.k_cache[0].dtype == torch.bfloat16 and "bf16 attention" in backend.path
    gen = mg.MusicGenerator(model, backend=backend, progress=False)
    forced = NativeBackend(model, pack={"plain": False, "packed": True, "thin": "thin"}[weights])
    forced.attention_dtype = torch.bfloat16
    same = mg.MusicGenerator(model, backend=forced, progress=False)
    assert torch.equal(gen.generate("x", duration=0.3, seed=2).tokens,
                       same.generate("x", duration=0.3, seed=2).tokens)
    assert probe.choice is None                          # pack=False: no timing


def test_choose_native_path_leaves_the_backend_as_it_found_it(fresh_choices):
    model = mg.load_model("debug", device="cpu", dtype="bfloat16")
    backend = NativeBackend(model, pack=False, graphs=True)
    decoder, attention = backend.decoder, backend.attention_dtype
    choice = choose_native_path(backend, {Layout(): lambda: decoder})
    assert choice["weights"] == "plain" and choice["timed"]
    assert backend.graphs and backend.decoder is decoder and backend.attention_dtype == attention
