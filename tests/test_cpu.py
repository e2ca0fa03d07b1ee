"""backends/cpu.py: the machine facts every CPU speed figure is labelled with."""

import torch

import musicgen_edu as mg
from musicgen_edu.backends.cpu import ISA_FLAGS, cpu_info


def test_cpu_info_names_the_machine():
    info = cpu_info()
    assert set(info) == {"model", "capability", "flags", "threads", "family"}
    assert info["model"] and info["family"] and " " not in info["family"]
    assert set(info["flags"]) <= set(ISA_FLAGS)
    assert info["threads"] == torch.get_num_threads()
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()


def test_generation_records_the_decoder_path(gen):
    timings = gen.generate("x", duration=0.2, seed=0).timings
    assert timings["decoder"].startswith("native") and "fp32 attention" in timings["decoder"]
    plain = mg.MusicGenerator(gen.model, backend="transformers", progress=False)
    assert plain.generate("x", duration=0.2, seed=0).timings["decoder"] == "transformers"
