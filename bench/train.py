"""Training-step benchmark: our fine-tuning update vs transformers' ``forward(labels=...)`` update.

For each model (``debug``; ``random-small``: the musicgen-small architecture with random
weights), mode (full fine-tuning, LoRA rank 16) and batch size (1, 2, 4, 8), both updates run
in ONE process, in turns, on the same weights and the same random token windows:

    ours          musicgen_edu.train: caption states cached (T5 is frozen), the delayed grid,
                  transformers' decoder, one cross-entropy per codebook, AdamW step
    transformers  MusicgenForConditionalGeneration.forward(input_ids, attention_mask,
                  decoder_input_ids, labels): the same delayed inputs and labels, T5 run
                  every step, its own loss; AdamW step

Reported: updates/s, windows/s, the ratio ours / transformers, peak memory of the
configuration (its own process: model copy, optimizer state, activations), and the share of
the physical bound: model FLOPs per update (6 x decoder parameters x positions for full
fine-tuning, 4 x for LoRA, whose frozen weights get no weight gradient; attention's quadratic
term and T5 left out) over the time, against this machine's measured large-GEMM rate.

    python bench/train.py                               # CPU: both models, batches 1 2 4 8
    PYTHONPATH=. python bench/train.py --window 10      # on a GPU (bf16 autocast)

Writes ``bench/results/train_<machine>.csv`` and ``.md``. Time nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import threading
import time
from pathlib import Path

import torch

import musicgen_edu as mg
from musicgen_edu.train.lora import prepare_trainable, trainable_parameters
from musicgen_edu.train.objective import CaptionEncoder, delayed_inputs, training_step

try:                                    # run as a script (python bench/train.py)
    from decode import machine_name
except ImportError:                     # imported as bench.train
    from bench.decode import machine_name

CAPTION = "lo-fi hip hop beat with warm keys"


def gemm_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """This machine's large-matrix-product rate: the compute bound a training step can reach."""
    n = 2048 if device.type == "cpu" else 8192
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory during a ``with`` block, above the level at entry: CUDA's allocator peak,
    or on a CPU the process's resident set sampled every 5 ms."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        proc, self._stop = psutil.Process(), threading.Event()
        self._base = proc.memory_info().rss

        def sample():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, (proc.memory_info().rss - self._base) / 2**20)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def setup(name: str, device: str, lora: bool):
    base = mg.load_model(name, device=device, dtype="float32")
    model = dataclasses.replace(base, model=copy.deepcopy(base.model), extra={})
    torch.manual_seed(0)
    prepare_trainable(model, lora, rank=16, alpha=32)
    model.model.decoder.train()
    params = trainable_parameters(model)
    return model, params, torch.optim.AdamW(params.values(), lr=1e-5)


def updates(model, params, optimizer, tokens, autocast):
    """The two updates, as closures over the same model, data and optimizer."""
    captions = CaptionEncoder(model)
    texts = [CAPTION] * len(tokens)
    inputs, targets, _ = delayed_inputs(tokens, model.special_token, model.audio_channels)
    flat = inputs.reshape(-1, inputs.shape[-1])                    # [B * K, S + D]
    text = model.tokenizer(texts, return_tensors="pt").to(model.device)

    def ours():
        with autocast():
            loss = training_step(model, captions, tokens, texts).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def theirs():
        with autocast():
            loss = model.model(**text, decoder_input_ids=flat,
                               labels=targets.transpose(1, 2)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"ours": ours, "transformers": theirs}


