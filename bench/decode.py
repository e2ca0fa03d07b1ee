"""Side-by-side decoding benchmark: transformers `generate` vs the native decoder.

Runs in ONE process on the same random weights of the real MusicGen architecture
(``random-small``; ``--model random-medium`` if memory allows), classifier-free guidance on,
sampling with top-k 250, and reports for each implementation and precision: decoder steps/s,
real-time factor (wall time / audio seconds, text to waveform), peak memory, the speed ratio to
transformers fp32 in the same run, and how far reduced precision moves the result (token
agreement and waveform SNR against the same implementation in fp32, same seed). Also the
time to first audio of ``MusicGenerator.stream`` on both backends.

    python bench/decode.py                          # batch 1 and 8 at 10 s, batch 1 at 30 s
    python bench/decode.py --configs 1x10 32x10     # batch x seconds (GPU: run with PYTHONPATH=.)

Implementations: ``transformers`` (HF ``generate``, the reference), ``native`` (our decoder with
its device-specific speed-ups: on a CPU the weight layout and kernels timed at first use —
oneDNN-packed, plain or our own ``thin_linear.cpp``; CUDA graphs on a GPU),
``native-plain`` (the same decoder without them, to show what they add; first configuration
only), ``native-int8`` (weight-only int8) and ``native-int8-act`` (int8 activations too, on
the quantized CPU engine: opt-in, not batch-invariant), and ``audiocraft`` (audiocraft 1.3.0's
own ``MusicGen.generate`` on the same weights converted to its format, same settings; run it
from the venv ``musicgen-edu install-audiocraft`` set up, e.g. ``make test-audiocraft``'s:
``.venv-audiocraft/bin/python bench/decode.py --impls transformers native audiocraft
--precisions float32``; writes ``decode_audiocraft_<machine>``).

Writes ``bench/results/decode_<machine>.csv`` and ``.md``. Time nothing else meanwhile: on a
2-core machine a second process halves the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

import musicgen_edu as mg
from musicgen_edu.backends import NativeBackend
from musicgen_edu.backends.cpu import ISA_FLAGS

PROMPT = "80s synth pop with a driving bass line"


def machine_name() -> str:
    """The card's name on a GPU; on a CPU its family, ISA and threads (one table per CPU)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name().replace(" ", "-")
    from musicgen_edu.backends.cpu import cpu_info

    info = cpu_info()
    isa = info["capability"]              # torch's dispatch ISA (ATEN_CPU_CAPABILITY may cap it)
    if isa.startswith("AVX512") and not info["limits"]:
        isa = "AMX" if "amx_bf16" in info["flags"] else \
            "AVX512-BF16" if "avx512_bf16" in info["flags"] else isa
    limited = "-as" if info["limits"] else ""     # a CPU run as an older one (ISA_LIMITS)
    return f"{info['family']}{limited}-{isa}-{info['threads']}threads".replace(" ", "-")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def reset_peak():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def pytorch_attention_defaults():
    """Every attention kernel allowed, as PyTorch ships: a native backend on CUDA switches
    cuDNN's off for the process (repeatable tokens), which must not slow the reference down."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH])


def run_transformers(model, batch, frames, seed):
    """transformers' own `generate` (the reference): returns (wav [B, C, T], tokens, seconds)."""
    net, captured = model.model, []
    decode = net.audio_encoder.decode

    def record(codes, *args, **kwargs):
        captured.append(codes)
        return decode(codes, *args, **kwargs)

    inputs = model.tokenizer([PROMPT] * batch, padding=True, return_tensors="pt").to(model.device)
    net.audio_encoder.decode = record
    try:
        torch.manual_seed(seed)
        sync()
        start = time.perf_counter()
        with pytorch_attention_defaults():
            wav = net.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0,
                               max_new_tokens=frames + model.num_codebooks - 1)
        sync()
        seconds = time.perf_counter() - start
    finally:
        net.audio_encoder.decode = decode
    return wav.float().cpu(), captured[0][0].cpu(), seconds


AUDIOCRAFT: dict = {}


def run_audiocraft(model, batch, frames, seed):
    """audiocraft's own ``MusicGen.generate`` on the same weights, converted to its format
    (``musicgen-edu install-audiocraft``; the T5 registered as backends/audiocraft.py does):
    returns (wav [B, C, T], tokens, seconds)."""
    from audiocraft.models import MusicGen

    from musicgen_edu.backends.audiocraft import local_t5

    if id(model) not in AUDIOCRAFT:
        folder = Path(tempfile.mkdtemp(prefix="bench-audiocraft-"))
        with local_t5(folder / "t5", model.model.config.text_encoder.d_model) as t5_name:
            mg.to_audiocraft(model, folder, t5_name=t5_name)
            AUDIOCRAFT[id(model)] = MusicGen.get_pretrained(str(folder), device=str(model.device))
    ac = AUDIOCRAFT[id(model)]
    ac.set_generation_params(use_sampling=True, top_k=250, cfg_coef=3.0,
                             duration=frames / model.frame_rate)
    torch.manual_seed(seed)
    sync()
    start = time.perf_counter()
    wav, tokens = ac.generate([PROMPT] * batch, return_tokens=True)
    sync()
    return wav.float().cpu(), tokens.cpu(), time.perf_counter() - start


