"""Where a GPU decode step goes (issue #13, items 4-6): kernels per step and time per step for
the ways the native decoder can run a one-token step on CUDA.

- ``eager``: the ordinary (dynamic-shape) step launched op by op from Python (``graphs`` off;
  fused q/k/v and heads, as the graph);
- ``graph``: the same step (and the draw) replayed as one CUDA graph (the default), with q/k/v
  and the codebook heads as one product each (``backends/fusion.py``);
- ``unfused``: the same graph with three q/k/v products per block and one per head;
- ``inductor``: the step body compiled by Inductor (``torch.compile``, which fuses norms,
  residuals, GELU and picks its own GEMM kernels), captured inside the same graph.

Each runs a bf16 batch-1 generation of ``--seconds`` (CFG 3, top-k 250: two decoder rows),
after a warm-up of the same shape, then a ``torch.profiler`` pass that counts the CUDA kernels
of the decode loop per step (CUPTI records the kernels a replayed graph runs). Prints one table
and writes ``gpu_profile.md`` to ``--out``.

    PYTHONPATH=. python bench/gpu_profile.py --out bench/results/gpu   (needs CUDA)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import musicgen_edu as mg
from musicgen_edu.backends import NativeBackend


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def kernels_per_step(gen, prompt: str, seconds: float) -> tuple[float, dict]:
    """Profile one generation; CUDA kernels per decode step, and the top kernel families."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        out = gen.generate(prompt, duration=seconds, seed=0)
        sync()
    steps = out.timings["steps"]
    kinds: dict[str, int] = {}
    total = 0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total += 1
            name = event.name.lower()
            kind = ("gemm" if any(w in name for w in ("gemm", "cutlass", "sm90", "matmul", "xmma"))
                    else "attention" if any(w in name for w in ("flash", "attention", "fmha"))
                    else "triton" if "triton" in name
                    else "index" if any(w in name for w in ("index", "gather", "scatter", "copy"))
                    else "other")
            kinds[kind] = kinds.get(kind, 0) + 1
    return total / steps, {k: round(v / steps, 1) for k, v in sorted(kinds.items())}


def time_per_step(gen, prompt: str, seconds: float, runs: int = 3) -> tuple[float, float]:
    """Best of ``runs``: milliseconds per decode step (loop alone) and end-to-end seconds."""
    best_ms, best_total = float("inf"), float("inf")
    for _ in range(runs):
        sync()
        out = gen.generate(prompt, duration=seconds, seed=0)
        best_ms = min(best_ms, 1000 / out.timings["steps_per_s"])
        best_total = min(best_total, out.timings["total_s"])
    return best_ms, best_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="random-small")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--modes", nargs="+", default=["graph", "unfused", "inductor", "eager"])
    parser.add_argument("--out", default="bench/results/gpu")
    args = parser.parse_args()
    prompt, rows = "80s synth pop with a driving bassline", []
    for mode in args.modes:
        model = mg.load_model(args.model, dtype="bfloat16")
        gen = mg.MusicGenerator(model, progress=False, backend=(
            NativeBackend(model, fuse=False) if mode == "unfused" else "native"))
        backend = gen.backend
        if mode == "eager":
            backend.graphs = False
        if mode == "inductor":
            decoder = backend.decoder
            decoder.step_static = torch.compile(decoder.step_static, dynamic=False)
        start = time.perf_counter()
        gen.generate(prompt, duration=args.seconds, seed=0)        # warm-up (+ capture/compile)
        warm_s = time.perf_counter() - start
        ms, total = time_per_step(gen, prompt, args.seconds, runs=1 if mode == "eager" else 3)
        per_step, kinds = kernels_per_step(gen, prompt, args.seconds)
        tokens = gen.generate(prompt, duration=args.seconds, seed=0).tokens
        rows.append(dict(mode=mode, graphs=backend.graphs, ms_per_step=round(ms, 3),
                         end_to_end_s=round(total, 3),
                         first_run_s=round(warm_s, 1), kernels_per_step=round(per_step, 1),
                         kernel_kinds=kinds, tokens=tokens))
        print({k: v for k, v in rows[-1].items() if k != "tokens"}, flush=True)
        del gen, backend, model
        mg.clear_model_cache()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        write_table(rows, args)                  # after every mode: a timeout keeps the rest


def write_table(rows: list[dict], args) -> None:
    """``gpu_profile.md`` in ``--out``: one row per mode so far, tokens compared to the first."""
    ref = rows[0]["tokens"]
    table = [{**{k: v for k, v in row.items() if k != "tokens"},
              "token_agreement_vs_" + rows[0]["mode"]: round(float((row["tokens"] == ref)
                                                                   .float().mean()), 3)}
             for row in rows]
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    lines = [f"# One decode step on {name}: CUDA graph (fused, unfused) vs Inductor vs eager\n",
             f"{args.model}, bf16, batch 1 (2 rows with CFG 3), top-k 250, {args.seconds} s, "
             f"torch {torch.__version__}; `python bench/gpu_profile.py`. ms_per_step is the "
             "decoder loop alone (best of 3; eager: 1 run); kernels_per_step counts CUDA kernels of a whole "
             "profiled generation (T5 and EnCodec included) over its decode steps.\n",
             "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in table]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
