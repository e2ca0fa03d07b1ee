"""The training loop learns, resumes exactly after SIGKILL, and leaves a model that loads."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import musicgen_edu as mg
from musicgen_edu.errors import ConfigError
from musicgen_edu.train import TrainConfig, Trainer, write_dataset

SR = 32000
ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = ["warm analog bass", "glassy bells", "dusty vinyl piano", "bright brass stabs",
            "soft flute", "punchy kick drum loop", "airy choir pads", "nervous string ostinato"]


def clips(n: int = 8, seconds: float = 1.0) -> list[np.ndarray]:
    """n clips the debug model cannot know: a square-wave arpeggio note, one pitch per clip."""
    t = np.arange(int(seconds * SR)) / SR
    return [(0.5 * np.sign(np.sin(2 * np.pi * 110 * 2 ** (i / 4) * t))
             * np.exp(-3 * (t % 0.25))).astype(np.float32)[None] for i in range(n)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("clips"), clips(), SR,
                         CAPTIONS)


def small(**changes) -> TrainConfig:
    base = dict(steps=20, batch_size=4, learning_rate=3e-3, warmup_steps=2, window=1.0, hop=1.0,
                checkpoint_every=5, sample_seconds=0.2, seed=3)
    return TrainConfig(**{**base, **changes})


def test_it_learns_eight_clips_and_generates_them_back(folder, tmp_path):
    """From near chance to >= 95 % teacher-forced accuracy on every codebook within 200 CPU
    updates; then greedy decoding from a training caption gives that clip's tokens."""
    config = small(steps=200, batch_size=8, warmup_steps=10, caption_dropout=0.0,
                   learning_rate=5e-3, checkpoint_every=200)
    trainer = Trainer("debug", folder, tmp_path / "run", config, progress=False)
    before = trainer.evaluate()
    assert all(before[f"accuracy_{k}"] < 0.02 for k in range(4)), before
    result = trainer.fit()
    after = trainer.evaluate()
    assert all(after[f"accuracy_{k}"] >= 0.95 for k in range(4)), after
    assert after["loss"] < before["loss"] / 10
    generator = mg.MusicGenerator(str(result.model_dir), device="cpu")
    out = generator.generate(trainer.data.captions, duration=1.0, use_sampling=False,
                             guidance_scale=1.0, progress=False)
    agree = [(out.tokens[i] == trainer.data[i][0]).float().mean().item() for i in range(8)]
    assert agree == [1.0] * 8, agree
    log = result.log()
    assert list(log["step"]) == list(range(1, 201)) and log["loss"].iloc[-1] < 0.5


def test_the_run_folder_holds_everything(folder, tmp_path):
    result = Trainer("debug", folder, tmp_path / "run", small(keep_checkpoints=2),
                     progress=False).fit()
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_000015.pt", "step_000020.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        f"step_{s:06d}" for s in (5, 10, 15, 20)]
    assert len(list((run / "samples" / "step_000020").glob("*.wav"))) == 2
    assert (run / "curves.png").stat().st_size > 10_000
    assert json.loads((run / "train_config.json").read_text())["steps"] == 20
    assert json.loads((run / "result.json").read_text())["steps"] == 20
    model = mg.load_model(str(result.model_dir), device="cpu")
    assert model.source == "local" and model.num_codebooks == 4


def test_the_cached_model_is_not_changed_by_training(folder, tmp_path):
    cached = mg.load_model("debug", device="cpu", dtype="float32")
    before = {n: p.clone() for n, p in cached.model.decoder.named_parameters()}
    Trainer(cached, folder, tmp_path / "run", small(steps=3), progress=False).fit()
    assert all(torch.equal(p, before[n]) for n, p in cached.model.decoder.named_parameters())