def run(name: str, lora: bool, batch: int, window: float, repeats: int, device: str,
        bound: float) -> list[dict]:
    """One configuration: both updates timed in turns; memory peak over setup and updates
    (the model copy, optimizer state and activations), above the level before setup."""
    dev = mg.resolve_device(device)
    with PeakMemory(dev) as mem:
        model, params, optimizer = setup(name, device, lora)
        frames = round(window * model.frame_rate)
        tokens = torch.randint(0, 2048, (batch, model.num_codebooks, frames),
                               generator=torch.Generator().manual_seed(batch)).to(dev)
        bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else \
            (lambda: torch.autocast("cpu", enabled=False))
        steps = updates(model, params, optimizer, tokens, autocast)
        for fn in steps.values():                        # warm-up: allocator, kernels, states
            fn()
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(repeats):                         # in turns: drift hits both alike
            for impl, fn in steps.items():
                sync(dev)
                start = time.perf_counter()
                fn()
                sync(dev)
                times[impl].append(time.perf_counter() - start)
    decoder = sum(p.numel() for n, p in model.model.decoder.named_parameters()
                  if "lora_" not in n and "embed" not in n)
    positions = batch * (frames + max(mg.codebook_delays(model.num_codebooks)))
    flops = (4 if lora else 6) * decoder * positions
    rows = []
    for impl, ts in times.items():
        t = sorted(ts)[len(ts) // 2]
        rows.append(dict(model=name, mode="lora" if lora else "full", batch=batch,
                         window_s=window, impl=impl, updates_per_s=1 / t, windows_per_s=batch / t,
                         peak_mb=mem.peak_mb, tflops=flops / t / 1e12,
                         bound_share=flops / t / 1e12 / bound,
                         trainable=sum(p.numel() for p in params.values())))
    return rows


def run_apart(*args) -> list[dict]:
    """:func:`run` in a fresh process, so one configuration's memory does not hide the next's
    (a CPU process rarely gives freed memory back)."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict], machine: str, bound: float) -> str:
    head = (f"## Training updates on {machine}\n\nLarge-GEMM bound measured in the same run: "
            f"{bound:.2f} TFLOP/s. Median of the timed updates; ours and transformers in turns.\n\n"
            "| model | mode | batch | window s | trainable | ours updates/s | transformers "
            "updates/s | ours / transformers | peak MB | ours TFLOP/s | share of bound |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for i in range(0, len(rows), 2):
        o, t = rows[i], rows[i + 1]
        lines.append(f"| {o['model']} | {o['mode']} | {o['batch']} | {o['window_s']:g} | "
                     f"{o['trainable'] / 1e6:.2f} M | {o['updates_per_s']:.2f} | "
                     f"{t['updates_per_s']:.2f} | {o['updates_per_s'] / t['updates_per_s']:.2f}x"
                     f" | {o['peak_mb']:.0f} | {o['tflops']:.3f} | {o['bound_share']:.0%} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["debug", "random-small"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["full", "lora"])
    parser.add_argument("--window", type=float, default=None,
                        help="seconds per window (default: 5 for debug, 1 for random-small on a "
                             "CPU, 10 on a GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--one", help=argparse.SUPPRESS)   # internal: one run() as JSON
    args = parser.parse_args()
    if args.one:
        import json

        print(json.dumps(run(*json.loads(args.one))))
        return
    device = mg.resolve_device(args.device)
    bound = gemm_tflops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    rows = []
    for name in args.models:
        window = args.window or (10.0 if device.type == "cuda" else
                                 5.0 if name.startswith("debug") else 1.0)
        for mode in args.modes:
            for batch in args.batches:
                rows += run_apart(name, mode == "lora", batch, window, args.repeats, str(device),
                                  bound)
                o, t = rows[-2], rows[-1]
                print(f"{name} {mode} B={batch}: ours {o['updates_per_s']:.2f}/s, transformers "
                      f"{t['updates_per_s']:.2f}/s, {o['bound_share']:.0%} of bound", flush=True)
    import pandas as pd

    machine = machine_name()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"train_{machine}.csv", index=False)
    (out / f"train_{machine}.md").write_text(table(rows, machine, bound), encoding="utf-8")
    print(table(rows, machine, bound))


if __name__ == "__main__":
    main()