GENERATORS: dict = {}


def run_ours(model, backend, batch, frames, seed):
    key = (id(model), backend)  # build a backend once (int8 quantisation is not free)
    if key not in GENERATORS:
        if backend == "native-plain":  # no packed CPU weights, no CUDA graphs
            backend = NativeBackend(model, pack=False, graphs=False)
        elif backend == "native-int8-act":  # int8 activations too (opt-in: not batch-invariant)
            backend = NativeBackend(model, int8=True, pack=True)
        GENERATORS[key] = mg.MusicGenerator(model, backend=backend, progress=False)
    gen = GENERATORS[key]
    sync()
    start = time.perf_counter()
    out = gen.generate([PROMPT] * batch, duration=frames / model.frame_rate, seed=seed)
    sync()
    run_ours.loop_steps_per_s = out.timings["steps_per_s"]
    run_ours.path = out.timings["decoder"]       # the path the backend took (chosen by timing)
    return out.wav, out.tokens, time.perf_counter() - start


def first_audio_seconds(model, backend, frames) -> float:
    gen = GENERATORS.get((id(model), backend)) or mg.MusicGenerator(model, backend=backend,
                                                                    progress=False)
    start = time.perf_counter()
    with pytorch_attention_defaults() if backend == "transformers" else contextlib.nullcontext():
        next(iter(gen.stream(PROMPT, duration=frames / model.frame_rate, seed=0,
                             chunk_seconds=1.0)))
    sync()
    return time.perf_counter() - start


def bandwidth_now(device) -> float:
    """Copy bandwidth in GB/s now: the median of three measurements of 256 MiB copies."""
    return sorted(mg.measure_bandwidth(device) for _ in range(3))[1]


def snr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    noise = (ref - test).pow(2).mean()
    return float(10 * torch.log10(ref.pow(2).mean() / noise.clamp_min(1e-20)))