def test_same_seed_same_weights(folder, tmp_path):
    a = Trainer("debug", folder, tmp_path / "a", small(steps=6), progress=False).fit()
    b = Trainer("debug", folder, tmp_path / "b", small(steps=6), progress=False).fit()
    wa, wb = (load_file(r.model_dir / "model.safetensors") for r in (a, b))
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_weights(folder, tmp_path, lora):
    """SIGKILL a run once a checkpoint is on disk, resume it: the final weights equal an
    uninterrupted run's, bit for bit (CPU, same seed)."""
    settings = dict(steps=40, batch_size=4, learning_rate=3e-3, warmup_steps=2, window=1.0,
                    hop=1.0, checkpoint_every=5, sample_seconds=0.2, seed=3, lora=lora,
                    caption_dropout=0.3)
    script = textwrap.dedent(f"""
        import musicgen_edu as mg
        mg.train({str(folder)!r}, "debug", {str(tmp_path / 'killed')!r}, progress=False,
                 device="cpu", **{settings!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    first = tmp_path / "killed" / "checkpoints" / "step_000005.pt"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (tmp_path / "killed" / "result.json").exists()
    resumed = Trainer("debug", folder, tmp_path / "killed", TrainConfig(**settings), resume=True,
                      device="cpu", progress=False)
    assert resumed.resumed_from is not None and resumed.resumed_from < 40
    resumed.fit()
    whole = Trainer("debug", folder, tmp_path / "whole", TrainConfig(**settings), device="cpu",
                    progress=False).fit()
    done = [torch.load(tmp_path / run / "checkpoints" / "step_000040.pt", weights_only=True)
            for run in ("killed", "whole")]
    assert done[0]["trainable"].keys() == done[1]["trainable"].keys()
    assert all(torch.equal(done[0]["trainable"][n], done[1]["trainable"][n])
               for n in done[0]["trainable"])
    wa = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    wb = load_file(whole.model_dir / "model.safetensors")
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
    log = (tmp_path / "killed" / "log.csv").read_text().splitlines()
    assert len(log) == 41                          # header + 40 updates, none twice


def test_an_existing_run_is_not_overwritten(folder, tmp_path):
    Trainer("debug", folder, tmp_path / "run", small(steps=2), progress=False).fit()
    before = (tmp_path / "run" / "log.csv").read_text()
    with pytest.raises(ConfigError, match="holds a run already; pass resume=True"):
        Trainer("debug", folder, tmp_path / "run", small(steps=2), progress=False)
    with pytest.raises(ConfigError, match=r"other settings: \['learning_rate'\]"):
        Trainer("debug", folder, tmp_path / "run", small(steps=4, learning_rate=1e-3),
                resume=True, progress=False)
    assert (tmp_path / "run" / "log.csv").read_text() == before
    more = Trainer("debug", folder, tmp_path / "run", small(steps=4), resume=True,
                   progress=False).fit()              # more steps: allowed
    assert more.steps == 4


@pytest.mark.parametrize("bad, message", [
    (dict(learning_rate=5.0), r"learning_rate=5.0 is out of range; allowed: \(0, 1\]"),
    (dict(learning_rate=0.0), r"learning_rate=0.0 is out of range"),
    (dict(steps=0), r"steps=0 is out of range; allowed: \[1, 10000000\]"),
    (dict(batch_size=2.0), r"batch_size must be an integer"),
    (dict(warmup_steps=30, steps=20), r"warmup_steps=30 is more than steps=20"),
    (dict(lora_dropout=1.0), r"lora_dropout=1.0 is out of range; allowed: \[0, 1\)"),
    (dict(precision="fp8"), r"precision='fp8' is not available"),
    (dict(window=40.0), r"window=40.0 is out of range"),
    (dict(sample_captions=("ok", "")), r"sample_captions\[1\] is ''"),
    (dict(max_grad_norm=float("nan")), r"max_grad_norm=nan is not a finite number"),
])
def test_settings_out_of_range_are_named(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)
    with pytest.raises(ConfigError, match=r"unknown training setting\(s\) \['lr'\]"):
        TrainConfig().replace(lr=1e-3)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(folder, tmp_path, monkeypatch, native):
    """Emulated bf16 ran 25x slower per update than fp32 on an AVX2 EPYC (bench/README.md)."""
    import warnings

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, precision in enumerate(("bf16", "fp32", "auto")):
            Trainer("debug", folder, tmp_path / str(i), small(precision=precision),
                    device="cpu", progress=False)
    said = [str(w.message) for w in caught if "native bf16" in str(w.message)]
    assert said == ([] if native else [
        "precision='bf16' on a CPU without native bf16 (AVX-512 BF16 or AMX): autocast "
        "emulates it, many times slower than 'fp32' (bench/README.md); use precision='fp32' "
        "or 'auto'."])


def test_a_melody_model_is_refused(folder, tmp_path):
    with pytest.raises(ConfigError, match="is a melody model"):
        Trainer("debug-melody", folder, tmp_path / "run", small(), progress=False)
    assert not (tmp_path / "run" / "train_config.json").exists()


def test_a_non_finite_gradient_stops_the_run_and_leaves_the_weights(folder, tmp_path, monkeypatch):
    """A NaN loss (here forced) raises TrainingError before the optimizer step: no NaN reaches
    the weights, and the last checkpoint stays the one to resume from."""
    import sys

    loop = sys.modules["musicgen_edu.train.loop"]
    trainer = Trainer("debug", folder, tmp_path / "run", small(steps=4, checkpoint_every=2),
                      progress=False)
    trainer.update()
    trainer.update()
    trainer.checkpoint()
    before = {n: p.clone() for n, p in trainer.params.items()}
    real = loop.training_step

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        result.loss = result.loss * float("nan")
        return result

    monkeypatch.setattr(loop, "training_step", poisoned)
    with pytest.raises(mg.TrainingError, match="gradient norm is nan at update 3; the weights "
                                               "were not changed"):
        trainer.update()
    assert all(torch.equal(p, before[n]) for n, p in trainer.params.items())
    assert trainer.step == 2