def markdown(table) -> str:
    """A pipe table (no extra dependency)."""
    cols = list(table.columns)
    cells = [["" if v != v or v is None else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="random-small")
    parser.add_argument("--configs", nargs="+", default=["1x10", "8x10", "1x30"],
                        help="runs as BATCHxSECONDS")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--impls", nargs="+",
                        default=["transformers", "native", "native-plain", "native-int8"],
                        help="transformers = HF generate; ours-transformers = our loop on HF "
                             "modules; native-int8 (weight-only) and native-int8-act (int8 "
                             "activations too, CPU) run in reduced precisions only")
    parser.add_argument("--reference-precisions", nargs="+", default=None,
                        help="run transformers only in these precisions (default: all of "
                             "--precisions); its bf16 is slow on a GPU and not the baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    configs = [(int(b), float(d)) for b, d in (c.split("x") for c in args.configs)]
    import pandas as pd

    machine, rows, reference = machine_name(), [], {}

    def runs_reference(precision: str) -> bool:       # does transformers run in this precision?
        return precision in (args.reference_precisions or [precision])

    print(f"machine: {machine} | torch {torch.__version__} | model {args.model}")
    for precision in args.precisions:
        model = mg.load_model(args.model, dtype=precision)
        for impl in args.impls:
            if impl.startswith("native-int8") and precision == "float32":
                continue  # int8 weights with fp32 activations have no fast kernel: not a use case
            if impl in ("transformers", "audiocraft") and not runs_reference(precision):
                continue
            if impl == "audiocraft" and precision != "float32":
                continue   # audiocraft's generate runs its weights as they are loaded: fp32
            runner = ((lambda b, f, m=model: run_transformers(m, b, f, args.seed))
                      if impl == "transformers" else
                      (lambda b, f, m=model: run_audiocraft(m, b, f, args.seed))
                      if impl == "audiocraft" else
                      (lambda b, f, m=model, be=impl.replace("ours-", ""):
                       run_ours(m, be, b, f, args.seed)))
            runner(1, 8)  # warm-up: kernels, allocator, lazy init
            for batch, duration in configs[:1] if impl == "native-plain" else configs:
                frames = round(duration * model.frame_rate)
                reset_peak()
                wav, tokens, seconds = runner(batch, frames)
                steps = frames + model.num_codebooks - 1
                row = dict(machine=machine, impl=impl, precision=precision, batch=batch,
                           duration_s=duration, steps=steps, seconds=round(seconds, 3),
                           steps_per_s=round(steps / seconds, 2),
                           rtf=round(seconds / duration, 3),
                           peak_mem_mb=round(peak_memory_mb()))
                if impl not in ("transformers", "audiocraft"):  # our loop alone (no T5, EnCodec)
                    row["loop_steps_per_s"] = round(run_ours.loop_steps_per_s, 2)
                    row["decoder"] = run_ours.path
                    # the memory-bandwidth bound, measured right after the run (a shared
                    # machine's bandwidth drifts by 30 % within a day), mean cache length
                    bound = mg.decode_bound(GENERATORS[(id(model), impl.replace("ours-", ""))],
                                            batch_size=batch, cache_len=steps // 2,
                                            bandwidth_gbs=bandwidth_now(model.device))
                    row["bandwidth_gbs"] = round(bound["bandwidth_gbs"], 1)
                    row["bound_steps_per_s"] = round(bound["bound_steps_per_s"], 1)
                    row["pct_of_bound"] = round(100 * run_ours.loop_steps_per_s
                                                / bound["bound_steps_per_s"], 1)
                key = (impl, batch, duration)
                if precision == "float32":
                    reference[key] = (wav, tokens)
                elif impl.startswith("native-int8"):
                    key = ("native", batch, duration)
                if precision != "float32" and key in reference:  # same seed, lower precision
                    ref_wav, ref_tokens = reference[key]
                    row["token_agreement"] = round(float((tokens == ref_tokens).float().mean()), 3)
                    row["snr_db_vs_fp32"] = round(snr_db(ref_wav, wav), 1)
                rows.append(row)
                print(row, flush=True)
        for impl in ("transformers", "native")[0 if runs_reference(precision) else 1:]:
            rows.append(dict(machine=machine, impl=f"stream:{impl}", precision=precision, batch=1,
                             duration_s=configs[0][1],
                             first_audio_s=round(first_audio_seconds(model, impl, round(
                                 configs[0][1] * model.frame_rate)), 3)))
            print(rows[-1], flush=True)
        mg.clear_model_cache()
        GENERATORS.clear()
        del model
        gc.collect()
    table = pd.DataFrame(rows)
    base = table[(table.impl == "transformers") & (table.precision == "float32")]
    speed = {(r.batch, r.duration_s): r.steps_per_s for r in base.itertuples()}
    table["x_vs_transformers_fp32"] = [
        round(r.steps_per_s / speed[(r.batch, r.duration_s)], 2)
        if isinstance(r.steps_per_s, float) and (r.batch, r.duration_s) in speed else None
        for r in table.itertuples()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # with audiocraft (its own venv: make test-audiocraft's) a table of its own
    stem = out / f"decode_{'audiocraft_' if 'audiocraft' in args.impls else ''}{machine}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    cpu = ""
    if not torch.cuda.is_available():
        from musicgen_edu.backends.cpu import cpu_info

        info = cpu_info()
        cpu = (f"CPU `{info['model']}`, torch dispatch {info['capability']}, flags "
               f"{', '.join(info['flags']) or 'none of ' + ', '.join(ISA_FLAGS)}"
               + ("; run as an older CPU with " + ", ".join(
                   f"`{k}={v}`" for k, v in info["limits"].items()) if info["limits"] else "")
               + "; ")
    header = (f"# Decoding benchmark: {args.model}, CFG 3, top-k 250\n\n{cpu}Machine: `{machine}`, "
              f"torch {torch.__version__}, python {platform.python_version()}, run "
              f"{time.strftime('%Y-%m-%d')}. Generated by `python bench/decode.py "
              f"--configs {' '.join(args.configs)} --impls {' '.join(args.impls)}"
              + (f" --reference-precisions {' '.join(args.reference_precisions)}"
                 if args.reference_precisions else "") + "`.\n\n"
              "Columns: `steps_per_s` and `rtf` are end to end (text encoding, decoder loop, "
              "EnCodec decode); `loop_steps_per_s` is our decoder loop alone; "
              "`x_vs_transformers_fp32` compares end-to-end steps/s with transformers' "
              "`generate` in fp32 in the same run; `token_agreement` / `snr_db_vs_fp32` compare "
              "the same seed with the same implementation in fp32 (int8: with native fp32); "
              "`decoder` is the path our backend ran (`Generation.timings[\"decoder\"]`: on a CPU "
              "chosen by timing at first use); `peak_mem_mb` is CUDA max allocated on a GPU and "
              "the process's peak RSS so far "
              "on a CPU; `first_audio_s` is the time to the first chunk of `stream()`; "
              "`bandwidth_gbs` is `mg.measure_bandwidth()` right after the run (median of 3), "
              "`bound_steps_per_s` what `mg.decode_bound` makes of it for this backend's weights "
              "and the mean cache length, `pct_of_bound` the loop's share of that bound.\n\n")
    stem.with_suffix(".md").write_text(header + markdown(table) + "\n")
    print(markdown(table))


if __name__ == "__main__":
    main()
